"""downcycle: make smaller language models out of big pretrained ones, and prove how good they are.

The Python API is one function per command, named as the command, each taking its typed config or
the config's fields as keywords and returning the command's result (:mod:`downcycle.api`):

>>> import downcycle
>>> downcycle.cut(source="examples/reference", out="ref-8", layers="0-7").kept_layers
[0, 1, 2, 3, 4, 5, 6, 7]

Importing downcycle imports neither torch nor transformers; a command imports what it needs when it runs.
"""

__version__ = "0.1.0"

from .api import analyze, card, compare, convert, cut, data, demo, eval, generate, heal, prune, report, run, sweep, taskdata, train  # noqa: E402
from .errors import DowncycleError  # noqa: E402
from .recipe import (AnalyzeConfig, CardConfig, CompareConfig, ConvertConfig, CutConfig, DataConfig, DemoConfig,  # noqa: E402
                     EvalConfig, GenerateConfig, HealConfig, PruneConfig, ReportConfig, RunConfig, SweepConfig, TaskDataConfig,
                     TrainConfig)

__all__ = [
    "AnalyzeConfig", "CardConfig", "CompareConfig", "ConvertConfig", "CutConfig", "DataConfig", "DemoConfig", "DowncycleError",
    "EvalConfig", "GenerateConfig", "HealConfig", "PruneConfig", "ReportConfig", "RunConfig", "SweepConfig", "TaskDataConfig",
    "TrainConfig", "__version__", "analyze", "card", "compare", "convert", "cut", "data", "demo", "eval", "generate", "heal",
    "prune", "report", "run", "sweep", "taskdata", "train",
]  # fmt: skip
