"""`python -m local`, in process: what each command prints and its exit status.

The encoder is replaced by the fast FakeEmbedder (what a command prints does not depend on the
model); `serve` runs until a stand-in for Ctrl-C.
"""

from __future__ import annotations

import json
import os
import socket
from types import SimpleNamespace

import pytest

from local import app, server
from query import handler, prompts
from stacks import config as stack_config
from tests.local_support import ROOT, FakeEmbedder
from tests.test_local_generators import _llama_cpp, _model_package, packages  # noqa: F401  (a stand-in llama.cpp)
from tests.test_local_server import no_aws  # noqa: F401  (the fixture: no AWS credentials leak in)

_LOG_LEVEL = os.environ.get("POWERTOOLS_LOG_LEVEL")
from local import __main__ as cli  # noqa: E402  (sets POWERTOOLS_LOG_LEVEL for `python -m local`'s process ...)

if _LOG_LEVEL is None:  # ... not for this test run's: later tests read the handler's info lines
    os.environ.pop("POWERTOOLS_LOG_LEVEL", None)


@pytest.fixture
def local_env(monkeypatch, tmp_path, no_aws):  # noqa: F811
    """A two-document folder, a fresh cache, and the fake encoders the commands made."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "keys.md").write_text("KMS rotates the key material every year.")
    (folder / "logs.md").write_text("Audit logs are kept for a year in CloudWatch Logs.")
    monkeypatch.setenv("LOCAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LOCAL_DOCUMENTS", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    embedders: list[FakeEmbedder] = []

    def make_embedder():
        embedders.append(FakeEmbedder())
        return embedders[-1]

    monkeypatch.setattr(app, "Embedder", make_embedder)
    return SimpleNamespace(folder=folder, embedders=embedders)


def test_index_reports_what_changed_and_fails_on_an_unreadable_document(local_env, capsys):
    assert cli.main(["index", "--documents", str(local_env.folder)]) == 0
    err = capsys.readouterr().err
    assert "index: 2 added, 0 updated, 0 removed, 0 unchanged; 2 chunks and 2 sentences embedded in " in err
    assert "embedding 2 chunks of 2 documents (and their sentences)" in err and "  4/4 texts embedded" in err

    (local_env.folder / "keys.md").write_text("KMS rotates the key material every 365 days.")
    (local_env.folder / "logs.md").unlink()
    (local_env.folder / "bad.md").write_bytes(b"\xff\xfe not utf-8")
    (local_env.folder / "slides.pptx").write_bytes(b"binary")
    assert cli.main(["index", "--documents", str(local_env.folder)]) == 1  # a document was skipped
    lines = capsys.readouterr().err.splitlines()
    assert lines[-3].startswith("index: 0 added, 1 updated, 1 removed, 0 unchanged; 1 chunks and 1 sentences embedded in ")
    assert lines[-2] == "skipped bad.md: not UTF-8 text (invalid start byte at byte 0)"
    assert lines[-1] == "not indexed (unsupported type): slides.pptx"

    assert cli.main(["index", "--documents", str(local_env.folder)]) == 1  # still there: still reported
    assert "0 added, 0 updated, 0 removed, 1 unchanged; 0 chunks and 0 sentences" in capsys.readouterr().err
    assert local_env.embedders[-1].embedded == []  # nothing changed, nothing embedded


@pytest.mark.parametrize("count,more", [(10, ""), (11, " ...")])
def test_unsupported_files_are_listed_ten_at_most(local_env, capsys, count, more):
    for i in range(count):
        (local_env.folder / f"f{i:02d}.pdf").write_bytes(b"%PDF")
    cli.main(["index", "--documents", str(local_env.folder)])
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == "not indexed (unsupported type): " + ", ".join(f"f{i:02d}.pdf" for i in range(10)) + more


def test_documents_come_from_the_environment_when_no_option_names_them(local_env, monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_DOCUMENTS", str(local_env.folder))
    assert cli.main(["index"]) == 0
    assert "2 added" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["index", "--documents", "/no/such/folder"], "error: /no/such/folder: not a folder of documents (set LOCAL_DOCUMENTS or --documents)"),
        (["index", "--stage", "nope"], "error: --stage nope: not a stage in cdk.json (stages: dev, prod)"),
        (["status", "--stage", "nope"], "error: --stage nope: not a stage in cdk.json (stages: dev, prod)"),
        (["status", "--documents", "/no/such/folder"], "error: /no/such/folder: not a folder of documents (set LOCAL_DOCUMENTS or --documents)"),
    ],
)
def test_configuration_errors_are_one_line_and_exit_1(local_env, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("LOCAL_DOCUMENTS", str(local_env.folder))
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == message + "\n"


def test_a_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("usage: python -m local ")


def test_ports_are_1_to_65535_and_8787_by_default(monkeypatch):
    monkeypatch.delenv("PORT", raising=False)
    assert cli._port() == 8787
    for port in ("1", "65535"):
        monkeypatch.setenv("PORT", port)
        assert cli._port() == int(port)


@pytest.fixture
def custom_stage(tmp_path, monkeypatch):
    """cdk.json with a stage `tiny`: 20-token chunks, its own Bedrock model and top_k limit."""
    context = json.loads((ROOT / "cdk.json").read_text())
    stages = {"tiny": {"knowledge_base": {"chunk_max_tokens": 20, "chunk_overlap_percentage": 1},
                       "serving": {"bedrock_model_id": "amazon.nova-pro-v1:0", "max_top_k": 7}}}
    (tmp_path / "cdk.json").write_text(json.dumps({**context, "context": {**context["context"], "stages": stages}}))
    monkeypatch.setattr(app, "ROOT", tmp_path)


def test_each_command_takes_the_stages_config(local_env, custom_stage, monkeypatch, capsys):
    (local_env.folder / "long.md").write_text(" ".join(f"Sentence number {w} is here." for w in ("one", "two", "three", "four")))
    assert cli.main(["index", "--documents", str(local_env.folder), "--stage", "tiny"]) == 0
    assert "3 added, 0 updated, 0 removed, 0 unchanged; 4 chunks" in capsys.readouterr().err  # long.md: two 20-token chunks
    assert cli.main(["status", "--documents", str(local_env.folder), "--stage", "tiny"]) == 0
    assert "bedrock:InvokeModel on amazon.nova-pro-v1:0;" in capsys.readouterr().out
    monkeypatch.setenv("PORT", str(_free_port()))
    seen = {}
    monkeypatch.setattr(server.LocalServer, "serve_forever", lambda self: seen.update(max_top_k=handler._settings.max_top_k))
    assert cli.main(["serve", "--documents", str(local_env.folder), "--stage", "tiny"]) == 0 and seen == {"max_top_k": 7}


def test_status_lists_the_generators_and_checks_one(local_env, capsys):
    argv = ["status", "--documents", str(local_env.folder)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "  extractive: available (local:extractive)"
    assert out[1].startswith("  llm: not available: generator 'llm' needs llama-cpp-python: run `make local-llm`")
    assert out[2].startswith("  bedrock: not available: generator 'bedrock' needs AWS credentials")
    assert f"bedrock:InvokeModel on {stack_config.ServingConfig().bedrock_model_id};" in out[2]  # the configured model

    assert cli.main(argv + ["bedrock"]) == 1  # named and not available
    assert cli.main(argv + ["extractive"]) == 0
    assert cli.main(argv + ["finetuned"]) == 2
    assert capsys.readouterr().err == "unknown generator 'finetuned'; local mode knows extractive, llm, bedrock\n"

    assert cli.main(argv + ["extractive", "--smoke"]) == 0
    from local import generators

    assert capsys.readouterr().out.splitlines()[-1] == f"  extractive answered: {generators.NO_SOURCES!r}"


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http", "", "80 "])
def test_serve_refuses_a_port_that_is_not_1_to_65535(local_env, monkeypatch, capsys, port):
    monkeypatch.setenv("PORT", port)
    assert cli.main(["serve", "--documents", str(local_env.folder)]) == 1
    assert capsys.readouterr().err == f"error: PORT={port!r}: a port number 1..65535\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_says_when_the_port_is_taken(local_env, monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("PORT", str(port))
        assert cli.main(["serve", "--documents", str(local_env.folder)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); set PORT to a free port"


def test_serve_indexes_loads_the_model_serves_and_stops_on_ctrl_c(local_env, monkeypatch, capsys):
    port = _free_port()
    monkeypatch.setenv("PORT", str(port))
    seen = {}

    def interrupted(self):  # what Ctrl-C does to serve_forever
        seen["configured"] = handler._backend is self.mode.backend
        raise KeyboardInterrupt

    monkeypatch.setattr(server.LocalServer, "serve_forever", interrupted)
    assert cli.main(["serve", "--documents", str(local_env.folder)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"indexing {local_env.folder} (cache: {local_env.folder.parent / 'cache'})"
    assert err[1] == "embedding 2 chunks of 2 documents (and their sentences)"
    assert any(line.startswith("index: 2 added") for line in err)
    assert "generators (first available answers by default):" in err and "  extractive: available (local:extractive)" in err
    assert f"serving http://127.0.0.1:{port}/v1/query and http://127.0.0.1:{port}/v1/health (Ctrl-C stops)" in err
    assert err[-1] == "stopped"
    assert local_env.embedders[0].loaded  # the model loads before the first question, not during it
    assert seen == {"configured": True} and handler._backend is None  # served the local backend, then closed
    with socket.socket() as again:  # the port is free again
        again.bind(("127.0.0.1", port))


def test_status_smoke_generates_a_few_tokens_with_the_llm(local_env, packages, capsys):
    _llama_cpp(packages)
    _model_package(packages, "m.gguf")
    assert cli.main(["status", "--documents", str(local_env.folder), "llm", "--smoke"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "  llm answered: 'It is kept 30 days [1].'"
    import llama_cpp

    (call,) = llama_cpp.calls
    assert (call["max_tokens"], call["temperature"]) == (8, 0.0)
    assert call["messages"][1]["content"] == prompts.baseline_prompt("Say hello.").user
