"""Configs of `downcycle analyze` and `downcycle ls`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, OUTPUT, arg, device_arg

__all__ = ["AnalyzeConfig", "LsConfig"]


@dataclass
class AnalyzeConfig:
    """Score every decoder layer and block on calibration text in one pass, and write a cut plan."""

    model: str = arg("model: a local Hugging Face model directory (or a hub id, when online)", positional=True, metavar="MODEL",
                     role=INPUT, pipeline=True)
    data: str | None = arg("calibration text: .txt/.jsonl/.json/.parquet, a save_to_disk directory, a glob, or hf:ORG/NAME", metavar="SRC",
                           role=INPUT, hub=True)
    out: Path | None = arg("output directory for plan.json, scores.json and plots (must not exist unless --force)", metavar="DIR",
                           affects_output=False, role=OUTPUT, pipeline=True)
    keep: str = arg("layers to keep: a count (24) or a fraction of the depth (0.75)", "0.75", metavar="K", pipeline=True)
    strategy: str = arg("how to choose the kept layers: first, first-last, uniform, block, bi, nll (see `downcycle ls`)", "block", pipeline=True)
    metric: str | None = arg("the score the strategy ranks by (default: the strategy's own; see `downcycle ls`)", metavar="NAME", pipeline=True)
    samples: int = arg("calibration windows", 64)
    seq_len: int = arg("tokens per calibration window", 512)
    batch_size: int = arg("windows per forward pass (bounds memory: the pass holds (L+1) x batch x seq-len x hidden floats)", 8)
    nll_samples: int = arg("windows the NLL search scores (it runs (L-k)..L passes per removal)", 16)
    width: bool = arg("also score MLP neurons, attention heads and embedding channels (Minitron activation importance, one "
                      "more pass) into DIR/width/scores.json, for `downcycle prune --scores`", False)
    layerwise: bool | None = arg("run the model one decoder layer at a time from its files (default: when it does not fit the "
                                 "device's free memory): peak memory is the largest layer, embeddings and head, plus the states of "
                                 "every calibration token; the same scores (the NLL search and --width included)",
                                 affects_output=False)
    text_field: str = arg("field holding the text in .jsonl/.json/.parquet/arrow/HF records", "text")
    tokenizer: str | None = arg("tokenizer directory (default: MODEL)", metavar="DIR", role=INPUT, hub=True)
    dtype: str = arg("dtype to load the model in: auto (the checkpoint's), float32, bfloat16, float16", "auto")
    device: str = device_arg()
    plots: bool = arg("write PNG plots (needs matplotlib)", True)
    force: bool = arg("replace DIR if it exists", False, affects_output=False, pipeline=True)
    progress: bool = arg("show progress bars", True, affects_output=False, pipeline=True)
    trust_remote_code: bool = arg("allow the model's custom code to run", False)

    def __post_init__(self) -> None:
        if self.data is None:
            raise DowncycleError("analyze needs --data SRC (calibration text)")
        if self.out is None:
            raise DowncycleError("analyze needs --out DIR")
        self.out = Path(self.out)
        for name in ("samples", "seq_len", "batch_size", "nll_samples"):
            if getattr(self, name) < (2 if name == "seq_len" else 1):
                raise DowncycleError(f"--{name.replace('_', '-')}: {getattr(self, name)} is too small")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise DowncycleError(f"--dtype: {self.dtype!r} must be auto, float32, bfloat16 or float16")


@dataclass
class LsConfig:
    """List the registries: importance metrics, selection strategies, and every other table of choices."""

    registry: str = arg("list only this registry (e.g. metrics, strategies); default: all", "all", positional=True, metavar="REGISTRY")
