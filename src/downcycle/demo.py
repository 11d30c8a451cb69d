"""``downcycle demo``: the seed's experiment in miniature, offline, on a CPU, in about twelve minutes.

It runs the embedded recipe ``examples/recipes/demo.yaml`` through the same pipeline as
``downcycle run`` (so a re-run continues where it stopped) on the shipped reference model
``examples/reference/`` (a 12-layer Llama that downcycle pretrained on the shipped corpus):

1. ``corpus/``: the shipped corpus packed with the reference's tokenizer (its own pretraining split);
2. ``analysis/``: layer distances and Block Influence on calibration text;
3. ``cut-first/`` (the seed's first-k) and ``cut-block/`` (Gromov et al.'s best block), 75% depth;
4. ``healed-*``: each cut healed by LoRA and by distillation from the reference;
5. ``eval/`` and ``compare/``: validation loss, perplexity and bits per byte of every model;
6. ``report.html`` and ``report.md``: heatmap, loss curves, tables, gap recovered, sample generations.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import DowncycleError
from .recipe import DemoConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECIPE = EXAMPLES / "recipes" / "demo.yaml"

__all__ = ["RECIPE", "run_demo"]


def run_demo(config: DemoConfig) -> Path:
    """Run the embedded recipe into ``config.out``; returns the path of ``report.html``."""
    from .pipeline.recipe_file import load_recipe
    from .pipeline.run import run_stages
    from .pipeline.stages import build_stages

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
    result = run_stages(recipe, out, build_stages(recipe, out), progress=config.progress)
    _headline(out)
    print(f"\ndone in {result.seconds / 60:.1f} min ({len(result.ran)} stages ran, {len(result.skipped)} were already done); "
          f"every directory under {out} has a downcycle.json manifest")
    print(f"report: {out / 'report.html'}  (and {out / 'report.md'})")
    return out / "report.html"


def _headline(out: Path) -> None:
    """The result in a few lines: the loss of every model, the gap each healing recovered, who won."""
    from .report.experiment import discover
    from .report.summary import summarize

    summary = summarize(discover(out))
    print("\n== result (validation loss, nats/token)")
    def fmt(value: float | None, spec: str = ".4f") -> str:
        return "n/a" if value is None else format(value, spec)

    for h in summary.healed:
        print(f"  {h['model']}: {fmt(h['loss_cut'])} (cut) -> {fmt(h['loss'])} (healed); reference {fmt(h['loss_ref'])}; "
              f"gap recovered {fmt(h['recovered'], '.0%')}")
    for line in summary.verdicts:
        print(f"  {line.replace('**', '')}")
