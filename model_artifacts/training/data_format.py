"""The training data format and its validator. Standard library only: it runs in the training
container, in the dry run on any laptop, and behind `scripts/validate_training_data.py`.

Training data is JSON Lines (`*.jsonl`, UTF-8): one JSON object per line, in one of two shapes.

Chat:
    {"messages": [{"role": "system", "content": "..."},      # optional, first only
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}
    Turns alternate user/assistant after the optional system turn; the last turn is the
    assistant's (what the model learns to write).

Instruction:
    {"instruction": "...", "input": "...", "output": "...", "system": "..."}
    `instruction` and `output` are required; `input` (e.g. retrieved passages) and `system` are
    optional. It becomes: system (if any), user = instruction + blank line + input, assistant =
    output.

Both shapes may carry `id` (string) and `metadata` (object), which training ignores. Any other key
is an error (it catches typos such as "ouput" that would otherwise train on nothing). Every
problem is reported with its file and line number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

ROLES = ("system", "user", "assistant")
COMMON_KEYS = frozenset({"id", "metadata"})
CHAT_KEYS = frozenset({"messages"}) | COMMON_KEYS
INSTRUCTION_KEYS = frozenset({"instruction", "input", "output", "system"}) | COMMON_KEYS
# A rough tokens-per-character ratio for English text with Llama/Qwen tokenizers: only used to warn
# about records that will surely be truncated, never to reject them (no tokenizer on a laptop).
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class DataReport:
    files: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=lambda: {"chat": 0, "instruction": 0})
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    characters: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.records)

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records": len(self.records),
            "formats": dict(self.formats),
            "characters": self.characters,
            "estimated_tokens": self.characters // CHARS_PER_TOKEN,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
        }


def _nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def record_format(record: dict[str, Any]) -> str | None:
    if "messages" in record:
        return "chat"
    if "instruction" in record or "output" in record:
        return "instruction"
    return None


def validate_record(record: Any) -> list[str]:
    """The problems of one decoded record; an empty list means it is usable."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    errors: list[str] = []
    kind = record_format(record)
    if kind is None:
        return ["neither a chat record ('messages') nor an instruction record ('instruction' + 'output')"]
    allowed = CHAT_KEYS if kind == "chat" else INSTRUCTION_KEYS
    for key in sorted(set(record) - allowed):
        errors.append(f"unknown key {key!r} for the {kind} format (allowed: {', '.join(sorted(allowed))})")
    if "id" in record and not isinstance(record["id"], str):
        errors.append("'id' must be a string")
    if "metadata" in record and not isinstance(record["metadata"], dict):
        errors.append("'metadata' must be an object")
    if kind == "chat":
        errors.extend(_validate_messages(record["messages"]))
    else:
        for key in ("instruction", "output"):
            if not _nonempty_string(record.get(key)):
                errors.append(f"'{key}' must be a non-empty string")
        for key in ("input", "system"):
            if key in record and not isinstance(record[key], str):
                errors.append(f"'{key}' must be a string")
    return errors


def _validate_messages(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty list"]
    errors: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            errors.append(f"{where} must be an object with 'role' and 'content'")
            continue
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            errors.append(f"{where} has unknown key {extra[0]!r} (allowed: content, role)")
        role = message.get("role")
        if role not in ROLES:
            errors.append(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
        elif role == "system" and index != 0:
            errors.append(f"{where}: a system turn is allowed only first")
        if not _nonempty_string(message.get("content")):
            errors.append(f"{where}.content must be a non-empty string")
    if errors:
        return errors
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if not turns:
        return ["'messages' has no user or assistant turn"]
    for index, role in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            return [f"turns must alternate user/assistant after the optional system turn; turn {index + 1} is {role!r}"]
    if turns[-1] != "assistant":
        return ["the last turn must be the assistant's (the text the model learns to write)"]
    return []


def to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """The chat form of a valid record (what the tokenizer's chat template formats)."""
    if record_format(record) == "chat":
        return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    messages = []
    if record.get("system", "").strip():
        messages.append({"role": "system", "content": record["system"]})
    user = record["instruction"]
    if record.get("input", "").strip():
        user = f"{user}\n\n{record['input']}"
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": record["output"]})
    return messages


def find_data_files(location: str | os.PathLike) -> list[Path]:
    """`*.jsonl` files under a directory (recursively, sorted), or the file itself."""
    path = Path(location)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or directory: {path}")
    return sorted(p for p in path.rglob("*.jsonl") if p.is_file())


def _lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, decode error) for each line; the trailing newline is not a line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode().rstrip("\r\n"), None  # the newline only: columns stay as written
            except UnicodeDecodeError as error:
                yield number, None, f"not UTF-8 ({error.reason} at byte {error.start})"


def validate_files(paths: Iterable[str | os.PathLike], *, max_length_tokens: int | None = None) -> DataReport:
    """Validates every line of every file; keeps the chat form of the valid records."""
    report = DataReport()
    for location in paths:
        files = find_data_files(location)
        if not files:
            report.errors.append(Problem(str(location), 0, "no *.jsonl file here"))
        for path in files:
            _validate_file(path, report, max_length_tokens)
    if not report.errors and not report.records:
        report.errors.append(Problem(",".join(report.files) or "-", 0, "no training records"))
    return report


def _validate_file(path: Path, report: DataReport, max_length_tokens: int | None) -> None:
    name = str(path)
    report.files.append(name)
    seen: dict[str, int] = {}
    for number, text, decode_error in _lines(path):
        if decode_error:
            report.errors.append(Problem(name, number, decode_error))
            continue
        if not text.strip():
            report.errors.append(Problem(name, number, "empty line (JSON Lines has one object per line)"))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            report.errors.append(Problem(name, number, f"invalid JSON: {error.msg} at column {error.colno}"))
            continue
        problems = validate_record(record)
        if problems:
            report.errors.extend(Problem(name, number, message) for message in problems)
            continue
        messages = to_messages(record)
        characters = sum(len(m["content"]) for m in messages)
        if max_length_tokens and characters // CHARS_PER_TOKEN > max_length_tokens:
            report.warnings.append(Problem(name, number, f"about {characters // CHARS_PER_TOKEN} tokens: longer than max_length={max_length_tokens}, will be truncated"))
        key = json.dumps(messages)  # to_messages builds every turn with the same key order
        if key in seen:
            report.warnings.append(Problem(name, number, f"duplicate of line {seen[key]}"))
        else:
            seen[key] = number
        report.characters += characters
        report.formats[record_format(record)] += 1
        report.records.append({"messages": messages})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate fine-tuning data (JSON Lines, chat or instruction records); reports file:line: problem.")
    parser.add_argument("paths", nargs="+", help="*.jsonl files or directories holding them")
    parser.add_argument("--max-length", type=int, help="warn about records longer than this many tokens (estimated)")
    parser.add_argument("--max-problems", type=int, default=50, help="print at most this many errors and warnings each")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        report = validate_files(args.paths, max_length_tokens=args.max_length)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for label, problems in (("error", report.errors), ("warning", report.warnings)):
        for problem in problems[: args.max_problems]:
            print(f"{label}: {problem}", file=sys.stderr)
        if len(problems) > args.max_problems:
            print(f"... and {len(problems) - args.max_problems} more {label}s", file=sys.stderr)
    summary = report.summary()
    print(json.dumps(summary, indent=2) if args.json else f"{summary['records']} valid records in {len(summary['files'])} file(s), {summary['errors']} error(s), {summary['warnings']} warning(s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
