"""The shipped eval set, its deterministic train/test split, and the fine-tuning data made from it.

Split rule (any eval set, not only the shipped one): a question belongs to the training part when
`int(sha256("eval-split:" + id), 16) % 100 < 40`, else to the test part. It depends on the id alone,
so adding or removing other questions never moves a question between the parts, and a test
question can never leak into the training data by a re-split.

Fine-tuning data (the training JSONL format of model_artifacts/training/README.md, chat records)
is written from the corpus and the training part only, with the serving prompts of
`lambda/query/prompts.py`, so the fine-tuned generator learns the knowledge the way it is asked:
- one closed-book record per document (mode `prompt`: the knowledge itself),
- per training question, a closed-book record (mode `prompt`) and a RAG record (mode `rag`) whose
  numbered sources are the gold documents plus distractors, answered with `[n]` citations, or
  with the prompt's exact "I don't know" sentence when the question is unanswerable.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable

from .evalset import Document, Question
from .metrics import rng_for

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "model_artifacts" / "sample_documents"
EVAL_SET = ROOT / "model_artifacts" / "eval" / "osfc.jsonl"
TRAINING_DATA = ROOT / "model_artifacts" / "eval" / "finetune" / "train.jsonl"
COLLECTION = "eval-shipped"
TRAIN_PERCENT = 40
SPLITS = ("test", "train", "all")
RAG_PASSAGES = 3
CLOSED_BOOK_ABSTAIN = "I don't know: I have no information about that."
CLOSED_BOOK_ABSTAIN_JA = "分かりません。その情報は持っていません。"
SEED = 20261130


def split_of(question_id: str) -> str:
    digest = hashlib.sha256(f"eval-split:{question_id}".encode()).hexdigest()
    return "train" if int(digest, 16) % 100 < TRAIN_PERCENT else "test"


def select(questions: Iterable[Question], split: str) -> list[Question]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    return [q for q in questions if split == "all" or split_of(q.id) == split]


def _prompts():
    """The query function's prompt module (the serving prompts), imported from lambda/."""
    lambda_dir = str(ROOT / "lambda")
    if lambda_dir not in sys.path:
        sys.path.insert(0, lambda_dir)
    from query import prompts  # noqa: PLC0415 (lambda/ is not a package root of the project)

    return prompts


def _title(document: Document, text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else document.id
    return first.lstrip("#").strip() or document.id


def _chat(record_id: str, system: str, user: str, assistant: str, **metadata: Any) -> dict[str, Any]:
    return {
        "id": record_id,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        "metadata": metadata,
    }


def training_records(questions: Iterable[Question], corpus: dict[str, Document], *, seed: int = SEED) -> list[dict[str, Any]]:
    prompts = _prompts()
    texts = {doc_id: document.text() for doc_id, document in corpus.items()}
    records: list[dict[str, Any]] = []
    for doc_id in sorted(corpus):
        title = _title(corpus[doc_id], texts[doc_id])
        ask = f"{title}について教えてください。" if _is_japanese(texts[doc_id]) else f"What do you know about {title}?"
        prompt = prompts.baseline_prompt(ask)
        records.append(_chat(f"doc-{doc_id}", prompt.system, prompt.user, texts[doc_id].strip(), kind="document", source=doc_id,
                             prompt_version=prompt.version))
    for q in questions:
        if split_of(q.id) != "train":
            raise ValueError(f"question {q.id} is in the test part: never train on it")
        japanese = (q.lang or "").startswith("ja")
        closed = prompts.baseline_prompt(q.question)
        answer = q.answers[0] if q.answerable else (CLOSED_BOOK_ABSTAIN_JA if japanese else CLOSED_BOOK_ABSTAIN)
        records.append(_chat(f"closed-{q.id}", closed.system, closed.user, answer, kind="closed-book", question=q.id,
                             prompt_version=closed.version))
        passages = _passages(q, corpus, texts, seed, prompts)
        rag = prompts.rag_prompt(q.question, passages)
        records.append(_chat(f"rag-{q.id}", rag.system, rag.user, _cited_answer(q, passages, japanese), kind="rag", question=q.id,
                             prompt_version=rag.version))
    return records


def _is_japanese(text: str) -> bool:
    from .metrics import is_unspaced

    return is_unspaced(text)


def _passages(q: Question, corpus: dict[str, Document], texts: dict[str, str], seed: int, prompts) -> list:
    rng = rng_for(seed, "passages", q.id)
    others = sorted(doc_id for doc_id in corpus if doc_id not in q.sources)
    distractors = rng.sample(others, max(1, RAG_PASSAGES - len(q.sources)))
    chosen = list(q.sources) + distractors
    rng.shuffle(chosen)
    return [prompts.Passage(n=i, text=texts[doc_id], source=doc_id, score=None) for i, doc_id in enumerate(chosen, start=1)]


def _cited_answer(q: Question, passages: list, japanese: bool) -> str:
    if not q.answerable:
        return "I don't know based on the provided sources."
    marks = "".join(f"[{p.n}]" for p in passages if p.source in q.sources)
    return f"{q.answers[0]}{marks}。" if japanese else f"{q.answers[0]} {marks}."


def write_training_data(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
