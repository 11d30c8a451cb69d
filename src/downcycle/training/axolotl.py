"""Reading an axolotl config: the keys downcycle supports become :class:`TrainConfig` fields.

Every key of the file is accounted for: mapped to a field, recognised and deliberately not needed
(with the reason), or unknown. Ignored and unknown keys are reported by name in the run's notes and
manifest, never dropped silently. Options given on the command line (values that differ from the
field's default) win over the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..recipe import TrainConfig

__all__ = ["IGNORED_KEYS", "AxolotlMapping", "apply_axolotl", "map_axolotl"]

_OPTIMIZERS = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_hf": "adamw", "adamw": "adamw",
               "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
               "paged_adamw_32bit": "paged_adamw_32bit"}
_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant"}
# Keys understood but not needed by downcycle's loop, with the reason reported to the user.
IGNORED_KEYS: dict[str, str] = {
    "model_type": "the model class is AutoModelForCausalLM",
    "tokenizer_type": "the tokenizer is the one the corpus was built with",
    "strict": "downcycle always reports unknown keys",
    "dataset_prepared_path": "the corpus directory (--data) is the prepared dataset",
    "save_safetensors": "downcycle always saves safetensors",
    "sample_packing": "corpora are always packed (downcycle data)",
    "pad_to_sequence_len": "packed sequences are all sequence_len long",
    "train_on_inputs": "completion data: every token is a target",
    "group_by_length": "packed sequences all have the same length",
    "tf32": "left to PyTorch's defaults",
    "flash_attention": "the attention kernel is transformers' default (sdpa)",
    "special_tokens": "packed sequences need no padding, so no pad token is added",
    "val_set_size": "the validation split is the corpus's own (downcycle data --val)",
    "wandb_project": "metrics go to JSONL and TensorBoard",
    "wandb_entity": "metrics go to JSONL and TensorBoard",
    "wandb_watch": "metrics go to JSONL and TensorBoard",
    "wandb_name": "metrics go to JSONL and TensorBoard",
    "wandb_log_model": "metrics go to JSONL and TensorBoard",
    "xformers_attention": "the attention kernel is transformers' default (sdpa)",
    "sdp_attention": "the attention kernel is transformers' default (sdpa)",
    "early_stopping_patience": "not supported: runs spend their budget",
    "resume_from_checkpoint": "use --resume",
    "local_rank": "set by the launcher",
    "debug": "not used",
    "deepspeed": "choose DeepSpeed in the accelerate config (see examples/accelerate/)",
    "fsdp": "choose FSDP in the accelerate config (see examples/accelerate/)",
    "fsdp_config": "choose FSDP in the accelerate config (see examples/accelerate/)",
}


@dataclasses.dataclass
class AxolotlMapping:
    fields: dict[str, Any]  # TrainConfig field -> value
    ignored: dict[str, str]  # key -> why it is not needed
    unknown: list[str]  # keys downcycle does not know
    seq_len: int | None  # sequence_len, checked against the corpus

    def notes(self, path: Path) -> list[str]:
        out = [f"{path}: ignored {k} ({why})" for k, why in self.ignored.items()]
        if self.unknown:
            out.append(f"{path}: unknown key(s) not used: {', '.join(self.unknown)}")
        return out


def map_axolotl(doc: dict[str, Any], path: Path | str = "axolotl config") -> AxolotlMapping:
    """Map an axolotl config (a parsed YAML mapping) to TrainConfig fields.

    Raises:
        DowncycleError: for a value downcycle cannot honour (8-bit loading, an unknown optimizer...).
    """
    f: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    seq_len = None

    def bad(key: str, why: str) -> DowncycleError:
        return DowncycleError(f"{path}: {key}: {why}")

    adapter = doc.get("adapter")
    four_bit = bool(doc.get("load_in_4bit"))
    for key, value in doc.items():
        if key == "base_model":
            f["model"] = str(value)
        elif key == "datasets":
            f.update(_datasets(value, path))
        elif key == "adapter":
            if value not in (None, "lora", "qlora"):
                raise bad(key, f"{value!r} is not supported (lora or qlora)")
        elif key == "load_in_4bit":
            if value and adapter not in ("qlora", "lora"):
                raise bad(key, "4-bit loading needs adapter: qlora")
        elif key == "load_in_8bit":
            if value:
                raise bad(key, "8-bit LoRA is not supported; use adapter: qlora with load_in_4bit: true, or lora")
            ignored[key] = "false: nothing to do"
        elif key in ("lora_r", "lora_alpha", "lora_dropout"):
            f[key] = value
        elif key == "lora_target_linear":
            if value:
                f["lora_targets"] = "all-linear"
        elif key == "lora_target_modules":
            if not doc.get("lora_target_linear"):
                f["lora_targets"] = ",".join(value) if isinstance(value, list) else str(value)
        elif key == "sequence_len":
            seq_len = int(value)
        elif key == "micro_batch_size":
            f["micro_batch"] = int(value)
        elif key == "gradient_accumulation_steps":
            f["grad_accum"] = int(value)
        elif key == "num_epochs":
            f["epochs"] = float(value)
        elif key == "max_steps":
            f["max_steps"] = int(value)
        elif key == "optimizer":
            if value not in _OPTIMIZERS:
                raise bad(key, f"{value!r} is not supported (known: {', '.join(_OPTIMIZERS)})")
            f["optimizer"] = _OPTIMIZERS[value]
        elif key == "lr_scheduler":
            if value not in _SCHEDULES:
                raise bad(key, f"{value!r} is not supported (known: {', '.join(_SCHEDULES)})")
            f["schedule"] = _SCHEDULES[value]
        elif key == "learning_rate":
            f["lr"] = float(value)
        elif key == "warmup_steps":
            f["warmup_steps"] = int(value)
        elif key == "weight_decay":
            f["weight_decay"] = float(value)
        elif key == "max_grad_norm":
            f["max_grad_norm"] = float(value)
        elif key == "evals_per_epoch":
            f["evals_per_epoch"] = int(value)
        elif key == "eval_steps":
            f["eval_every"] = int(value)
        elif key == "save_steps":
            f["save_every"] = int(value)
        elif key == "logging_steps":
            f["log_every"] = int(value)
        elif key == "gradient_checkpointing":
            f["gradient_checkpointing"] = bool(value)
        elif key == "bf16":
            f["precision"] = {"auto": "auto", True: "bf16", False: "fp32", "true": "bf16", "false": "fp32"}.get(value, "auto")
        elif key == "seed":
            f["seed"] = int(value)
        elif key == "output_dir":
            f["out"] = Path(value)
        elif key == "trust_remote_code":
            f["trust_remote_code"] = bool(value)
        elif key in IGNORED_KEYS:
            ignored[key] = IGNORED_KEYS[key]
        else:
            unknown.append(key)
    f["method"] = "qlora" if adapter == "qlora" or (adapter == "lora" and four_bit) else ("lora" if adapter == "lora" else "full")
    if adapter == "qlora" and doc.get("load_in_4bit") is False:
        raise bad("load_in_4bit", "adapter: qlora needs load_in_4bit: true")
    return AxolotlMapping(f, ignored, unknown, seq_len)


def _datasets(value: Any, path: Path | str) -> dict[str, Any]:
    """axolotl ``datasets``: one entry of ``type: completion`` whose ``path`` may be a downcycle corpus."""
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise DowncycleError(f"{path}: datasets: expected one entry (build a mixture with `downcycle data --source ... --weights`)")
    entry = value[0]
    if entry.get("type", "completion") != "completion":
        raise DowncycleError(f"{path}: datasets: type {entry.get('type')!r} is not supported (completion: plain text)")
    local = Path(str(entry.get("path", "")))
    return {"data": local} if (local / "corpus.json").is_file() else {}


def apply_axolotl(config: TrainConfig) -> tuple[TrainConfig, list[str], int | None]:
    """``config`` with the settings of its ``--axolotl`` file filled in; notes; the file's sequence_len.

    A field keeps its command-line value when that differs from the field's default.
    """
    import yaml

    path = Path(config.axolotl)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DowncycleError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        raise DowncycleError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise DowncycleError(f"{path}: expected a mapping of axolotl keys")
    mapping = map_axolotl(doc, path)
    defaults = {fl.name: fl.default for fl in dataclasses.fields(TrainConfig)}
    current = {fl.name: getattr(config, fl.name) for fl in dataclasses.fields(TrainConfig)}
    merged = dict(current)
    notes = mapping.notes(path)
    for name, value in mapping.fields.items():
        if current[name] == defaults[name]:
            merged[name] = value
        elif current[name] != value:
            notes.append(f"{path}: {name} = {value!r} overridden by the command line ({current[name]!r})")
    if mapping.fields.get("data") is None and config.data is None and "datasets" in doc:
        notes.append(f"{path}: datasets path is not a downcycle corpus; pass --data CORPUS_DIR (build it with `downcycle data`)")
    return TrainConfig(**merged), notes, mapping.seq_len
