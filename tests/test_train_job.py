"""train.py's container side with stand-ins for torch, datasets, peft, transformers and
optimum-neuron: what reaches the trainer is what the operator asked for (each hyperparameter under
the name the library reads, no checkpoints, the chat template on every record), and what the job
leaves in the model folder (the compiled or merged model, the adapter, the manifest)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model_artifacts" / "training"))

import data_format  # noqa: E402
import train  # noqa: E402

SAMPLE = ROOT / "model_artifacts" / "training" / "sample_data" / "train.jsonl"


@dataclasses.dataclass
class NeuronSFTConfig:
    """optimum-neuron 0.4.1's config (trl 0.11 names): no `max_length`, no `processing_class`.
    No defaults: an option train.py leaves out (or passes under another name) is a TypeError."""

    output_dir: str
    do_train: bool
    num_train_epochs: float
    max_steps: int
    learning_rate: float
    lr_scheduler_type: str
    warmup_ratio: float
    weight_decay: float
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    bf16: bool
    tensor_parallel_size: int
    zero_1: bool
    gradient_checkpointing: bool
    logging_steps: int
    save_strategy: str
    seed: int
    report_to: list
    packing: bool
    dataset_text_field: str
    max_seq_length: int

    @property
    def trn_config(self):
        return ("trn", self.tensor_parallel_size)


# A later trl's names: `max_length` for `max_seq_length`, the trainer's `processing_class` for `tokenizer`.
LaterSFTConfig = dataclasses.make_dataclass(
    "LaterSFTConfig", [(f.name, f.type) for f in dataclasses.fields(NeuronSFTConfig) if f.name != "max_seq_length"] + [("max_length", int)],
    namespace={"trn_config": NeuronSFTConfig.trn_config})


class Recorder:
    calls: dict = {}


class Tokenizer:
    pad_token = None
    eos_token = "<eos>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is False
        return "|".join(f"{m['role']}:{m['content']}" for m in messages)

    def save_pretrained(self, folder):
        Recorder.calls["tokenizer_saved"] = folder


class Trainer:
    def __init__(self, args, model, peft_config, train_dataset, tokenizer):
        Recorder.calls["trainer"] = {"args": args, "model": model, "peft": peft_config, "dataset": train_dataset, "tokenizer": tokenizer}

    def train(self):
        Recorder.calls["trained"] = True

    def save_model(self, folder):
        Recorder.calls["saved"] = folder


class LaterTrainer(Trainer):
    def __init__(self, args, model, peft_config, train_dataset, processing_class):
        super().__init__(args, model, peft_config, train_dataset, processing_class)


class Merged:
    def save_pretrained(self, folder, safe_serialization):
        Recorder.calls["merged"] = (folder, safe_serialization)


def module(name: str, **attributes) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    return made


@pytest.fixture
def neuron(monkeypatch):
    """Stand-ins for the training image's packages, as train.py imports them."""
    Recorder.calls = {}
    tokenizer = Tokenizer()
    fakes = {
        "torch": module("torch", bfloat16="bf16", float32="fp32"),
        "datasets": module("datasets", Dataset=types.SimpleNamespace(from_list=lambda rows: ("dataset", rows))),
        "optimum": module("optimum"),
        "optimum.neuron": module("optimum.neuron", NeuronSFTConfig=NeuronSFTConfig, NeuronSFTTrainer=Trainer),
        "optimum.neuron.models": module("optimum.neuron.models"),
        "optimum.neuron.models.training": module("optimum.neuron.models.training", NeuronModelForCausalLM=types.SimpleNamespace(
            from_pretrained=lambda path, trn, **kw: Recorder.calls.setdefault("model", (path, trn, kw)))),
        "peft": module("peft", LoraConfig=lambda **kw: ("lora", kw), PeftModel=types.SimpleNamespace(
            from_pretrained=lambda base, folder: types.SimpleNamespace(merge_and_unload=lambda: Recorder.calls.setdefault(
                "peft_loaded", (base, folder)) and Merged()))),
        "transformers": module("transformers", AutoTokenizer=types.SimpleNamespace(from_pretrained=lambda path: tokenizer),
                               AutoModelForCausalLM=types.SimpleNamespace(from_pretrained=lambda path, torch_dtype: ("base", path, torch_dtype))),
    }
    for name, fake in fakes.items():
        monkeypatch.setitem(sys.modules, name, fake)
    return Recorder.calls


def args_for(tmp_path, *extra: str):
    return train.parse_args(["--train_dir", str(SAMPLE), "--base_model_dir", "/base", "--work_dir", str(tmp_path / "work"),
                             "--model_dir", str(tmp_path / "model"), *extra], env={})


def test_every_hyperparameter_reaches_the_trainer_under_the_name_it_reads(neuron, tmp_path):
    args = args_for(tmp_path, "--learning_rate", "0.0003", "--lr_scheduler_type", "linear", "--warmup_ratio", "0.1", "--weight_decay", "0.01",
                    "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "4", "--max_length", "1024", "--max_steps", "7",
                    "--num_train_epochs", "2", "--tensor_parallel_size", "1", "--zero_1", "false", "--gradient_checkpointing", "false",
                    "--logging_steps", "3", "--seed", "9", "--packing", "false", "--bf16", "false", "--lora_r", "4", "--lora_alpha", "8",
                    "--lora_dropout", "0.1", "--lora_target_modules", "q_proj,v_proj")
    report = data_format.validate_files([SAMPLE])
    final = train.train(args, report)
    assert final == tmp_path / "work" / "final" and neuron["saved"] == str(final) and neuron["trained"]
    trainer = neuron["trainer"]
    assert trainer["args"] == NeuronSFTConfig(
        output_dir=str(tmp_path / "work" / "trainer"), do_train=True, num_train_epochs=2.0, max_steps=7, learning_rate=0.0003,
        lr_scheduler_type="linear", warmup_ratio=0.1, weight_decay=0.01, per_device_train_batch_size=2, gradient_accumulation_steps=4,
        bf16=False, tensor_parallel_size=1, zero_1=False, gradient_checkpointing=False, logging_steps=3, save_strategy="no", seed=9,
        report_to=[], packing=False, dataset_text_field="text", max_seq_length=1024)
    assert trainer["peft"] == ("lora", {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"], "bias": "none",
                                        "task_type": "CAUSAL_LM"})
    assert neuron["model"] == ("/base", ("trn", 1), {"torch_dtype": "fp32", "attn_implementation": "flash_attention_2"})
    assert trainer["model"] is neuron["model"] and trainer["tokenizer"].pad_token == "<eos>"
    _, rows = trainer["dataset"]
    assert len(rows) == len(report.records) and rows[0] == {"text": "|".join(f"{m['role']}:{m['content']}" for m in report.records[0]["messages"])}


def test_a_later_trl_gets_the_sequence_length_and_the_tokenizer_under_its_own_names(neuron, monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules["optimum.neuron"], "NeuronSFTConfig", LaterSFTConfig)
    monkeypatch.setattr(sys.modules["optimum.neuron"], "NeuronSFTTrainer", LaterTrainer)
    train.train(args_for(tmp_path, "--max_length", "768"), data_format.validate_files([SAMPLE]))
    assert neuron["trainer"]["args"].max_length == 768 and neuron["trainer"]["tokenizer"].pad_token == "<eos>"


def test_bf16_training_loads_the_model_in_bfloat16(neuron, tmp_path):
    train.train(args_for(tmp_path), data_format.validate_files([SAMPLE]))
    assert neuron["model"][2]["torch_dtype"] == "bf16"


def test_the_adapter_is_merged_into_the_base_in_bfloat16_and_saved_as_safetensors(neuron, tmp_path):
    train.merge_adapter("/base", tmp_path / "adapter", tmp_path / "merged")
    assert neuron["peft_loaded"] == (("base", "/base", "bf16"), str(tmp_path / "adapter"))
    assert neuron["merged"] == (str(tmp_path / "merged"), True) and neuron["tokenizer_saved"] == str(tmp_path / "merged")


def test_only_the_arguments_a_library_version_accepts_are_passed():
    def target(a, b=1):
        return a

    assert train._supported_kwargs(target, {"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2}
    assert train._supported_kwargs(NeuronSFTConfig, {"max_seq_length": 1, "max_length": 2}) == {"max_seq_length": 1}


@pytest.mark.parametrize("compile_for_inference", [True, False])
def test_finalize_leaves_the_model_the_adapter_and_the_manifest(tmp_path, monkeypatch, compile_for_inference):
    args = args_for(tmp_path, "--compile_for_inference", str(compile_for_inference).lower())
    final = tmp_path / "work" / "final"
    (final / "adapter_default").mkdir(parents=True)
    (final / "adapter_default" / "adapter_config.json").write_text("{}")
    commands = []
    monkeypatch.setattr(train, "adapter_folder", lambda folder: folder / "adapter_default")
    monkeypatch.setattr(train, "_run", commands.append)

    def merge(base, adapter, merged):
        merged.mkdir(parents=True)
        (merged / "model.safetensors").write_text("weights")
        commands.append(("merge", base, adapter, merged))

    monkeypatch.setattr(train, "merge_adapter", merge)
    report = data_format.validate_files([SAMPLE])
    train.finalize(args, final, {"plan": 1, "optimum_neuron": {"serving": None}}, report)
    merged = tmp_path / "work" / "merged"
    assert commands[0] == ("merge", "/base", final / "adapter_default", merged)
    model = tmp_path / "model"
    if compile_for_inference:
        assert commands[1:] == [train.compile_command(args, merged)] and not (model / "model.safetensors").exists()
    else:
        assert commands[1:] == [] and (model / "model.safetensors").read_text() == "weights"
    assert (model / "lora_adapter" / "adapter_config.json").read_text() == "{}"
    manifest = json.loads((model / "training_manifest.json").read_text())
    assert manifest["plan"] == 1 and manifest["data_sha256"] == {str(SAMPLE): hashlib.sha256(SAMPLE.read_bytes()).hexdigest()}
    assert manifest["optimum_neuron"] == {"serving": None, "installed": train.installed_optimum_neuron()}


def test_the_manifest_is_sorted_indented_json_ending_in_a_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "installed_optimum_neuron", lambda: "0.4.1")
    report = data_format.DataReport(files=[str(SAMPLE)])
    train.write_manifest(tmp_path / "out" / "model", {"b": 1, "a": Path("/x"), "optimum_neuron": {}}, report)  # folders made
    digest = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert (tmp_path / "out" / "model" / "training_manifest.json").read_text() == (
        '{\n  "a": "/x",\n  "b": 1,\n  "data_sha256": {\n    "%s": "%s"\n  },\n  "optimum_neuron": {\n    "installed": "0.4.1"\n  }\n}\n'
        % (SAMPLE, digest))


def test_the_compile_command_exports_in_bfloat16_for_text_generation(tmp_path):
    args = args_for(tmp_path, "--serving_batch_size", "8", "--serving_sequence_length", "2048", "--serving_tensor_parallel_size", "2")
    assert train.compile_command(args, Path("/m")) == [
        "optimum-cli", "export", "neuron", "--model", "/m", "--task", "text-generation", "--instance_type", "inf2", "--batch_size", "8",
        "--sequence_length", "2048", "--tensor_parallel_size", "2", "--torch_dtype", "bfloat16", str(tmp_path / "model")]


def test_commands_run_checked(monkeypatch):
    calls = []
    monkeypatch.setattr(train.subprocess, "run", lambda command, check: calls.append((command, check)))
    train._run(["optimum-cli", "neuron", "consolidate"])
    assert calls == [(["optimum-cli", "neuron", "consolidate"], True)]


# --- the CPU side's details: what the dry run and the job's log tell the operator -----------------


def base_folder(tmp_path, config, *files):
    folder = tmp_path / "base"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def test_what_the_base_model_check_reports(tmp_path):
    args = train.parse_args(["--tensor_parallel_size", "2"], env={})
    assert train.inspect_base_model(None, args) == ({"checked": False}, [])
    missing = tmp_path / "missing"
    assert train.inspect_base_model(str(missing), args) == ({"checked": True, "path": str(missing)}, [f"base model: no config.json in {missing}"])
    folder = base_folder(tmp_path, "{bad")
    assert train.inspect_base_model(str(folder), args) == ({"checked": True, "path": str(folder)}, [
        f"base model: {folder / 'config.json'} is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"])
    folder = base_folder(tmp_path, "[1]")
    assert train.inspect_base_model(str(folder), args) == ({"checked": True, "path": str(folder)}, [f"base model: {folder / 'config.json'} is not a JSON object"])
    folder = base_folder(tmp_path, {"model_type": "gpt2", "architectures": ["GPT2"], "max_position_embeddings": 1024, "num_attention_heads": 3})
    info, errors = train.inspect_base_model(str(folder), args)
    assert info == {"checked": True, "path": str(folder), "model_type": "gpt2", "architectures": ["GPT2"], "max_position_embeddings": 1024, "weight_files": 0}
    assert errors == ["base model: model_type 'gpt2' is not one of llama, qwen3", f"base model: no *.safetensors weights in {folder}",
                      f"base model: no tokenizer.json or tokenizer.model in {folder}",
                      "max_length=2048 exceeds the base model's max_position_embeddings=1024",
                      "serving_sequence_length=4096 exceeds max_position_embeddings=1024",
                      "tensor_parallel_size=2 does not split the model's 3 key/value heads"]


@pytest.mark.parametrize("config, argv, errors", [
    ({"num_key_value_heads": 8, "num_attention_heads": 3}, ["--tensor_parallel_size", "4"], []),  # the key/value heads count
    ({"num_key_value_heads": 2}, ["--tensor_parallel_size", "8"], []),  # more ranks than heads: each head on several
    ({"num_key_value_heads": 6}, ["--tensor_parallel_size", "4"], ["tensor_parallel_size=4 does not split the model's 6 key/value heads"]),
    ({"max_position_embeddings": 4096}, ["--max_length", "4096", "--serving_sequence_length", "4096"], []),  # equal is enough
    ({"max_position_embeddings": 2048}, ["--compile_for_inference", "false", "--serving_sequence_length", "4096"], []),
])
def test_sizes_against_the_base_models_config(tmp_path, config, argv, errors):
    folder = base_folder(tmp_path, {"model_type": "llama", **config}, "model.safetensors", "tokenizer.model")
    assert train.inspect_base_model(str(folder), train.parse_args(argv, env={}))[1] == errors


def test_cross_argument_messages_and_the_core_count_boundary():
    errors = train.check_arguments(train.parse_args(["--neuron_cores", "0", "--max_steps", "0"], env={}))
    assert errors == ["no training data: pass --train_dir or set SM_CHANNEL_TRAIN", "max_steps must be -1 (run num_train_epochs) or positive",
                      "neuron_cores must be positive, got 0"]
    assert train.check_arguments(train.parse_args(["--neuron_cores", "1", "--tensor_parallel_size", "1", "--train_dir", "d"], env={})) == []
    assert train.check_serving_version(train.parse_args(["--serving_optimum_neuron_version", "0.4.4"], env={}), None) == []
    assert train.check_serving_version(train.parse_args(["--serving_optimum_neuron_version", "0.4.4"], env={}), "0.4.1") == [
        "compile_for_inference needs optimum-neuron 0.4.4 (the serving container's) but 0.4.1 is installed: the endpoint would refuse "
        "the compiled model. Compile in a separate step or align the versions."]


@pytest.mark.parametrize("argv, message", [
    (["--lora_r", "x"], "argument --lora_r: lora_r: expected int, got 'x'"),
    (["--learning_rate", "fast"], "argument --learning_rate: learning_rate: expected float, got 'fast'"),
    (["--lora_r", "0"], "argument --lora_r: lora_r: 0 is outside 1..256"),
    (["--lora_target_modules", "a b"], "argument --lora_target_modules: lora_target_modules: 'a b' does not match ^[A-Za-z_][A-Za-z0-9_]*(,[A-Za-z_][A-Za-z0-9_]*)*$"),
    (["--packing", "maybe"], "argument --packing: expected true or false, got 'maybe'"),
])
def test_a_bad_argument_names_itself(capsys, argv, message):
    with pytest.raises(SystemExit):
        train.parse_args(argv, env={})
    assert capsys.readouterr().err.strip().endswith(message)


def test_argument_types_and_defaults_outside_sagemaker():
    args = train.parse_args(["--dry-run", "--neuron_cores", "4", "--packing", "1", "--bf16", "no"], env={})
    assert args.dry_run is True and args.neuron_cores == 4 and args.packing is True and args.bf16 is False
    assert (args.model_dir, args.work_dir, args.train_dir, args.base_model_dir) == ("/opt/ml/model", "/opt/ml/work", None, None)
    assert isinstance(args.num_train_epochs, float) and isinstance(args.lora_r, int)
    assert train.parse_args([], env={"SM_NUM_NEURONS": "2"}).neuron_cores == 2  # one host unless SM_HOSTS says more


def test_main_reads_the_process_environment_by_default(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(SAMPLE))
    monkeypatch.delenv("SM_CHANNEL_BASE_MODEL", raising=False)
    assert train.main(["--dry-run", "--neuron_cores", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('{\n  "valid": true,\n  "errors": [],\n  "plan": {') and json.loads(out)["plan"]["data"]["files"] == [str(SAMPLE)]


def test_a_dry_run_never_prints_what_json_cannot_read(monkeypatch):
    monkeypatch.setattr(train, "make_plan", lambda *a: {"estimated_optimizer_steps": float("nan")})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        train.main(["--dry-run", "--train_dir", str(SAMPLE)], env={})


@pytest.mark.parametrize("rank, finalized", [("0", True), ("1", False), (None, True)])
def test_every_rank_trains_and_only_rank_0_finalizes(monkeypatch, tmp_path, rank, finalized):
    calls = []
    monkeypatch.setattr(train, "train", lambda args, report: calls.append(("train", args.base_model_dir, len(report.records))) or tmp_path / "final")
    monkeypatch.setattr(train, "finalize", lambda args, final, plan, report: calls.append(
        ("finalize", args.base_model_dir, final, plan["base_model"]["checked"], len(report.records))))
    env = {} if rank is None else {"RANK": rank}
    assert train.main(["--train_dir", str(SAMPLE), "--base_model_dir", str(base_folder(tmp_path, {"model_type": "qwen3"}, "m.safetensors",
                                                                                         "tokenizer.json"))], env=env) == 0
    records = len(data_format.validate_files([SAMPLE]).records)
    assert calls == [("train", str(tmp_path / "base"), records)] + (
        [("finalize", str(tmp_path / "base"), tmp_path / "final", True, records)] if finalized else [])


def test_a_job_without_a_base_model_or_with_bad_input_stops_before_training(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(train, "train", lambda *a: pytest.fail("must not train"))
    assert train.main(["--train_dir", str(SAMPLE)], env={}) == train.EXIT_INVALID
    assert "no base model: pass --base_model_dir or set SM_CHANNEL_BASE_MODEL" in caplog.text
    caplog.clear()
    assert train.main(["--train_dir", str(tmp_path / "none.jsonl")], env={}) == train.EXIT_INVALID
    assert f"training data: no such file or directory: {tmp_path / 'none.jsonl'}" in caplog.text


def test_finalize_twice_into_existing_folders(tmp_path, monkeypatch):
    """SageMaker creates the model folder before the job; a rerun in the same container finds its outputs."""
    args = args_for(tmp_path, "--compile_for_inference", "false")
    final = tmp_path / "work" / "final"
    (final / "adapter_default").mkdir(parents=True)
    (final / "adapter_default" / "adapter_config.json").write_text("{}")
    (tmp_path / "model").mkdir()
    monkeypatch.setattr(train, "adapter_folder", lambda folder: folder / "adapter_default")

    def merge(base, adapter, merged):
        merged.mkdir(parents=True, exist_ok=True)
        (merged / "model.safetensors").write_text("weights")

    monkeypatch.setattr(train, "merge_adapter", merge)
    report = data_format.validate_files([SAMPLE])
    for _ in range(2):
        train.finalize(args, final, {"optimum_neuron": {}}, report)
    assert (tmp_path / "model" / "model.safetensors").read_text() == "weights"


def plan_for(*argv: str, report=None, installed=None, monkeypatch=None):
    args = train.parse_args(list(argv), env={})
    return train.make_plan(args, report if report is not None else data_format.validate_files([SAMPLE]), {"checked": False})


def test_the_plan_shows_parallelism_batches_and_steps(monkeypatch):
    monkeypatch.setattr(train, "installed_optimum_neuron", lambda: "0.4.1")
    report = data_format.validate_files([SAMPLE])
    plan = plan_for("--neuron_cores", "4", "--tensor_parallel_size", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps",
                    "3", "--num_train_epochs", "2", "--serving_batch_size", "8", "--serving_sequence_length", "2048",
                    "--serving_tensor_parallel_size", "2", "--serving_optimum_neuron_version", "0.4.1", report=report)
    steps_per_epoch = -(-len(report.records) // 12)
    assert plan == {
        "data": report.summary(), "base_model": {"checked": False}, "hyperparameters": train.hyperparameters_of(train.parse_args(
            ["--neuron_cores", "4", "--tensor_parallel_size", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "3",
             "--num_train_epochs", "2", "--serving_batch_size", "8", "--serving_sequence_length", "2048", "--serving_tensor_parallel_size", "2",
             "--serving_optimum_neuron_version", "0.4.1"], env={})),
        "parallelism": {"neuron_cores": 4, "tensor_parallel": 2, "data_parallel": 2, "global_batch_sequences": 12},
        "outputs": {"model": "/opt/ml/model", "work": "/opt/ml/work"},
        "steps": ["validate", "train (LoRA)", "save shards", "consolidate adapter", "merge adapter into base", "compile for inf2"],
        "optimum_neuron": {"installed": "0.4.1", "serving": "0.4.1"},
        "estimated_optimizer_steps": int(steps_per_epoch * 2 + 0.999),
        "compile": {"instance_type": "inf2", "batch_size": 8, "sequence_length": 2048, "tensor_parallel_size": 2},
    }
    assert type(plan["parallelism"]["data_parallel"]) is int and type(plan["parallelism"]["global_batch_sequences"]) is int
    assert plan["hyperparameters"]["learning_rate"] == 0.0002 and plan["hyperparameters"]["num_train_epochs"] == 2.0


@pytest.mark.parametrize("argv, expected", [
    (["--neuron_cores", "2", "--max_steps", "1"], 1),
    (["--neuron_cores", "2", "--max_steps", "0", "--num_train_epochs", "3"], 3),  # not positive: the epochs decide
    (["--neuron_cores", "2", "--num_train_epochs", "0.5"], 1),
])
def test_estimated_steps_of_an_empty_dataset_are_at_least_one_per_epoch(argv, expected):
    assert plan_for(*argv, report=data_format.DataReport())["estimated_optimizer_steps"] == expected


def test_a_plan_without_whole_data_parallelism_estimates_nothing_and_copies_the_merged_model():
    plan = plan_for("--neuron_cores", "3", "--tensor_parallel_size", "2", "--compile_for_inference", "false")
    assert plan["parallelism"] == {"neuron_cores": 3, "tensor_parallel": 2, "data_parallel": None}
    assert "estimated_optimizer_steps" not in plan and "compile" not in plan and plan["steps"][-1] == "copy merged model"
    assert plan["optimum_neuron"]["serving"] is None


def test_the_installed_optimum_neuron_version_is_read_from_its_distribution(monkeypatch):
    def version(name):
        if name != "optimum-neuron":
            raise train.metadata.PackageNotFoundError(name)
        return "0.4.1"

    monkeypatch.setattr(train.metadata, "version", version)
    assert train.installed_optimum_neuron() == "0.4.1"
    monkeypatch.setattr(train.metadata, "version", lambda name: (_ for _ in ()).throw(train.metadata.PackageNotFoundError(name)))
    assert train.installed_optimum_neuron() is None


@pytest.mark.parametrize("value, expected", [("yes", True), ("1", True), ("True", True), ("no", False), ("0", False), (" FALSE ", False)])
def test_booleans_as_people_and_sagemaker_write_them(value, expected):
    assert train.str2bool(value) is expected


def test_the_tokenizer_and_the_base_come_from_the_base_model_folder(neuron, tmp_path, monkeypatch):
    seen = []
    tokenizer = Tokenizer()
    monkeypatch.setattr(sys.modules["transformers"].AutoTokenizer, "from_pretrained", lambda path: seen.append(path) or tokenizer)
    train.train(args_for(tmp_path), data_format.validate_files([SAMPLE]))
    train.merge_adapter("/base", tmp_path / "adapter", tmp_path / "merged")
    assert seen == ["/base", "/base"]


def test_validating_nothing_names_no_file(tmp_path):
    assert [str(p) for p in data_format.validate_files([]).errors] == ["-:0: no training records"]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"")
    second.write_bytes(b"")
    assert [str(p) for p in data_format.validate_files([first, second]).errors] == [f"{first},{second}:0: no training records"]
