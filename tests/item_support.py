"""Hand-made per-item samples files and results.json, as `downcycle eval` writes them, for the tests
of the paired item metrics (compare and report) without loading a model."""

from __future__ import annotations

import json
from pathlib import Path

from downcycle.evaluation.metrics import item_metrics

CHARS = (5, 9, 3)  # the choices' lengths in characters


def lls_with(gold: int, correct: bool, gold_ll: float, n: int = 3) -> list[float]:
    """Log-likelihoods with the gold choice at ``gold_ll``, the best choice when ``correct``."""
    others = gold_ll - 1.0 if correct else gold_ll + 0.5
    return [gold_ll if c == gold else others - 0.1 * c for c in range(n)]


def record(doc: int, gold: int, correct: bool, gold_ll: float, new: bool = True) -> dict:
    """One sample line; ``new``: with the fields eval writes now, else as older samples (log-likelihoods only)."""
    lls = lls_with(gold, correct, gold_ll)
    rec = {"doc": doc, "gold": gold, "loglikelihoods": lls, "is_greedy": [False] * 3, "acc": float(correct)}
    if new:
        rec.update(choice_chars=list(CHARS), **item_metrics(lls, gold, list(CHARS)))
    return rec


def write_model(root: Path, name: str, tasks: dict[str, list[dict]], params: int = 1000, path: Path | None = None) -> Path:
    """``root/name/results.json`` and ``root/name/samples/<task>.jsonl`` of a model (at ``path``, if given)."""
    from downcycle.evaluation.results import EvalResults, MetricValue, ModelInfo, TaskResult

    d = root / name
    (d / "samples").mkdir(parents=True)
    results = {}
    for task, rows in tasks.items():
        (d / "samples" / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        metric = "exact_match" if task == "gsm8k" else "acc"
        results[task] = TaskResult("1", "multiple_choice", 0, None, len(rows),
                                   {metric: MetricValue(sum(r[metric] for r in rows) / len(rows), 0.1)})
    EvalResults(ModelInfo(name, str(path or d), params, {}), results, {}, {}, None, 0.0).write(d)
    return d
