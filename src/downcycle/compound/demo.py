"""``downcycle demo``: the seed's experiment in miniature, offline, on a CPU, in about twelve minutes.

It runs the embedded recipe ``examples/recipes/demo.yaml`` through the same pipeline as
``downcycle run`` (so a re-run continues where it stopped) on the shipped reference model
``examples/reference/`` (a 12-layer Llama that downcycle pretrained on the shipped corpus):

1. ``data/``: the shipped corpus packed with the reference's tokenizer (its own pretraining split);
2. ``analyze/``: layer distances and Block Influence on calibration text;
3. ``cut-first/`` (the seed's first-k) and ``cut-block/`` (Gromov et al.'s best block), 75% depth;
4. ``heal-*``: each cut healed by LoRA and by distillation from the reference;
5. ``eval/`` and ``compare/``: validation loss, perplexity and bits per byte of every model;
6. ``report.html`` and ``report.md``: heatmap, loss curves, tables, gap recovered, sample generations.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..recipe import DemoConfig

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPE = EXAMPLES / "recipes" / "demo.yaml"

__all__ = ["RECIPE", "DemoResult", "run_demo", "summary"]


@dataclass
class DemoResult:
    out: Path
    report: Path  # report.html
    pipeline: Any  # the PipelineResult of the embedded recipe


def run_demo(config: DemoConfig, echo: Callable[[str], None] | None = None) -> DemoResult:
    """Run the embedded recipe into ``config.out``; ``echo`` is given the pipeline's progress lines."""
    from ..pipeline.recipe_file import load_recipe
    from ..pipeline.run import run_stages
    from ..pipeline.recipe_stages import build_stages

    if not RECIPE.is_file() or not (EXAMPLES / "reference" / "config.json").is_file():
        raise DowncycleError(f"{EXAMPLES}: the shipped recipe and reference model are missing (run from a clone of the repository)")
    recipe = load_recipe(RECIPE)
    for heal in recipe.heal:
        if config.heal_steps is not None:
            heal.options["max_steps"] = config.heal_steps
            heal.options["save_every"] = max(1, config.heal_steps // 2)
    if config.eval_limit is not None:
        recipe.eval["limit"] = config.eval_limit
    out = config.out
    if config.force:
        shutil.rmtree(out, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the stages show their own bars
    return DemoResult(out, out / "report.html", run_stages(recipe, out, build_stages(recipe, out), progress=config.progress, echo=echo))


def summary(result: DemoResult) -> str:
    """The result in a few lines: the loss of every model, the gap each healing recovered, who won;
    then where the report is."""
    from ..reporting.experiment import discover
    from ..reporting.summary import summarize

    out, ran = result.out, result.pipeline
    found = summarize(discover(out))

    def fmt(value: float | None, spec: str = ".4f") -> str:
        return "n/a" if value is None else format(value, spec)

    lines = ["\n== result (validation loss, nats/token)"]
    lines += [f"  {h['model']}: {fmt(h['loss_cut'])} (cut) -> {fmt(h['loss'])} (healed); reference {fmt(h['loss_ref'])}; "
              f"gap recovered {fmt(h['recovered'], '.0%')}" for h in found.healed]
    lines += [f"  {line.replace('**', '')}" for line in found.verdicts]
    lines.append(f"\ndone in {ran.seconds / 60:.1f} min ({len(ran.ran)} stages ran, {len(ran.skipped)} were already done); "
                 f"every directory under {out} has a downcycle.json manifest")
    lines.append(f"report: {out / 'report.html'}  (and {out / 'report.md'})")
    return "\n".join(lines)
