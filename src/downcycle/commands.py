"""THE command table: every command's name -> its typed config, its run function and its summary.

The CLI builds one sub-command per entry (its options from the config's fields) and, for the
command given, runs ``run(config)`` and prints ``summary(result)``; the pipeline runs its stages
through the same entries (a recipe stage names the command it runs). A run function returns its result and never prints; a summary turns that
result into lines for people (None: nothing to say).

Run and summary functions are named ``"module:function"`` and imported when their command runs, as
the registries of :mod:`downcycle.registries` are: most of them import torch, which ``downcycle
--help`` must not. So this module imports only the configs, and sits low in the import graph:
the pipeline reads it as the CLI does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import DowncycleError
from .recipe.analyze import AnalyzeConfig, LsConfig
from .recipe.cut import ConvertConfig, CutConfig
from .recipe.data import DataConfig
from .recipe.evaluate import CompareConfig, EvalConfig, TaskDataConfig
from .recipe.generate import GenerateConfig
from .recipe.heal import HealConfig
from .recipe.prune import PruneConfig
from .recipe.report import CardConfig, ReportConfig
from .recipe.run import DemoConfig, RunConfig, SweepConfig
from .recipe.train import TrainConfig

__all__ = ["COMMANDS", "Command", "get_command", "resolve"]


@dataclass(frozen=True)
class Command:
    """One command.

    Attributes:
        config: its typed config (a dataclass of :mod:`downcycle.recipe`).
        run: ``"module:function"``, ``function(config) -> result``.
        summary: ``"module:function"``, ``function(result) -> str | None``.
        echo: ``run`` takes ``echo=``, a callable given progress lines as the stages of a pipeline go.
        stream: ``run`` writes its output (the generated text) to stdout as it goes; the summary then
            goes to stderr, after the line is ended.
    """

    config: type
    run: str
    summary: str
    echo: bool = False
    stream: bool = False

    def load_run(self) -> Callable[..., Any]:
        return resolve(self.run)

    def load_summary(self) -> Callable[[Any], str | None]:
        return resolve(self.summary)


COMMANDS: dict[str, Command] = {
    "cut": Command(CutConfig, "downcycle.compound.cut:run_cut", "downcycle.compound.cut:summary"),
    "prune": Command(PruneConfig, "downcycle.compound.prune:run_prune", "downcycle.surgery.prune:summary"),
    "convert": Command(ConvertConfig, "downcycle.conversion.run:convert", "downcycle.conversion.run:summary"),
    "demo": Command(DemoConfig, "downcycle.compound.demo:run_demo", "downcycle.compound.demo:summary", echo=True),
    "heal": Command(HealConfig, "downcycle.healing.run:run_heal", "downcycle.healing.run:summary", echo=True),
    "train": Command(TrainConfig, "downcycle.training.run:run_train", "downcycle.training.run:summary"),
    "analyze": Command(AnalyzeConfig, "downcycle.analysis.run:run_analyze", "downcycle.analysis.run:summary"),
    "ls": Command(LsConfig, "downcycle.registries:run_ls", "downcycle.registries:summary"),
    "eval": Command(EvalConfig, "downcycle.evaluation.run:run_eval", "downcycle.evaluation.run:summary"),
    "taskdata": Command(TaskDataConfig, "downcycle.evaluation.task_package:run_taskdata", "downcycle.evaluation.task_package:summary"),
    "compare": Command(CompareConfig, "downcycle.reporting.compare:run_compare", "downcycle.reporting.compare:summary"),
    "data": Command(DataConfig, "downcycle.corpus.build:build_corpus", "downcycle.corpus.build:summary"),
    "generate": Command(GenerateConfig, "downcycle.generation.run:run_generate", "downcycle.generation.summary:summary", stream=True),
    "report": Command(ReportConfig, "downcycle.reporting.build:run_report", "downcycle.reporting.build:summary"),
    "card": Command(CardConfig, "downcycle.reporting.card:run_card", "downcycle.reporting.card:summary"),
    "run": Command(RunConfig, "downcycle.pipeline.run:run_recipe", "downcycle.pipeline.run:summary", echo=True),
    "sweep": Command(SweepConfig, "downcycle.pipeline.run:run_sweep", "downcycle.pipeline.run:summary", echo=True),
}


def get_command(name: str) -> Command:
    if name not in COMMANDS:
        raise DowncycleError(f"unknown command {name!r} (choose from {', '.join(COMMANDS)})")
    return COMMANDS[name]


def resolve(ref: str) -> Callable[..., Any]:
    """The function named by ``"module:function"``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
