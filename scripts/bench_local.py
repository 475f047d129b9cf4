#!/usr/bin/env python3
"""Local mode's retrieval benchmark: recall@5 and MRR, indexing time, query latency over HTTP.

    .venv/bin/python scripts/bench_local.py                       # XQuAD-en, JSQuAD validation, the shipped eval set
    .venv/bin/python scripts/bench_local.py --datasets xquad --questions 300
    .venv/bin/python scripts/bench_local.py --datasets jsquad-test   # the held-back split: report, never tune on it
    .venv/bin/python scripts/bench_local.py --eval-set FILE.jsonl --corpus DIR
    .venv/bin/python scripts/bench_local.py stores                 # the store choice: brute force vs the alternatives

Datasets (SQuAD v1.1 format, `../shared/datasets/`, CC BY-SA 4.0, see its README for attribution):
every paragraph becomes one document of a fresh corpus folder (JSQuAD's "<title> [SEP] " prefix
becomes a Markdown title), and every question's gold document is its paragraph. The shipped eval
set (model_artifacts/eval/README.md: JSON Lines with id, question, answers, sources, optional filters, tags, lang,
under model_artifacts/eval/) is read with its own corpus (model_artifacts/sample_documents/);
its test part (id-hash split, as `evaluation/shipped.py` defines it) is the default.

For each dataset: indexing time (a fresh index), then per question the two local retrievers
(`kb` = vector only, `opensearch` = hybrid) at top_k 5: recall@5 (share of the gold documents
among the top 5) and MRR (reciprocal rank of the first gold document within the top 5, 0 if
none); the extractive answer's reference containment (a reference answer appears in it) and
abstention (on unanswerable questions of the eval set, and on "foreign" questions: another
dataset's questions asked of this corpus); and the latency of POST /v1/query through
the local HTTP server with the extractive generator (p50/p90 of the client's wall time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

# `../shared/datasets/` beside the repository (a worktree sits one level deeper); BENCH_DATASETS overrides.
DATASETS = next(
    (p for p in (Path(os.environ.get("BENCH_DATASETS", "/nonexistent")), ROOT.parent / "shared" / "datasets", ROOT.parent.parent / "shared" / "datasets") if p.is_dir()),
    ROOT.parent / "shared" / "datasets",
)
SQUAD_FILES = {
    "xquad": "xquad/xquad.en.json",
    "jsquad": "jsquad/valid-v1.3.json",
    "jsquad-test": "jsquad/test-v1.3.json",
}
EVAL_DIR = ROOT / "model_artifacts" / "eval"
SAMPLE_CORPUS = ROOT / "model_artifacts" / "sample_documents"
TOP_K = 5


@dataclass
class Question:
    id: str
    question: str
    answers: list[str]
    sources: list[str]
    filters: dict = field(default_factory=dict)


@dataclass
class Dataset:
    name: str
    corpus: Path
    questions: list[Question]
    passages: int


def squad_dataset(name: str, path: Path, work: Path) -> Dataset:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    corpus = work / name / "docs"
    corpus.mkdir(parents=True, exist_ok=True)
    questions: list[Question] = []
    passages = 0
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{a:03d}-{p:03d}.md"
            context = paragraph["context"]
            if " [SEP] " in context[:200]:
                title, context = context.split(" [SEP] ", 1)
                context = f"# {title}\n\n{context}"
            target = corpus / doc_id
            if not target.exists() or target.read_text(encoding="utf-8") != context:
                target.write_text(context, encoding="utf-8")
            passages += 1
            for qa in paragraph["qas"]:
                questions.append(Question(qa["id"], qa["question"], [x["text"] for x in qa["answers"]], [doc_id]))
    return Dataset(name, corpus, questions, passages)


def eval_dataset(path: Path, corpus: Path, split: str) -> Dataset:
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        part = "train" if int(hashlib.sha256(("eval-split:" + row["id"]).encode()).hexdigest(), 16) % 100 < 40 else "test"
        if split != "all" and part != split:
            continue
        questions.append(Question(row["id"], row["question"], list(row["answers"]), list(row["sources"]), dict(row.get("filters") or {})))
    passages = sum(1 for f in corpus.iterdir() if f.is_file() and not f.name.endswith(".metadata.json") and f.name.lower() != "readme.md")
    return Dataset(f"{path.stem} ({split})", corpus, questions, passages)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_dataset(dataset: Dataset, args, cache: Path, foreign: list[Question]) -> dict:
    from local import app, extractive
    from local.embedding import Embedder
    from local.server import LocalServer

    embedder = Embedder()
    index_seconds = []
    for run in range(args.index_runs):
        run_cache = cache / f"{dataset.corpus.parent.name}-{run}-{time.time_ns()}"
        mode = app.LocalMode(app.LocalConfig(documents=dataset.corpus, cache_dir=run_cache), embedder=embedder)
        embedder.embed_one("load the model before timing")
        started = time.perf_counter()
        mode.sync(lambda message: print(f"  {message}", file=sys.stderr) if args.verbose else None)
        index_seconds.append(time.perf_counter() - started)
    index = mode.index()
    print(f"{dataset.name}: {dataset.passages} passages -> {len(index)} chunks in {statistics.median(index_seconds):.1f} s", file=sys.stderr)

    rng = random.Random(args.seed)
    questions = dataset.questions if args.questions is None or args.questions >= len(dataset.questions) else rng.sample(dataset.questions, args.questions)
    answerable = [q for q in questions if q.sources]
    metrics: dict = {"dataset": dataset.name, "passages": dataset.passages, "chunks": len(index), "questions": len(questions),
                     "index_s": round(statistics.median(index_seconds), 2), "index_runs": args.index_runs}
    for name, retrieve in mode.backend.retrievers.items():
        embedder.forget_queries()  # each retriever's latency includes embedding the question
        recall, mrr, latency = [], [], []
        for q in answerable:
            started = time.perf_counter()
            passages = retrieve(question=q.question, top_k=TOP_K, filters=q.filters)
            latency.append((time.perf_counter() - started) * 1000.0)
            ranked = list(dict.fromkeys(p.source for p in passages))
            gold = set(q.sources)
            recall.append(len(gold & set(ranked[:TOP_K])) / len(gold))
            mrr.append(next((1.0 / (i + 1) for i, doc in enumerate(ranked[:TOP_K]) if doc in gold), 0.0))
        metrics[name] = {"recall@5": round(statistics.fmean(recall), 3) if recall else None,
                         "mrr": round(statistics.fmean(mrr), 3) if mrr else None,
                         "retrieve_ms_p50": round(statistics.median(latency), 2) if latency else None}

    # the extractive answers, through the query service (no HTTP): containment and abstention
    from query import prompts

    generator = mode.backend.generators["extractive"]
    sample = questions[: args.answer_questions]
    contains, abstained_unanswerable, abstained_answerable = [], [], []
    for q in sample:
        passages = mode.backend.retrievers["opensearch"](question=q.question, top_k=TOP_K, filters=q.filters)
        text = generator.generate(prompts.rag_prompt(q.question, passages), question=q.question, passages=passages, max_tokens=512, temperature=0.0).text
        idk = text == extractive.IDK
        if q.answers:
            contains.append(any(a.lower() in text.lower() for a in q.answers))
            abstained_answerable.append(idk)
        else:
            abstained_unanswerable.append(idk)
    foreign_idk = []
    for q in random.Random(args.seed).sample(foreign, min(len(foreign), args.answer_questions)):
        passages = mode.backend.retrievers["opensearch"](question=q.question, top_k=TOP_K, filters={})
        text = generator.generate(prompts.rag_prompt(q.question, passages), question=q.question, passages=passages, max_tokens=512, temperature=0.0).text
        foreign_idk.append(text == extractive.IDK)
    metrics["extractive"] = {
        "questions": len(sample),
        "abstains_on_foreign": round(statistics.fmean(foreign_idk), 3) if foreign_idk else None,
        "contains_reference": round(statistics.fmean(contains), 3) if contains else None,
        "abstains_when_answerable": round(statistics.fmean(abstained_answerable), 3) if abstained_answerable else None,
        "abstains_when_unanswerable": round(statistics.fmean(abstained_unanswerable), 3) if abstained_unanswerable else None,
    }

    # latency of the whole path: HTTP -> handler -> retrieve -> extractive -> JSON
    with LocalServer(mode, 0, log=None) as server:
        for retriever in ("kb", "opensearch"):
            embedder.forget_queries()
            wall = []
            for q in questions[: args.latency_queries]:
                body = json.dumps({"question": q.question, "retriever": retriever, "generator": "extractive"}).encode()
                request = urllib.request.Request(server.url + "/v1/query", data=body, method="POST", headers={"Content-Type": "application/json"})
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                wall.append((time.perf_counter() - started) * 1000.0)
            metrics[f"query_ms_{retriever}"] = {"p50": round(statistics.median(wall), 1), "p90": round(_percentile(wall, 0.9), 1), "n": len(wall)}
    return metrics


def datasets_from(args, work: Path) -> list[Dataset]:
    chosen: list[Dataset] = []
    for name in args.datasets:
        if name == "eval":
            files = [args.eval_set] if args.eval_set else sorted(EVAL_DIR.glob("*.jsonl")) if EVAL_DIR.is_dir() else []
            if not files:
                print("eval: no eval set under model_artifacts/eval/ yet: skipped", file=sys.stderr)
            for path in files:
                corpus = args.corpus or SAMPLE_CORPUS
                split = args.split or ("test" if path.parent == EVAL_DIR or path.name == "osfc.jsonl" else "all")
                chosen.append(eval_dataset(Path(path), Path(corpus), split))
        else:
            path = DATASETS / SQUAD_FILES[name]
            if not path.is_file():
                raise SystemExit(f"{path}: not found (the shared datasets folder); pick other --datasets")
            chosen.append(squad_dataset(name, path, work))
    return chosen


def foreign_questions(chosen: list[Dataset], i: int) -> list[Question]:
    """Questions this corpus cannot answer: the next dataset's of another family (JSQuAD's
    validation and test splits share a domain, so one is never foreign to the other)."""
    family = chosen[i].name.split("-")[0].split(" ")[0]
    for step in range(1, len(chosen)):
        other = chosen[(i + step) % len(chosen)]
        if other.name.split("-")[0].split(" ")[0] != family:
            return other.questions
    return []


def print_table(results: list[dict]) -> None:
    print(f"{'dataset':<22} {'passages':>8} {'index s':>8} {'kb R@5':>7} {'kb MRR':>7} {'hyb R@5':>8} {'hyb MRR':>8} {'contains':>9} {'IDK foreign':>12} {'p50 ms kb':>10} {'p50 ms hyb':>11}")
    for r in results:
        print(
            f"{r['dataset']:<22} {r['passages']:>8} {r['index_s']:>8} {r['kb']['recall@5']!s:>7} {r['kb']['mrr']!s:>7} "
            f"{r['opensearch']['recall@5']!s:>8} {r['opensearch']['mrr']!s:>8} {r['extractive']['contains_reference']!s:>9} "
            f"{r['extractive']['abstains_on_foreign']!s:>12} "
            f"{r['query_ms_kb']['p50']:>10} {r['query_ms_opensearch']['p50']:>11}"
        )


# --- the store choice ---


def bench_stores(args) -> None:
    """Vector search: numpy brute force against HNSW libraries (if installed); BM25: the in-memory
    postings against SQLite FTS5. Medians of `--repeat` timings; synthetic unit vectors."""
    import sqlite3

    import numpy as np

    from local.embedding import limit_blas_threads

    limit_blas_threads(1)  # as local mode runs (see local/embedding.py)
    rng = np.random.default_rng(0)
    print("vector top-5 search, 512 dims, median ms per query (one BLAS thread)")
    for n in (1_000, 10_000, 100_000):
        vectors = rng.standard_normal((n, 512), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = vectors[rng.integers(0, n, 50)] + 0.01
        row = {"brute force (numpy)": _time_queries(lambda q: np.argpartition(-(vectors @ q), 5)[:5], queries)}
        try:
            from usearch.index import Index as UIndex

            started = time.perf_counter()
            uindex = UIndex(ndim=512, metric="cos")
            uindex.add(np.arange(n), vectors)
            build = time.perf_counter() - started
            row[f"usearch HNSW (build {build:.1f} s)"] = _time_queries(lambda q: uindex.search(q, 5), queries)
        except ImportError:
            pass
        try:
            import faiss

            started = time.perf_counter()
            findex = faiss.IndexHNSWFlat(512, 16, faiss.METRIC_INNER_PRODUCT)
            findex.add(vectors)
            build = time.perf_counter() - started
            row[f"faiss HNSW (build {build:.1f} s)"] = _time_queries(lambda q: findex.search(q[None, :], 5), queries)
            flat = faiss.IndexFlatIP(512)
            flat.add(vectors)
            row["faiss flat"] = _time_queries(lambda q: flat.search(q[None, :], 5), queries)
        except ImportError:
            pass
        try:
            import hnswlib

            started = time.perf_counter()
            hindex = hnswlib.Index(space="cosine", dim=512)
            hindex.init_index(max_elements=n, ef_construction=100, M=16)
            hindex.add_items(vectors)
            build = time.perf_counter() - started
            row[f"hnswlib (build {build:.1f} s)"] = _time_queries(lambda q: hindex.knn_query(q, k=5), queries)
        except ImportError:
            pass
        print(f"  n={n:>7}: " + "; ".join(f"{k} {v:.2f}" for k, v in row.items()))

    from local import text as textlib
    from local.store import Index

    data = json.loads((DATASETS / SQUAD_FILES["jsquad"]).read_text(encoding="utf-8"))["data"]
    texts = [p["context"] for a in data for p in a["paragraphs"]]
    questions = [qa["question"] for a in data for p in a["paragraphs"] for qa in p["qas"]][:200]
    started = time.perf_counter()
    index = Index(doc_ids=["d"], doc_metadata=[{}], chunk_docs=["d"] * len(texts), chunk_seqs=list(range(len(texts))),
                  chunk_texts=texts, vectors=np.zeros((len(texts), 512), np.float32), sentence_vectors={})
    build = time.perf_counter() - started
    memory = _time_queries(lambda q: index.bm25_hits(textlib.terms(q), 5), questions)
    db = sqlite3.connect(":memory:")
    started = time.perf_counter()
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='trigram')")
    db.executemany("INSERT INTO t(body) VALUES (?)", [(t,) for t in texts])
    fts_build = time.perf_counter() - started

    def fts(q):
        grams = {q[i : i + 3] for i in range(len(q) - 2) if '"' not in q[i : i + 3]}
        return db.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT 5", (" OR ".join(f'"{g}"' for g in grams),)).fetchall()

    fts_ms = _time_queries(fts, questions)
    print(f"BM25 top-5 over JSQuAD's {len(texts)} passages, median ms per query: in-memory postings (bigrams) {memory:.2f} "
          f"(build {build:.2f} s); SQLite FTS5 trigram {fts_ms:.2f} (build {fts_build:.2f} s)")


def _time_queries(search, queries) -> float:
    timings = []
    for q in queries:
        started = time.perf_counter()
        search(q)
        timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=("retrieval", "stores"), default="retrieval")
    parser.add_argument("--datasets", default="xquad,jsquad,eval", help="comma-separated: xquad, jsquad, jsquad-test, eval")
    parser.add_argument("--eval-set", type=Path, help="an eval set (JSON Lines, model_artifacts/eval/README.md) instead of model_artifacts/eval/*.jsonl")
    parser.add_argument("--corpus", type=Path, help="the eval set's corpus folder (default: model_artifacts/sample_documents)")
    parser.add_argument("--split", choices=("test", "train", "all"), help="eval set part (default: test for the shipped set)")
    parser.add_argument("--questions", type=int, help="a seeded sample of this many questions per dataset (default: all)")
    parser.add_argument("--answer-questions", type=int, default=300, help="questions answered by the extractive generator")
    parser.add_argument("--latency-queries", type=int, default=200, help="HTTP queries timed per retriever")
    parser.add_argument("--index-runs", type=int, default=1, help="fresh indexing runs per dataset (median reported)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--verbose", action="store_true", help="show indexing progress")
    args = parser.parse_args(argv)
    if args.command == "stores":
        bench_stores(args)
        return 0
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(args.datasets) - set(SQUAD_FILES) - {"eval"})
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; known: {', '.join([*SQUAD_FILES, 'eval'])}")
    import local  # noqa: F401  (puts lambda/ on the path)

    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        work = Path(tmp)
        chosen = datasets_from(args, work)
        results = [run_dataset(d, args, work / "cache", foreign_questions(chosen, i)) for i, d in enumerate(chosen)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
