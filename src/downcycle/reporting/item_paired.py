"""The item-level paired tables of ``downcycle compare`` and the report: for each pair of models
(a model and its baseline: the reference, or the cut it was healed from), per benchmark task and
pooled over tasks, the paired differences of accuracy, gold log-likelihood (total and per
character) and Brier score, the mean choice KL, and the flips (:mod:`.item_metrics`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from .item_metrics import Estimate, Item, ItemPaired, compare_items, read_task_items
from .paired import Z, benchmark_tasks

__all__ = ["ITEM_NOTE", "POOLED", "item_rows", "item_table", "parse_pairs"]
POOLED = "pooled"
ITEM_NOTE = (f"Per item, on the same items: Δ = model − baseline, ± its paired standard error, `*` where |Δ| > {Z:g} SE. "
             "acc: each task's headline accuracy (acc_norm where reported, else acc); gold_ll: the gold choice's "
             "log-likelihood (nats; higher is better), per character: divided by its length, as acc_norm divides; brier: "
             "Brier score of the softmax over the choices (lower is better); KL: mean KL(baseline‖model) of the two models' "
             "choice distributions (nats, ± SE); flips: items right for the baseline and wrong for the model (r→w), the other "
             "way (w→r), and their share of the items. Pooled: every item of every task listed, one observation each.")


def parse_pairs(spec: str, names: list[str]) -> list[tuple[str, str]]:
    """``MODEL:BASELINE,...`` (names as in the compare table) as ``[(model, baseline)]``."""
    pairs = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        model, sep, baseline = part.rpartition(":")
        if not sep or not model or not baseline:
            raise DowncycleError(f"--pairs {part!r}: expected MODEL:BASELINE")
        for name in (model, baseline):
            if name not in names:
                raise DowncycleError(f"--pairs {part!r}: no model named {name!r} (models: {', '.join(names)})")
        pairs.append((model, baseline))
    if not pairs:
        raise DowncycleError("--pairs: no pair given")
    return pairs


def item_rows(models: list[tuple[str, Any, Path | None]], pairs: list[tuple[str, str]], exclude: tuple[str, ...] = ()) -> list[ItemPaired]:
    """Per pair, one row per benchmark task either model was evaluated on, then the pooled row.

    Args:
        models: ``(name, EvalResults, results directory)`` of every model.
        pairs: ``(model, baseline)`` names.
        exclude: tasks left out of the pooled rows (their own rows stay).
    """
    by_name = {m[0]: m for m in models}
    tasks = benchmark_tasks([m[1] for m in models])
    cache: dict[tuple[str, str], dict[tuple, Item] | str] = {}

    def items(name: str, task: str, metric: str) -> dict[tuple, Item] | str:
        if (name, task) not in cache:
            _, res, where = by_name[name]
            if task not in res.tasks:
                cache[name, task] = "not evaluated on both"
            elif where is None:
                cache[name, task] = "no per-item samples"
            else:
                cache[name, task] = read_task_items(Path(where) / "samples", task, metric, res.tasks[task].subtasks)
        return cache[name, task]

    rows = []
    for a, b in pairs:
        if a not in by_name or b not in by_name:
            continue
        pooled_a: dict[tuple, Item] = {}
        pooled_b: dict[tuple, Item] = {}
        used = []
        for task, metric in tasks:
            ia, ib = items(a, task, metric), items(b, task, metric)
            if isinstance(ia, str) or isinstance(ib, str):
                rows.append(ItemPaired(task, a, b, note=ia if isinstance(ia, str) else ib))
                continue
            row = compare_items(task, a, b, ia, ib)
            rows.append(row)
            if row.n and task not in exclude:
                pooled_a.update(ia)
                pooled_b.update(ib)
                used.append(task)
        if used:
            rows.append(compare_items(POOLED, a, b, pooled_a, pooled_b, used))
        elif tasks:
            rows.append(ItemPaired(POOLED, a, b, note="no task with per-item log-likelihoods for both"))
    return rows


def _diff(e: Estimate | None) -> str:
    if e is None:
        return "–"
    return f"{e.value:+.4f}" + ("" if e.se is None else f" ± {e.se:.4f}") + (" *" if e.significant else "")


def item_table(rows: list[ItemPaired], pooled_only: bool = False) -> tuple[list[str], list[list[str]]]:
    """Head and formatted rows (``pooled_only``: the pooled rows, with the tasks they pool)."""
    head = ["tasks" if pooled_only else "task", "model", "vs", "items", "Δ acc", "Δ gold_ll", "Δ gold_ll/char", "Δ brier",
            "KL(vs‖model)", "flips r→w / w→r", "note"]
    out = []
    for r in rows:
        if pooled_only != (r.task == POOLED):
            continue
        scope = ", ".join(r.tasks) if pooled_only else r.task
        kl = "–" if r.choice_kl is None else f"{r.choice_kl.value:.4f}" + ("" if r.choice_kl.se is None else f" ± {r.choice_kl.se:.4f}")
        flips = f"{r.right_to_wrong} / {r.wrong_to_right} ({r.flips:.1%})" if r.n else "–"
        out.append([scope, r.model, r.baseline, str(r.n), _diff(r.acc), _diff(r.gold_ll), _diff(r.gold_ll_char), _diff(r.brier),
                    kl, flips, r.note or ""])
    return head, out
