"""The training-data validator (model_artifacts/training/data_format.py): every rule with the message
an operator reads before paying for a job, the file handling (lines, encodings, folders) and the
command's output and exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model_artifacts" / "training"))

import data_format  # noqa: E402

OK_CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
ALTERNATE = "turns must alternate user/assistant after the optional system turn; turn {} is {!r}"


@pytest.mark.parametrize("record, problems", [
    (5, ["expected a JSON object, got int"]),
    ([], ["expected a JSON object, got list"]),
    ({}, ["neither a chat record ('messages') nor an instruction record ('instruction' + 'output')"]),
    ({"id": 1, **OK_CHAT}, ["'id' must be a string"]),
    ({"id": "r1", "metadata": {"k": 1}, **OK_CHAT}, []),
    ({"metadata": [], "instruction": "i", "output": "o"}, ["'metadata' must be an object"]),
    ({"instruction": "i", "output": "o", "input": 5, "system": None, "extra": 1},
     ["unknown key 'extra' for the instruction format (allowed: id, input, instruction, metadata, output, system)",
      "'input' must be a string", "'system' must be a string"]),
    ({"instruction": "i", "output": "o", "input": "", "system": ""}, []),
    ({"messages": [], "input": "x"}, ["unknown key 'input' for the chat format (allowed: id, messages, metadata)", "'messages' must be a non-empty list"]),
    ({"instruction": " ", "output": ""}, ["'instruction' must be a non-empty string", "'output' must be a non-empty string"]),
    ({"output": "o"}, ["'instruction' must be a non-empty string"]),
    ({"messages": "x"}, ["'messages' must be a non-empty list"]),
    ({"messages": ["x", {"role": "bot", "content": "a", "name": "n"}, {"role": "user", "content": 3}]},
     ["messages[0] must be an object with 'role' and 'content'", "messages[1] has unknown key 'name' (allowed: content, role)",
      "messages[1].role must be one of system, user, assistant, got 'bot'", "messages[2].content must be a non-empty string"]),
    ({"messages": [{"role": "system", "content": "s"}]}, ["'messages' has no user or assistant turn"]),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]}, ["messages[1]: a system turn is allowed only first"]),
    ({"messages": [{"role": "assistant", "content": "a"}]}, [ALTERNATE.format(1, "assistant")]),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
     [ALTERNATE.format(3, "assistant")]),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "user", "content": "r"}]},
     [ALTERNATE.format(2, "user")]),
    ({"messages": [{"role": "user", "content": "q"}]}, ["the last turn must be the assistant's (the text the model learns to write)"]),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, []),
])
def test_each_record_rule_says_what_is_wrong(record, problems):
    assert data_format.validate_record(record) == problems


@pytest.mark.parametrize("record, messages", [
    ({"instruction": "i", "input": " ", "system": " ", "output": "o"}, [{"role": "user", "content": "i"}, {"role": "assistant", "content": "o"}]),
    ({"instruction": "i", "input": "x", "system": "s", "output": "o"},
     [{"role": "system", "content": "s"}, {"role": "user", "content": "i\n\nx"}, {"role": "assistant", "content": "o"}]),
    ({"id": "1", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
])
def test_records_become_the_chat_the_template_formats(record, messages):
    assert data_format.to_messages(record) == messages


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_lines_are_read_as_written_and_each_problem_has_its_line(tmp_path):
    good = json.dumps(OK_CHAT).encode()
    path = write(tmp_path / "d.jsonl", good + b"\r\n" + b"  \n" + b'{"messages": [1,  \n' + b"\xff\n" + good + b"X\n" + good)  # no final newline
    report = data_format.validate_files([path])
    assert [str(p) for p in report.errors] == [
        f"{path}:2: empty line (JSON Lines has one object per line)",
        f"{path}:3: invalid JSON: Expecting value at column 19",  # after the trailing spaces: only the newline is cut
        f"{path}:4: not UTF-8 (invalid start byte at byte 0)",
        f"{path}:5: invalid JSON: Extra data at column {len(good) + 1}",  # nothing but the line end is cut
    ]
    assert len(report.records) == 2 and report.files == [str(path)]
    assert [str(w) for w in report.warnings] == [f"{path}:6: duplicate of line 1"]


def test_duplicates_are_found_within_a_file_and_counted_as_records(tmp_path):
    line = json.dumps(OK_CHAT) + "\n"
    first = write(tmp_path / "a.jsonl", (line * 2).encode())
    second = write(tmp_path / "b.jsonl", line.encode())
    report = data_format.validate_files([first, second])
    assert [(w.path, w.line) for w in report.warnings] == [(str(first), 2)]
    assert report.ok and len(report.records) == 3 and report.formats == {"chat": 3, "instruction": 0}
    assert report.summary() == {"files": [str(first), str(second)], "records": 3, "formats": {"chat": 3, "instruction": 0},
                                "characters": 6, "estimated_tokens": 1, "errors": 0, "warnings": 1}


def test_folders_are_searched_recursively_in_order_and_missing_data_is_an_error(tmp_path):
    line = (json.dumps(OK_CHAT) + "\n").encode()
    write(tmp_path / "data" / "b.jsonl", line)
    write(tmp_path / "data" / "sub" / "a.jsonl", line)
    write(tmp_path / "data" / "notes.txt", b"x")
    (tmp_path / "data" / "dir.jsonl").mkdir()
    assert data_format.find_data_files(tmp_path / "data") == [tmp_path / "data" / "b.jsonl", tmp_path / "data" / "sub" / "a.jsonl"]
    assert data_format.find_data_files(tmp_path / "data" / "notes.txt") == [tmp_path / "data" / "notes.txt"]
    with pytest.raises(FileNotFoundError, match="no such file or directory: .*/missing"):
        data_format.find_data_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    report = data_format.validate_files([tmp_path / "empty"])
    assert [str(p) for p in report.errors] == [f"{tmp_path / 'empty'}:0: no *.jsonl file here"] and not report.ok
    only_errors = write(tmp_path / "bad.jsonl", b"[]\n")
    assert [p.message for p in data_format.validate_files([only_errors]).errors] == ["expected a JSON object, got list"]
    blank = write(tmp_path / "blank" / "x.jsonl", b"")
    assert [str(p) for p in data_format.validate_files([blank]).errors] == [f"{blank}:0: no training records"]


def test_the_command_prints_problems_then_a_summary_and_exits_by_validity(tmp_path, capsys):
    bad_lines = b"".join(b"[]\n" for _ in range(3)) + (json.dumps(OK_CHAT) + "\n").encode() * 2
    path = write(tmp_path / "d.jsonl", bad_lines)
    assert data_format.main([str(path), "--max-problems", "2"]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"error: {path}:1: expected a JSON object, got list", f"error: {path}:2: expected a JSON object, got list",
                                "... and 1 more errors", f"warning: {path}:5: duplicate of line 4"]
    assert out == "2 valid records in 1 file(s), 3 error(s), 1 warning(s)\n"
    good = write(tmp_path / "g.jsonl", (json.dumps(OK_CHAT) + "\n").encode())
    assert data_format.main([str(good), "--json", "--max-length", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 1 and summary["warnings"] == 0
    assert data_format.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == f"error: no such file or directory: {tmp_path / 'missing'}\n"


def test_the_command_lists_up_to_its_limit_and_passes_the_length_on(tmp_path, capsys):
    path = write(tmp_path / "d.jsonl", b"[]\n[]\n" + json.dumps({"instruction": "q" * 40, "output": "a"}).encode() + b"\n")
    assert data_format.main([str(path), "--max-problems", "2", "--max-length", "5"]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"error: {path}:1: expected a JSON object, got list", f"error: {path}:2: expected a JSON object, got list",
                                f"warning: {path}:3: about 10 tokens: longer than max_length=5, will be truncated"]
    many = write(tmp_path / "many.jsonl", b"[]\n" * 51)
    data_format.main([str(many), "--json"])
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == "... and 1 more errors" and len(err.splitlines()) == 51
    assert out.startswith('{\n  "files": [')
