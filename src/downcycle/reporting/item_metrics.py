"""Continuous per-item metrics of a model against a baseline on the same multiple-choice items, from
the per-item samples ``downcycle eval`` writes (``<model>/samples/<task>.jsonl``).

Accuracy on a hundred items moves in steps of 1%: a change of the model's distribution (healing a
depth cut, say) can be real and still flip no answer. So, per item:

- of each model (:func:`downcycle.evaluation.metrics.item_metrics`, written into each sample line by
  eval; derived here from ``loglikelihoods`` for samples written before): ``gold_ll``, the gold
  choice's log-likelihood; ``gold_ll_char``, the same per character of the gold choice (the length
  acc_norm divides by; None for older samples, which did not record ``choice_chars``); ``brier``,
  the Brier score of the softmax over the choices' log-likelihoods;
- of the pair: ``choice_kl`` = KL(baseline‖model) = sum_c p_b(c) (log p_b(c) - log p_m(c)) between
  the two choice distributions, and whether the item's correctness flipped, right to wrong or wrong
  to right (Dutta et al. 2024, "Accuracy is not all you need", arXiv 2407.09141): two models of
  equal accuracy can disagree on many items.

Correctness is each task's headline accuracy (acc_norm where the task reports it, else acc: the
paired table's metric). Differences (model - baseline) come with their paired standard error
(:func:`~.paired.paired_diff`), ``choice_kl`` with the standard error of its mean. Pooled over
tasks, every item of every task is one observation. Tasks with several true answers
(truthfulqa_mc2, whose acc is already a probability mass) and generative tasks (no choice
log-likelihoods) are left out, with the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation.metrics import choice_log_probs, item_metrics, mean_stat
from .paired import Z, paired_diff

__all__ = ["DIFFS", "Estimate", "Item", "ItemPaired", "choice_kl", "compare_items", "read_task_items"]
DIFFS = ("acc", "gold_ll", "gold_ll_char", "brier")  # paired differences model - baseline
MULTI_GOLD = "several true answers (its acc is already their probability mass): no single gold choice"
NO_CHARS = "gold_ll_char: samples without choice_chars (written before eval recorded them)"


@dataclass(frozen=True)
class Item:
    """One model's answer to one item."""

    gold: Any
    correct: float  # 1.0 right, 0.0 wrong (the task's headline accuracy)
    lls: list[float]  # summed log-likelihood of each choice
    gold_ll: float
    gold_ll_char: float | None
    brier: float


@dataclass
class Estimate:
    """A mean (of differences, or of KL) and its standard error (None for fewer than two items)."""

    value: float
    se: float | None

    @property
    def significant(self) -> bool:
        return self.se is not None and abs(self.value) > Z * self.se


@dataclass
class ItemPaired:
    """``model`` against ``baseline`` on one task's items, or on the pooled items of ``tasks``."""

    task: str  # a task, or "pooled"
    model: str
    baseline: str
    n: int = 0
    acc: Estimate | None = None
    gold_ll: Estimate | None = None
    gold_ll_char: Estimate | None = None
    brier: Estimate | None = None
    choice_kl: Estimate | None = None  # mean KL(baseline‖model) of the choice distributions
    right_to_wrong: int = 0  # items the baseline answers right and the model wrong
    wrong_to_right: int = 0
    tasks: list[str] = field(default_factory=list)  # the tasks whose items these are
    note: str | None = None  # why a value is missing

    @property
    def flips(self) -> float | None:
        """Share of items whose correctness changed, either way."""
        return (self.right_to_wrong + self.wrong_to_right) / self.n if self.n else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, each difference with its ``significant`` flag (``|diff| > 2 SE``)."""
        out = asdict(self)
        for name in DIFFS:
            est = getattr(self, name)
            out[name] = None if est is None else {"diff": est.value, "se": est.se, "significant": est.significant}
        out["choice_kl"] = None if self.choice_kl is None else {"mean": self.choice_kl.value, "se": self.choice_kl.se}
        del out["right_to_wrong"], out["wrong_to_right"]
        out["flips"] = {"right_to_wrong": self.right_to_wrong, "wrong_to_right": self.wrong_to_right, "fraction": self.flips}
        return out


def choice_kl(baseline_lls: list[float], model_lls: list[float]) -> float:
    """KL(baseline‖model) in nats between the softmax distributions over one item's choices."""
    if len(baseline_lls) != len(model_lls):
        raise ValueError(f"an item with {len(baseline_lls)} choices for one model and {len(model_lls)} for the other")
    lp_b, lp_m = choice_log_probs(baseline_lls), choice_log_probs(model_lls)
    return sum(math.exp(b) * (b - m) for b, m in zip(lp_b, lp_m))


def _item(rec: dict[str, Any], metric: str) -> Item | None:
    lls, gold = rec.get("loglikelihoods"), rec.get("gold")
    if lls is None or not isinstance(gold, int) or metric not in rec:
        return None
    lls = [float(x) for x in lls]
    derived = item_metrics(lls, gold, rec.get("choice_chars"))
    kept = {k: rec.get(k, v) for k, v in derived.items()}  # as eval wrote them; derived for older samples
    return Item(gold, float(rec[metric]), lls, float(kept["gold_ll"]),
                None if kept["gold_ll_char"] is None else float(kept["gold_ll_char"]), float(kept["brier"]))


def read_task_items(samples_dir: Path, task: str, metric: str, subtasks: list[str] | None = None) -> dict[tuple, Item] | str:
    """``{(task, subtask, doc): Item}`` of a task's samples (a group's: its subtasks'), or why there are none."""
    from ..evaluation.tasks import TASKS, MultipleChoiceSpec

    items: dict[tuple, Item] = {}
    for name in subtasks or [task]:
        spec = TASKS.get(name)
        if isinstance(spec, MultipleChoiceSpec) and spec.score is not None:
            return MULTI_GOLD
        try:
            lines = (Path(samples_dir) / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            return "no per-item samples"
        for line in filter(str.strip, lines):
            rec = json.loads(line)
            item = _item(rec, metric)
            if item is None:
                return "no choice log-likelihoods" if "loglikelihoods" not in rec else "no single gold choice"
            items[(task, name, json.dumps(rec.get("doc"), sort_keys=True))] = item
    return items


def compare_items(task: str, model: str, baseline: str, a: dict[tuple, Item], b: dict[tuple, Item],
                  tasks: list[str] | None = None) -> ItemPaired:
    """``model``'s items ``a`` against ``baseline``'s ``b`` (the same keys and gold answers)."""
    out = ItemPaired(task, model, baseline, tasks=list(tasks or [task]))
    if not a or set(a) != set(b) or any(a[k].gold != b[k].gold for k in a):
        out.note = "different items"
        return out
    keys = sorted(a)
    xs, ys = [a[k] for k in keys], [b[k] for k in keys]
    out.n = len(keys)

    def diff(name: str) -> Estimate:
        return Estimate(*paired_diff([getattr(x, name) for x in xs], [getattr(y, name) for y in ys]))

    out.acc, out.gold_ll, out.brier = diff("correct"), diff("gold_ll"), diff("brier")
    if all(x.gold_ll_char is not None and y.gold_ll_char is not None for x, y in zip(xs, ys)):
        out.gold_ll_char = diff("gold_ll_char")
    else:
        out.note = NO_CHARS
    kl = mean_stat([choice_kl(y.lls, x.lls) for x, y in zip(xs, ys)])
    out.choice_kl = Estimate(kl.value, kl.stderr)
    out.right_to_wrong = sum(1 for x, y in zip(xs, ys) if y.correct and not x.correct)
    out.wrong_to_right = sum(1 for x, y in zip(xs, ys) if x.correct and not y.correct)
    return out
