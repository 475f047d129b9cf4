"""The configuration matrix, the requests it sends, and the answer cache across runs, against an
in-process target (no HTTP): what is asked, what is skipped and why, what a re-run pays for."""

from __future__ import annotations

import json

import pytest

from evaluation import runner
from evaluation.client import Reply, TargetError
from evaluation.evalset import Question
from evaluation.runner import AnswerCache, Configuration, Skipped

Q1 = Question(id="q1", question="How fast?", answers=("26 knots",), sources=("fast.md",), filters={"category": "fleet"}, tags=("t",), lang="en")
Q2 = Question(id="q2", question="Cabin price?", answers=(), sources=())


class FakeTarget:
    """Answers from `answer(body)`; counts the calls."""

    base = "http://127.0.0.1:8787/v1/"

    def __init__(self, answer=None):
        self.bodies: list[dict] = []
        self.answer = answer or (lambda body: Reply(200, {"answer": f"about {body['question']}", "request_id": "r-1"}, 12.34, 1, 0.0))

    def query(self, body):
        self.bodies.append(body)
        return self.answer(body)


HEALTH = {"status": "ok", "prompt_version": "p1", "generators": {"extractive": {"available": True, "model": "local:extractive", "version": "1"}}}


def test_the_matrix_skips_with_the_targets_reasons():
    health = {"status": "ok", "generators": {"base": {"available": True}, "finetuned": {"available": False}, "odd": "yes",
                                             "bedrock": {"available": False, "reason": "no Bedrock access"}},
              "modes": ["rag", "prompt"], "retrievers": ["opensearch"]}
    configs, skipped = runner.plan(health, generators=["base", "finetuned", "odd", "gpt"])
    assert [c.key for c in configs] == ["prompt/-/base", "rag/opensearch/base"]
    assert skipped == [
        Skipped("*/*/gpt", "the target has no generator 'gpt' (it has: base, finetuned, odd, bedrock)"),
        Skipped("*/*/finetuned", "generator 'finetuned' is not available"),
        Skipped("*/*/odd", "generator 'odd' is not available"),
        Skipped("kb/*/*", "the target does not offer mode 'kb' (it offers: rag, prompt)"),
        Skipped("rag/kb/*", "the target does not offer retriever 'kb'"),
    ]
    # mode kb needs the generator bedrock: said once, and not again when bedrock is already skipped
    configs, skipped = runner.plan({"generators": {"base": {"available": True}}}, modes=["kb"])
    assert configs == [] and skipped == [Skipped("kb/kb/bedrock", "mode kb needs the generator 'bedrock', which the target does not list")]
    configs, skipped = runner.plan(health, modes=["kb"])
    assert configs == [] and [s.key for s in skipped] == ["*/*/finetuned", "*/*/odd", "*/*/bedrock", "kb/*/*", "rag/kb/*"]
    configs, _ = runner.plan({"generators": {"bedrock": {"available": True}}}, modes=["kb", "prompt"])
    assert configs == [Configuration("kb", "kb", "bedrock"), Configuration("prompt", None, "bedrock")]
    assert runner.plan({"generators": {}}, modes=["prompt"], retrievers=["kb"])[0] == [Configuration("prompt", None, None)]


@pytest.mark.parametrize("config, collection, send_generator, body", [
    (Configuration("prompt", None, "base"), "eval-x", True, {"question": "How fast?", "mode": "prompt", "generator": "base"}),
    (Configuration("rag", "kb", "base"), "eval-x", True, {"question": "How fast?", "mode": "rag", "retriever": "kb", "top_k": 3,
                                                            "filters": {"category": "fleet", "collection": "eval-x"}, "generator": "base"}),
    (Configuration("rag", "opensearch", "base"), None, False, {"question": "How fast?", "mode": "rag", "retriever": "opensearch", "top_k": 3,
                                                                "filters": {"category": "fleet"}}),
    (Configuration("kb", "kb", None), "eval-x", True, {"question": "How fast?", "mode": "kb", "top_k": 3,
                                                        "filters": {"category": "fleet", "collection": "eval-x"}}),
])
def test_the_request_of_each_configuration(config, collection, send_generator, body):
    assert config.body(Q1, top_k=3, collection=collection, send_generator=send_generator) == body
    assert Q1.filters == {"category": "fleet"}  # the question's own filters are not changed
    assert "filters" not in Configuration("rag", "kb", "x").body(Q2, top_k=3, collection=None, send_generator=True)


def test_keys_and_cache_file_names():
    assert Configuration("rag", "kb", "fine:tuned v2").key == "rag/kb/fine:tuned v2"
    assert Configuration("rag", "kb", "fine:tuned v2").slug == "rag-kb-fine-tuned-v2"
    assert Configuration("prompt", None, None).key == "prompt/-/default" and Configuration("prompt", None, None).slug == "prompt---default"
    assert Configuration("judge", None, "a/b").slug == "judge---a-b"


def test_identity_is_what_answers():
    config = Configuration("rag", "kb", "extractive")
    assert runner.identity(HEALTH, "http://t/v1/", config) == {"target": "http://t/v1/", "prompt_version": "p1", "model": "local:extractive",
                                                               "version": "1", "default": None}
    default = {"status": "ok", "default_generator": "extractive", "model": "m", "prompt_version": "p2"}
    assert runner.identity(default, "b", Configuration("rag", "kb", None)) == {
        "target": "b", "prompt_version": "p2", "model": None, "version": None,
        "default": {"default_generator": "extractive", "generator": None, "model": "m"}}
    assert runner.identity({"generators": {"x": "up"}}, "b", Configuration("rag", "kb", "x"))["model"] is None


def _run(target, cache, *, health=HEALTH, configs=None, questions=(Q1, Q2)):
    configs = configs or runner.plan(health, modes=["rag", "prompt"], retrievers=["kb"])[0]
    return runner.execute(list(questions), configs, target=target, health=health, cache=cache, top_k=5, collection="eval-x", concurrency=1,
                          target_key="t")


def test_a_rerun_pays_only_for_what_is_missing_or_stale(tmp_path):
    target = FakeTarget()
    rows, skipped, stats = _run(target, AnswerCache(tmp_path))
    assert skipped == [] and (stats.calls, stats.cached) == (4, 0) and stats.call_seconds == pytest.approx(4 * 0.01234)
    assert [(r["config"], r["question_id"], r["cached"]) for r in rows] == [
        ("rag/kb/extractive", "q1", False), ("prompt/-/extractive", "q1", False), ("rag/kb/extractive", "q2", False),
        ("prompt/-/extractive", "q2", False)]
    first = rows[0]
    assert {k: first[k] for k in ("mode", "retriever", "generator", "question", "lang", "tags", "references", "gold_sources", "status",
                                  "error", "elapsed_ms", "attempts", "waited_ms", "request_id")} == {
        "mode": "rag", "retriever": "kb", "generator": "extractive", "question": "How fast?", "lang": "en", "tags": ["t"],
        "references": ["26 knots"], "gold_sources": ["fast.md"], "status": 200, "error": None, "elapsed_ms": 12.3, "attempts": 1,
        "waited_ms": 0.0, "request_id": "r-1"}
    assert first["response"] == {"answer": "about How fast?", "request_id": "r-1"} and first["request"]["generator"] == "extractive"
    # a new cache object on the same folder: everything from the files, nothing asked
    rows, _, stats = _run(target, AnswerCache(tmp_path))
    assert (stats.calls, stats.cached, len(target.bodies)) == (0, 4, 4) and all(r["cached"] for r in rows)
    # a new prompt version or model version makes the answers stale
    for changed in ({**HEALTH, "prompt_version": "p2"},
                    {**HEALTH, "generators": {"extractive": {"available": True, "model": "local:extractive", "version": "2"}}}):
        target.bodies.clear()
        _, _, stats = _run(target, AnswerCache(tmp_path), health=changed)
        assert stats.calls == 4 and len(target.bodies) == 4


def test_failed_answers_are_not_cached_and_a_cut_line_is_asked_again(tmp_path):
    flaky = FakeTarget(lambda body: Reply(502, {"message": "bad gateway"}, 5.0, 2, 1500.04, headers={"x-request-id": "gw-1"}))
    rows, _, stats = _run(flaky, AnswerCache(tmp_path), questions=[Q1])
    assert [(r["status"], r["error"], r["response"], r["request_id"], r["waited_ms"], r["attempts"]) for r in rows] == [
        (502, "HTTP 502: bad gateway", None, "gw-1", 1500.0, 2)] * 2
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir())
    good = FakeTarget()
    _run(good, AnswerCache(tmp_path), questions=[Q1])
    path = tmp_path / "t" / "rag-kb-extractive.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == 200
    path.write_text(lines[0][:40] + "\n" + "[]\n" + '{"no": "key"}\n', encoding="utf-8")  # a crash cut the line
    good.bodies.clear()
    _, _, stats = _run(good, AnswerCache(tmp_path), questions=[Q1])
    assert (stats.calls, stats.cached) == (1, 1)


def test_no_cache_folder_asks_everything_and_writes_nothing(tmp_path):
    cache = AnswerCache(None)
    assert cache.get("t", Configuration("rag", "kb", None), "k") is None
    cache.put("t", Configuration("rag", "kb", None), "k", {"status": 200})
    assert cache.get("t", Configuration("rag", "kb", None), "k") is None
    target = FakeTarget()
    _run(target, cache)
    _, _, stats = _run(target, cache)
    assert stats.calls == 4 and list(tmp_path.iterdir()) == []


def test_a_refused_configuration_is_skipped_after_its_first_answer(tmp_path):
    def answer(body):
        if body["mode"] == "rag":
            return Reply(400, {"message": "retriever 'kb' is not configured", "field": "retriever"}, 1.0)
        return Reply(200, {"answer": "x"}, 1.0)

    target = FakeTarget(answer)
    progress = runner.Progress(4, enabled=False)
    rows, skipped, stats = runner.execute([Q1, Q2], runner.plan(HEALTH, modes=["rag", "prompt"], retrievers=["kb"])[0], target=target,
                                          health=HEALTH, cache=AnswerCache(tmp_path), top_k=5, collection=None, concurrency=1,
                                          progress=progress)
    assert [r["config"] for r in rows] == ["prompt/-/extractive", "prompt/-/extractive"]
    assert skipped == [Skipped("rag/kb/extractive", "the target refused it: HTTP 400: retriever 'kb' is not configured")]
    assert [b["mode"] for b in target.bodies] == ["rag", "prompt", "prompt"]  # refused once, not asked again
    assert (progress.done, progress.failed, stats.calls) == (4, 1, 3)
    assert [p.name for p in (tmp_path / runner.hashlib.sha256(target.base.encode()).hexdigest()[:12]).iterdir()] == ["prompt---extractive.jsonl"]


def test_a_target_that_cannot_filter_on_the_collection_stops_the_run(tmp_path):
    def answer(body):
        if "filters" in body:
            return Reply(400, {"message": "filters.collection: not a filterable field", "field": "filters.collection"}, 1.0)
        return Reply(200, {"answer": "x"}, 1.0)

    target = FakeTarget(answer)
    with pytest.raises(TargetError) as caught:
        _run(target, AnswerCache(None))
    assert str(caught.value) == ("the target cannot filter on 'collection' (HTTP 400: filters.collection: not a filterable field): add it "
                                 "to search.filterable_fields of the stage, or run without --collection")
    assert [b["mode"] for b in target.bodies] == ["rag"]  # nothing more is asked once the run cannot succeed
    other = FakeTarget(lambda body: Reply(400, {"message": "bad top_k", "field": "top_k"}, 1.0))
    rows, skipped, _ = _run(other, AnswerCache(None))
    assert skipped == [] and [r["error"] for r in rows] == ["HTTP 400: bad top_k"] * 4  # a bad answer, not a skipped configuration
