"""SQuAD-format files (SQuAD v1.1/v2.0, XQuAD, JSQuAD) -> a corpus folder + an eval set.

Each paragraph becomes one document `<name>-a<article>-p<paragraph>.txt` holding the article title
as its first line and the paragraph's context; each question keeps its id, its distinct answer
texts, and the paragraph as its one gold source. SQuAD v2's `is_impossible` questions become
unanswerable (no answers, no sources). JSQuAD contexts start with `<title> [SEP] `: the prefix is
removed (the title is already the document's first line).

Public sets are licensed: the converted corpus and eval set are derived works and carry the
original attribution (written beside them as `ATTRIBUTION.md` and in the corpus's `README.md`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evalset import EvalSetError, Question, write_eval_set

SEP = " [SEP] "
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
KNOWN_ATTRIBUTIONS = {
    "xquad": "XQuAD by Artetxe, Ruder and Yogatama (DeepMind), derived from SQuAD v1.1 (Rajpurkar et al.) and Wikipedia; CC BY-SA 4.0.",
    "jsquad": "JSQuAD by Kurihara, Kawahara and Shibata (Yahoo Japan, JGLUE), derived from Japanese Wikipedia; CC BY-SA 4.0.",
    "squad": "SQuAD by Rajpurkar, Zhang, Lopyrev and Liang (Stanford), derived from Wikipedia; CC BY-SA 4.0.",
}


@dataclass(frozen=True)
class Converted:
    corpus: Path
    eval_set: Path
    documents: int
    questions: int
    unanswerable: int


def attribution_for(path: Path) -> str:
    lowered = str(path).lower()
    for key, text in KNOWN_ATTRIBUTIONS.items():
        if key in lowered:
            return text
    return "Keep the original data set's license and attribution with this derived work."


def _fail(path: Path, message: str) -> EvalSetError:
    return EvalSetError([f"{path}:1: {message}"])


def read_squad(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise EvalSetError([f"{path}: cannot read ({error.strerror or error})"]) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise _fail(path, f"not a JSON file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise _fail(path, "not SQuAD format: expected {\"data\": [{\"title\", \"paragraphs\": [...]}]}")
    return data["data"]


def convert(path: str | Path, out_dir: str | Path, *, name: str | None = None, lang: str | None = None,
            articles: int | None = None, collection: str | None = None) -> Converted:
    """Writes `<out>/corpus/` and `<out>/eval.jsonl`; returns what it wrote."""
    path, out_dir = Path(path), Path(out_dir)
    name = name or re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")[:40] or "squad"
    if not _NAME.match(name):
        raise EvalSetError([f"--name {name!r}: use lowercase letters, digits and dashes"])
    collection = collection or f"eval-{name}"
    corpus = out_dir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for stale in corpus.iterdir():  # a re-run writes the same files; drop documents of an older run
        if stale.is_file():
            stale.unlink()
    questions: list[Question] = []
    documents = 0
    for a, article in enumerate(read_squad(path)[:articles] if articles else read_squad(path)):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise _fail(path, f"data[{a}] has no 'paragraphs' list")
        title = str(article.get("title") or f"article {a}").replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise _fail(path, f"data[{a}].paragraphs[{p}] has no 'context'")
            if SEP in context:  # JSQuAD: "<title> [SEP] <text>"
                prefix, context = context.split(SEP, 1)
                title = prefix.strip() or title
            doc_id = f"{name}-a{a:03d}-p{p:02d}.txt"
            (corpus / doc_id).write_text(f"{title}\n\n{context.strip()}\n", encoding="utf-8")
            metadata = {"metadataAttributes": {"category": title[:100], "collection": collection}}
            (corpus / f"{doc_id}.metadata.json").write_text(json.dumps(metadata, ensure_ascii=False) + "\n", encoding="utf-8")
            documents += 1
            for q, qa in enumerate(paragraph.get("qas") or []):
                questions.append(_question(path, qa, f"{doc_id}-q{q}", doc_id, lang, name))
    if not questions:
        raise _fail(path, "no questions found")
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise _fail(path, f"duplicate question id {q.id!r}")
        seen.add(q.id)
    eval_set = out_dir / "eval.jsonl"
    write_eval_set(eval_set, questions)
    note = (
        f"# Converted from `{path.name}`\n\n{attribution_for(path)}\n\n"
        "This folder is a derived work of that data set: it carries the same license and this attribution.\n"
    )
    (out_dir / "ATTRIBUTION.md").write_text(note, encoding="utf-8")
    (corpus / "README.md").write_text(note, encoding="utf-8")
    return Converted(corpus=corpus, eval_set=eval_set, documents=documents, questions=len(questions),
                     unanswerable=sum(not q.answerable for q in questions))


def _question(path: Path, qa: Any, fallback_id: str, doc_id: str, lang: str | None, name: str) -> Question:
    if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or not qa["question"].strip():
        raise _fail(path, f"a question of {doc_id} has no 'question' text")
    texts = [a.get("text", "").strip() for a in qa.get("answers") or [] if isinstance(a, dict)]
    answers = tuple(dict.fromkeys(t for t in texts if t))
    impossible = bool(qa.get("is_impossible")) or not answers
    return Question(
        id=str(qa.get("id") or fallback_id),
        question=qa["question"].strip(),
        answers=() if impossible else answers,
        sources=() if impossible else (doc_id,),
        tags=(name, "unanswerable") if impossible else (name,),
        lang=lang,
    )
