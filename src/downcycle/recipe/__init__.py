"""Typed configs for every stage: dataclasses whose fields carry their own help.

The CLI is derived from these (see :mod:`downcycle.cli`), recipes are parsed into them, and
manifests record them, so a field is documented, validated and recorded in exactly one place.
One module per stage; everything is re-exported here.
"""

from .analyze import AnalyzeConfig, LsConfig
from .cut import ConvertConfig, CutConfig, DemoConfig
from .data import DataConfig
from .evaluate import CompareConfig, EvalConfig
from .fields import arg, output_dict, parse_count, to_dict
from .train import TrainConfig

__all__ = [
    "AnalyzeConfig", "CompareConfig", "ConvertConfig", "CutConfig", "DataConfig", "DemoConfig", "EvalConfig", "LsConfig",
    "TrainConfig", "arg", "output_dict", "parse_count", "to_dict",
]  # fmt: skip
