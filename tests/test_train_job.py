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
    """optimum-neuron 0.4.1's config (trl 0.11 names): no `max_length`, no `processing_class`."""

    output_dir: str
    do_train: bool = False
    num_train_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 0.0
    lr_scheduler_type: str = ""
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 0
    bf16: bool = False
    tensor_parallel_size: int = 0
    zero_1: bool = False
    gradient_checkpointing: bool = False
    logging_steps: int = 0
    save_strategy: str = "steps"
    seed: int = 0
    report_to: list = dataclasses.field(default_factory=list)
    packing: bool = False
    dataset_text_field: str = ""
    max_seq_length: int = 0

    @property
    def trn_config(self):
        return ("trn", self.tensor_parallel_size)


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


def test_the_manifest_is_sorted_json_ending_in_a_newline(tmp_path):
    report = data_format.DataReport(files=[str(SAMPLE)])
    train.write_manifest(tmp_path / "out", {"b": 1, "a": Path("/x"), "optimum_neuron": {}}, report)
    text = (tmp_path / "out" / "training_manifest.json").read_text()
    assert text.endswith("}\n") and list(json.loads(text)) == ["a", "b", "data_sha256", "optimum_neuron"] and json.loads(text)["a"] == "/x"


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
