"""The last stage of ``downcycle sweep``: size against quality for every depth, before and after healing.

Reads the eval stage's results of every model of the sweep and writes ``sweep/``: ``sweep.json`` and
``sweep.md`` (one row per model: depth, kept layers, parameters, each task's headline metric) and
``size_quality.png`` (parameters against each headline metric; one line per strategy, un-healed and
per healing method, the reference as a star).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..artifacts.atomic import atomic_output_dir
from ..artifacts.manifest import write_manifest
from .recipe_file import Recipe
from .recipe_stages import Stage

__all__ = ["sweep_stage", "run_sweep_stage", "sweep_rows"]


def sweep_stage(out: Path, stages: list[Stage], recipe: Recipe) -> Stage:
    models = next(s for s in stages if s.kind == "eval").info["models"]
    return Stage("sweep", "sweep", {"models": models, "recipe": str(recipe.path)}, ["eval"], reference=stages[0].reference)


def sweep_rows(out: Path, models: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per model with its labels and the headline metric of every task; and the metric columns."""
    from ..evaluation.results import read_results
    from ..reporting.compare import headline

    rows, columns = [], []
    for name, info in models.items():
        results = read_results(out / "eval" / info["eval_name"] / "results.json")
        row = {"model": name, "role": info.get("role"), "strategy": info.get("strategy"), "method": info.get("method"),
               "depth": info.get("depth"), "layers": info.get("layers"), "parameters": results.model.parameters}
        for task, t in results.tasks.items():
            metric = headline(task, {m: v for m, v in t.metrics.items()})
            col = f"{task}/{metric}"
            row[col] = t.metrics[metric].value
            if col not in columns:
                columns.append(col)
        rows.append(row)
    return rows, columns


def run_sweep_stage(stage: Stage, out: Path) -> str:
    """Write ``sweep/`` from the eval stage's results; returns its table (Markdown)."""
    models = stage.config["models"]
    rows, columns = sweep_rows(out, models)
    with atomic_output_dir(out / "sweep", force=True) as tmp:
        (tmp / "sweep.json").write_text(json.dumps({"rows": rows, "columns": columns}, indent=2) + "\n")
        (tmp / "sweep.md").write_text(_markdown(rows, columns))
        files = ["sweep.json", "sweep.md"] + _plot(tmp, rows, columns)
        write_manifest(tmp, "sweep", stage.config, {"eval": str(out / "eval")}, {"files": files})
    return (out / "sweep" / "sweep.md").read_text()


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = ["model", "depth", "layers", "parameters", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (-(r["parameters"] or 0), r["model"])):
        cells = [r["model"], r["depth"] or ("1.0" if r["role"] == "reference" else "–"), str(r["layers"] or "–"),
                 f"{r['parameters'] / 1e6:.2f}M"] + [f"{r[c]:.4f}" if r.get(c) is not None else "–" for c in columns]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(directory: Path, rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4.5), squeeze=False)
    for ax, col in zip(axes[0], columns):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["role"] in ("reference", "control") or r.get(col) is None:
                continue
            label = f"{r['strategy']}" + (f" + {r['method']}" if r["role"] == "healed" else " (cut, not healed)")
            series.setdefault(label, []).append((r["parameters"], r[col]))
        for label, points in sorted(series.items()):
            xs, ys = zip(*sorted(points))
            ax.plot([x / 1e6 for x in xs], ys, marker="o", linestyle="--" if "not healed" in label else "-", label=label)
        for r in rows:
            if r["role"] == "reference" and r.get(col) is not None:
                ax.plot([r["parameters"] / 1e6], [r[col]], marker="*", markersize=14, color="black", linestyle="none", label="reference")
            elif r["role"] == "control" and r.get(col) is not None:
                ax.plot([r["parameters"] / 1e6], [r[col]], marker="X", markersize=10, linestyle="none",
                        label=f"control: reference + {r['method']}")
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel(col)
        ax.set_title(f"size vs {col}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "size_quality.png", dpi=110)
    plt.close(fig)
    return ["size_quality.png"]
