"""`scripts/evaluate.py`: run an eval set against a target, report, compare runs, convert and export.

    evaluate.py run --url http://127.0.0.1:8787                  # the shipped set's test part, local server
    evaluate.py run --stage dev --load-corpus                     # a deployed stage (SigV4), corpus uploaded first
    evaluate.py run --eval-set ../shared/datasets/xquad/xquad.en.json --url ...   # any SQuAD-format file
    evaluate.py report build/eval/RUN                             # re-render a run's reports from results.jsonl
    evaluate.py compare build/eval/BASE build/eval/NEW --metric f1 --max-drop 0.02   # CI gate (exit 1)
    evaluate.py convert FILE.json --out DIR                        # SQuAD format -> corpus + eval set
    evaluate.py validate EVAL.jsonl [--corpus DIR]                 # file:line problems, then the set's make-up
    evaluate.py training-data                                      # the shipped set's training part -> fine-tuning JSONL
    evaluate.py export-bedrock build/eval/RUN                      # Bedrock RAG evaluation datasets (your own responses)

Every expected mistake (bad file, unknown option, no credentials, unreachable target) ends with one
line on stderr and exit status 2; `compare` exits 1 when the gate fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from . import bedrock_export, compare as compare_mod, cost, report, runner, scoring, shipped, squad, stats
from .client import Target, TargetError
from .evalset import EvalSetError, Question, check_sources, load_corpus, load_eval_set
from .judge import Judge, JudgeError, check_family

ROOT = shipped.ROOT
DEFAULT_OUT = ROOT / "build" / "eval"
DEFAULT_CACHE = ROOT / "build" / "eval-cache"


class UsageError(Exception):
    """A wrong command line: one line for people."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        raise UsageError(f"{message} (see {self.prog} --help)")


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = commands.add_parser("run", help="ask every question in every configuration and report")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--stage", help="a deployed stage (reads ApiUrl of Rag<Stage>-Serving, signs with SigV4)")
    where.add_argument("--url", help="any query API, e.g. the local server http://127.0.0.1:8787 (no signing)")
    run.add_argument("--eval-set", type=Path, default=shipped.EVAL_SET, help="JSON Lines eval set or a SQuAD-format .json (default: the shipped set)")
    run.add_argument("--corpus", type=Path, help="the corpus folder (default: the shipped documents, or the converted SQuAD corpus)")
    run.add_argument("--split", choices=shipped.SPLITS, help="which part of the set (default: test for the shipped set, all otherwise)")
    run.add_argument("--limit", type=int, help="only the first N questions (a quick look)")
    run.add_argument("--modes", type=_csv, default=list(runner.MODES), help="comma list of prompt,rag,kb")
    run.add_argument("--retrievers", type=_csv, default=list(runner.RETRIEVERS), help="comma list of kb,opensearch")
    run.add_argument("--generators", type=_csv, help="comma list (default: every available generator of the target)")
    run.add_argument("--top-k", type=int, default=5)
    run.add_argument("--collection", help="filter retrieval to this metadata collection (default with --stage: eval-<set name>)")
    run.add_argument("--load-corpus", action="store_true", help="--stage only: upload the corpus under its own prefix and wait for ingestion")
    run.add_argument("--ingestion-timeout", type=float, default=1800.0, help="seconds to wait for ingestion (default 1800)")
    run.add_argument("--concurrency", type=int, default=4, help="questions in flight at once (default 4)")
    run.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer (default 60)")
    run.add_argument("--out", type=Path, help="the run folder (default build/eval/<time>-<set>)")
    run.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="answer cache folder (default build/eval-cache)")
    run.add_argument("--no-cache", action="store_true", help="ask everything again (and cache nothing)")
    run.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (default 1000)")
    run.add_argument("--seed", type=int, default=13)
    run.add_argument("--judge", metavar="BEDROCK_MODEL_ID", help="optional LLM-as-judge (off by default), e.g. anthropic.claude-3-haiku-20240307-v1:0")
    run.add_argument("--profile", help="AWS profile (--stage, --judge)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = commands.add_parser("report", help="re-render a run's summary and reports from its results.jsonl")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--resamples", type=int)
    rep.add_argument("--seed", type=int)

    cmp_ = commands.add_parser("compare", help="exit 1 when a metric of CANDIDATE is worse than BASELINE by more than a threshold")
    cmp_.add_argument("baseline", type=Path)
    cmp_.add_argument("candidate", type=Path)
    cmp_.add_argument("--metric", default="f1")
    cmp_.add_argument("--max-drop", type=float, default=0.02)
    cmp_.add_argument("--relative", action="store_true", help="--max-drop is a fraction of the baseline value")

    conv = commands.add_parser("convert", help="SQuAD-format file -> corpus folder + eval set")
    conv.add_argument("squad_file", type=Path)
    conv.add_argument("--out", type=Path, required=True)
    conv.add_argument("--name")
    conv.add_argument("--lang")
    conv.add_argument("--articles", type=int, help="only the first N articles")

    val = commands.add_parser("validate", help="check an eval set (and its corpus) and describe it")
    val.add_argument("eval_set", type=Path)
    val.add_argument("--corpus", type=Path)

    train = commands.add_parser("training-data", help="write the shipped set's training part as fine-tuning data")
    train.add_argument("--out", type=Path, default=shipped.TRAINING_DATA)
    train.add_argument("--check", action="store_true", help="exit 1 when the file is not what the generator writes")

    exp = commands.add_parser("export-bedrock", help="write a run's answers as Bedrock RAG evaluation datasets")
    exp.add_argument("run_dir", type=Path)
    exp.add_argument("--out", type=Path, help="default: <run>/bedrock")
    exp.add_argument("--dataset-prefix", default="s3://<BUCKET>/bedrock-evaluation/input/", help="S3 prefix the datasets will be uploaded to")
    return parser


# --- eval set loading ---------------------------------------------------------------------------
def load_set(eval_set: Path, corpus: Path | None, work: Path) -> tuple[list[Question], Path, str]:
    """(questions, corpus folder, set name); a SQuAD .json is converted into `work` first."""
    if eval_set.suffix.lower() == ".json":
        converted = squad.convert(eval_set, work / "converted")
        questions = load_eval_set(converted.eval_set)
        corpus = corpus or converted.corpus
        name = eval_set.stem
    else:
        questions = load_eval_set(eval_set)
        name = eval_set.stem
        if corpus is None:
            if eval_set.resolve() == shipped.EVAL_SET.resolve():
                corpus = shipped.CORPUS
            else:
                raise UsageError(f"--corpus is required with {eval_set} (the folder of the documents its sources name)")
    check_sources(questions, load_corpus(corpus), eval_set)
    return questions, corpus, name


def _is_shipped(eval_set: Path) -> bool:
    return eval_set.resolve() == shipped.EVAL_SET.resolve()


# --- run ----------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    cpu_started = time.process_time()
    started = datetime.now(timezone.utc)
    if args.load_corpus and not args.stage:
        raise UsageError("--load-corpus needs --stage (a local server indexes its own documents folder)")
    for name, allowed, given in (("--modes", runner.MODES, args.modes), ("--retrievers", runner.RETRIEVERS, args.retrievers)):
        unknown = [v for v in given if v not in allowed]
        if unknown or not given:
            raise UsageError(f"{name}: {', '.join(unknown) or 'empty'} not allowed; choose from {','.join(allowed)}")
    if args.concurrency < 1 or args.top_k < 1 or (args.limit is not None and args.limit < 1) or args.resamples < 0:
        raise UsageError("--concurrency, --top-k and --limit must be at least 1, --resamples at least 0")
    out = args.out or DEFAULT_OUT / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{args.eval_set.stem}"
    out.mkdir(parents=True, exist_ok=True)
    questions, corpus_dir, set_name = load_set(args.eval_set, args.corpus, out)
    split = args.split or ("test" if _is_shipped(args.eval_set) else "all")
    questions = shipped.select(questions, split)[: args.limit] if args.limit else shipped.select(questions, split)
    if not questions:
        raise UsageError(f"no questions in the {split} part of {args.eval_set}")
    collection = args.collection
    stage_cfg = None
    aws = None
    if args.stage:
        from . import stage as stage_mod

        stage_cfg = _stage_config(args.stage)
        aws = stage_mod.session(args.profile)
        api_url, signer = stage_mod.api_target_args(aws, args.stage)
        collection = collection or (shipped.COLLECTION if _is_shipped(args.eval_set) else f"eval-{set_name}")
        if args.load_corpus:
            stage_mod.load_corpus(aws, args.stage, load_corpus(corpus_dir), collection, timeout_s=args.ingestion_timeout,
                                  log=lambda line: print(line, file=sys.stderr))
        target = Target(api_url, signer=signer, timeout_s=args.timeout)
        target_label = f"stage {args.stage}"
    else:
        target = Target(args.url, timeout_s=args.timeout)
        target_label = target.base
    health = target.health()
    configs, skipped = runner.plan(health, modes=args.modes, retrievers=args.retrievers, generators=args.generators)
    judge = _judge(args, health, aws) if args.judge else None
    if not configs:
        raise TargetError("nothing to evaluate: " + "; ".join(f"{s.key}: {s.reason}" for s in skipped))
    print(f"{len(questions)} questions x {len(configs)} configurations against {target_label}: "
          + ", ".join(c.key for c in configs), file=sys.stderr)
    cache = runner.AnswerCache(None if args.no_cache else args.cache)
    progress = runner.Progress(len(questions) * len(configs), enabled=not args.quiet)
    try:
        rows, refused, run_stats = runner.execute(questions, configs, target=target, health=health, cache=cache, top_k=args.top_k,
                                                  collection=collection, concurrency=args.concurrency, progress=progress)
    finally:
        progress.close()
    if judge is not None:
        _run_judge(judge, rows, cache, args.concurrency, quiet=args.quiet)
    meta = {
        "eval_set": str(args.eval_set), "eval_set_name": set_name, "corpus": str(corpus_dir), "split": split,
        "questions": len(questions), "target": target_label, "target_url": target.base, "collection": collection,
        "started": started.strftime("%Y-%m-%d %H:%M:%SZ"), "seed": args.seed, "resamples": args.resamples, "top_k": args.top_k,
        "k_values": [k for k in scoring.K_VALUES if k <= args.top_k], "judge": args.judge, "calls": run_stats.calls,
        "cached": run_stats.cached, "health": health, "concurrency": args.concurrency,
    }
    summary = finish(out, rows, meta, skipped=[*skipped, *refused], stage_cfg=stage_cfg, health=health)
    cpu = time.process_time() - cpu_started
    summary["run"]["overhead"] = {"harness_cpu_s": round(cpu, 3), "call_s": round(run_stats.call_seconds, 3),
                                  "ratio": round(cpu / run_stats.call_seconds, 4) if run_stats.call_seconds else None}
    _write_reports(out, summary, rows)
    failed = sum(1 for row in rows if row.get("error"))
    print(f"{len(rows)} answers ({run_stats.calls} asked, {run_stats.cached} cached, {failed} failed) -> {out}/report.html", file=sys.stderr)
    return 0


def _stage_config(stage: str):
    from stacks.config import ConfigError

    if stage == "all":
        raise UsageError("--stage all: evaluate one stage at a time (e.g. --stage dev)")
    try:
        return cost.stage_config(stage)
    except ConfigError as error:
        raise UsageError(f"--stage {stage}: {error}") from None


def finish(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any], *, skipped: Sequence, stage_cfg=None,
           health: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores and prices every row, summarises each configuration, writes results.jsonl; returns the summary."""
    k_values = meta.get("k_values") or list(scoring.K_VALUES)
    model = cost.cost_model_for(stage_cfg)
    questions: dict[str, Question] = {}
    for row in rows:
        q = Question(id=row["question_id"], question=row["question"], answers=tuple(row.get("references") or ()),
                     sources=tuple(row.get("gold_sources") or ()), tags=tuple(row.get("tags") or ()), lang=row.get("lang"))
        questions[q.id] = q
        row["scores"] = scoring.score(q, row, k_values)
        row["cost_usd"], row["cost_estimated"] = (None, False) if row["scores"].get("error") else model.query_cost(row)
    table = scoring.metric_table(k_values, judge=bool(meta.get("judge")))
    configurations = []
    for key in dict.fromkeys(row["config"] for row in rows):
        members = [row for row in rows if row["config"] == key]
        first = next((row["response"] for row in members if row.get("response")), {}) or {}
        configurations.append({
            "key": key, "mode": members[0]["mode"], "retriever": members[0]["retriever"], "generator": members[0]["generator"],
            "model": first.get("model"), "model_version": first.get("model_version"), "n": len(members),
            "errors": sum(1 for row in members if row.get("error")),
            "metrics": scoring.summarize(members, table, config_key=key, seed=meta["seed"], resamples=meta["resamples"]),
            "breakdown": scoring.breakdown(members, questions),
        })
    report.write_results(out / "results.jsonl", rows)
    import pricing

    meta = {"finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"), **meta, "prices_checked": pricing.checked()}
    return {
        "run": meta,
        "configurations": configurations,
        "skipped": [{"key": s.key, "reason": s.reason} if hasattr(s, "key") else s for s in skipped],
        "fixed_cost_per_hour": cost.fixed_cost_per_hour(stage_cfg, health),
    }


def _write_reports(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report.markdown(summary), encoding="utf-8")
    (out / "report.html").write_text(report.html_report(summary, rows), encoding="utf-8")


def _judge(args, health: dict[str, Any], aws) -> Judge:
    generators = health.get("generators") if isinstance(health.get("generators"), dict) else {}
    models = [str(g.get("model")) for g in generators.values() if isinstance(g, dict) and g.get("model")]
    if health.get("model"):
        models.append(str(health["model"]))
    check_family(args.judge, models)
    if aws is None:
        from . import stage as stage_mod

        aws = stage_mod.session(args.profile)
    return Judge(aws.client("bedrock-runtime"), args.judge)


def _run_judge(judge: Judge, rows: list[dict[str, Any]], cache: runner.AnswerCache, concurrency: int, *, quiet: bool) -> None:
    todo = [row for row in rows if row.get("response") and not row.get("error")]
    judge_config = runner.Configuration("judge", None, judge.model_id.replace(":", "_"))
    progress = runner.Progress(len(todo), label="judged", enabled=not quiet)

    def grade(row: dict[str, Any]) -> None:
        key = hashlib.sha256(json.dumps([judge.model_id, row["question"], row.get("references"), row["response"].get("answer"),
                                         [c.get("excerpt") for c in row["response"].get("citations") or []]],
                                        ensure_ascii=False).encode()).hexdigest()
        hit = cache.get("judge", judge_config, key)
        if hit is not None:
            row["judge"] = hit["judge"]
        else:
            try:
                row["judge"] = judge.grade(row)
                cache.put("judge", judge_config, key, {"judge": row["judge"]})
            except Exception as error:  # a judge failure must not lose the run: it is recorded per answer
                row["judge"] = {"error": f"{type(error).__name__}: {error}"}
        progress.advance(cached=hit is not None, failed="error" in row["judge"])

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(grade, todo))
    finally:
        progress.close()


# --- other commands -----------------------------------------------------------------------------
def cmd_report(args) -> int:
    summary = compare_mod.load_summary(args.run_dir)
    path = args.run_dir / "results.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: missing (give a run folder written by `evaluate.py run`)")
    rows = report.read_results(path)
    meta = dict(summary["run"])
    meta["resamples"] = args.resamples if args.resamples is not None else meta["resamples"]
    meta["seed"] = args.seed if args.seed is not None else meta["seed"]
    stage_cfg = _stage_config(meta["target"].split(" ", 1)[1]) if meta["target"].startswith("stage ") else None
    new = finish(args.run_dir, rows, meta, skipped=summary.get("skipped", []), stage_cfg=stage_cfg, health=meta.get("health"))
    _write_reports(args.run_dir, new, rows)
    print(f"{args.run_dir}/report.html", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    changes = compare_mod.compare(compare_mod.load_summary(args.baseline), compare_mod.load_summary(args.candidate),
                                  metric=args.metric, max_drop=args.max_drop, relative=args.relative)
    print(compare_mod.render(changes, args.metric, args.max_drop, args.relative))
    return 1 if any(change.failed for change in changes) else 0


def cmd_convert(args) -> int:
    result = squad.convert(args.squad_file, args.out, name=args.name, lang=args.lang, articles=args.articles)
    print(f"{result.documents} documents in {result.corpus}, {result.questions} questions ({result.unanswerable} unanswerable) "
          f"in {result.eval_set}; attribution in {args.out / 'ATTRIBUTION.md'}")
    return 0


def cmd_validate(args) -> int:
    questions = load_eval_set(args.eval_set)
    corpus_dir = args.corpus or (shipped.CORPUS if _is_shipped(args.eval_set) else None)
    if corpus_dir is None:
        print(f"{args.eval_set}: {len(questions)} valid questions (give --corpus to check their sources)")
        return 0
    corpus = load_corpus(corpus_dir)
    check_sources(questions, corpus, args.eval_set)
    description = stats.describe(questions, corpus)
    if _is_shipped(args.eval_set):
        description["split"] = {split: len(shipped.select(questions, split)) for split in ("train", "test")}
    print(json.dumps(description, indent=2, ensure_ascii=False))
    return 0


def cmd_training_data(args) -> int:
    questions = shipped.select(load_eval_set(shipped.EVAL_SET), "train")
    records = shipped.training_records(questions, load_corpus(shipped.CORPUS))
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run `scripts/evaluate.py training-data` and commit it", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date ({len(records)} records)")
        return 0
    shipped.write_training_data(args.out, records)
    print(f"{len(records)} records from {len(questions)} training questions and the corpus -> {args.out}")
    return 0


def cmd_export(args) -> int:
    path = args.run_dir / "results.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: missing (give a run folder written by `evaluate.py run`)")
    out = args.out or args.run_dir / "bedrock"
    written = bedrock_export.export(report.read_results(path), out, run_name=args.run_dir.name, dataset_prefix=args.dataset_prefix)
    if not written:
        raise UsageError(f"{args.run_dir}: no answered rag or kb question to export")
    print(f"{len(written) // 2} datasets and job requests in {out}")
    return 0


COMMANDS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "convert": cmd_convert, "validate": cmd_validate,
            "training-data": cmd_training_data, "export-bedrock": cmd_export}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not args.command:
            raise UsageError("name a command: " + ", ".join(COMMANDS) + " (see evaluate.py --help)")
        return COMMANDS[args.command](args)
    except EvalSetError as error:
        for problem in error.problems[:20]:
            print(f"error: {problem}", file=sys.stderr)
        if len(error.problems) > 20:
            print(f"error: ... and {len(error.problems) - 20} more", file=sys.stderr)
        return 2
    except (UsageError, TargetError, JudgeError, compare_mod.CompareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the answers received so far are cached; run the same command again to resume", file=sys.stderr)
        return 130
