"""Paired comparison of two models on the same benchmark items: which differences are larger than their noise.

Two models evaluated on the same items (``downcycle eval`` writes one line per item to
``<model>/samples/<task>.jsonl``, with the item's index ``doc``, its ``gold`` answer and its metric
values) differ, item by item, by ``d_i = a_i - b_i``. The mean difference is the difference of the two
accuracies; its paired standard error ``sd(d) / sqrt(n)`` (sample standard deviation, ``n - 1`` in
the denominator, as for each model's own standard error) is usually far smaller than the two models'
standard errors combined, because most items are answered alike by both: that is why a paired test
can tell models apart that the error bars of a bar chart cannot. A difference counts as larger than
its noise when ``|mean| > 2 SE`` (about a 95% two-sided level).

A group task (MMLU) pools its subtasks' items, keyed by (subtask, index): the group's score is the
size-weighted mean of its subtasks, which is the mean over all of their items.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Paired", "Z", "benchmark_tasks", "compare_pair", "experiment_pair_names", "experiment_pairs", "paired_diff", "paired_rows", "paired_table", "pooled_inside", "read_items"]
Z = 2.0  # |diff| > Z * SE: larger than its noise


@dataclass
class Paired:
    """One model against a baseline on one task's shared items."""

    task: str
    metric: str
    model: str
    baseline: str
    n: int  # items both were scored on
    diff: float | None  # mean of model - baseline (None: no shared items)
    se: float | None  # paired standard error of that mean (None: fewer than 2 items)
    note: str | None = None  # why there is no comparison

    @property
    def significant(self) -> bool:
        return self.diff is not None and self.se is not None and abs(self.diff) > Z * self.se


def paired_diff(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """Mean of ``a - b`` item by item, and its standard error (None for fewer than two items)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values need the same, non-zero length (got {len(a)} and {len(b)})")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return mean, None
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return mean, math.sqrt(var / n)


def read_items(samples_dir: Path, task: str, metric: str, subtasks: list[str] | None = None) -> dict[tuple[str, Any], tuple[float, Any]] | None:
    """``{(subtask, doc): (metric value, gold)}`` of a task's per-item samples, or None when missing."""
    items: dict[tuple[str, Any], tuple[float, Any]] = {}
    for name in subtasks or [task]:
        path = Path(samples_dir) / f"{name}.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        for line in lines:
            if not line.strip():
                continue
            rec = json.loads(line)
            if metric not in rec:
                return None
            items[(name, json.dumps(rec.get("doc"), sort_keys=True))] = (float(rec[metric]), rec.get("gold"))
    return items


def pooled_inside(results: list[Any]) -> set[str]:
    """Tasks of ``results`` that a larger task pools: a group's subtasks, and the groups whose
    subtasks are a part of another group's (MMLU's categories inside MMLU; of two groups of the same
    subtasks, the later one: the evaluation lists the requested group before its categories)."""
    groups: dict[str, set[str]] = {}
    for r in results:
        for task, t in r.tasks.items():
            if t.subtasks:
                groups.setdefault(task, set(t.subtasks))
    order = list(groups)
    inner = {g for g in order if any(h != g and (groups[g] < groups[h] or (groups[g] == groups[h] and order.index(h) < order.index(g)))
                                     for h in order)}
    return inner | set().union(*groups.values())


def benchmark_tasks(results: list[Any]) -> list[tuple[str, str]]:
    """(task, headline metric) of every benchmark in ``results`` (``EvalResults``), in first-seen
    order: the held-out loss, the subtasks of a group and the groups inside a larger one (MMLU's
    categories) left out: the largest group is the one shown."""
    from .compare import headline

    hidden = pooled_inside(results)
    out: dict[str, str] = {}
    for r in results:
        for task, t in r.tasks.items():
            if task == "loss" or task in hidden or task in out or "nll" in t.metrics:
                continue
            out[task] = headline(task, t.metrics)
    return list(out.items())


def compare_pair(task: str, metric: str, model: tuple[str, Any, Path | None], baseline: tuple[str, Any, Path | None]) -> Paired:
    """``model`` against ``baseline``, each ``(name, EvalResults, results directory)``, on ``task``."""
    (name, res, where), (bname, bres, bwhere) = model, baseline

    def none(note: str) -> Paired:
        return Paired(task, metric, name, bname, 0, None, None, note)

    if task not in res.tasks or task not in bres.tasks:
        return none("not evaluated on both")
    if where is None or bwhere is None:
        return none("no per-item samples")
    a = read_items(where / "samples", task, metric, res.tasks[task].subtasks)
    b = read_items(bwhere / "samples", task, metric, bres.tasks[task].subtasks)
    if a is None or b is None:
        return none("no per-item samples")
    if set(a) != set(b) or any(a[k][1] != b[k][1] for k in a):
        return none("different items")
    keys = sorted(a)
    diff, se = paired_diff([a[k][0] for k in keys], [b[k][0] for k in keys])
    return Paired(task, metric, name, bname, len(keys), diff, se)


def paired_rows(models: list[tuple[str, Any, Path | None]], pairs: list[tuple[str, str]]) -> list[Paired]:
    """Every pair ``(model, baseline)`` (names of ``models``: ``(name, EvalResults, results dir)``) on
    every benchmark task either was evaluated on."""
    by_name = {m[0]: m for m in models}
    tasks = benchmark_tasks([m[1] for m in models])
    return [compare_pair(task, metric, by_name[a], by_name[b]) for a, b in pairs for task, metric in tasks
            if a in by_name and b in by_name]


def paired_table(rows: list[Paired]) -> tuple[list[str], list[list[str]]]:
    """Head and formatted rows for the report and ``compare.md``."""
    head = ["task", "metric", "model", "vs", "items", "difference", "paired SE", f"|diff| > {Z:g} SE"]
    out = []
    for p in rows:
        if p.diff is None:
            out.append([p.task, p.metric, p.model, p.baseline, str(p.n), "–", "–", p.note or "–"])
            continue
        out.append([p.task, p.metric, p.model, p.baseline, str(p.n), f"{p.diff:+.4f}", "–" if p.se is None else f"{p.se:.4f}",
                    ("yes: " + ("better" if p.diff > 0 else "worse")) if p.significant else "no"])
    return head, out


def experiment_pair_names(exp: Any) -> tuple[list[tuple[str, Any, Path | None]], list[tuple[str, str]]]:
    """The report's models, ``(name, EvalResults, results directory)`` of each evaluated model of
    ``exp`` (an :class:`~.experiment.Experiment`), and its pairs ``(model, baseline)``: every model
    against the reference, then every healed model against the cut it was healed from."""
    evaluated = [m for m in exp.models if m.results is not None]
    refs = [m for m in evaluated if m.role == "reference"]
    if not refs:
        return [], []
    ref = refs[0]
    order = {"cut": 0, "healed": 1, "control": 2}
    pairs = [(m.name, ref.name) for m in sorted(evaluated, key=lambda m: order.get(m.role, 3)) if m is not ref]
    pairs += [(m.name, m.parent) for m in evaluated if m.role == "healed" and m.parent in {x.name for x in evaluated}]
    return [(m.name, m.results, m.results_dir) for m in evaluated], pairs


def experiment_pairs(exp: Any) -> list[Paired]:
    """The report's paired comparisons on each task's headline metric (:func:`experiment_pair_names`)."""
    models, pairs = experiment_pair_names(exp)
    return paired_rows(models, pairs)
