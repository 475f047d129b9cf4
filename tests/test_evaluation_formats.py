"""The eval set's record rules, its round trip through files, the SQuAD converter's output and
one-line errors, and the set description `evaluate.py validate` prints: exact values on small
hand-made inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evaluation import squad, stats
from evaluation.evalset import EvalSetError, Question, check_record, load_corpus, load_eval_set, write_eval_set

VALID = {"id": "q", "question": "How fast?", "answers": ["26 knots"], "sources": ["fast.md"]}


@pytest.mark.parametrize("filters, problem", [
    ({"category": "ops", "year": [2024, 2025], "weight": 0.5}, None),
    ([["category", "ops"]], "'filters' must be an object of field: value"),
    ("category=ops", "'filters' must be an object of field: value"),
    ({"category": []}, "'filters.category' must not be an empty list"),
    ({"flag": True}, "'filters.flag' values must be strings or numbers"),
    ({"year": [2024, None]}, "'filters.year' values must be strings or numbers"),
    ({"nested": {"a": 1}}, "'filters.nested' values must be strings or numbers"),
    ({"score": float("nan")}, "'filters.score' numbers must be finite"),
    ({"score": [1.0, float("inf")]}, "'filters.score' numbers must be finite"),
])
def test_filters_are_field_to_scalar_or_list_of_scalars(filters, problem):
    assert check_record({**VALID, "filters": filters}) == ([problem] if problem else [])


def test_an_error_names_its_first_problem_and_how_many_more():
    assert str(EvalSetError(["a.jsonl:1: x"])) == "a.jsonl:1: x"
    assert str(EvalSetError(["a.jsonl:1: x", "a.jsonl:2: y"])) == "a.jsonl:1: x (and 1 more)"
    assert str(EvalSetError(["a", "b", "c"])) == "a (and 2 more)"


def test_an_eval_set_survives_a_round_trip_through_a_new_folder(tmp_path):
    questions = [
        Question(id="ja-1", question="速さは？", answers=("26ノット",), sources=("fast.md",), filters={"category": "船"},
                 tags=("paraphrase",), lang="ja"),
        Question(id="u-1", question="Cabin price?", answers=(), sources=()),
    ]
    path = tmp_path / "new" / "folder" / "set.jsonl"
    write_eval_set(path, questions)
    # UTF-8 as written, not \u escapes: the file is for people to read and edit
    assert path.read_bytes().decode("utf-8").splitlines() == [
        '{"id": "ja-1", "question": "速さは？", "answers": ["26ノット"], "sources": ["fast.md"], "filters": {"category": "船"}, '
        '"tags": ["paraphrase"], "lang": "ja"}',
        '{"id": "u-1", "question": "Cabin price?", "answers": [], "sources": []}',
    ]
    loaded = load_eval_set(path)
    assert [(q.id, q.question, q.answers, q.sources, q.filters, q.tags, q.lang, q.line) for q in loaded] == [
        ("ja-1", "速さは？", ("26ノット",), ("fast.md",), {"category": "船"}, ("paraphrase",), "ja", 1),
        ("u-1", "Cabin price?", (), (), {}, (), None, 2)]


def test_a_document_is_read_as_utf8(tmp_path):
    (tmp_path / "ja.md").write_bytes("梅雨は雨季。".encode("utf-8"))
    assert load_corpus(tmp_path)["ja.md"].text() == "梅雨は雨季。"


# --- the SQuAD converter ----------------------------------------------------------------------------

def _squad(path: Path, data) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_squad_conversion_writes_documents_metadata_questions_and_attribution(tmp_path):
    long_title = "Long_" + "x" * 120
    source = _squad(tmp_path / "My SQuAD_v2 (dev).json", {"version": "v2.0", "data": [
        {"title": "Harrow_Bell", "paragraphs": [
            {"context": "  The Harrow Bell carries cars.  ", "qas": [
                {"id": "h1", "question": "  What does it carry? ", "answers": [{"text": " cars "}, {"text": "cars"}, {"text": "  "}, "junk"]},
                {"id": "h2", "question": "Who built it?", "answers": [{"text": "nobody"}], "is_impossible": True},
                {"question": "Its colour?", "answers": []}]}]},
        {"paragraphs": [{"context": "No title here.", "qas": [{"id": "n1", "question": "Title?", "answers": [{"text": "none"}]}]}]},
        {"title": long_title, "paragraphs": [{"context": "Third.", "qas": []}]},
    ]})
    result = squad.convert(source, tmp_path / "out")
    name = "my-squad-v2-dev"  # from the file name: lower case, dashes for the rest
    assert result == squad.Converted(corpus=tmp_path / "out" / "corpus", eval_set=tmp_path / "out" / "eval.jsonl",
                                     documents=3, questions=4, unanswerable=2)
    first = f"{name}-a000-p00.txt"
    assert (result.corpus / first).read_text(encoding="utf-8") == "Harrow Bell\n\nThe Harrow Bell carries cars.\n"
    assert (result.corpus / f"{name}-a001-p00.txt").read_text(encoding="utf-8") == "article 1\n\nNo title here.\n"
    assert json.loads((result.corpus / f"{first}.metadata.json").read_text(encoding="utf-8")) == {
        "metadataAttributes": {"category": "Harrow Bell", "collection": f"eval-{name}"}}
    third = json.loads((result.corpus / f"{name}-a002-p00.txt.metadata.json").read_text(encoding="utf-8"))
    assert third["metadataAttributes"]["category"] == long_title.replace("_", " ")[:100]
    questions = load_eval_set(result.eval_set)
    assert [(q.id, q.question, q.answers, q.sources, q.tags, q.lang) for q in questions] == [
        ("h1", "What does it carry?", ("cars",), (first,), (name,), None),
        ("h2", "Who built it?", (), (), (name, "unanswerable"), None),  # SQuAD v2's impossible, whatever its answers
        (f"{first}-q2", "Its colour?", (), (), (name, "unanswerable"), None),  # no id, no answer
        ("n1", "Title?", ("none",), (f"{name}-a001-p00.txt",), (name,), None),
    ]
    note = (tmp_path / "out" / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert note == ("# Converted from `My SQuAD_v2 (dev).json`\n\nSQuAD by Rajpurkar, Zhang, Lopyrev and Liang (Stanford), derived from "
                    "Wikipedia; CC BY-SA 4.0.\n\nThis folder is a derived work of that data set: it carries the same license and "
                    "this attribution.\n")
    assert (result.corpus / "README.md").read_text(encoding="utf-8") == note
    assert sorted(load_corpus(result.corpus)) == [first, f"{name}-a001-p00.txt", f"{name}-a002-p00.txt"]


def test_a_second_conversion_into_the_same_folder_replaces_the_first(tmp_path):
    two = _squad(tmp_path / "two.json", {"data": [{"title": "T", "paragraphs": [
        {"context": "One.", "qas": [{"id": "1", "question": "q1?", "answers": [{"text": "One"}]}]},
        {"context": "Two.", "qas": [{"id": "2", "question": "q2?", "answers": [{"text": "Two"}]}]}]}]})
    squad.convert(two, tmp_path / "out", name="set")
    result = squad.convert(two, tmp_path / "out", name="set", lang="en", articles=1, collection="eval-x")
    assert sorted(load_corpus(result.corpus)) == ["set-a000-p00.txt", "set-a000-p01.txt"]
    again = _squad(tmp_path / "again.json", {"data": [{"title": "T", "paragraphs": [
        {"context": "One.", "qas": [{"id": "1", "question": "q1?", "answers": [{"text": "One"}]}]}]}]})
    result = squad.convert(again, tmp_path / "out", name="set", collection="eval-x")
    assert sorted(p.name for p in result.corpus.iterdir()) == ["README.md", "set-a000-p00.txt", "set-a000-p00.txt.metadata.json"]
    assert json.loads((result.corpus / "set-a000-p00.txt.metadata.json").read_text())["metadataAttributes"]["collection"] == "eval-x"
    assert [q.lang for q in load_eval_set(squad.convert(two, tmp_path / "o2", name="set", lang="en", articles=1).eval_set)] == ["en", "en"]


def test_only_the_first_articles_when_asked(tmp_path):
    source = _squad(tmp_path / "s.json", {"data": [
        {"title": f"A{a}", "paragraphs": [{"context": f"Text {a}.", "qas": [{"id": f"q{a}", "question": "?", "answers": [{"text": "x"}]}]}]}
        for a in range(3)]})
    assert (squad.convert(source, tmp_path / "two", articles=2).documents, squad.convert(source, tmp_path / "all").documents) == (2, 3)


@pytest.mark.parametrize("path_name, expected", [
    ("xquad.en.json", "XQuAD by Artetxe"), ("JSQuAD-valid.json", "JSQuAD by Kurihara"), ("squad-v2.json", "SQuAD by Rajpurkar"),
    ("mine.json", "Keep the original data set's license and attribution with this derived work."),
])
def test_attribution_follows_the_data_set_name(path_name, expected):
    assert squad.attribution_for(Path("/data") / path_name).startswith(expected)


def test_the_converted_set_name_must_be_a_lowercase_slug(tmp_path):
    source = _squad(tmp_path / "s.json", {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "?", "answers": []}]}]}]})
    with pytest.raises(EvalSetError) as caught:
        squad.convert(source, tmp_path / "out", name="My Set")
    assert caught.value.problems == ["--name 'My Set': use lowercase letters, digits and dashes"]
    symbols = _squad(tmp_path / "__.json", {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "?", "answers": []}]}]}]})
    assert (squad.convert(symbols, tmp_path / "o").corpus / "squad-a000-p00.txt").is_file()  # nothing left of the name: "squad"
    stem = "A" * 50
    long = squad.convert(_squad(tmp_path / f"{stem}.json", {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "1", "question": "?", "answers": []}]}]}]}), tmp_path / "o3")
    assert load_eval_set(long.eval_set)[0].tags == ("a" * 40, "unanswerable")  # at most 40 characters


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not a JSON file ("),
    ('{"data": {"title": "x"}}', 'not SQuAD format: expected {"data": [{"title", "paragraphs": [...]}]}'),
    ('["data"]', 'not SQuAD format: expected {"data": [{"title", "paragraphs": [...]}]}'),
    ('{"data": ["article"]}', "data[0] has no 'paragraphs' list"),
    ('{"data": [{"title": "t", "paragraphs": {}}]}', "data[0] has no 'paragraphs' list"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": []}, "loose text"]}]}', "data[0].paragraphs[1] has no 'context'"),
    ('{"data": [{"paragraphs": [{"text": "c"}]}]}', "data[0].paragraphs[0] has no 'context'"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": " "}]}]}]}',
     "a question of bad-a000-p00.txt has no 'question' text"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": ["q?"]}]}]}', "a question of bad-a000-p00.txt has no 'question' text"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": 1}]}]}]}', "a question of bad-a000-p00.txt has no 'question' text"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "a?"}, {"id": "1", "question": "b?"}]}]}]}',
     "duplicate question id '1'"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": []}]}]}', "no questions found"),
])
def test_squad_format_mistakes_are_one_problem_with_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalSetError) as caught:
        squad.convert(path, tmp_path / "out")
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith(f"{path}:1: {problem}")


def test_an_unreadable_squad_file_says_so(tmp_path):
    with pytest.raises(EvalSetError) as caught:
        squad.convert(tmp_path / "missing.json", tmp_path / "out")
    assert caught.value.problems == [f"{tmp_path / 'missing.json'}: cannot read (No such file or directory)"]
    (tmp_path / "latin1.json").write_bytes(b'{"data": "\xe9"}')
    with pytest.raises(EvalSetError, match=r"latin1.json:1: not a JSON file"):
        squad.convert(tmp_path / "latin1.json", tmp_path / "out")


# --- what a set is made of ------------------------------------------------------------------------

def test_describe_counts_and_lexical_overlap_by_hand(tmp_path):
    (tmp_path / "ship.md").write_text("The Harrow Bell carries cars and bikes.", encoding="utf-8")
    (tmp_path / "fare.md").write_text("A cabin costs 40 euros.", encoding="utf-8")
    (tmp_path / "ja.md").write_text("梅雨は雨季です。", encoding="utf-8")
    corpus = load_corpus(tmp_path)
    questions = [
        # terms {harrow, bell, carry}: harrow and bell are in ship.md -> 2/3
        Question(id="1", question="Does the Harrow Bell carry?", answers=("yes",), sources=("ship.md",), tags=("paraphrase",), lang="en"),
        # terms {cabin, cars}: cabin in fare.md, cars in ship.md -> the union of both sources: 1
        Question(id="2", question="Cabin for cars?", answers=("no",), sources=("ship.md", "fare.md"), tags=("multi-doc", "paraphrase")),
        # character bigrams of 梅雨は何: 梅雨, 雨は, は何; the first two are in ja.md -> 2/3
        Question(id="3", question="梅雨は何？", answers=("雨季",), sources=("ja.md",), lang="ja"),
        Question(id="4", question="What is the price?", answers=(), sources=(), tags=("unanswerable",), lang="en"),
        Question(id="5", question="The and of?", answers=("x",), sources=("fare.md",), lang="en"),  # stop words only: no overlap
    ]
    assert stats.describe(questions, corpus) == {
        "questions": 5, "documents": 3, "unanswerable": 1, "unanswerable_share": 0.2, "multi_document": 1,
        "languages": {"en": 3, "ja": 1, "unspecified": 1}, "tags": {"multi-doc": 1, "paraphrase": 2, "unanswerable": 1},
        "overlap_mean": round((2 / 3 + 1 + 2 / 3) / 3, 3), "overlap_median": 0.667,
    }
    assert stats.terms("梅雨は何？") == {"梅雨", "雨は", "は何"}
    assert stats.terms("The Harrow-Bell, again!") == {"harrow", "bell", "again"}
    assert stats.describe([], corpus) == {"questions": 0, "documents": 3, "unanswerable": 0, "unanswerable_share": None,
                                          "multi_document": 0, "languages": {}, "tags": {}, "overlap_mean": None, "overlap_median": None}


# --- fine-tuning data from a corpus ----------------------------------------------------------------

def test_document_records_ask_for_the_documents_title_in_its_language(tmp_path):
    from evaluation import shipped

    (tmp_path / "empty.md").write_text("  \n", encoding="utf-8")
    (tmp_path / "fleet.md").write_text("\n## The Fleet  \nThree ships.\n", encoding="utf-8")
    (tmp_path / "rain.md").write_text("# 梅雨\n梅雨は雨季です。\n", encoding="utf-8")
    records = shipped.training_records([], load_corpus(tmp_path))
    assert [(r["id"], r["messages"][2]["content"], r["metadata"]["kind"], r["metadata"]["source"]) for r in records] == [
        ("doc-empty.md", "", "document", "empty.md"), ("doc-fleet.md", "## The Fleet  \nThree ships.", "document", "fleet.md"),
        ("doc-rain.md", "# 梅雨\n梅雨は雨季です。", "document", "rain.md")]
    asked = [r["messages"][1]["content"] for r in records]
    assert "What do you know about empty.md?" in asked[0]  # no text: the document's id
    assert "What do you know about The Fleet?" in asked[1]
    assert "梅雨について教えてください。" in asked[2]


def test_the_serving_prompts_are_found_without_lambda_on_the_path(monkeypatch):
    from evaluation import shipped

    lambda_dir = str(shipped.ROOT / "lambda")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != Path(lambda_dir).resolve()])
    for name in [name for name in sys.modules if name == "query" or name.startswith("query.")]:
        monkeypatch.delitem(sys.modules, name)
    prompts = shipped._prompts()  # as `python scripts/evaluate.py training-data` runs it
    assert Path(prompts.__file__).resolve() == (shipped.ROOT / "lambda" / "query" / "prompts.py").resolve()
    assert sys.path[0] == lambda_dir
    assert shipped._prompts() is prompts and sys.path.count(lambda_dir) == 1


@pytest.mark.parametrize("record, problems", [
    ("not an object", ["a line must be a JSON object"]),
    ({"id": "q"}, ["missing 'question'", "missing 'answers'", "missing 'sources'"]),
    ({**VALID, "answer": "x", "lang": "en"}, ["unknown key 'answer' (allowed: id, question, answers, sources, filters, tags, lang)"]),
    ({**VALID, "id": 7}, ["'id' must be a non-empty string"]),
    ({**VALID, "id": "  "}, ["'id' must be a non-empty string"]),
    ({**VALID, "question": ["q"]}, ["'question' must be a non-empty string"]),
    ({**VALID, "answers": "26 knots"}, ["'answers' must be a list of strings"]),
    ({**VALID, "answers": ["26 knots", " "]}, ["'answers' must hold non-empty strings"]),
    ({**VALID, "sources": [3]}, ["'sources' must hold non-empty strings"]),
    ({**VALID, "answers": [], "sources": []}, []),  # unanswerable
    ({**VALID, "answers": []}, ["'answers' and 'sources' must both be empty (unanswerable) or both non-empty"]),
    ({**VALID, "answers": "x", "sources": []}, ["'answers' must be a list of strings"]),  # the pair rule waits for valid lists
    ({**VALID, "tags": "paraphrase"}, ["'tags' must be a list of strings"]),
    ({**VALID, "tags": []}, []),
    ({**VALID, "tags": [""]}, ["'tags' must hold non-empty strings"]),
    ({**VALID, "lang": "ja-JP"}, []),
    ({**VALID, "lang": "zh-Hant-TW"}, []),
    ({**VALID, "lang": "j"}, ["'lang' must be a language code such as 'en' or 'ja'"]),
    ({**VALID, "lang": "english"}, ["'lang' must be a language code such as 'en' or 'ja'"]),
    ({**VALID, "lang": 1}, ["'lang' must be a language code such as 'en' or 'ja'"]),
    ({**VALID, "id": "", "question": "", "tags": "t", "lang": "x"}, [
        "'id' must be a non-empty string", "'question' must be a non-empty string", "'tags' must be a list of strings",
        "'lang' must be a language code such as 'en' or 'ja'"]),
])
def test_each_record_rule(record, problems):
    assert check_record(record) == problems


def test_a_corpus_folder_reports_every_metadata_problem_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalSetError) as caught:
        load_corpus(tmp_path / "empty")
    assert caught.value.problems == [f"{tmp_path / 'empty'}: no documents"]
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.md").write_text("alpha")
    (corpus / "a.md.metadata.json").write_text("{not json")
    (corpus / "b.md").write_text("beta")
    (corpus / "b.md.metadata.json").write_text('{"metadataAttributes": {"k": 1}, "extra": 2}')
    (corpus / "c.md.metadata.json").write_text('{"metadataAttributes": {}}')
    (corpus / "d.md").write_text("delta")
    (corpus / "d.md.metadata.json").write_text('["metadataAttributes"]')
    with pytest.raises(EvalSetError) as caught:
        load_corpus(corpus)
    problems = caught.value.problems
    assert problems[0].startswith(f"{corpus / 'a.md.metadata.json'}:1: invalid JSON (")
    assert problems[1:] == [f'{corpus / "b.md.metadata.json"}:1: must be {{"metadataAttributes": {{...}}}}',
                            f"{corpus / 'c.md.metadata.json'}:1: metadata for a document that does not exist",
                            f'{corpus / "d.md.metadata.json"}:1: must be {{"metadataAttributes": {{...}}}}']
