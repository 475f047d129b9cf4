"""The limits of the training-data and request validators, tested on both sides of each `==`.

Each case puts a value exactly on a limit and one step past it, so an off-by-one (`>` for `>=`,
a limit shifted by one) fails a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model_artifacts" / "training"))

import data_format  # noqa: E402
import train  # noqa: E402
from validate_training_input import rules  # noqa: E402

SPEC = rules.user_spec(json.loads((ROOT / "model_artifacts" / "training" / "hyperparameters.json").read_text()))
SETTINGS = rules.Settings(training_bucket="t", artifacts_bucket="a", base_models_root="base-models/", default_base_model_prefix="base-models/m/", job_prefix="ragdev-ft", neuron_cores=2, spec=SPEC)


def chat_line(characters: int) -> str:
    """A valid chat record whose contents add up to exactly `characters` characters."""
    return json.dumps({"messages": [{"role": "user", "content": "q" * (characters - 1)}, {"role": "assistant", "content": "a"}]})


@pytest.mark.parametrize("characters, warned", [(4 * 100, False), (4 * 100 + 3, False), (4 * 101, True)])
def test_overlong_warning_starts_one_token_past_max_length(tmp_path, characters, warned):
    path = tmp_path / "d.jsonl"
    path.write_text(chat_line(characters) + "\n")
    report = data_format.validate_files([path], max_length_tokens=100)
    assert report.ok
    assert any("longer than max_length=100" in w.message for w in report.warnings) is warned


@pytest.mark.parametrize("length, ok", [(rules.MAX_DESCRIPTION, True), (rules.MAX_DESCRIPTION + 1, False)])
def test_description_length_limit(length, ok):
    request = {"training_data_prefix": "d/", "description": "x" * length}
    if ok:
        assert rules.validate_request(request, SETTINGS)["description"] == "x" * length
    else:
        with pytest.raises(rules.InputError, match="at most 1000 characters"):
            rules.validate_request(request, SETTINGS)


@pytest.mark.parametrize("name", sorted(name for name, entry in SPEC.items() if entry["type"] in ("int", "float")))
def test_every_numeric_hyperparameter_accepts_its_bounds_and_refuses_one_step_outside(name):
    entry = SPEC[name]
    step = 1 if entry["type"] == "int" else max(abs(entry["max"]), abs(entry["min"]), 1) * 1e-6
    for value in (entry["min"], entry["max"]):
        assert rules.hyperparameter_value(name, value, entry) == str(int(value) if entry["type"] == "int" else float(value))
    for value in (entry["min"] - step, entry["max"] + step):
        with pytest.raises(rules.InputError, match="is outside"):
            rules.hyperparameter_value(name, value, entry)


@pytest.mark.parametrize("name", sorted(name for name, entry in train.load_spec().items() if entry["type"] in ("int", "float") and not entry.get("pipeline")))
def test_train_parser_has_the_same_inclusive_bounds(name):
    entry = train.load_spec()[name]
    for value in (entry["min"], entry["max"]):
        assert getattr(train.parse_args([f"--{name}={value}"], env={}), name) == value
    step = 1 if entry["type"] == "int" else max(abs(entry["max"]), 1) * 1e-6
    with pytest.raises(SystemExit):
        train.parse_args([f"--{name}={entry['max'] + step}"], env={})


@pytest.mark.parametrize("prefix_length, ok", [(63 - len("-20250102-030405-abc123-inf2"), True), (64 - len("-20250102-030405-abc123-inf2"), False)])
def test_job_names_fit_sagemakers_63_characters_exactly(prefix_length, ok):
    prefix = "r" * prefix_length
    if ok:
        names = rules.job_names(prefix, token="abc123", now=__import__("datetime").datetime(2025, 1, 2, 3, 4, 5))
        assert max(len(name) for name in names.values()) == 63
    else:
        with pytest.raises(ValueError, match="invalid SageMaker names"):
            rules.job_names(prefix, token="abc123")


@pytest.mark.parametrize("limit, length, error", [(2048, 2048, False), (2048, 2049, True)])
def test_max_length_may_equal_the_base_models_context(tmp_path, limit, length, error):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3", "max_position_embeddings": limit, "num_key_value_heads": 8}))
    (tmp_path / "m.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    args = train.parse_args([f"--max_length={length}", "--serving_sequence_length=2048"], env={})
    _, errors = train.inspect_base_model(str(tmp_path), args)
    assert any("exceeds the base model's max_position_embeddings" in e for e in errors) is error


def test_listing_stops_at_the_key_limit():
    class Pages:
        def __init__(self):
            self.calls = 0

        def list_objects_v2(self, **kwargs):
            self.calls += 1
            return {"Contents": [{"Key": f"k{self.calls}-{i}"} for i in range(1000)], "IsTruncated": True, "NextContinuationToken": "t"}

    pages = Pages()
    assert len(rules._list_keys(pages, "b", "p/")) == rules.MAX_LISTED_KEYS
    assert pages.calls == rules.MAX_LISTED_KEYS // 1000


def test_compile_only_requests_take_no_training_inputs():
    assert rules.validate_request({"compile_only": True}, SETTINGS)["compile_only"] is True
    with pytest.raises(rules.InputError) as error:
        rules.validate_request({"compile_only": True, "training_data_prefix": "d/", "hyperparameters": {"lora_r": 8}}, SETTINGS)
    assert len(error.value.problems) == 2
    with pytest.raises(rules.InputError, match="compile_only: expected true or false"):
        rules.validate_request({"compile_only": "yes", "training_data_prefix": "d/"}, SETTINGS)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_non_finite_numbers_are_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args([f"--learning_rate={value}"], env={})
    assert exit_info.value.code == 2 and "expected a finite number" in capsys.readouterr().err
