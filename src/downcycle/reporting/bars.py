"""The seed's headline pictures: benchmarks side by side, one group of bars per task, error bars the
standard errors of the means.

* Fig. 2: the reference against the downcycled (cut, not healed) models;
* Fig. 4: the reference, one cut, the models healed from it and the control (the reference trained
  the same way), one figure per cut that was healed.

Each task is shown by its headline metric (``acc_norm`` where the task has it, else ``acc``), read
from the models' ``results.json``; the held-out loss is in the tables, not here (another scale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .experiment import Experiment, Model
from .figures import Figure, slug
from .paired import benchmark_tasks

__all__ = ["benchmark_figures", "grouped_bars"]


def grouped_bars(path: Path, title: str, series: list[tuple[str, Any]], tasks: list[tuple[str, str]]) -> list[tuple[str, str, float, float]]:
    """Write a PNG: one group per ``(task, metric)``, one bar per ``(label, EvalResults)`` with its stderr.

    Returns:
        The bars drawn, ``(label, task, value, stderr)`` in drawing order (a missing stderr drawn as 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(series)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.0, 0.16 * k * len(tasks) + 2.5)), 4.4), dpi=110)
    colors = plt.get_cmap("tab10").colors
    drawn = []
    for i, (label, results) in enumerate(series):
        xs, values, errors = [], [], []
        for j, (task, metric) in enumerate(tasks):
            m = results.tasks.get(task).metrics.get(metric) if task in results.tasks else None
            if m is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                values.append(m.value)
                errors.append(m.stderr or 0.0)
                drawn.append((label, task, m.value, m.stderr or 0.0))
        ax.bar(xs, values, width, yerr=errors, capsize=2, color=colors[i % 10], label=label, error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{t}\n({m})" for t, m in tasks], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(k, 3), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # below: bars reach 1
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return drawn


def _label(exp: Experiment, m: Model) -> str:
    from .summary import cut_strategy

    if m.role == "reference":
        return f"{m.name} (reference)"
    if m.role == "control":
        return f"{m.name} (control: reference + {m.method})"
    how = cut_strategy(exp, m)
    return f"{m.name} ({how}" + (f" + {m.method})" if m.role == "healed" else ")")


def benchmark_figures(exp: Experiment, out: Path) -> list[Figure]:
    """Fig. 2 and the Fig. 4 of each healed cut, written into ``out``; none without benchmark results."""
    evaluated = [m for m in exp.models if m.results is not None]
    tasks = benchmark_tasks([m.results for m in evaluated])
    refs = [m for m in evaluated if m.role == "reference"]
    if not tasks or not refs:
        return []
    ref, controls = refs[0], [m for m in evaluated if m.role == "control"]
    cuts = [m for m in evaluated if m.role == "cut"]
    n = {t: ref.results.tasks[t].n for t, _ in tasks if t in ref.results.tasks}
    items = ", ".join(f"{t} {c}" for t, c in n.items())
    note = (f" Bars: the mean over each task's items ({items}), error bars one standard error; "
            "whether two models differ beyond their noise is in the paired comparison below.")
    figures = []
    if cuts:
        grouped_bars(out / "fig2_downcycled.png", "reference vs downcycled (cut, not healed)",
                     [(_label(exp, m), m.results) for m in [ref] + cuts], tasks)
        figures.append(Figure("fig2_downcycled.png", "Fig. 2: reference vs downcycled",
                              f"The reference and every cut before healing, on each benchmark.{note}"))
    for cut in cuts:
        healed = [m for m in evaluated if m.role == "healed" and m.parent == cut.name]
        if not healed:
            continue
        target = f"fig4_{slug(cut.name)}.png"
        grouped_bars(out / target, f"reference vs downcycled vs healed: {cut.name}",
                     [(_label(exp, m), m.results) for m in [ref, cut] + healed + controls], tasks)
        control = " and the control (the reference trained on the same corpus and tokens)" if controls else ""
        figures.append(Figure(target, f"Fig. 4: reference vs downcycled vs healed ({cut.name})",
                              f"The reference, {cut.name}, the models healed from it{control}.{note}"))
    return figures
