"""The report's pictures (PNG, matplotlib Agg): layer distances and Block Influence of each analysis,
and the loss curves of every training run, all runs overlaid and one per run.

The analysis stage's own PNGs are reused as they are; when an analysis was written with
``--no-plots`` they are drawn again from its ``scores.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..artifacts.loss_log import LOG_NAME, plot_losses, read_log
from .experiment import Experiment, Model, Stage

__all__ = ["Figure", "analysis_figures", "loss_figures", "slug"]


@dataclass
class Figure:
    """A PNG in the report directory and what it shows."""

    file: str  # name inside the report directory
    title: str
    caption: str


def slug(name: str) -> str:
    """``name`` as a file name's part: letters, digits, ``-`` and ``_`` kept, anything else ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def analysis_figures(exp: Experiment, out: Path) -> list[Figure]:
    """The angular-distance heatmap and BI per layer of each ``analyze`` stage, copied (or redrawn) into ``out``."""
    figures = []
    analyses = [(s.name, s.path) for s in exp.of_kind("analyze")]
    analyses += [(f"{s.name}/analysis", s.path / "analysis") for s in exp.of_kind("cut")  # `cut --keep` analyzed first
                 if s.manifest["config"].get("keep") and (s.path / "analysis").is_dir()]
    for name, path in analyses:
        scores, plan = _read(path / "scores.json"), _read(path / "plan.json")
        dropped = (plan or {}).get("details", {}).get("dropped_layers", [])
        what = f"kept {plan['kept_layers']} of {plan['source_layers']} layers by strategy {plan['strategy']}" if plan else ""
        for png, key, title in (("angular_distance.png", "angular-last", "layer distance d(x_l, x_(l+n))"),
                                ("block_influence.png", "bi", "Block Influence per layer")):
            target = f"{slug(name)}-{png}"
            if (path / png).is_file():
                shutil.copy2(path / png, out / target)
            elif scores and key in scores:
                from ..analysis.plots import plot_angular, plot_per_layer

                if key == "bi":
                    plot_per_layer(scores[key], out / target, title, "BI = 1 - E[cos]", dropped)
                else:
                    plot_angular(scores[key], out / target, title, dropped)
            else:
                continue
            caption = (f"{name}: angular distance between the residual stream entering layer l and n layers later "
                       "(last token; low = the block changes little; the dropped block outlined). " if key != "bi" else
                       f"{name}: Block Influence 1 - E[cos(x_l, x_(l+1))] per layer (dropped layers in red). ") + what
            figures.append(Figure(target, f"{name}: {title}", caption))
    return figures


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _trained(exp: Experiment) -> list[tuple[Model, Stage]]:
    return [(m, m.stage) for m in exp.models if m.stage is not None and m.stage.kind == "train" and (m.stage.path / LOG_NAME).is_file()]


def train_series(records: list[dict]) -> list[tuple[int, float]]:
    """(tokens, loss) of a run's train records, comparable with its validation loss: the LM term
    (``lm_loss``) where the objective adds more (distillation's KL), else the loss itself."""
    return [(r["tokens"], r.get("lm_loss", r["loss"])) for r in records if r.get("split") == "train" and "loss" in r]


def loss_figures(exp: Experiment, out: Path) -> list[Figure]:
    """All healing runs' loss curves overlaid (train loss lines, validation loss markers, one colour a
    run), then one figure per training run (the reference's pretraining included)."""
    runs = _trained(exp)
    healed = [(m, s) for m, s in runs if m.role in ("healed", "control")]
    figures = []
    if healed:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
        colors = plt.get_cmap("tab10").colors
        for i, (model, stage) in enumerate(healed):
            records, color = read_log(stage.path / LOG_NAME), colors[i % 10]
            train = train_series(records)
            val = [(r["tokens"], r["loss"]) for r in records if r.get("split") == "val" and "loss" in r]
            if train:
                ax.plot(*zip(*train), "-", color=color, alpha=0.55, linewidth=1.0, label=f"{model.name} train")
            if val:
                ax.plot(*zip(*val), "o--", color=color, markersize=5, linewidth=1.4, label=f"{model.name} val")
        ax.set_xlabel("training tokens")
        ax.set_ylabel("loss (nats / token)")
        ax.set_title("healing runs: train (lines) and validation (markers) loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "loss_all.png")
        plt.close(fig)
        figures.append(Figure("loss_all.png", "loss curves of every healing run",
                              "Train loss per logged step (for distillation its LM term, without the KL term) and validation loss at each "
                              "evaluation, against tokens trained."))
    for model, stage in runs:
        target = f"loss-{slug(model.name)}.png"
        method = stage.manifest["config"].get("method")
        plot_losses(read_log(stage.path / LOG_NAME), out / target, title=f"{model.name} ({method})")
        figures.append(Figure(target, f"{model.name}: loss ({method}, {model.role})",
                              f"{stage.manifest.get('outputs', {}).get('tokens', 0):,} tokens, "
                              f"{stage.manifest.get('outputs', {}).get('steps', 0)} optimizer steps."))
    return figures
