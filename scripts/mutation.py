#!/usr/bin/env python3
"""Mutation testing with mutmut 3: how many realistic bugs the tests catch, per file.

    python scripts/mutation.py                                   # every unit of lambda/, stacks/config.py, model_artifacts/training/
    python scripts/mutation.py lambda/vector_index lambda/shared/opensearch_http.py
    python scripts/mutation.py stacks/config.py --tests tests/test_config.py
    python scripts/mutation.py --report                          # only re-read the runs already made

Each path is split into units (UNITS: one folder of lambda/, stacks/config.py,
model_artifacts/training; a file or folder inside a unit is a unit of its own) and each unit is
one mutmut run in a scratch copy of the work tree, build/mutation/runs/<unit>/work, so that
units can run one after another (or in two shells) while the survivors of a finished one are
read. mutmut names mutants by their module path, so in the copy `lambda/` is renamed `src/` (the
layout mutmut understands; handlers then import as `query.handler`, exactly as under
pytest.ini's `pythonpath = lambda`). The source tree is never touched. In the scripts unit the
operator scripts (SCRIPT_MODULES) are mutated, not the tooling and benchmarks (DO_NOT_MUTATE); the
copy's conftest makes the names the tests load them by stand for scripts.<name> (_SCRIPT_LOADER).

Tests: by default the test files that reach each unit (TESTS_FOR, the longest matching prefix);
mutmut then runs, per mutant, only the tests that called the mutated function. Synth-based
tests are left out on purpose: a forked mutant would synthesize every stage again.

Progress: one line per unit phase and a count line every PROGRESS_EVERY seconds on stdout (made
for a log file: `scripts/mutation.py > build/mutation/progress.log 2>&1 &`); mutmut's own
output is kept in build/mutation/runs/<unit>/mutmut.log.

Summary: build/mutation/runs/<unit>/summary.json per unit, and build/mutation/summary.md /
summary.json over every unit run so far, with the killed share per file and per unit. The killed
share is killed / (killed + survived + no tests + suspicious): a mutant no test reaches is a
miss, a timeout counts as killed (the mutant hangs, which a real run would notice). Survivors of
an EQUIVALENT class (below, each with its reason) cannot change behaviour; they are counted
apart, listed, and left out of the share.

Exit status: 0 when every run completed (whatever the score), 2 on bad arguments, 3 when mutmut
is missing or failed.
"""

from __future__ import annotations

import argparse
import ast
import codecs
import copy
import difflib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "mutation"
RUNS = OUT / "runs"
DEFAULT_PATHS = ["lambda", "stacks/config.py", "model_artifacts/training", "local", "evaluation", "scripts"]
# One mutmut run each: a run collects test coverage over its own tests only.
UNITS = ["lambda/ingest", "lambda/query", "lambda/serving_record", "lambda/shared", "lambda/validate_training_input",
         "lambda/vector_index", "stacks/config.py", "model_artifacts/training", "evaluation", "local", "scripts"]
PROGRESS_EVERY = 60.0
TRAINING_MODULES = ("data_format", "train")  # model_artifacts/training/*.py, imported by file name
# scripts/*.py with functions to mutate: run by operators as files, imported by the tests by file
# path or (operator_cli, and by the other scripts) by bare name. Tooling and benchmarks are left out.
# operator_cli comes first: the others import it by bare name, which must already be the alias.
SCRIPT_MODULES = ("operator_cli", "ask", "cost_table", "endpoint_power", "rollback_model", "start_training")
# Not mutated: the tooling and benchmarks among the scripts, and the harness's stand-in query API
# (a test double for its tests and benchmark: its mutants test the tests, and hang them).
DO_NOT_MUTATE = {"scripts": ["scripts/mutation.py", "scripts/bench*.py", "scripts/image_uris.py"],
                 "evaluation": ["evaluation/stub_target.py"]}
# Tests left out of a unit's runs. A test that runs a mutated script in a subprocess cannot kill a
# mutant (the child runs it as __main__, a name no mutant is activated under), and with a working
# directory of its own the child's mutmut trampoline finds no setup.cfg and fails the stats run.
DESELECT = {"scripts": ["tests/test_query_client.py::test_the_script_never_shows_a_traceback_for_expected_mistakes"]}

_QUERY = ["tests/test_query_errors.py", "tests/test_query_helpers.py", "tests/test_query_modes.py",
          "tests/test_query_prompts.py", "tests/test_query_properties.py", "tests/test_query_adversarial.py",
          "tests/test_query_backend.py", "tests/test_query_endpoint.py", "tests/test_query_metrics.py", "tests/test_query_rules.py",
          "tests/test_query_parts.py"]
_VECTOR = ["tests/test_vector_index_handler.py", "tests/test_vector_index_adversarial.py"]
_TRAINING_DATA = ["tests/test_training_data.py", "tests/test_train_script.py", "tests/test_train_job.py",
                  "tests/test_validation_boundaries.py", "tests/test_evaluation_data.py"]
# Which tests reach which source path (the longest matching prefix wins; a folder takes the tests
# of everything under it). Kept to tests without the session synth: see the docstring.
TESTS_FOR = {
    "lambda/ingest": ["tests/test_ingest_handler.py"],
    "lambda/query": _QUERY,
    "lambda/serving_record": ["tests/test_serving_record_handler.py"],
    "lambda/shared/api.py": ["tests/test_shared_rules.py"] + _QUERY + ["tests/test_ingest_handler.py", "tests/test_serving_record_handler.py"],
    "lambda/shared/aws_clients.py": ["tests/test_shared_rules.py"] + _QUERY + ["tests/test_ingest_handler.py",
                                                                               "tests/test_serving_record_handler.py"],
    "lambda/shared/endpoint_codec.py": ["tests/test_endpoint_codec.py", "tests/test_shared_rules.py"] + _QUERY,
    "lambda/shared/model_record.py": ["tests/test_model_record.py", "tests/test_shared_rules.py",
                                      "tests/test_serving_record_handler.py"] + _QUERY,
    "lambda/shared/observability.py": ["tests/test_shared_rules.py"] + _QUERY,
    "lambda/shared/opensearch_http.py": ["tests/test_opensearch_http.py", "tests/test_shared_rules.py"] + _VECTOR + _QUERY,
    "lambda/validate_training_input": ["tests/test_validate_training_input.py", "tests/test_validation_boundaries.py"],
    "lambda/vector_index": _VECTOR,
    "stacks/config.py": ["tests/test_config.py"],
    "model_artifacts/training": _TRAINING_DATA,
    # Not test_evaluation_local.py (in the local unit): its 3 s real-embedder run would be paid by every
    # mutant of cli/runner/scoring it reaches, and the stub-target harness tests run the same paths.
    "evaluation": ["tests/test_evaluation_data.py", "tests/test_evaluation_harness.py", "tests/test_evaluation_metrics.py"]
                  + [f"tests/test_evaluation_{part}.py" for part in ("aws", "cli", "client", "cost", "formats", "outputs", "report",
                                                                     "runner", "scoring", "text")],
    "local": ["tests/test_local_text.py", "tests/test_local_chunking.py", "tests/test_local_documents.py", "tests/test_local_store.py",
              "tests/test_local_indexer.py", "tests/test_local_embedding.py", "tests/test_local_extractive.py",
              "tests/test_local_generators.py", "tests/test_local_app.py", "tests/test_local_http.py", "tests/test_local_cli.py",
              "tests/test_local_retrieval.py", "tests/test_local_server.py", "tests/test_evaluation_local.py"],
    "scripts": ["tests/test_query_client.py", "tests/test_operator_scripts.py", "tests/test_validate_training_input.py",
                "tests/test_cost_table.py", "tests/test_scripts_ask.py", "tests/test_scripts_operator.py"],
}

# Survivors that cannot change behaviour, by class: name, reason, test on the original and the
# mutated function (ast) and the diff's changed lines.
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _is_log_call(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)):
        return False
    if node.value.func.attr == "basicConfig" and getattr(node.value.func.value, "id", "") == "logging":
        return True  # the log format and level of a script
    receiver = node.value.func.value
    if isinstance(receiver, ast.Call):  # observability.logger().info(...)
        receiver = receiver.func
    name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
    return node.value.func.attr in LOG_METHODS and name.lower().lstrip("_") in {"logger", "log"}


def _without_log_calls(function: ast.AST) -> str:
    class Strip(ast.NodeTransformer):
        def generic_visit(self, node):
            super().generic_visit(node)
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if isinstance(block, list) and block and all(isinstance(s, ast.stmt) for s in block):
                    kept = [s for s in block if not _is_log_call(s)]
                    setattr(node, field, kept or [ast.Pass()])
            return node

    return ast.dump(Strip().visit(_named(function, "")))  # the original and the mutant differ in name


def _logging_only(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    return _without_log_calls(original) == _without_log_calls(mutant)


def _differences(a: object, b: object, parents: tuple = ()) -> list[tuple[object, object, tuple]]:
    """The smallest differing parts of two ast trees, each with its chain of parent nodes."""
    if type(a) is not type(b):
        return [(a, b, parents)]
    if isinstance(a, ast.AST):
        found = []
        for name in a._fields:
            left, right = getattr(a, name, None), getattr(b, name, None)
            if isinstance(left, list) and isinstance(right, list) and len(left) != len(right):
                found.append((a, b, parents))
            elif isinstance(left, list):
                for x, y in zip(left, right):
                    found += _differences(x, y, parents + (a,))
            else:
                found += _differences(left, right, parents + (a,))
        return found
    return [] if a == b else [(a, b, parents)]


def _header_name_case(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    """Only the case of a string that is a key of a `headers={...}` argument changed."""
    found = _differences(_named(original, ""), _named(mutant, ""))
    if len(found) != 1:
        return False
    left, right, parents = found[0]
    if not (isinstance(left, str) and isinstance(right, str) and left.lower() == right.lower() and len(parents) >= 3):
        return False
    constant, mapping, keyword = parents[-1], parents[-2], parents[-3]
    return (isinstance(mapping, ast.Dict) and any(key is constant for key in mapping.keys)
            and isinstance(keyword, ast.keyword) and keyword.arg == "headers")


def _one_case_change(original: ast.AST, mutant: ast.AST) -> tuple[str, str, tuple] | None:
    """The one string constant whose case alone differs between original and mutant, as (old, new,
    parents), or None when the mutant changed anything else."""
    found = _differences(_named(original, ""), _named(mutant, ""))
    if len(found) != 1:
        return None
    left, right, parents = found[0]
    if not (isinstance(left, str) and isinstance(right, str) and left.lower() == right.lower() and len(parents) >= 2):
        return None
    return left, right, parents


def _response_header_name_case(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    """Only the case of a response header name changed: a key of the dict literal under "headers"
    in a proxy-response dict literal ({"statusCode": ..., "headers": {...}}), or the name given to
    BaseHTTPRequestHandler.send_header()."""
    change = _one_case_change(original, mutant)
    if change is None:
        return False
    left, right, parents = change
    constant, holder = parents[-1], parents[-2]
    if isinstance(holder, ast.Call):
        return bool(holder.args) and holder.args[0] is constant and _call_name(holder) == "send_header"
    if not (isinstance(holder, ast.Dict) and any(key is constant for key in holder.keys) and len(parents) >= 3):
        return False
    response = parents[-3]
    return (isinstance(response, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "statusCode" for k in response.keys)
            and any(isinstance(k, ast.Constant) and k.value == "headers" and v is holder for k, v in zip(response.keys, response.values)))


HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"}
HTTP_CALLS = {"call", "request", "signed_request"}  # Domain.call, urllib3's request, opensearch_http.signed_request


def _http_method_case(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    """Only the case of an HTTP method name passed to an HTTP call (first argument or method=) changed."""
    found = _differences(_named(original, ""), _named(mutant, ""))
    if len(found) != 1:
        return False
    left, right, parents = found[0]
    if not (isinstance(left, str) and isinstance(right, str) and left in HTTP_METHODS and right.upper() == left and len(parents) >= 2):
        return False
    constant, holder = parents[-1], parents[-2]
    if isinstance(holder, ast.keyword):
        return holder.arg == "method"
    return isinstance(holder, ast.Call) and bool(holder.args) and holder.args[0] is constant and _call_name(holder) in HTTP_CALLS


def _request_header_read_case(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    """Only the case of a request header name changed, read as `self.headers.get(name, ...)` or
    tested as `name in self.headers` in a BaseHTTPRequestHandler subclass (its headers are an
    email.message.Message, which compares names case-insensitively)."""
    change = _one_case_change(original, mutant)
    if change is None:
        return False
    left, right, parents = change
    constant, holder = parents[-1], parents[-2]
    if isinstance(holder, ast.Call) and holder.args and holder.args[0] is constant and _call_name(holder) == "get":
        receiver = holder.func.value
    elif isinstance(holder, ast.Compare) and holder.left is constant and isinstance(holder.ops[0], (ast.In, ast.NotIn)):
        receiver = holder.comparators[0]
    else:
        return False
    if not (isinstance(receiver, ast.Attribute) and receiver.attr == "headers" and getattr(receiver.value, "id", "") == "self"):
        return False
    nested = any(isinstance(p, ast.ClassDef) and p.name in _http_handler_classes(p) for p in parents)  # a class inside the function
    return nested or any(f"ǁ{name}ǁ" in original.name for name in _module_http_handlers)  # a method: mutmut names it xǁClassǁmethod


def _http_handler_classes(tree: ast.AST) -> set[str]:
    """The classes in `tree` that derive from http.server's BaseHTTPRequestHandler."""
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any(getattr(b, "id", getattr(b, "attr", "")) == "BaseHTTPRequestHandler" for b in node.bases)}


def _codec_name_case(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    """Only the case of a codec name changed: the first argument of encode()/decode() or an
    `encoding=` keyword, naming the same codec either way (codecs.lookup normalizes names)."""
    change = _one_case_change(original, mutant)
    if change is None:
        return False
    left, right, parents = change
    try:
        if codecs.lookup(left).name != codecs.lookup(right).name:
            return False
    except LookupError:
        return False
    constant, holder = parents[-1], parents[-2]
    if isinstance(holder, ast.keyword):
        return holder.arg == "encoding"
    return isinstance(holder, ast.Call) and bool(holder.args) and holder.args[0] is constant and _call_name(holder) in ("encode", "decode")


SQL_CALLS = {"execute", "executemany", "executescript"}
# Case-sensitive parts of an SQL text: quoted strings and identifiers, named parameters.
SQL_CASE_KEPT = re.compile(r"'[^']*'|\"[^\"]*\"|[:@$]\w+")
_module_imports: set[str] = set()  # the top-level modules the file being classified imports (set by summarize)
_module_http_handlers: set[str] = set()  # its BaseHTTPRequestHandler subclasses (set by summarize)


def _sqlite_case(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    """In a module that imports sqlite3, only the case of the SQL text given to execute(),
    executemany() or executescript() changed, outside quoted strings, quoted identifiers and
    named parameters."""
    if "sqlite3" not in _module_imports:
        return False
    change = _one_case_change(original, mutant)
    if change is None:
        return False
    left, right, parents = change
    constant, call = parents[-1], parents[-2]
    return (isinstance(call, ast.Call) and bool(call.args) and call.args[0] is constant and _call_name(call) in SQL_CALLS
            and SQL_CASE_KEPT.findall(left) == SQL_CASE_KEPT.findall(right))


def _imports(tree: ast.AST) -> set[str]:
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


ARGPARSE_CALLS = {"ArgumentParser", "add_argument", "add_argument_group", "add_mutually_exclusive_group", "add_parser"}


def _call_name(call: ast.Call) -> str:
    return getattr(call.func, "attr", getattr(call.func, "id", ""))


def _help_text_only(original: ast.AST, mutant: ast.AST, changed: list[str]) -> bool:
    """Only a help/description/epilog text (or a group title) of an argparse call changed or went away."""
    found = _differences(_named(original, ""), _named(mutant, ""))
    if len(found) != 1:
        return False
    left, right, parents = found[0]
    if isinstance(left, ast.Call) and isinstance(right, ast.Call) and len(left.keywords) != len(right.keywords):  # a keyword removed
        kept = {k.arg: ast.dump(k.value) for k in right.keywords}
        gone = [k.arg for k in left.keywords if kept.get(k.arg) != ast.dump(k.value)]
        return _call_name(left) in ARGPARSE_CALLS and len(right.args) == len(left.args) and gone in (["help"], ["description"], ["epilog"])
    for index in range(len(parents) - 1, -1, -1):  # the innermost keyword or argument of an argparse call
        node = parents[index]
        if isinstance(node, ast.keyword):
            call = next((p for p in reversed(parents[:index]) if isinstance(p, ast.Call)), None)
            return node.arg in ("help", "description", "epilog") and call is not None and _call_name(call) in ARGPARSE_CALLS
        if isinstance(node, ast.Call) and _call_name(node) == "add_argument_group":
            return bool(node.args) and (node.args[0] is left or node.args[0] in parents[index + 1:])
    return False


EQUIVALENT = [
    ("logging", "the mutant changes only what a logging call writes (message text, `extra` keys, level, a script's "
                "log format): log output, not behaviour; the metric and response tests pin what operators act on",
     _logging_only),
    ("header name case", "urllib.request and urllib3 send header names case-insensitively (urllib applies "
                         "str.capitalize() to them, HTTP/1.1 field names are case-insensitive): a mutant that only "
                         "changes the case of a header name sends the same request",
     _header_name_case),
    ("response header name case", "HTTP field names are case-insensitive (RFC 9110, 5.1) and every client reads them so "
                                  "(http.client, urllib, botocore, browsers): a mutant that only changes the case of a "
                                  "response header name (an API Gateway proxy response's `headers` keys, or send_header's "
                                  "name) sends the same header",
     _response_header_name_case),
    ("HTTP method case", "urllib3's request() upper-cases the method before sending it and botocore's SigV4 signs "
                         "method.upper(): a mutant that only lower-cases the method of a signed call sends and signs "
                         "the same request",
     _http_method_case),
    ("request header read case", "http.server parses request headers into an email.message.Message, whose get() compares "
                                 "names case-insensitively: a mutant that only changes the case of the name a request "
                                 "handler reads reads the same header",
     _request_header_read_case),
    ("codec name case", "Python looks codecs up case-insensitively (codecs.lookup normalizes the name): a mutant that "
                        "only changes the case of an encode()/decode() codec or an encoding= argument uses the same codec",
     _codec_name_case),
    ("SQLite keyword case", "SQLite reads keywords, table and column names case-insensitively: a mutant that only "
                            "changes the case of an execute()d SQL text, its quoted strings, quoted identifiers and "
                            "named parameters unchanged, runs the same statement",
     _sqlite_case),
    ("help text", "the mutant changes only what --help prints (an argparse help, description or epilog text, or a "
                  "group title): the options, their types and defaults are unchanged",
     _help_text_only),
]


def unit_of(path: str) -> list[str]:
    """The units a path stands for: the UNITS under a folder, or the path itself."""
    path = path.rstrip("/")
    inside = [unit for unit in UNITS if unit == path or unit.startswith(path + "/")]
    return inside or [path]


def tests_for(path: str) -> list[str]:
    chosen: list[str] = []
    covering = [prefix for prefix in TESTS_FOR if path == prefix or path.startswith(prefix + "/")]
    if covering:
        chosen = list(TESTS_FOR[max(covering, key=len)])
    for prefix, tests in TESTS_FOR.items():  # a folder takes the tests of everything under it
        if prefix.startswith(path + "/"):
            chosen += [t for t in tests if t not in chosen]
    return [t for t in chosen if (ROOT / t).exists()] or ["tests"]


def slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")


def scratch_copy(work: Path, unit: str = "") -> None:
    """The work tree's files (tracked and new, not ignored) with lambda/ renamed src/."""
    if work.exists():
        shutil.rmtree(work)
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if not source.is_file():
            continue
        target = work / ("src/" + name[len("lambda/"):] if name.startswith("lambda/") else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    ini = work / "pytest.ini"
    ini.write_text(re.sub(r"^pythonpath = .*$", "pythonpath = . src", ini.read_text(), flags=re.M))
    (work / "lambda").symlink_to("src")  # stacks find handler folders under lambda/
    (work / "mutants").mkdir()
    (work / "mutants" / "lambda").symlink_to("src")  # the same where mutmut runs the tests
    # The training job imports its modules by file name (`import data_format`, as SageMaker runs
    # train.py); mutmut knows them by path. The copy's conftest makes both names one module.
    aliases = "".join(f"sys.modules.setdefault({name!r}, importlib.import_module('model_artifacts.training.{name}'))\n"
                      for name in TRAINING_MODULES)
    if unit == "scripts" or unit.startswith("scripts/"):
        aliases += _SCRIPT_LOADER.format(modules=SCRIPT_MODULES)
    with open(work / "tests" / "conftest.py", "a") as conftest:
        conftest.write(f"\n\nimport importlib  # noqa: E402 (scripts/mutation.py)\nimport sys  # noqa: E402\n{aliases}")


# The scripts' mutants are activated by their module name, scripts.<name>; a module loaded under
# another name runs the original code. Scripts import operator_cli by bare name (their folder on
# sys.path) and the tests load them by file path (spec_from_file_location("ask", .../ask.py)), so
# in the copy, for the scripts unit only, the bare names are aliases of scripts.<name> and a spec
# made for one of these files carries the name scripts.<name>. The loaded code is the same file.
_SCRIPT_LOADER = """
import importlib.util  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

_SCRIPTS = _Path(__file__).resolve().parents[1] / "scripts"
_SCRIPT_MODULES = {modules!r}
for _name in _SCRIPT_MODULES:
    sys.modules.setdefault(_name, importlib.import_module("scripts." + _name))
_spec_from_file_location = importlib.util.spec_from_file_location


def _script_spec(name, location=None, *args, **kwargs):
    path = _Path(location).resolve() if location is not None else None
    if path is not None and path.parent == _SCRIPTS.resolve() and path.stem in _SCRIPT_MODULES:
        name = "scripts." + path.stem
    return _spec_from_file_location(name, location, *args, **kwargs)


importlib.util.spec_from_file_location = _script_spec
"""


def source_in_work(path: str) -> str:
    return "src/" + path[len("lambda/"):] if path.startswith("lambda/") else ("src" if path == "lambda" else path)


def mutmut_config(path: str, tests: list[str], work: Path) -> str:
    copied = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in work.iterdir()
                    if entry.name not in ("mutants", "lambda", "setup.cfg") and not entry.is_symlink())
    deselected = [f"--deselect={test}" for prefix, tests_out in DESELECT.items() if path == prefix or path.startswith(prefix + "/")
                  for test in tests_out]
    lines = ["[mutmut]", "source_paths=" + source_in_work(path),
             "pytest_add_cli_args_test_selection=" + "\n    ".join(tests),
             # mutmut collects the tests with --collect-only, where syrupy calls every snapshot unused and exits 1
             "pytest_add_cli_args=" + "\n    ".join(["-p no:cacheprovider -q", "--snapshot-warn-unused", *deselected]),
             "use_git_change_detection=false",
             "also_copy=" + "\n    ".join(copied)]  # the whole work tree: tests read README.md, cdk.json, ...
    skipped = [pattern for prefix, patterns in DO_NOT_MUTATE.items() if path == prefix or path.startswith(prefix + "/")
               for pattern in patterns]
    if skipped:
        lines.append("do_not_mutate=" + "\n    ".join(skipped))
    return "\n".join(lines) + "\n"


PROGRESS = re.compile(r"(\d+)/(\d+)\s+🎉 (\d+) 🫥 (\d+)\s+⏰ (\d+)\s+🤔 (\d+)\s+🙁 (\d+)")


def run_mutmut(mutmut: str, work: Path, max_children: int, label: str) -> int:
    """mutmut run, its output in mutmut.log, a progress line on stdout at most every PROGRESS_EVERY s."""
    started = last = time.monotonic()
    latest = ""
    with open(work.parent / "mutmut.log", "w") as log:
        process = subprocess.Popen([mutmut, "run", "--max-children", str(max_children)], cwd=work,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        buffer = ""
        assert process.stdout is not None
        while chunk := process.stdout.read(256):
            buffer += chunk
            *parts, buffer = re.split(r"[\r\n]", buffer)
            for part in parts:
                if (match := PROGRESS.search(part)) is not None:
                    latest = "{}/{} done: {} killed, {} survived, {} no tests, {} timeout, {} suspicious".format(
                        match[1], match[2], match[3], match[7], match[4], match[5], match[6])
                    if time.monotonic() - last >= PROGRESS_EVERY:
                        last = time.monotonic()
                        print(f"  {label}: {latest} ({last - started:.0f} s)", flush=True)
                elif part.strip() and not re.match(r"^\W\s", part):  # not a spinner frame
                    log.write(part + "\n")
                    if part.startswith(("    done", "Running mutation", "Failed", "Traceback")) or "mutations/second" in part:
                        print(f"  {label}: {part.strip()} ({time.monotonic() - started:.0f} s)", flush=True)
        log.write(buffer + "\n" + latest + "\n")
        code = process.wait()
    if latest:
        print(f"  {label}: {latest} ({time.monotonic() - started:.0f} s)", flush=True)
    return code


# --- summary --------------------------------------------------------------------------------------

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "type check",
          -11: "segfault", -9: "segfault", 2: "interrupted", None: "not checked"}
COUNTED = ("killed", "timeout", "survived", "no tests", "suspicious")


def _functions(tree: ast.AST) -> dict[str, ast.AST]:
    return {node.name: node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _named(function: ast.AST, name: str) -> ast.AST:
    function = copy.deepcopy(function)
    function.name = name
    return function


def _diff(original: ast.AST, mutant: ast.AST) -> list[str]:
    """The changed lines (and one line around them), both functions under the original's name."""
    name = original.name.split("ǁ")[-1].removeprefix("x_").removesuffix("__mutmut_orig")
    before, after = (ast.unparse(_named(f, name)).splitlines() for f in (original, mutant))
    return [line for line in difflib.unified_diff(before, after, lineterm="", n=1) if not line.startswith(("---", "+++", "@@"))]


def _source_line(source: list[str], original_name: str, changed: list[str]) -> int | None:
    """The source line a mutant changes: its first removed line, searched for (loosely: ast.unparse
    normalizes quotes and spacing) from the function's `def`; else the `def` line."""
    name = original_name.split("ǁ")[-1].removeprefix("x_").removesuffix("__mutmut_orig")
    start = next((i for i, line in enumerate(source) if re.match(rf"\s*(async\s+)?def {re.escape(name)}\b", line)), None)
    if start is None:
        return None
    removed = next((line[1:] for line in changed if line.startswith("-")), "")
    token = re.sub(r"[\s'\"]+", "", removed)[:24]
    for i in range(start, min(len(source), start + 400)):
        if token and token in re.sub(r"[\s'\"]+", "", source[i]):
            return i + 1
    return start + 1


def summarize(path: str, tests: list[str], work: Path) -> dict:
    """Statuses from mutmut's .meta files, each survivor classified against EQUIVALENT."""
    global _module_imports, _module_http_handlers
    per_file: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: list[dict] = []
    equivalent: list[dict] = []
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        mutated = meta.with_suffix("")
        relative = str(mutated.relative_to(work / "mutants"))
        file = "lambda/" + relative[len("src/"):] if relative.startswith("src/") else relative
        statuses = json.loads(meta.read_text())["exit_code_by_key"]
        tree = functions = None
        source = (ROOT / file).read_text().splitlines() if (ROOT / file).exists() else []
        for name, code in sorted(statuses.items(), key=lambda item: (item[0].rsplit("_", 1)[0], int(item[0].rsplit("_", 1)[1]))):
            status = STATUS.get(code, "suspicious")
            if status in ("survived", "no tests", "suspicious"):
                if functions is None:
                    tree = ast.parse(mutated.read_text())
                    functions, _module_imports, _module_http_handlers = _functions(tree), _imports(tree), _http_handler_classes(tree)
                mutant_fn = name.rsplit(".", 1)[-1]
                original_fn = mutant_fn.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
                original, mutant = functions.get(original_fn), functions.get(mutant_fn)
                changed = _diff(original, mutant) if original and mutant else []
                entry = {"mutant": name, "file": file, "status": status, "diff": changed,
                         "line": _source_line(source, original_fn, changed)}
                kind = next((k for k, _, test in EQUIVALENT if status == "survived" and original and mutant
                             and test(original, mutant, changed)), None)
                if kind:
                    status = "equivalent"
                    equivalent.append({**entry, "class": kind})
                else:
                    survivors.append(entry)
            per_file[file][status] += 1
    files = {file: {**counts, "score": _score(counts)} for file, counts in sorted(per_file.items())}
    total: dict[str, int] = defaultdict(int)
    for counts in per_file.values():
        for status, n in counts.items():
            total[status] += n
    return {"path": path, "tests": tests, "date": date.today().isoformat(), "files": files, "total": dict(total),
            "score": _score(total), "survivors": survivors, "equivalent": equivalent}


def _score(counts: dict[str, int]) -> float | None:
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    checked = sum(counts.get(status, 0) for status in COUNTED)
    return round(caught / checked, 4) if checked else None


def _pct(score: float | None) -> str:
    return "-" if score is None else f"{score:.1%}"


def report() -> Path:
    """build/mutation/summary.md and .json over every unit run so far."""
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*/summary.json"))]
    by_top: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total: dict[str, int] = defaultdict(int)
    for run in runs:
        top = next((p for p in DEFAULT_PATHS if run["path"] == p or run["path"].startswith(p + "/")), run["path"])
        for status, n in run["total"].items():
            by_top[top][status] += n
            total[status] += n
    columns = ("killed", "timeout", "survived", "no tests", "suspicious", "equivalent")
    lines = ["# Mutation testing (mutmut 3)", "",
             f"Killed share over every unit run: **{_pct(_score(total))}** (killed + timeout over killed, timeout, "
             "survived, no tests and suspicious; equivalent mutants, by the classes below, are counted apart).", "",
             "| path | " + " | ".join(columns) + " | killed share |", "| --- |" + " --- |" * (len(columns) + 1)]
    for top, counts in sorted(by_top.items()):
        lines.append(f"| {top} | " + " | ".join(str(counts.get(c, 0)) for c in columns) + f" | {_pct(_score(counts))} |")
    lines.append("| **all** | " + " | ".join(str(total.get(c, 0)) for c in columns) + f" | **{_pct(_score(total))}** |")
    lines += ["", "## Per unit and file", "", "| file | unit (run on) | " + " | ".join(columns) + " | killed share |",
              "| --- | --- |" + " --- |" * (len(columns) + 1)]
    for run in runs:
        for file, counts in run["files"].items():
            lines.append(f"| {file} | {run['path']} ({run['date']}) | " + " | ".join(str(counts.get(c, 0)) for c in columns)
                         + f" | {_pct(counts['score'])} |")
    lines += ["", "## Equivalent classes", ""]
    for kind, reason, _ in EQUIVALENT:
        count = sum(1 for run in runs for e in run["equivalent"] if e["class"] == kind)
        lines.append(f"- **{kind}** ({count}): {reason}")
    lines += ["", "## Survivors (survived, no tests, suspicious)", ""]
    for run in runs:
        for s in run["survivors"]:
            lines += [f"### {s['file']}:{s['line']} {s['status']}: `{s['mutant']}`", "", "```diff", *s["diff"], "```", ""]
    (OUT / "summary.json").write_text(json.dumps({"total": dict(total), "score": _score(total),
                                                  "paths": {k: {**v, "score": _score(v)} for k, v in by_top.items()},
                                                  "runs": [{k: r[k] for k in ("path", "date", "total", "score")} for r in runs]},
                                                 indent=1))
    path = OUT / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help=f"files or folders to mutate (default: {' '.join(DEFAULT_PATHS)})")
    parser.add_argument("--tests", nargs="+", help="test files to run (default: the ones that reach each unit, TESTS_FOR)")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants (default: %(default)s, the cores here)")
    parser.add_argument("--report", action="store_true", help="only re-read the finished runs and write the summary")
    parser.add_argument("--resummarize", action="store_true", help="re-read the runs' mutmut data (after changing EQUIVALENT)")
    args = parser.parse_args(argv)
    if args.report or args.resummarize:
        if args.resummarize:
            for summary in RUNS.glob("*/summary.json"):
                old = json.loads(summary.read_text())
                new = summarize(old["path"], old["tests"], summary.parent / "work")
                summary.write_text(json.dumps({**new, "date": old["date"]}, indent=1))
        print(f"summary in {report().relative_to(ROOT)}")
        return 0
    paths = args.paths or DEFAULT_PATHS
    for path in paths:
        if not (ROOT / path).exists():
            print(f"mutation.py: {path} does not exist (paths are relative to the repository root)", file=sys.stderr)
            return 2
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent))
    if mutmut is None:
        print("mutation.py: mutmut is not installed in this venv: run `make mutation` (installs requirements-mutation.txt)", file=sys.stderr)
        return 3
    units = [unit for path in paths for unit in unit_of(path)]
    failed: list[str] = []
    for unit in units:
        tests = args.tests or tests_for(unit)
        run = RUNS / slug(unit)
        work = run / "work"
        print(f"{unit}: mutating against {' '.join(tests)} in {work.relative_to(ROOT)}", flush=True)
        scratch_copy(work, unit)
        (work / "setup.cfg").write_text(mutmut_config(unit, tests, work))
        code = run_mutmut(mutmut, work, args.max_children, unit)
        log = (run / "mutmut.log").read_text()
        if code not in (0, 1) or "Running mutation testing" not in log or "mutations/second" not in log:
            print(f"mutation.py: mutmut failed for {unit} (exit {code}); its output is in {(run / 'mutmut.log').relative_to(ROOT)}",
                  file=sys.stderr, flush=True)
            (run / "summary.json").unlink(missing_ok=True)
            failed.append(unit)
            continue
        summary = summarize(unit, tests, work)
        (run / "summary.json").write_text(json.dumps(summary, indent=1))
        t = summary["total"]
        print(f"{unit}: killed share {_pct(summary['score'])}: {t.get('killed', 0)} killed, {t.get('timeout', 0)} timeout, "
              f"{t.get('survived', 0)} survived, {t.get('no tests', 0)} no tests, {t.get('suspicious', 0)} suspicious, "
              f"{t.get('equivalent', 0)} equivalent", flush=True)
    print(f"summary in {report().relative_to(ROOT)}", flush=True)
    if failed:
        print(f"mutation.py: no result for {' '.join(failed)} (see above)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
