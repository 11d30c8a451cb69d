"""The field helpers every stage config is built with: CLI help on the field, output-affecting
flags for the config hash, the paths a stage reads and writes, JSON-ready dumps."""

from __future__ import annotations

from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Any

__all__ = ["INPUT", "OUTPUT", "arg", "device_arg", "inputs_of", "outputs_of", "pipeline_fields", "recipe_paths", "to_dict", "output_dict"]

# What a path-valued field is to its stage (``arg(role=...)``): something it reads, or the directory it
# writes (and replaces with --force). An output may not be, contain or sit inside an input
# (:func:`downcycle.artifacts.atomic.check_output_apart`).
INPUT, OUTPUT = "input", "output"


def arg(help: str, default: Any = None, positional: bool = False, metavar: str | None = None, affects_output: bool = True,
        flag: str | None = None, role: str | None = None, pipeline: bool = False, hub: bool = False, **kw: Any) -> Any:
    """A dataclass field with CLI help; ``positional`` fields become positional arguments.

    ``affects_output=False`` marks operational fields (output path, --force, progress bars) that
    are recorded but left out of the config hash that decides whether a stage must re-run.
    ``flag`` overrides the option's name (``--from`` for a field that cannot be called ``from``).
    ``role`` marks a path the stage reads (:data:`INPUT`) or the directory it writes (:data:`OUTPUT`).
    ``pipeline`` marks a field a recipe may not set: ``downcycle run`` sets it (inputs and outputs of
    the stage, overwriting, progress). ``hub``: an input that may also be a hub (model or dataset) id,
    so a recipe's relative value that is no local path is left as it is.
    """
    meta = {"help": help, "positional": positional, "metavar": metavar, "affects_output": affects_output, "flag": flag, "role": role,
            "pipeline": pipeline, "hub": hub}
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


def _label(f: Any) -> str:
    """How a field is named to the user: ``--kebab-case`` for an option, the field's name (a list's
    item: its metavar) for a positional argument."""
    meta = f.metadata
    if meta.get("positional"):
        return str(meta["metavar"]).lower() if meta.get("nargs") and meta.get("metavar") else f.name
    return meta.get("flag") or f"--{f.name.replace('_', '-')}"


def _with_role(config: Any, role: str) -> list[tuple[str, str]]:
    found = []
    for f in fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("role") == role and value is not None:
            found += [(_label(f), str(v)) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return found


def inputs_of(config: Any) -> list[tuple[str, str]]:
    """``(option, value)`` of every path (or hub id, dataset id, glob) ``config`` names as an input."""
    return _with_role(config, INPUT)


def pipeline_fields(cls: type) -> set[str]:
    """The fields of ``cls`` that ``downcycle run`` sets itself (a recipe naming one is a mistake)."""
    return {f.name for f in fields(cls) if f.metadata.get("pipeline")}


def recipe_paths(cls: type) -> dict[str, bool]:
    """The input fields of ``cls`` a recipe may set, resolved against the recipe's directory: name ->
    whether the value may instead be a hub id."""
    return {f.name: bool(f.metadata.get("hub")) for f in fields(cls) if f.metadata.get("role") == INPUT and not f.metadata.get("pipeline")}


def outputs_of(config: Any) -> list[tuple[str, str]]:
    """``(option, value)`` of the directories ``config``'s stage writes (replaced with ``--force``)."""
    return _with_role(config, OUTPUT)
