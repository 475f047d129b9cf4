"""train.py's CPU side: arguments, the SageMaker environment contract, data validation, the dry run.

No torch, transformers, peft or optimum-neuron here (the test asserts it): what these tests cover
must work on any machine, because the dry run is the operator's check before a paid job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "model_artifacts" / "training"
SAMPLE = TRAINING / "sample_data" / "train.jsonl"
sys.path.insert(0, str(TRAINING))

import data_format  # noqa: E402
import train  # noqa: E402


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def chat(*turns: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})


@pytest.fixture
def base_model(tmp_path) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    config = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "max_position_embeddings": 40960, "num_key_value_heads": 8}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer.json").write_text("{}")
    return folder


# --- data format ---------------------------------------------------------------------------------


def test_sample_data_is_valid_and_uses_both_shapes():
    report = data_format.validate_files([SAMPLE], max_length_tokens=2048)
    assert report.ok, [str(p) for p in report.errors]
    assert report.formats["chat"] > 0 and report.formats["instruction"] > 0
    assert not report.warnings


def test_bad_records_are_reported_with_their_line_numbers(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl",
        chat(("user", "hi"), ("assistant", "hello")),  # 1 ok
        "{not json",  # 2
        json.dumps({"instruction": "q", "ouput": "typo"}),  # 3 unknown key + missing output
        chat(("user", "q"), ("user", "again")),  # 4 no alternation
        chat(("user", "q")),  # 5 ends with user
        "",  # 6 empty line
        chat(("assistant", "a"), ("system", "late")),  # 7 system not first
        json.dumps([1, 2]),  # 8 not an object
        json.dumps({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}),  # 9 empty content
    )
    report = data_format.validate_files([path])
    lines = {p.line for p in report.errors}
    assert lines == {2, 3, 4, 5, 6, 7, 8, 9}
    assert len(report.records) == 1
    messages = {p.line: p.message for p in report.errors}
    assert "unknown key 'ouput'" in " ".join(str(p) for p in report.errors if p.line == 3)
    assert "alternate" in messages[4] and "last turn" in messages[5] and "empty line" in messages[6]
    assert str(report.errors[0]).startswith(f"{path}:2: invalid JSON")


def test_non_utf8_line_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(chat(("user", "q"), ("assistant", "a")).encode() + b"\n" + b'{"instruction": "caf\xe9", "output": "x"}\n')
    report = data_format.validate_files([path])
    assert [(p.line, p.message.split(" ")[0]) for p in report.errors] == [(2, "not")]


def test_instruction_record_becomes_chat_with_input_after_a_blank_line():
    record = {"instruction": "Q?", "input": "Sources:\n[1] x", "output": "A [1].", "system": "S"}
    assert data_format.to_messages(record) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q?\n\nSources:\n[1] x"},
        {"role": "assistant", "content": "A [1]."},
    ]
    assert data_format.to_messages({"instruction": "Q?", "output": "A"})[0] == {"role": "user", "content": "Q?"}


def test_duplicates_and_overlong_records_are_warnings(tmp_path):
    record = chat(("user", "q " * 50), ("assistant", "a"))
    path = write_lines(tmp_path / "d.jsonl", record, record)
    report = data_format.validate_files([path], max_length_tokens=10)
    assert report.ok and len(report.records) == 2
    assert {(w.line, "duplicate" in w.message) for w in report.warnings} >= {(2, True)}
    assert any("longer than max_length=10" in w.message for w in report.warnings)


def test_directory_without_jsonl_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    report = data_format.validate_files([tmp_path])
    assert not report.ok and "no *.jsonl" in report.errors[0].message


def test_validator_script_exit_status_and_output(tmp_path):
    bad = write_lines(tmp_path / "bad.jsonl", chat(("user", "q"), ("assistant", "a")), "[]")
    script = ROOT / "scripts" / "validate_training_data.py"
    failed = subprocess.run([sys.executable, str(script), str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1 and f"{bad}:2:" in failed.stderr
    assert data_format.main([str(SAMPLE)]) == 0


# --- arguments and the SageMaker contract --------------------------------------------------------


def test_hyperparameters_arrive_as_sagemaker_passes_them():
    # The toolkit JSON-decodes values and prints them back with str(): True, 3, 0.0001.
    args = train.parse_args(["--packing", "False", "--num_train_epochs", "3", "--learning_rate", "0.0001", "--lora_r", "8"], env={})
    assert args.packing is False and args.num_train_epochs == 3.0 and args.learning_rate == 1e-4 and args.lora_r == 8
    assert train.parse_args(["--bf16", "true"], env={}).bf16 is True


@pytest.mark.parametrize(
    "argv",
    [["--lora_r", "0"], ["--learning_rate", "2"], ["--lr_scheduler_type", "exotic"], ["--packing", "maybe"], ["--lora_target_modules", "q_proj;rm -rf"], ["--unknown", "1"], ["--max_steps", "1.5"]],
)
def test_bad_hyperparameters_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv, env={})
    assert exit_info.value.code == 2


def test_defaults_come_from_the_sagemaker_environment():
    env = {"SM_CHANNEL_TRAIN": "/opt/ml/input/data/train", "SM_CHANNEL_BASE_MODEL": "/opt/ml/input/data/base_model", "SM_MODEL_DIR": "/opt/ml/output-model", "SM_NUM_NEURONS": "32", "SM_HOSTS": '["algo-1", "algo-2"]'}
    args = train.parse_args([], env=env)
    # not the default /opt/ml/model: the value must come from SM_MODEL_DIR
    assert (args.train_dir, args.base_model_dir, args.model_dir) == ("/opt/ml/input/data/train", "/opt/ml/input/data/base_model", "/opt/ml/output-model")
    assert not hasattr(args, "checkpoint_dir")  # no resume in optimum-neuron 0.4.1: nothing to checkpoint
    assert args.neuron_cores == 64
    assert train.parse_args([], env={**env, "WORLD_SIZE": "32"}).neuron_cores == 32  # torchrun's view wins


def test_every_spec_entry_is_a_parser_option_with_a_valid_default():
    spec = train.load_spec()
    args = train.parse_args([], env={})
    for name, entry in spec.items():
        value = getattr(args, name)
        assert entry["type"] in ("int", "float", "bool", "str", "choice")
        if "min" in entry:
            assert entry["min"] <= value <= entry["max"], name
        if "choices" in entry:
            assert value in entry["choices"], name


def test_cross_argument_rules():
    args = train.parse_args(["--tensor_parallel_size", "4", "--neuron_cores", "2", "--max_steps", "0", "--serving_tensor_parallel_size", "3"], env={})
    errors = train.check_arguments(args)
    assert any("must divide the job's 2 NeuronCores" in e for e in errors)
    assert any("max_steps" in e for e in errors)
    assert any("serving_tensor_parallel_size" in e for e in errors)
    assert any("no training data" in e for e in errors)


def test_version_mismatch_fails_before_training_when_compiling():
    args = train.parse_args(["--serving_optimum_neuron_version", "0.4.4"], env={})
    assert train.check_serving_version(args, "0.4.1")
    assert not train.check_serving_version(args, "0.4.4")
    assert not train.check_serving_version(train.parse_args(["--serving_optimum_neuron_version", "0.4.4", "--compile_for_inference", "false"], env={}), "0.4.1")


def test_compile_command_uses_the_serving_shape():
    args = train.parse_args(["--serving_batch_size", "8", "--serving_sequence_length", "2048", "--serving_tensor_parallel_size", "2", "--model_dir", "/opt/ml/model"], env={})
    command = train.compile_command(args, Path("/opt/ml/work/merged"))
    joined = " ".join(command)
    assert command[:3] == ["optimum-cli", "export", "neuron"]
    assert "--instance_type inf2" in joined and "--batch_size 8" in joined and "--sequence_length 2048" in joined and "--tensor_parallel_size 2" in joined
    assert command[-1] == "/opt/ml/model"


def test_adapter_folder_skips_consolidation_when_not_sharded(tmp_path, monkeypatch):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    monkeypatch.setattr(train, "_run", lambda command: pytest.fail(f"unexpected {command}"))
    assert train.adapter_folder(tmp_path) == tmp_path
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    calls = []
    monkeypatch.setattr(train, "_run", calls.append)
    assert train.adapter_folder(sharded) == sharded / "adapter_default"
    assert calls == [["optimum-cli", "neuron", "consolidate", str(sharded), str(sharded / "adapter_default")]]


# --- dry run -------------------------------------------------------------------------------------


def test_dry_run_prints_a_plan_and_succeeds(capsys, base_model):
    status = train.main(["--dry-run", "--train_dir", str(SAMPLE.parent), "--base_model_dir", str(base_model), "--neuron_cores", "2"], env={})
    out = json.loads(capsys.readouterr().out)
    assert status == 0 and out["valid"] and out["errors"] == []
    plan = out["plan"]
    assert plan["data"]["records"] == 17
    assert plan["base_model"]["model_type"] == "qwen3"
    assert plan["parallelism"] == {"neuron_cores": 2, "tensor_parallel": 2, "data_parallel": 1, "global_batch_sequences": 8}
    assert plan["estimated_optimizer_steps"] == 9  # ceil(17 / 8) = 3 per epoch, 3 epochs
    assert plan["compile"] == {"instance_type": "inf2", "batch_size": 4, "sequence_length": 4096, "tensor_parallel_size": 2}


def test_dry_run_reports_every_problem_and_fails(capsys, tmp_path, base_model):
    (base_model / "config.json").write_text(json.dumps({"model_type": "gpt2", "max_position_embeddings": 1024}))
    bad = write_lines(tmp_path / "bad.jsonl", "{}")
    status = train.main(["--dry_run", "--train_dir", str(bad), "--base_model_dir", str(base_model), "--max_length", "2048"], env={})
    out = json.loads(capsys.readouterr().out)
    assert status == train.EXIT_INVALID and not out["valid"]
    text = "\n".join(out["errors"])
    assert f"{bad}:1:" in text
    assert "model_type 'gpt2'" in text
    assert "max_length=2048 exceeds" in text


def test_training_refuses_invalid_input_without_touching_neuron(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "train", lambda *a: pytest.fail("must not train"))
    bad = write_lines(tmp_path / "bad.jsonl", "[]")
    assert train.main(["--train_dir", str(bad)], env={}) == train.EXIT_INVALID


def test_no_ml_library_is_imported_on_the_cpu_path():
    heavy = ("torch", "transformers", "peft", "optimum", "datasets", "trl")
    code = (
        "import sys, runpy; sys.argv=['train.py','--dry-run','--train_dir',%r];"
        "import builtins; real=builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    assert name.split('.')[0] not in %r, name\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__=guard\n"
        "try: runpy.run_path(%r, run_name='__main__')\n"
        "except SystemExit as e: sys.exit(e.code)\n"
    ) % (str(SAMPLE), heavy, str(TRAINING / "train.py"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True


def test_validate_warns_of_records_longer_than_max_length_and_checks_the_installed_version(tmp_path, monkeypatch, base_model):
    monkeypatch.setattr(train, "installed_optimum_neuron", lambda: "0.4.1")
    long = write_lines(tmp_path / "long.jsonl", chat(("user", "q"), ("assistant", "a" * 4 * 300)))
    args = train.parse_args(["--train_dir", str(long), "--base_model_dir", str(base_model), "--max_length", "256",
                             "--serving_sequence_length", "256", "--serving_optimum_neuron_version", "0.4.4"], env={})
    plan, errors, report = train.validate(args)
    assert [(p.line, p.message) for p in report.warnings] == [(1, "about 300 tokens: longer than max_length=256, will be truncated")]
    assert errors == [train.check_serving_version(args, "0.4.1")[0]] and "0.4.4" in errors[0] and "0.4.1 is installed" in errors[0]
