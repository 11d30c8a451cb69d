"""Configs of checkpoint surgery: `cut` and `convert`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, OUTPUT, arg

__all__ = ["CutConfig", "ConvertConfig"]


@dataclass
class CutConfig:
    """Write a checkpoint made of a selection of the source model's decoder layers."""

    source: str = arg("source checkpoint: a local Hugging Face model directory (or a hub id, when online)", positional=True, metavar="SRC",
                      role=INPUT)
    out: Path = arg("output directory (must not exist unless --force)", positional=True, metavar="OUT", affects_output=False,
                    role=OUTPUT)
    layers: str | None = arg("source layers to keep, in order, repeats allowed: '0-23', '0-11,20-31', ':20,28:'", metavar="SPEC")
    drop: str | None = arg("source layers to drop (the complement of --layers)", metavar="SPEC")
    plan: Path | None = arg("a plan.json written by `downcycle analyze` (its kept_layers)", metavar="PLAN", role=INPUT)
    force: bool = arg("replace OUT if it exists", False, affects_output=False)
    max_shard_size: str = arg("largest output shard, e.g. 5GB or 500MiB", "5GB")
    progress: bool = arg("show a progress bar on large cuts", True, affects_output=False)
    threads: int = arg("output shards copied at once (0: one per CPU core, at most 8)", 0, affects_output=False)
    keep: str | None = arg("instead of a selection: analyze SRC on --data first and keep this many layers (24) or this fraction (0.75)", metavar="K")
    strategy: str = arg("with --keep: how the analysis chooses (first, first-last, uniform, block, bi, nll; see `downcycle ls`)", "block")
    data: str | None = arg("with --keep: calibration text for the analysis (see `downcycle analyze`); with --heal: for the healing",
                           metavar="DATA", role=INPUT)
    heal: str | None = arg("heal the cut while writing it: linear or layer (see `downcycle heal`; needs --data)", metavar="METHOD")
    heal_samples: int = arg("with --heal: calibration windows", 96)
    heal_seq_len: int = arg("with --heal: tokens per calibration window", 256)

    def __post_init__(self) -> None:
        given = [name for name in ("layers", "drop", "plan", "keep") if getattr(self, name) is not None]
        if len(given) != 1:
            raise DowncycleError("cut needs exactly one of --layers, --drop or --plan (or --keep with --data)" + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
        if self.threads < 0:
            raise DowncycleError(f"--threads: {self.threads} must be 0 (one per CPU core) or more")
        if self.keep is not None and self.data is None:
            raise DowncycleError("cut --keep needs --data (calibration text for the analysis that chooses the layers)")
        if self.heal is not None:
            from .heal import HEAL_METHODS

            if self.heal not in HEAL_METHODS:
                raise DowncycleError(f"--heal: {self.heal!r} is not one of {', '.join(HEAL_METHODS)}")
            if self.data is None:
                raise DowncycleError("cut --heal needs --data (calibration text for the healing)")
        self.out = Path(self.out)
        if self.plan is not None:
            self.plan = Path(self.plan)


GGUF_DTYPES = ("float32", "bfloat16")


@dataclass
class ConvertConfig:
    """Convert a PyTorch pickle (.bin) checkpoint (loaded with weights_only=True) or a GGUF file
    (dequantized) to a safetensors checkpoint."""

    source: Path = arg("directory with pytorch_model*.bin weights, or a .gguf file", positional=True, metavar="SRC", role=INPUT)
    out: Path = arg("output directory for the safetensors checkpoint", positional=True, metavar="OUT", role=OUTPUT)
    force: bool = arg("replace OUT if it exists", False)
    dtype: str | None = arg("GGUF only: dtype of the dequantized weights, float32 (exact) or bfloat16 (default float32)", metavar="DTYPE")
    origin: str | None = arg("GGUF only: where the file came from, recorded in downcycle.json and PROVENANCE.md "
                             "(default: its path)", metavar="TEXT")

    def __post_init__(self) -> None:
        self.source, self.out = Path(self.source), Path(self.out)
        if self.dtype is not None and self.dtype not in GGUF_DTYPES:
            raise DowncycleError(f"--dtype: {self.dtype!r} is not one of {', '.join(GGUF_DTYPES)}")
        if self.source.suffix.lower() != ".gguf" and (self.dtype is not None or self.origin is not None):
            raise DowncycleError(f"{self.source}: --dtype and --origin apply to a .gguf source only")
