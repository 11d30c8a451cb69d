"""Config of `downcycle heal`: activation-level healing of a depth cut."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, OUTPUT, arg, device_arg

__all__ = ["HEAL_METHODS", "HealConfig"]

HEAL_METHODS = ("linear", "layer")
_LOSSES = ("auto", "mse", "cosine", "kl")


@dataclass
class HealConfig:
    """Heal a depth cut from calibration states of the uncut reference: linear replacement (a fitted map folded into
    the down projection before each gap, no training) or layer replacement (one decoder layer per gap, trained alone
    on cached states). Writes a plain Hugging Face checkpoint."""

    model: str = arg("the cut to heal: a directory written by `downcycle cut` (its downcycle.json names the reference and "
                     "the kept layers)", positional=True, metavar="CUT", role=INPUT, pipeline=True)
    out: Path = arg("output directory (must not exist unless --force)", positional=True, metavar="OUT", affects_output=False,
                    role=OUTPUT, pipeline=True)
    method: str = arg("linear: least-squares map per gap folded into the last kept layer's down projection (ReplaceMe); "
                      "layer: one decoder layer per gap trained on the gap's input -> output states (LLM-Streamline)", "linear")
    data: str | None = arg("calibration text: a file, directory, glob or HF dataset id (as `downcycle analyze --data`), or a "
                           "corpus directory written by `downcycle data` (its train sequences)", metavar="DATA", role=INPUT, hub=True)
    reference: str | None = arg("the uncut model (default: the source recorded in CUT's downcycle.json)", metavar="REF", role=INPUT, pipeline=True)
    samples: int = arg("calibration windows", 96)
    seq_len: int = arg("tokens per calibration window (a corpus directory's own length is used)", 256)
    text_field: str = arg("the record field holding the text", "text")
    batch_size: int = arg("windows per forward pass (layer: also per training step)", 4)
    ridge: float = arg("linear: lambda = ridge x trace(XᵀX) / d, added to XᵀX's diagonal", 1e-4)
    loss: str = arg("layer: auto (kl for the tail gap, mse elsewhere), mse, cosine, kl (the tail gap only: KL of the "
                    "next-token distributions through the frozen final norm and head)", "auto")
    kl_fraction: float = arg("layer, kl loss: the share of each batch's token positions the loss scores (drawn afresh each "
                             "step; the output layer is most of a step's cost)", 1.0)
    init: str = arg("layer: the replacement starts as a copy of the gap's last or first dropped layer, and takes its place "
                    "(last: on SmolLM2-135M a tail gap's held-out KL fell 16.0 -> 1.8 against first's 10.2 -> 2.8, a middle gap's "
                    "MSE 18.8 -> 10.1 against 24.4 -> 13.4; docs/heal.md)", "last")
    epochs: int = arg("layer: passes over the cached states", 6)
    lr: float = arg("layer: peak learning rate (AdamW, cosine schedule)", 1e-3)
    precision: str = arg("layer: auto (bf16 autocast where the hardware has it), bf16, fp32; calibration is float32", "auto")
    seed: int = arg("seed of the layer's training order", 0)
    layerwise: bool | None = arg("run the reference one decoder layer at a time from its files (default: when it does not fit "
                                 "the device's free memory in float32): peak memory is the largest layer, embeddings and head, "
                                 "plus the captured states (spilled to disk beyond 4 GiB); the same fit", affects_output=False)
    device: str = device_arg()
    trust_remote_code: bool = arg("allow models that need their own Python code", False)
    force: bool = arg("replace OUT if it exists", False, affects_output=False, pipeline=True)
    progress: bool = arg("show progress", True, affects_output=False, pipeline=True)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.method not in HEAL_METHODS:
            raise DowncycleError(f"--method: {self.method!r} is not one of {', '.join(HEAL_METHODS)}")
        if self.data is None:
            raise DowncycleError("heal needs --data (calibration text, or a corpus directory)")
        for name in ("samples", "seq_len", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise DowncycleError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")
        if self.samples < self.batch_size:
            raise DowncycleError(f"--samples {self.samples}: fewer than one batch of --batch-size {self.batch_size}")
        if self.ridge < 0 or self.lr <= 0:
            raise DowncycleError(f"--ridge must be >= 0 and --lr > 0 (got {self.ridge}, {self.lr})")
        if not 0 < self.kl_fraction <= 1:
            raise DowncycleError(f"--kl-fraction: {self.kl_fraction} must be in (0, 1]")
        if self.loss not in _LOSSES:
            raise DowncycleError(f"--loss: {self.loss!r} is not one of {', '.join(_LOSSES)}")
        if self.init not in ("first", "last"):
            raise DowncycleError(f"--init: {self.init!r} is not first or last")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise DowncycleError(f"--precision: {self.precision!r} is not auto, bf16 or fp32")
