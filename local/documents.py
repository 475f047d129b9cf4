"""Documents from a folder, read the way the knowledge base reads the documents prefix.

- Every file under the folder (recursively) with a supported extension is a document; its id is
  its path relative to the folder (POSIX separators), which is also the `source` of citations.
- `<file>.metadata.json` beside a document gives its metadata, in either of the knowledge base's
  forms: `{"metadataAttributes": {"category": "security"}}` or the typed form
  `{"metadataAttributes": {"category": {"value": {"type": "STRING", "stringValue": "security"}}}}`.
- Skipped: hidden files and folders, metadata files, and `README.md` at any level (the folder's
  own description; the upload command in the README excludes it too).
- Markdown and text are read as they are (UTF-8, BOM tolerated). HTML becomes its visible text
  (scripts and styles dropped, block elements separated by blank lines). CSV becomes one line per
  row, "header: value; header: value", so each row stays readable inside a chunk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

METADATA_SUFFIX = ".metadata.json"
TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text")
HTML_SUFFIXES = (".html", ".htm")
CSV_SUFFIXES = (".csv",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + CSV_SUFFIXES
SKIPPED_NAMES = frozenset({"readme.md"})


class DocumentError(ValueError):
    """A document or its metadata file cannot be read (the message names the file)."""


@dataclass(frozen=True)
class SourceFile:
    """A document file before it is read: enough to decide whether it changed."""

    doc_id: str
    path: Path
    metadata_path: Path | None

    def fingerprint(self) -> str:
        """SHA-256 of the content and the metadata file: any change to either re-indexes it,
        adding or removing the metadata file included (even an empty one)."""
        digest = hashlib.sha256(self.path.read_bytes())
        if self.metadata_path is not None:
            digest.update(b"\x00metadata\x00" + self.metadata_path.read_bytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    metadata: dict[str, Any]


def discover(folder: Path) -> tuple[list[SourceFile], list[str]]:
    """(the folder's documents sorted by id, ids of files skipped as unsupported)."""
    if not folder.is_dir():
        raise DocumentError(f"{folder}: not a folder of documents")
    found: list[SourceFile] = []
    unsupported: list[str] = []
    for path in sorted(_files(folder)):
        name = path.name.lower()
        if name.endswith(METADATA_SUFFIX) or name in SKIPPED_NAMES:
            continue
        doc_id = path.relative_to(folder).as_posix()
        if not name.endswith(SUPPORTED_SUFFIXES):
            unsupported.append(doc_id)
            continue
        metadata_path = path.with_name(path.name + METADATA_SUFFIX)
        found.append(SourceFile(doc_id, path, metadata_path if metadata_path.is_file() else None))
    return found, unsupported


def _files(folder: Path) -> Iterator[Path]:
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _files(entry)
        elif entry.is_file():
            yield entry


def read(source: SourceFile) -> Document:
    raw = source.path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentError(f"{source.doc_id}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    name = source.path.name.lower()
    if name.endswith(HTML_SUFFIXES):
        content = html_text(content)
    elif name.endswith(CSV_SUFFIXES):
        content = csv_text(content)
    metadata = read_metadata(source.metadata_path, source.doc_id) if source.metadata_path else {}
    return Document(doc_id=source.doc_id, text=content.replace("\r\n", "\n"), metadata=metadata)


def read_metadata(path: Path, doc_id: str) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as error:
        raise DocumentError(f"{doc_id}{METADATA_SUFFIX}: not valid JSON ({error})") from None
    attributes = body.get("metadataAttributes") if isinstance(body, dict) else None
    if not isinstance(attributes, dict):
        raise DocumentError(f'{doc_id}{METADATA_SUFFIX}: expected {{"metadataAttributes": {{...}}}}')
    metadata: dict[str, Any] = {}
    for key, value in attributes.items():
        metadata[key] = _attribute_value(value, f"{doc_id}{METADATA_SUFFIX}: {key}")
    return metadata


def _attribute_value(value: Any, where: str) -> Any:
    """A plain value, or the typed form {"value": {"type": ..., "<type>Value": ...}}."""
    if isinstance(value, dict):
        typed = value.get("value")
        if not isinstance(typed, dict):
            raise DocumentError(f"{where}: an object needs a 'value' with a type")
        kind = str(typed.get("type")).upper()  # no type: "NONE", which names no field
        field = {"STRING": "stringValue", "NUMBER": "numberValue", "BOOLEAN": "booleanValue", "STRING_LIST": "stringListValue"}.get(kind)
        if field is None or field not in typed:
            raise DocumentError(f"{where}: type must be STRING, NUMBER, BOOLEAN or STRING_LIST with its value")
        value = typed[field]
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise DocumentError(f"{where}: a list must hold strings only")
        return value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise DocumentError(f"{where}: unsupported value {value!r}")


def keywords(value: Any) -> frozenset[str]:
    """A metadata value as the keyword terms the index stores (the vector index maps filterable
    fields as `keyword`: numbers and booleans are matched by their JSON text, lists by any item)."""
    if value is None:
        return frozenset()
    items = value if isinstance(value, list) else [value]
    return frozenset(keyword(item) for item in items)


def keyword(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)  # 2024 -> "2024", 2024.0 -> "2024.0": the JSON text a keyword field indexes


# --- formats ---

_BLOCK_TAGS = frozenset("p div section article header footer li ul ol table tr h1 h2 h3 h4 h5 h6 br pre blockquote dd dt".split())
_HIDDEN_TAGS = frozenset({"script", "style", "noscript", "template", "head"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        if tag in {"h1", "h2", "h3", "h4", "h5", "h6"} and not self.hidden:
            self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS and self.hidden:
            self.hidden -= 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_text(content: str) -> str:
    parser = _TextExtractor()
    parser.feed(content)
    parser.close()
    paragraphs = (" ".join(block.split()) for block in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p and p.strip("# "))


def csv_text(content: str) -> str:
    rows = list(csv.reader(io.StringIO(content)))
    if not rows:
        return ""
    header, lines = rows[0], []
    for row in rows[1:]:
        cells = [f"{name}: {value}" for name, value in zip(header, row) if value.strip()]
        if cells:
            lines.append("; ".join(cells) + ".")
    return "\n".join(lines)
