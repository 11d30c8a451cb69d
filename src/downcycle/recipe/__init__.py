"""Typed configs for every stage: dataclasses whose fields carry their own help.

The CLI is derived from these (see :mod:`downcycle.cli`), recipes are parsed into them, and
manifests record them, so a field is documented, validated and recorded in exactly one place.
One module per stage; everything is re-exported here, each config module imported on first use (a
command imports only its own: start-up time matters to a fast ``cut``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .fields import arg, output_dict, to_dict

if TYPE_CHECKING:
    from .analyze import AnalyzeConfig, LsConfig
    from .cut import ConvertConfig, CutConfig
    from .data import DataConfig
    from .evaluate import CompareConfig, EvalConfig, TaskDataConfig
    from .generate import GenerateConfig
    from .report import CardConfig, ReportConfig
    from .run import DemoConfig, RunConfig, SweepConfig
    from .train import TrainConfig

_MODULES = {
    "AnalyzeConfig": "analyze", "LsConfig": "analyze", "ConvertConfig": "cut", "CutConfig": "cut", "DataConfig": "data",
    "CompareConfig": "evaluate", "EvalConfig": "evaluate", "TaskDataConfig": "evaluate", "GenerateConfig": "generate", "CardConfig": "report",
    "ReportConfig": "report", "DemoConfig": "run", "RunConfig": "run", "SweepConfig": "run", "TrainConfig": "train",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULES])

__all__ = [
    "AnalyzeConfig", "CardConfig", "CompareConfig", "ConvertConfig", "CutConfig", "DataConfig", "DemoConfig", "EvalConfig", "GenerateConfig", "LsConfig",
    "ReportConfig", "RunConfig", "SweepConfig", "TaskDataConfig", "TrainConfig", "arg", "output_dict", "to_dict",
]  # fmt: skip
