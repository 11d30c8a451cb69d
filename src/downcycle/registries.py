"""Every registry of named choices, in one table, for ``downcycle ls``.

A registry is a dict from name to object in some module. Each entry here maps the registry's name to
``"module:ATTRIBUTE"`` and is imported only when listed, so adding a registry (training methods,
evaluation tasks, distillation losses...) is one line. An object describes itself by a
``description`` attribute, else the first line of its docstring.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import DowncycleError

# registry name -> "module:ATTRIBUTE" of a dict {name: object}
REGISTRIES: dict[str, str] = {
    "metrics": "downcycle.analysis.metrics:METRICS",
    "strategies": "downcycle.analysis.strategies:STRATEGIES",
    "methods": "downcycle.training.methods:METHODS",
    "heal_methods": "downcycle.healing:METHODS",
    "distill_losses": "downcycle.training.losses.kl:DISTILL_LOSSES",
    "optimizers": "downcycle.training.optim:OPTIMIZERS",
    "tasks": "downcycle.evaluation.tasks:TASKS",
}

__all__ = ["REGISTRIES", "describe", "list_registries", "load_registry", "run_ls", "summary"]


def load_registry(name: str) -> dict[str, Any]:
    """The dict behind registry ``name``."""
    if name not in REGISTRIES:
        raise DowncycleError(f"unknown registry {name!r} (choose from {', '.join(REGISTRIES)})")
    module, _, attr = REGISTRIES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def describe(obj: Any) -> str:
    """One line about a registered object: its ``description``, else its docstring's first line.
    A lazily registered ``"module:Object"`` string is described without importing it."""
    text = getattr(obj, "description", None)
    if not isinstance(text, str) and not isinstance(obj, str):
        text = (getattr(obj, "__doc__", None) or "").strip().splitlines()[0:1]
        text = text[0] if text else ""
    return text if isinstance(text, str) else str(obj)


def list_registries(only: str = "all") -> dict[str, dict[str, str]]:
    """``{registry: {name: description}}`` for every registry, or just ``only``."""
    names = list(REGISTRIES) if only == "all" else [only]
    return {reg: {name: describe(obj) for name, obj in load_registry(reg).items()} for reg in names}


def run_ls(config: Any) -> dict[str, dict[str, str]]:
    """``downcycle ls [REGISTRY]``."""
    return list_registries(config.registry)


def summary(listing: dict[str, dict[str, str]]) -> str:
    """Each registry, then its entries and their descriptions in aligned columns."""
    lines = []
    for registry, entries in listing.items():
        lines.append(f"{registry}:")
        width = max((len(name) for name in entries), default=0)
        lines += [f"  {name:<{width}}  {text}" for name, text in entries.items()]
    return "\n".join(lines)
