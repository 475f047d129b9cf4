"""The eval set format (file:line validation), corpora, the SQuAD converter, and the shipped set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evaluation import shipped, squad, stats
from evaluation.evalset import EvalSetError, check_sources, load_corpus, load_eval_set

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model_artifacts" / "training"))
import data_format  # noqa: E402  (the training job's own validator)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_problem_is_reported_with_file_and_line(tmp_path):
    good = json.dumps({"id": "a", "question": "q?", "answers": ["x"], "sources": ["d.md"]})
    path = _write(tmp_path / "set.jsonl", [
        good,
        "{not json",
        json.dumps({"id": "b", "question": "q?", "answers": ["x"], "sources": ["d.md"], "ouswers": []}),
        json.dumps({"id": "a", "question": "again?", "answers": [], "sources": []}),
        json.dumps({"id": "c", "question": "q?", "answers": ["x"], "sources": []}),
        "",
        json.dumps({"id": "d", "question": " ", "answers": "x", "sources": ["d.md"], "lang": "english!", "filters": {"k": True}}),
    ])
    with pytest.raises(EvalSetError) as caught:
        load_eval_set(path)
    problems = caught.value.problems
    assert f"{path}:2: invalid JSON" in problems[0]
    assert any(p.startswith(f"{path}:3: unknown key 'ouswers'") for p in problems)
    assert any(p.startswith(f"{path}:4: duplicate id 'a' (first on line 1)") for p in problems)
    assert any(p.startswith(f"{path}:5: 'answers' and 'sources' must both be empty") for p in problems)
    assert f"{path}:6: empty line" in problems
    line7 = [p for p in problems if p.startswith(f"{path}:7:")]
    assert len(line7) == 4  # question, answers, filters, lang
    assert str(caught.value).endswith(f"(and {len(problems) - 1} more)")


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(EvalSetError, match="cannot read"):
        load_eval_set(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EvalSetError, match="no questions"):
        load_eval_set(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "\xe9"}\n')
    with pytest.raises(EvalSetError, match=r"latin1.jsonl:1: not UTF-8"):
        load_eval_set(tmp_path / "latin1.jsonl")


def test_corpus_folder_metadata_and_sources(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("alpha")
    (corpus / "a.md.metadata.json").write_text(json.dumps({"metadataAttributes": {"category": "x"}}))
    (corpus / "b.txt").write_text("beta")
    (corpus / "README.md").write_text("not a document")
    (corpus / ".hidden").write_text("not a document")
    documents = load_corpus(corpus)
    assert sorted(documents) == ["a.md", "b.txt"]
    assert documents["a.md"].metadata == {"category": "x"} and documents["b.txt"].metadata == {}
    eval_set = _write(tmp_path / "s.jsonl", [json.dumps({"id": "1", "question": "q", "answers": ["a"], "sources": ["c.md"]})])
    with pytest.raises(EvalSetError, match=r"s.jsonl:1: source 'c.md' is not a document"):
        check_sources(load_eval_set(eval_set), documents, eval_set)
    (corpus / "b.txt.metadata.json").write_text('{"category": "flat"}')
    with pytest.raises(EvalSetError, match=r"b.txt.metadata.json:1: must be"):
        load_corpus(corpus)
    with pytest.raises(EvalSetError, match="not a folder"):
        load_corpus(tmp_path / "nope")


def test_squad_conversion_jsquad_prefix_and_unanswerable(tmp_path):
    source = tmp_path / "jsquad-mini.json"
    source.write_text(json.dumps({"version": "v1.3", "data": [
        {"title": "梅雨", "paragraphs": [
            {"context": "梅雨 [SEP] 梅雨は東アジアの雨季である。", "qas": [
                {"id": "q1", "question": "梅雨は何の一種か？", "answers": [{"text": "雨季", "answer_start": 10}, {"text": "雨季", "answer_start": 10}]},
                {"id": "q2", "question": "梅雨の英語名は？", "answers": [], "is_impossible": True}]},
            {"context": "二つ目の段落。", "qas": []}]},
    ]}, ensure_ascii=False), encoding="utf-8")
    result = squad.convert(source, tmp_path / "out", lang="ja")
    assert (result.documents, result.questions, result.unanswerable) == (2, 2, 1)
    document = (result.corpus / "jsquad-mini-a000-p00.txt").read_text(encoding="utf-8")
    assert document == "梅雨\n\n梅雨は東アジアの雨季である。\n"  # the "[SEP]" prefix became the title line
    metadata = json.loads((result.corpus / "jsquad-mini-a000-p00.txt.metadata.json").read_text(encoding="utf-8"))
    assert metadata == {"metadataAttributes": {"category": "梅雨", "collection": "eval-jsquad-mini"}}
    questions = load_eval_set(result.eval_set)
    assert questions[0].answers == ("雨季",) and questions[0].sources == ("jsquad-mini-a000-p00.txt",) and questions[0].lang == "ja"
    assert questions[1].answers == () and "unanswerable" in questions[1].tags
    check_sources(questions, load_corpus(result.corpus), result.eval_set)
    assert "JSQuAD" in (tmp_path / "out" / "ATTRIBUTION.md").read_text() and "CC BY-SA 4.0" in (result.corpus / "README.md").read_text()
    (tmp_path / "bad.json").write_text('{"data": 3}')
    with pytest.raises(EvalSetError, match="not SQuAD format"):
        squad.convert(tmp_path / "bad.json", tmp_path / "out2")


# --- the shipped set ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_set():
    questions = load_eval_set(shipped.EVAL_SET)
    corpus = load_corpus(shipped.CORPUS)
    check_sources(questions, corpus, shipped.EVAL_SET)
    return questions, corpus


def test_shipped_corpus_is_a_knowledge_base_with_collection_metadata(shipped_set):
    _, corpus = shipped_set
    assert len(corpus) >= 30
    for doc_id in ("document-lifecycle.md", "ingestion-runbook.md", "model-serving.md", "security-model.md"):
        assert doc_id in corpus  # the README's examples quote them
    for document in corpus.values():
        assert document.metadata.get("collection") == shipped.COLLECTION, document.id
        assert document.metadata.get("category"), document.id


def test_shipped_questions_meet_the_brief(shipped_set):
    questions, corpus = shipped_set
    described = stats.describe(questions, corpus)
    assert described["questions"] >= 100
    assert described["unanswerable_share"] >= 0.15
    assert described["languages"]["en"] >= 40 and described["languages"]["ja"] >= 40
    assert described["multi_document"] >= 10
    assert described["overlap_mean"] < 0.45  # paraphrased: SQuAD-style sets are around 0.7
    test_part = shipped.select(questions, "test")
    assert sum(not q.answerable for q in test_part) / len(test_part) >= 0.15


def test_split_is_deterministic_and_depends_on_the_id_alone(shipped_set):
    questions, _ = shipped_set
    train, test = shipped.select(questions, "train"), shipped.select(questions, "test")
    assert len(train) + len(test) == len(questions) and not {q.id for q in train} & {q.id for q in test}
    assert 0.3 < len(train) / len(questions) < 0.5
    assert [q.id for q in shipped.select(questions[::-1], "train")] == [q.id for q in train[::-1]]  # order does not matter
    assert shipped.split_of("en-001") == shipped.split_of("en-001")


def test_shipped_fine_tuning_data_is_current_valid_and_test_free(shipped_set):
    questions, corpus = shipped_set
    records = shipped.training_records(shipped.select(questions, "train"), corpus)
    expected = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    assert shipped.TRAINING_DATA.read_text(encoding="utf-8") == expected, (
        "model_artifacts/eval/finetune/train.jsonl is stale: run `scripts/evaluate.py training-data` and commit it")
    report = data_format.validate_files([shipped.TRAINING_DATA], max_length_tokens=2048)
    assert not report.errors and not report.warnings and report.records
    test_ids = {q.id for q in shipped.select(questions, "test")}
    trained = {record["metadata"].get("question") for record in records} - {None}
    assert trained and not trained & test_ids
    with pytest.raises(ValueError, match="never train on it"):
        shipped.training_records(shipped.select(questions, "test")[:1], corpus)


def test_public_sets_convert_when_present():
    xquad = next((p for p in (ROOT.parent / "shared" / "datasets" / "xquad" / "xquad.en.json",
                              ROOT.parents[1] / "shared" / "datasets" / "xquad" / "xquad.en.json") if p.is_file()), None)
    if xquad is None:
        pytest.skip("shared/datasets is not beside this checkout")
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        result = squad.convert(xquad, out, name="xquad-en", articles=10)  # 10 of 48 articles: enough, and fast
        assert (result.documents, result.questions, result.unanswerable) == (50, 274, 0)
        assert stats.describe(load_eval_set(result.eval_set), load_corpus(result.corpus))["overlap_mean"] > 0.6
