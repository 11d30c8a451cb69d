"""Config of `downcycle train`: healing by full fine-tuning, LoRA, QLoRA or distillation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, OUTPUT, arg

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Heal a model by training it on a corpus: full fine-tuning, LoRA, QLoRA or distillation."""

    model: str | None = field(default=None, metadata={"pipeline": True, "help": "model to train: a local Hugging Face checkpoint (e.g. a `downcycle cut` output); "
                              "optional with --axolotl (its base_model)", "positional": True, "metavar": "MODEL", "role": INPUT})
    data: Path | None = arg("corpus directory written by `downcycle data` (its train and val splits)", metavar="CORPUS_DIR",
                            role=INPUT, pipeline=True)
    out: Path | None = arg("output directory: the trained model, adapter, loss curves, manifest", metavar="DIR", role=OUTPUT, pipeline=True)
    method: str = arg("training method: full, lora, qlora (4-bit base, needs bitsandbytes) or distill (`downcycle ls` lists them)", "full")
    axolotl: Path | None = arg("read settings from an axolotl config YAML (options that differ from their defaults win)", metavar="YAML",
                               role=INPUT)
    resume: bool = arg("continue an interrupted run from its last checkpoint in OUT.run/", False, pipeline=True)
    force: bool = arg("replace OUT if it exists", False, pipeline=True)
    # optimisation
    lr: float = arg("peak learning rate", 1e-4)
    weight_decay: float = arg("AdamW weight decay", 0.0)
    optimizer: str = arg("adamw, or with bitsandbytes: adamw_8bit, paged_adamw_8bit, paged_adamw_32bit", "adamw")
    schedule: str = arg("learning-rate schedule after warmup: cosine, linear or constant", "cosine")
    warmup_steps: int = arg("optimizer steps of linear warmup from 0 to --lr", 0)
    micro_batch: int = arg("sequences per process per forward pass", 4)
    grad_accum: int = arg("micro-batches accumulated per optimizer step (global batch = micro_batch x grad_accum x processes)", 1)
    max_grad_norm: float = arg("clip the global gradient norm to this (0: no clipping)", 1.0)
    # how long
    epochs: float = arg("passes over the train split (ignored when --max-tokens or --max-steps is set)", 1.0)
    max_tokens: int | None = arg("token budget: train on this many tokens (rounded up to whole optimizer steps)")
    max_steps: int | None = arg("stop after this many optimizer steps")
    # evaluation, checkpoints, logging
    eval_every: int = arg("validation loss every N optimizer steps (0: only at start and end)", 0)
    evals_per_epoch: int | None = arg("validation loss this many times per epoch (overrides --eval-every)")
    eval_max_seqs: int | None = arg("evaluate on at most this many validation sequences (all when unset)")
    save_every: int = arg("resumable checkpoint every N optimizer steps in OUT.run/ (0: none)", 0)
    keep_checkpoints: int = arg("resumable checkpoints kept (oldest removed first)", 2)
    log_every: int = arg("write a train-loss record every N optimizer steps", 1)
    # numerics and memory
    precision: str = arg("auto (bf16 autocast on a GPU that supports it or a CPU with native bf16 instructions, "
                         "AVX512-BF16 or AMX; else fp32), bf16 or fp32", "auto")
    lm_loss: str = arg("LM loss over the vocabulary: full (the model's logits), chunked (the output layer and cross-entropy a few "
                       "hundred positions at a time, the logits never held whole) or auto (chunked when a micro-batch's float32 "
                       "logits would exceed 1 GiB)", "auto")
    gradient_checkpointing: bool = arg("recompute activations in the backward pass to save memory", False)
    train_layers: str | None = arg("full/distill: train only these decoder layers, e.g. '-4:' (the last four); all when unset", metavar="SPEC")
    train_modules: str | None = arg("full/distill: also train these module name prefixes, e.g. 'lm_head,model.norm' (only with --train-layers)", metavar="NAMES")
    # LoRA / QLoRA
    lora_r: int = arg("LoRA rank", 16)
    lora_alpha: float = arg("LoRA alpha (scale = alpha / r)", 32.0)
    lora_dropout: float = arg("LoRA dropout", 0.05)
    lora_targets: str = arg("LoRA target modules: all-linear, mlp (MLP projections only) or comma-separated module names", "all-linear")
    # distillation
    teacher: str | None = arg("distill: the teacher checkpoint (typically the uncut reference model)", metavar="MODEL",
                              role=INPUT, hub=True)
    distill_loss: str = arg("distill: loss between teacher and student distributions (`downcycle ls`)", "forward_kl")
    distill_temperature: float = arg("distill: softmax temperature T applied to both logits (the KL term is scaled by T^2)", 2.0)
    distill_alpha: float = arg("distill: weight of the KL term; the LM loss gets 1 - alpha", 0.5)
    teacher_dtype: str = arg("distill: teacher dtype: auto (as saved), bfloat16, float16 or float32", "auto")
    teacher_device: str | None = arg("distill: device of the teacher (default: the student's)")
    # environment
    seed: int = arg("seed for data order, dropout and initialisation", 0)
    device: str = arg("auto (the accelerator's device: GPU when present), cpu or cuda", "auto")
    trust_remote_code: bool = arg("allow models that need their own Python code (runs code from the checkpoint)", False)
    progress: bool = arg("show a progress bar with loss, tokens/s and ETA", True, pipeline=True)

    def __post_init__(self) -> None:
        for name in ("data", "out", "axolotl"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        choices = {"optimizer": ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"),
                   "schedule": ("cosine", "linear", "constant"), "precision": ("auto", "bf16", "fp32"), "lm_loss": ("auto", "full", "chunked"),
                   "teacher_dtype": ("auto", "bfloat16", "float16", "float32"), "device": ("auto", "cpu", "cuda")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DowncycleError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        positive = ("micro_batch", "grad_accum", "lora_r", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise DowncycleError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        for name in ("warmup_steps", "eval_every", "save_every", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise DowncycleError(f"--{name.replace('_', '-')} must not be negative (got {getattr(self, name)})")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise DowncycleError(f"--distill-alpha must be in [0, 1] (got {self.distill_alpha})")
        if self.distill_temperature <= 0 or self.lr <= 0 or self.epochs <= 0:
            raise DowncycleError("--distill-temperature, --lr and --epochs must be positive")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise DowncycleError(f"--lora-dropout must be in [0, 1) (got {self.lora_dropout})")
        if not all(t.strip() for t in str(self.lora_targets).split(",")):
            raise DowncycleError(f"--lora-targets {self.lora_targets!r}: an empty module name (give all-linear, mlp or "
                                 "comma-separated module names)")
