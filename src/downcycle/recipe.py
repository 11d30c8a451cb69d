"""Typed configs for every stage: dataclasses whose fields carry their own help.

The CLI is derived from these (see :mod:`downcycle.cli`), recipes are parsed into them, and
manifests record them, so a field is documented, validated and recorded in exactly one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import DowncycleError

__all__ = ["CutConfig", "DemoConfig", "ConvertConfig", "arg", "to_dict"]


def arg(help: str, default: Any = None, positional: bool = False, metavar: str | None = None, **kw: Any) -> Any:
    """A dataclass field with CLI help; ``positional`` fields become positional arguments."""
    meta = {"help": help, "positional": positional, "metavar": metavar}
    if "default_factory" in kw:
        return field(default_factory=kw.pop("default_factory"), metadata=meta)
    if positional and default is None:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def to_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-ready data (paths as strings), for manifests."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


@dataclass
class CutConfig:
    """Write a checkpoint made of a selection of the source model's decoder layers."""

    source: str = arg("source checkpoint: a local Hugging Face model directory (or a hub id, when online)", positional=True, metavar="SRC")
    out: Path = arg("output directory (must not exist unless --force)", positional=True, metavar="OUT")
    layers: str | None = arg("source layers to keep, in order, repeats allowed: '0-23', '0-11,20-31', ':20,28:'", metavar="SPEC")
    drop: str | None = arg("source layers to drop (the complement of --layers)", metavar="SPEC")
    plan: Path | None = arg("a plan.json written by `downcycle analyze` (its kept_layers)", metavar="PLAN")
    force: bool = arg("replace OUT if it exists", False)
    max_shard_size: str = arg("largest output shard, e.g. 5GB or 500MiB", "5GB")
    progress: bool = arg("show a progress bar on large cuts", True)

    def __post_init__(self) -> None:
        given = [name for name in ("layers", "drop", "plan") if getattr(self, name) is not None]
        if len(given) != 1:
            raise DowncycleError("cut needs exactly one of --layers, --drop or --plan" + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
        self.out = Path(self.out)
        if self.plan is not None:
            self.plan = Path(self.plan)


@dataclass
class ConvertConfig:
    """Convert a PyTorch pickle (.bin) checkpoint to safetensors, loading with weights_only=True."""

    source: Path = arg("directory with pytorch_model*.bin weights", positional=True, metavar="SRC")
    out: Path = arg("output directory for the safetensors checkpoint", positional=True, metavar="OUT")
    force: bool = arg("replace OUT if it exists", False)

    def __post_init__(self) -> None:
        self.source, self.out = Path(self.source), Path(self.out)


@dataclass
class DemoConfig:
    """Run the embedded default experiment in miniature, offline, on a CPU."""

    out: Path = arg("output directory of the demo", Path("demo-out"))
    force: bool = arg("replace the output directory if it exists", False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
