"""Optimizers and learning-rate schedules.

AdamW from torch, or bitsandbytes' 8-bit and paged variants (Dettmers et al., "8-bit Optimizers via
Block-wise Quantization", 2022) when installed. Schedules are pure functions of the optimizer step
wrapped in a ``LambdaLR``, so their state is one integer and resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import DowncycleError

__all__ = ["OPTIMIZERS", "PAGED_FALLBACK", "SCHEDULES", "build_optimizer", "build_scheduler", "lr_factor", "resolve_optimizer"]

# name -> "module:Class" (loaded lazily; bitsandbytes is optional)
OPTIMIZERS: dict[str, str] = {
    "adamw": "torch.optim:AdamW",
    "adamw_8bit": "bitsandbytes.optim:AdamW8bit",
    "paged_adamw_8bit": "bitsandbytes.optim:PagedAdamW8bit",
    "paged_adamw_32bit": "bitsandbytes.optim:PagedAdamW32bit",
}

# Paged optimizers keep their state in CUDA unified memory, which pages out to host RAM when GPU
# memory runs short. On other devices the state is in host memory already, and bitsandbytes itself
# falls back to the unpaged update. The fallback here is the same update, named and reported:
# over the LoRA weights of a SmolLM2-135M-shaped model, bitsandbytes' (paged) 32-bit AdamW on a CPU
# matched torch's to 4.5e-8 after 6 steps and was 3.7-4.5x slower than torch's fused kernel
# (benchmarks/bench_qlora.py --optimizers; BENCHMARKS.md), so paged_adamw_32bit becomes adamw.
PAGED_FALLBACK: dict[str, str] = {"paged_adamw_32bit": "adamw", "paged_adamw_8bit": "adamw_8bit"}


def resolve_optimizer(name: str, device_type: str) -> tuple[str, str | None]:
    """The optimizer to build on ``device_type`` for ``--optimizer name``, and a note when it differs."""
    if name in PAGED_FALLBACK and device_type != "cuda":
        fallback = PAGED_FALLBACK[name]
        return fallback, (f"--optimizer {name}: paging needs CUDA unified memory, so on {device_type} the same update "
                          f"runs unpaged as --optimizer {fallback}")
    return name, None


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _linear(progress: float) -> float:
    return 1.0 - progress


def _constant(progress: float) -> float:
    return 1.0


# name -> factor in [0, 1] of the peak lr, as a function of progress in [0, 1] after warmup
SCHEDULES: dict[str, Callable[[float], float]] = {"cosine": _cosine, "linear": _linear, "constant": _constant}


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr for the update made at optimizer step ``step`` (0-based).

    Linear warmup from ``1/(warmup+1)`` to 1 over ``warmup_steps`` updates, then ``schedule`` decays over
    the remaining ``total_steps - warmup_steps`` updates (reaching 0 after the last for cosine/linear).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay = max(1, total_steps - warmup_steps)
    return SCHEDULES[schedule](min(1.0, (step - warmup_steps) / decay))


def build_optimizer(name: str, params: list[Any], lr: float, weight_decay: float) -> Any:
    """An optimizer over ``params`` (only those with ``requires_grad``).

    Raises:
        DowncycleError: for an unknown name, a bitsandbytes variant without bitsandbytes, or nothing to train.
    """
    import importlib

    if name not in OPTIMIZERS:
        raise DowncycleError(f"--optimizer {name!r}: unknown (known: {', '.join(OPTIMIZERS)})")
    module, cls = OPTIMIZERS[name].split(":")
    try:
        opt_cls = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise DowncycleError(f"--optimizer {name} needs bitsandbytes (pip install 'downcycle[qlora]'); use --optimizer adamw") from None
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise DowncycleError("nothing to train: no parameter requires a gradient")
    # Decay matrices, not biases and norm gains (the usual AdamW practice, e.g. nanoGPT's configure_optimizers).
    groups = [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    extra = {}
    if name == "adamw" and all(p.device.type in ("cpu", "cuda") for p in trainable):
        # torch's fused AdamW: one kernel over all parameters, several times faster than the
        # per-tensor loop (and the foreach variant) on CPU and GPU.
        extra["fused"] = True
    return opt_cls(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, **extra)


def build_scheduler(optimizer: Any, total_steps: int, warmup_steps: int, schedule: str) -> Any:
    """A ``LambdaLR`` applying :func:`lr_factor`; step it once per optimizer step."""
    from torch.optim.lr_scheduler import LambdaLR

    if schedule not in SCHEDULES:
        raise DowncycleError(f"--schedule {schedule!r}: unknown (known: {', '.join(SCHEDULES)})")
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule))
