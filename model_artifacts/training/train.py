"""SageMaker script-mode entry point: LoRA supervised fine-tuning of a Llama or Qwen3 causal LM on
Trainium (optimum-neuron), then consolidate -> merge -> compile for Inferentia2.

Contract with SageMaker (the training stack sets all of it):
  hyperparameters   `--key value` arguments, described in hyperparameters.json (one source for
                    this parser, the pipeline's input validation and scripts/start_training.py)
  SM_CHANNEL_TRAIN  training data: *.jsonl files (schema in data_format.py and README.md)
  SM_CHANNEL_BASE_MODEL  the base model in Hugging Face layout (config.json, tokenizer,
                    *.safetensors): jobs have no hub access, weights come from S3
  SM_MODEL_DIR      output: the compiled (or merged) model, uploaded uncompressed
  RANK, WORLD_SIZE  set by torchrun (hyperparameter sagemaker_torch_distributed_enabled=true)

No resume: optimum-neuron 0.4.1 (the training image's) raises in `NeuronTrainer.train` when given
`resume_from_checkpoint`, and a restarted job with checkpoints in `output_dir` only records the
last one in its config, without restoring weights, optimizer or step. So the trainer writes no
intermediate checkpoints (they could not be used) and a Spot interruption restarts training from
step 0; the stage's `training.max_wait_hours` leaves room for that.

Exit status: 0 done (or a valid dry run), 2 invalid input (arguments, data, base model; one line
per problem, no traceback), 1 an unexpected failure while training (traceback in the job's log).

`--dry_run` (or `--dry-run`) validates the data, the arguments and (when given) the base model
folder on any machine without Neuron packages, and prints the plan as JSON. Neuron, torch,
transformers and peft are imported only inside the functions that train.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # torchrun may start us from another working directory
    sys.path.insert(0, str(HERE))

import data_format  # noqa: E402

LOG = logging.getLogger("train")
SPEC_PATH = HERE / "hyperparameters.json"
SUPPORTED_MODEL_TYPES = ("llama", "qwen3")
SERVING_TENSOR_PARALLEL_SIZES = (1, 2, 4, 8, 12, 24)
DEFAULT_WORK_DIR = "/opt/ml/work"  # on the job's ML storage volume, not uploaded
EXIT_INVALID = 2


def load_spec(path: Path = SPEC_PATH) -> dict[str, dict[str, Any]]:
    spec = json.loads(path.read_text())
    return {name: entry for name, entry in spec.items() if not name.startswith("_")}


def str2bool(value: str) -> bool:
    """SageMaker's toolkit JSON-decodes hyperparameters, so booleans arrive as 'True'/'False'."""
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _bounded(kind, entry: dict[str, Any], name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value):  # nan passes every comparison, inf no bound: neither is a setting
            raise argparse.ArgumentTypeError(f"{name}: expected a finite number, got {text!r}")
        if "min" in entry and value < entry["min"] or "max" in entry and value > entry["max"]:
            raise argparse.ArgumentTypeError(f"{name}: {value} is outside {entry['min']}..{entry['max']}")
        return value

    return parse


def _patterned(entry: dict[str, Any], name: str):
    import re

    def parse(text: str) -> str:
        if "pattern" in entry and not re.match(entry["pattern"], text):
            raise argparse.ArgumentTypeError(f"{name}: {text!r} does not match {entry['pattern']}")
        return text

    return parse


def build_parser(spec: Mapping[str, dict[str, Any]], env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LoRA fine-tuning on Trainium, then merge and compile for Inferentia2.")
    hyper = parser.add_argument_group("hyperparameters (hyperparameters.json)")
    for name, entry in spec.items():
        kind = entry["type"]
        if kind == "bool":
            parse = str2bool
        elif kind in ("int", "float"):
            parse = _bounded(int if kind == "int" else float, entry, name)
        else:
            parse = _patterned(entry, name)
        default = float(entry["default"]) if kind == "float" else entry["default"]
        hyper.add_argument(f"--{name}", type=parse, default=default, choices=entry.get("choices"), help=entry.get("help"))
    paths = parser.add_argument_group("SageMaker environment contract (defaults from SM_* variables)")
    paths.add_argument("--train_dir", default=env.get("SM_CHANNEL_TRAIN"), help="training data folder or file (SM_CHANNEL_TRAIN)")
    paths.add_argument("--base_model_dir", default=env.get("SM_CHANNEL_BASE_MODEL"), help="base model folder (SM_CHANNEL_BASE_MODEL)")
    paths.add_argument("--model_dir", default=env.get("SM_MODEL_DIR", "/opt/ml/model"), help="output folder (SM_MODEL_DIR)")
    paths.add_argument("--work_dir", default=DEFAULT_WORK_DIR, help="scratch: final shards, consolidated adapter, merged model")
    paths.add_argument("--neuron_cores", type=int, default=_neuron_cores(env), help="NeuronCores of the whole job (default: WORLD_SIZE, or SM_NUM_NEURONS x hosts)")
    parser.add_argument("--dry_run", "--dry-run", action="store_true", help="validate data and arguments, print the plan, train nothing")
    return parser


def _neuron_cores(env: Mapping[str, str]) -> int | None:
    if env.get("WORLD_SIZE"):
        return int(env["WORLD_SIZE"])
    if env.get("SM_NUM_NEURONS"):
        hosts = len(json.loads(env.get("SM_HOSTS", "[1]")))  # one host unless SageMaker lists more
        return int(env["SM_NUM_NEURONS"]) * hosts
    return None


def parse_args(argv: list[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    return build_parser(load_spec(), env).parse_args(argv)


def hyperparameters_of(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in load_spec()}


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Rules that span several arguments (single-value bounds are checked by the parser)."""
    errors = []
    if not args.train_dir:
        errors.append("no training data: pass --train_dir or set SM_CHANNEL_TRAIN")
    if args.max_steps == 0:
        errors.append("max_steps must be -1 (run num_train_epochs) or positive")
    cores = args.neuron_cores
    if cores is not None:
        if cores < 1:
            errors.append(f"neuron_cores must be positive, got {cores}")
        elif cores % args.tensor_parallel_size:
            errors.append(f"tensor_parallel_size={args.tensor_parallel_size} must divide the job's {cores} NeuronCores")
    if args.compile_for_inference:
        if args.serving_tensor_parallel_size not in SERVING_TENSOR_PARALLEL_SIZES:
            errors.append(f"serving_tensor_parallel_size must be one of {SERVING_TENSOR_PARALLEL_SIZES}")
    return errors


def inspect_base_model(path: str | None, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Reads config.json and lists the weight and tokenizer files: no ML library needed."""
    if not path:
        return {"checked": False}, []
    folder = Path(path)
    if not (folder / "config.json").is_file():
        return {"checked": True, "path": str(folder)}, [f"base model: no config.json in {folder}"]
    try:
        config = json.loads((folder / "config.json").read_bytes())  # UTF-8 (json detects the encoding)
    except (ValueError, UnicodeDecodeError) as error:
        return {"checked": True, "path": str(folder)}, [f"base model: {folder / 'config.json'} is not valid JSON ({error})"]
    if not isinstance(config, dict):
        return {"checked": True, "path": str(folder)}, [f"base model: {folder / 'config.json'} is not a JSON object"]
    info = {
        "checked": True,
        "path": str(folder),
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "max_position_embeddings": config.get("max_position_embeddings"),
        "weight_files": len(list(folder.glob("*.safetensors"))),
    }
    errors = []
    if info["model_type"] not in SUPPORTED_MODEL_TYPES:
        errors.append(f"base model: model_type {info['model_type']!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}")
    if not info["weight_files"]:
        errors.append(f"base model: no *.safetensors weights in {folder}")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        errors.append(f"base model: no tokenizer.json or tokenizer.model in {folder}")
    limit = info["max_position_embeddings"]
    if isinstance(limit, int):
        if args.max_length > limit:
            errors.append(f"max_length={args.max_length} exceeds the base model's max_position_embeddings={limit}")
        if args.compile_for_inference and args.serving_sequence_length > limit:
            errors.append(f"serving_sequence_length={args.serving_sequence_length} exceeds max_position_embeddings={limit}")
    heads = config.get("num_key_value_heads") or config.get("num_attention_heads")
    if isinstance(heads, int) and heads % args.tensor_parallel_size and args.tensor_parallel_size % heads:
        errors.append(f"tensor_parallel_size={args.tensor_parallel_size} does not split the model's {heads} key/value heads")
    return info, errors


def installed_optimum_neuron() -> str | None:
    try:
        return metadata.version("optimum-neuron")
    except metadata.PackageNotFoundError:
        return None


def check_serving_version(args: argparse.Namespace, installed: str | None) -> list[str]:
    """A compiled model loads only under the optimum-neuron version that compiled it."""
    wanted = args.serving_optimum_neuron_version
    if not args.compile_for_inference or not wanted or installed is None or installed == wanted:
        return []
    return [
        f"compile_for_inference needs optimum-neuron {wanted} (the serving container's) but {installed} is installed: "
        "the endpoint would refuse the compiled model. Compile in a separate step or align the versions."
    ]


def make_plan(args: argparse.Namespace, report: data_format.DataReport, model: dict[str, Any]) -> dict[str, Any]:
    cores = args.neuron_cores
    data_parallel = cores // args.tensor_parallel_size if cores and cores % args.tensor_parallel_size == 0 else None
    plan: dict[str, Any] = {
        "data": report.summary(),
        "base_model": model,
        "hyperparameters": hyperparameters_of(args),
        "parallelism": {"neuron_cores": cores, "tensor_parallel": args.tensor_parallel_size, "data_parallel": data_parallel},
        "outputs": {"model": args.model_dir, "work": args.work_dir},
        "steps": ["validate", "train (LoRA)", "save shards", "consolidate adapter", "merge adapter into base", "compile for inf2" if args.compile_for_inference else "copy merged model"],
        "optimum_neuron": {"installed": installed_optimum_neuron(), "serving": args.serving_optimum_neuron_version or None},
    }
    if data_parallel:
        global_batch = data_parallel * args.per_device_train_batch_size * args.gradient_accumulation_steps
        # Without packing each record is one sequence; packing can only lower this (an upper bound).
        steps_per_epoch = max(1, -(-len(report.records) // global_batch))
        plan["parallelism"]["global_batch_sequences"] = global_batch
        plan["estimated_optimizer_steps"] = args.max_steps if args.max_steps > 0 else int(steps_per_epoch * args.num_train_epochs + 0.999)
    if args.compile_for_inference:
        plan["compile"] = {
            "instance_type": "inf2",
            "batch_size": args.serving_batch_size,
            "sequence_length": args.serving_sequence_length,
            "tensor_parallel_size": args.serving_tensor_parallel_size,
        }
    return plan


def validate(args: argparse.Namespace) -> tuple[dict[str, Any], list[str], data_format.DataReport]:
    errors = check_arguments(args)
    report = data_format.DataReport()
    if args.train_dir:
        try:
            report = data_format.validate_files([args.train_dir], max_length_tokens=args.max_length)
        except FileNotFoundError as error:
            errors.append(f"training data: {error}")
        errors.extend(f"training data: {problem}" for problem in report.errors)
    model, model_errors = inspect_base_model(args.base_model_dir, args)
    errors.extend(model_errors)
    errors.extend(check_serving_version(args, installed_optimum_neuron()))
    return make_plan(args, report, model), errors, report


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = parse_args(argv, env)
    plan, errors, report = validate(args)
    if args.dry_run:
        # allow_nan=False: the output is JSON for other programs, never Python's NaN/Infinity.
        print(json.dumps({"valid": not errors, "errors": errors, "plan": plan}, indent=2, allow_nan=False))
        return EXIT_INVALID if errors else 0
    if errors:
        for error in errors:
            LOG.error(error)
        return EXIT_INVALID
    if not args.base_model_dir:
        LOG.error("no base model: pass --base_model_dir or set SM_CHANNEL_BASE_MODEL")
        return EXIT_INVALID
    LOG.info("plan: %s", json.dumps(plan, default=str))
    rank = int(env.get("RANK", "0"))
    final_dir = train(args, report)
    if rank == 0:
        finalize(args, final_dir, plan, report)
    return 0


# --- Everything below runs only in the training container (Neuron packages imported lazily). ---


def _supported_kwargs(target, candidates: dict[str, Any]) -> dict[str, Any]:
    """Keeps the keyword arguments `target` accepts (optimum-neuron/trl renamed a few between releases)."""
    names = set(inspect.signature(target).parameters)  # a dataclass's signature lists its fields
    return {key: value for key, value in candidates.items() if key in names}


def train(args: argparse.Namespace, report: data_format.DataReport) -> Path:
    import torch
    from datasets import Dataset
    from optimum.neuron import NeuronSFTConfig, NeuronSFTTrainer
    from optimum.neuron.models.training import NeuronModelForCausalLM
    from peft import LoraConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=False) for r in report.records]
    dataset = Dataset.from_list([{"text": text} for text in texts])

    options = {
        "output_dir": str(Path(args.work_dir) / "trainer"),  # scratch: nothing here survives an interruption
        "do_train": True,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": args.lr_scheduler_type,
        "warmup_ratio": args.warmup_ratio,
        "weight_decay": args.weight_decay,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "bf16": args.bf16,
        "tensor_parallel_size": args.tensor_parallel_size,
        "zero_1": args.zero_1,
        "gradient_checkpointing": args.gradient_checkpointing,
        "logging_steps": args.logging_steps,
        "save_strategy": "no",  # no resume in optimum-neuron 0.4.1: a checkpoint could not be used
        "seed": args.seed,
        "report_to": [],
        "packing": args.packing,
        "dataset_text_field": "text",
        "max_seq_length": args.max_length,  # trl 0.11 (optimum-neuron 0.4.0/0.4.1)
        "max_length": args.max_length,  # later trl
    }
    config = NeuronSFTConfig(**_supported_kwargs(NeuronSFTConfig, options))
    model = NeuronModelForCausalLM.from_pretrained(
        args.base_model_dir,
        config.trn_config,
        torch_dtype=torch.bfloat16 if args.bf16 else torch.float32,
        attn_implementation="flash_attention_2",
    )
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules.split(","),
        bias="none",
        task_type="CAUSAL_LM",
    )
    trainer_options = {"args": config, "model": model, "peft_config": lora, "train_dataset": dataset, "tokenizer": tokenizer, "processing_class": tokenizer}
    trainer = NeuronSFTTrainer(**_supported_kwargs(NeuronSFTTrainer.__init__, trainer_options))
    trainer.train()
    final_dir = Path(args.work_dir) / "final"
    trainer.save_model(str(final_dir))  # collective: every rank writes its shard
    return final_dir


def _run(command: list[str]) -> None:
    LOG.info("running: %s", " ".join(command))
    subprocess.run(command, check=True)


def adapter_folder(final_dir: Path) -> Path:
    """Consolidates tensor-parallel adapter shards (if any) and returns the PEFT adapter folder."""
    if (final_dir / "adapter_model.safetensors").is_file():  # no model parallelism: already whole
        return final_dir
    adapter_dir = final_dir / "adapter_default"
    _run(["optimum-cli", "neuron", "consolidate", str(final_dir), str(adapter_dir)])
    return adapter_dir


def merge_adapter(base_model_dir: str, adapter_dir: Path, merged_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model_dir, torch_dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(merged_dir), safe_serialization=True)
    AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(str(merged_dir))


def compile_command(args: argparse.Namespace, merged_dir: Path) -> list[str]:
    return [
        "optimum-cli", "export", "neuron",
        "--model", str(merged_dir),
        "--task", "text-generation",
        "--instance_type", "inf2",
        "--batch_size", str(args.serving_batch_size),
        "--sequence_length", str(args.serving_sequence_length),
        "--tensor_parallel_size", str(args.serving_tensor_parallel_size),
        "--torch_dtype", "bfloat16",
        str(args.model_dir),
    ]


def finalize(args: argparse.Namespace, final_dir: Path, plan: dict[str, Any], report: data_format.DataReport) -> None:
    adapter_dir = adapter_folder(final_dir)
    merged_dir = Path(args.work_dir) / "merged"
    merge_adapter(args.base_model_dir, adapter_dir, merged_dir)
    model_dir = Path(args.model_dir)
    if args.compile_for_inference:
        _run(compile_command(args, merged_dir))
    else:
        shutil.copytree(merged_dir, model_dir, dirs_exist_ok=True)
    shutil.copytree(adapter_dir, model_dir / "lora_adapter", dirs_exist_ok=True)
    write_manifest(model_dir, plan, report)


def write_manifest(model_dir: Path, plan: dict[str, Any], report: data_format.DataReport) -> None:
    """What produced this model: data digests, hyperparameters, versions (read by humans and the registry)."""
    digests = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in report.files}
    manifest = {**plan, "data_sha256": digests, "optimum_neuron": {**plan["optimum_neuron"], "installed": installed_optimum_neuron()}}
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "training_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
