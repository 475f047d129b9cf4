"""The eval set format (JSON Lines) and the corpus (a folder of documents), with their validation.

One question per line, UTF-8:

    {"id": "en-001", "question": "...", "answers": ["28 knots"], "sources": ["weather.md"],
     "filters": {"category": "operations"}, "tags": ["paraphrase"], "lang": "en"}

- `id` (required): non-empty string, unique in the file.
- `question` (required): non-empty string.
- `answers` (required): list of acceptable reference answers (non-empty strings); `[]` means the
  corpus does not answer the question (the target should abstain).
- `sources` (required): ids of the documents holding the answer (= file names in the corpus
  folder); `[]` when unanswerable. Order does not matter.
- `filters` (optional): `{field: scalar | [scalars]}` sent with the query (merged with the
  evaluation's own `collection` filter).
- `tags` (optional): list of strings (e.g. `paraphrase`, `multi-doc`, `unanswerable`); the report
  breaks metrics down by tag.
- `lang` (optional): BCP 47 language code such as `en` or `ja`; it picks the answer normalisation
  (character-level for unspaced scripts). Without it the script of the references decides.

Every problem is reported as `file:line: message`, all of them at once.

A corpus is a folder whose regular files are the documents, named by their ids; `<id>.metadata.json`
beside a document holds Bedrock's `{"metadataAttributes": {...}}`. `README.md`, dot files and
metadata files are not documents.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

REQUIRED = ("id", "question", "answers", "sources")
OPTIONAL = ("filters", "tags", "lang")
ALLOWED = REQUIRED + OPTIONAL
METADATA_SUFFIX = ".metadata.json"
NOT_DOCUMENTS = frozenset({"README.md"})
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class EvalSetError(ValueError):
    """Invalid eval set or corpus: `problems` lists every `file:line: message`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    sources: tuple[str, ...]
    filters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    lang: str | None = None
    line: int = 0

    @property
    def answerable(self) -> bool:
        return bool(self.answers)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, "question": self.question, "answers": list(self.answers), "sources": list(self.sources)}
        if self.filters:
            record["filters"] = self.filters
        if self.tags:
            record["tags"] = list(self.tags)
        if self.lang:
            record["lang"] = self.lang
        return record


@dataclass(frozen=True)
class Document:
    id: str
    path: Path
    metadata: dict[str, Any]  # the metadataAttributes, {} without a metadata file

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def _string_list(value: Any, name: str, *, allow_empty: bool) -> str | None:
    if not isinstance(value, list):
        return f"'{name}' must be a list of strings"
    if not allow_empty and not value:
        return f"'{name}' must not be empty"
    for item in value:
        if not isinstance(item, str) or not item.strip():
            return f"'{name}' must hold non-empty strings"
    return None


def _filters_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "'filters' must be an object of field: value"
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not items:
            return f"'filters.{key}' must not be an empty list"
        for scalar in items:
            if isinstance(scalar, bool) or not isinstance(scalar, (str, int, float)):
                return f"'filters.{key}' values must be strings or numbers"
            if isinstance(scalar, float) and not math.isfinite(scalar):
                return f"'filters.{key}' numbers must be finite"
    return None


def check_record(record: Any) -> list[str]:
    """The problems of one decoded line (empty when valid)."""
    if not isinstance(record, dict):
        return ["a line must be a JSON object"]
    problems = [f"missing '{key}'" for key in REQUIRED if key not in record]
    problems += [f"unknown key '{key}' (allowed: {', '.join(ALLOWED)})" for key in record if key not in ALLOWED]
    if problems:
        return problems
    if not isinstance(record["id"], str) or not record["id"].strip():
        problems.append("'id' must be a non-empty string")
    if not isinstance(record["question"], str) or not record["question"].strip():
        problems.append("'question' must be a non-empty string")
    for name in ("answers", "sources"):
        problem = _string_list(record[name], name, allow_empty=True)
        if problem:
            problems.append(problem)
    if not problems and bool(record["answers"]) != bool(record["sources"]):
        problems.append("'answers' and 'sources' must both be empty (unanswerable) or both non-empty")
    if "filters" in record:
        problem = _filters_problem(record["filters"])
        if problem:
            problems.append(problem)
    if "tags" in record:
        problem = _string_list(record["tags"], "tags", allow_empty=True)
        if problem:
            problems.append(problem)
    if "lang" in record and (not isinstance(record["lang"], str) or not _LANG.match(record["lang"])):
        problems.append("'lang' must be a language code such as 'en' or 'ja'")
    return problems


def load_eval_set(path: str | Path) -> list[Question]:
    """Reads and validates an eval set; raises EvalSetError listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise EvalSetError([f"{path}: cannot read ({error.strerror or error})"]) from None
    problems: list[str] = []
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            if number < raw.count(b"\n") + 1:  # an empty line inside the file (a final newline is fine)
                problems.append(f"{path}:{number}: empty line")
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(f"{path}:{number}: not UTF-8")
            continue
        except ValueError as error:
            problems.append(f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})")
            continue
        line_problems = check_record(record)
        if line_problems:
            problems.extend(f"{path}:{number}: {problem}" for problem in line_problems)
            continue
        if record["id"] in seen:
            problems.append(f"{path}:{number}: duplicate id {record['id']!r} (first on line {seen[record['id']]})")
            continue
        seen[record["id"]] = number
        questions.append(
            Question(
                id=record["id"],
                question=record["question"].strip(),
                answers=tuple(record["answers"]),
                sources=tuple(dict.fromkeys(record["sources"])),
                filters=dict(record.get("filters") or {}),
                tags=tuple(record.get("tags") or ()),
                lang=record.get("lang"),
                line=number,
            )
        )
    if not problems and not questions:
        problems.append(f"{path}: no questions")
    if problems:
        raise EvalSetError(problems)
    return questions


def is_document(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and not path.name.endswith(METADATA_SUFFIX) and path.name not in NOT_DOCUMENTS


def load_corpus(folder: str | Path) -> dict[str, Document]:
    """The documents of a corpus folder by id; raises EvalSetError on unreadable metadata."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalSetError([f"{folder}: not a folder (a corpus is a folder of documents)"])
    problems: list[str] = []
    documents: dict[str, Document] = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(METADATA_SUFFIX):
            if not (folder / path.name[: -len(METADATA_SUFFIX)]).is_file():
                problems.append(f"{path}:1: metadata for a document that does not exist")
            continue
        if not is_document(path):
            continue
        metadata: dict[str, Any] = {}
        sidecar = path.with_name(path.name + METADATA_SUFFIX)
        if sidecar.is_file():
            try:
                loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                problems.append(f"{sidecar}:1: invalid JSON ({error})")
                continue
            attributes = loaded.get("metadataAttributes") if isinstance(loaded, dict) else None
            if not isinstance(attributes, dict) or set(loaded) - {"metadataAttributes"}:
                problems.append(f'{sidecar}:1: must be {{"metadataAttributes": {{...}}}}')
                continue
            metadata = attributes
        documents[path.name] = Document(id=path.name, path=path, metadata=metadata)
    if not problems and not documents:
        problems.append(f"{folder}: no documents")
    if problems:
        raise EvalSetError(problems)
    return documents


def check_sources(questions: Iterable[Question], corpus: dict[str, Document], eval_path: str | Path) -> None:
    """Every gold source must be a document of the corpus."""
    problems = [
        f"{eval_path}:{q.line}: source {source!r} is not a document of the corpus"
        for q in questions
        for source in q.sources
        if source not in corpus
    ]
    if problems:
        raise EvalSetError(problems)


def write_eval_set(path: str | Path, questions: Iterable[Question]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for q in questions:
            out.write(json.dumps(q.to_json(), ensure_ascii=False) + "\n")
