"""The field helpers every stage config is built with: CLI help on the field, output-affecting
flags for the config hash, JSON-ready dumps."""

from __future__ import annotations

from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Any

__all__ = ["arg", "device_arg", "to_dict", "output_dict"]


def arg(help: str, default: Any = None, positional: bool = False, metavar: str | None = None, affects_output: bool = True,
        flag: str | None = None, **kw: Any) -> Any:
    """A dataclass field with CLI help; ``positional`` fields become positional arguments.

    ``affects_output=False`` marks operational fields (output path, --force, progress bars) that
    are recorded but left out of the config hash that decides whether a stage must re-run.
    ``flag`` overrides the option's name (``--from`` for a field that cannot be called ``from``).
    """
    meta = {"help": help, "positional": positional, "metavar": metavar, "affects_output": affects_output, "flag": flag}
    if "default_factory" in kw:
        return field(default_factory=kw.pop("default_factory"), metadata=meta)
    if positional and default is None:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def device_arg(what: str = "device") -> Any:
    """The ``--device`` field of every stage that loads a model: one default, ``auto``, which
    :func:`downcycle.loading.resolve_device` resolves (cuda when available, else cpu)."""
    return arg(f"{what}: auto (cuda when available, else cpu), cpu, cuda, cuda:1, mps", "auto")


def to_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-ready data (paths as strings), for manifests."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def output_dict(config: Any) -> dict[str, Any]:
    """The fields of a config that change what a stage writes (see ``arg(affects_output=...)``)."""
    keep = {f.name for f in fields(config) if f.metadata.get("affects_output", True)}
    return {k: v for k, v in to_dict(config).items() if k in keep}
