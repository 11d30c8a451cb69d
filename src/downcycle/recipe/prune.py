"""Config of `downcycle prune`: width pruning (MLP neurons, attention heads, embedding channels),
with an optional depth selection in the same command.

Why a command of its own rather than options on ``cut``: a cut copies whole tensors byte for byte
(the output's tensors are the source's, renamed), and its options all choose layers; a prune
rewrites tensors (slices, rescaled norms), needs importance scores or a width plan, and records
notes on what is exact and what is not. Keeping them apart keeps ``cut``'s guarantee
(byte-identical tensors, mergekit-equivalent) plain, and gives ``prune`` one set of options that
mean one thing each; depth still composes with width through ``--layers`` / ``--drop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, OUTPUT, arg, device_arg

__all__ = ["PruneConfig"]


@dataclass
class PruneConfig:
    """Prune width (MLP neurons, attention heads, embedding channels) and optionally depth: a smaller model, same architecture.

    The same sizes in every layer; its own command because it rewrites tensors where a cut copies them (see the module)."""

    source: str = arg("source checkpoint: a local Hugging Face model directory (or a hub id, when online)", positional=True,
                      metavar="SRC", role=INPUT)
    out: Path = arg("output directory (must not exist unless --force)", positional=True, metavar="OUT", affects_output=False,
                    role=OUTPUT)
    ffn: int | None = arg("MLP neurons to keep per layer (the new intermediate_size); default: all", metavar="N")
    heads: int | None = arg("query heads to keep per layer (a multiple of the kept KV heads); default: all", metavar="N")
    kv_heads: int | None = arg("KV heads to keep per layer (default: all; with one KV head per query head, as many as --heads)",
                               metavar="N")
    hidden: int | None = arg("embedding channels to keep (the new hidden_size); default: all", metavar="N")
    layers: str | None = arg("also keep only these source layers, in order: '0-23', '0-11,20-31' (as `cut --layers`)",
                             metavar="SPEC")
    drop: str | None = arg("also drop these source layers (as `cut --drop`)", metavar="SPEC")
    scores: Path | None = arg("choose by a scores.json written by `downcycle analyze --width`", metavar="FILE", role=INPUT)
    plan: Path | None = arg("keep what a width_plan.json says (written beside a pruned model); sizes then follow from it",
                            metavar="FILE", role=INPUT)
    data: str | None = arg("score on this calibration text first (as `analyze --width`; scores and plots go to OUT/analysis/)",
                           metavar="SRC", role=INPUT)
    samples: int = arg("with --data: calibration windows", 64)
    seq_len: int = arg("with --data: tokens per calibration window", 512)
    seed: int = arg("with --data: seed of the windows' draw", 0)
    device: str = device_arg("with --data: device of the scoring pass")
    force: bool = arg("replace OUT if it exists", False, affects_output=False)
    max_shard_size: str = arg("largest output shard, e.g. 5GB or 500MiB", "5GB")
    threads: int = arg("output shards written at once (0: one per CPU core, at most 8)", 0, affects_output=False)

    def __post_init__(self) -> None:
        given = [name for name in ("scores", "plan", "data") if getattr(self, name) is not None]
        if len(given) != 1:
            raise DowncycleError("prune needs exactly one of --scores, --plan or --data"
                                 + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
        if self.layers is not None and self.drop is not None:
            raise DowncycleError("prune takes --layers or --drop, not both")
        sizes = {name: getattr(self, name) for name in ("ffn", "heads", "kv_heads", "hidden")}
        for name, value in sizes.items():
            if value is not None and value < 1:
                raise DowncycleError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        if self.plan is None and all(v is None for v in sizes.values()):
            raise DowncycleError("prune needs at least one of --ffn, --heads, --kv-heads, --hidden (the sizes to keep)")
        if self.threads < 0:
            raise DowncycleError(f"--threads: {self.threads} must be 0 (one per CPU core) or more")
        for name in ("samples", "seq_len"):
            if getattr(self, name) < (2 if name == "seq_len" else 1):
                raise DowncycleError(f"--{name.replace('_', '-')}: {getattr(self, name)} is too small")
        self.out = Path(self.out)
        self.scores = None if self.scores is None else Path(self.scores)
        self.plan = None if self.plan is None else Path(self.plan)
