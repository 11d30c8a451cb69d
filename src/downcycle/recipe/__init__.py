"""Typed configs for every stage: dataclasses whose fields carry their own help.

The CLI is derived from these (see :mod:`downcycle.cli`), recipes are parsed into them, and
manifests record them, so a field is documented, validated and recorded in exactly one place.
One module per stage; everything is re-exported here.
"""

from __future__ import annotations

from .analyze import AnalyzeConfig, LsConfig
from .cut import ConvertConfig, CutConfig
from .data import DataConfig
from .evaluate import CompareConfig, EvalConfig, TaskDataConfig
from .fields import arg, inputs_of, output_dict, outputs_of, to_dict
from .generate import GenerateConfig
from .heal import HEAL_METHODS, HealConfig
from .prune import PruneConfig
from .report import CardConfig, ReportConfig
from .run import DemoConfig, RunConfig, SweepConfig
from .train import TrainConfig

__all__ = [
    "AnalyzeConfig", "CardConfig", "CompareConfig", "ConvertConfig", "CutConfig", "DataConfig", "DemoConfig", "EvalConfig", "GenerateConfig", "HEAL_METHODS", "HealConfig", "LsConfig", "PruneConfig",
    "ReportConfig", "RunConfig", "SweepConfig", "TaskDataConfig", "TrainConfig", "arg", "inputs_of", "output_dict", "outputs_of", "to_dict",
]  # fmt: skip
