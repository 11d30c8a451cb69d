"""Multiple-choice metrics and their aggregation, defined as lm-evaluation-harness defines them.

Per document: ``acc`` is 1 when the argmax of the summed log-likelihoods is the gold choice;
``acc_norm`` divides each log-likelihood by the choice's length in characters, ``acc_bytes`` by its
UTF-8 length (ties go to the first choice, like ``numpy.argmax``). A task reports the mean and the
standard error of the mean (sample standard deviation / sqrt(n)). A group (MMLU) pools its
subtasks weighted by size, and pools their standard errors with the pooled-variance formula the
harness uses (``pooled_sample_stderr``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Stat", "doc_metrics", "mean_stat", "pool_stats"]


def _argmax(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def doc_metrics(lls: list[float], choices: list[str], gold: int) -> dict[str, float]:
    """acc, acc_norm and acc_bytes of one document.

    Args:
        lls: summed log-likelihood (nats) of each choice's continuation.
        choices: the choice strings (for partial tasks: the filled-in contexts), as the harness
            measures them.
        gold: index of the correct choice.
    """
    chars = [ll / float(len(c)) for ll, c in zip(lls, choices)]
    nbytes = [ll / float(len(c.encode("utf-8"))) for ll, c in zip(lls, choices)]
    return {"acc": float(_argmax(lls) == gold), "acc_norm": float(_argmax(chars) == gold),
            "acc_bytes": float(_argmax(nbytes) == gold)}


@dataclass
class Stat:
    """A metric's value, its standard error and the number of items behind it."""

    value: float
    stderr: float | None
    n: int


def mean_stat(values: list[float]) -> Stat:
    """Mean and standard error of the mean of per-item values."""
    n = len(values)
    mu = sum(values) / n
    if n < 2:
        return Stat(mu, None, n)
    var = sum((x - mu) ** 2 for x in values) / (n - 1)
    return Stat(mu, math.sqrt(var) / math.sqrt(n), n)


def pool_stats(stats: list[Stat]) -> Stat:
    """Size-weighted mean of subtask metrics and the pooled standard error."""
    total = sum(s.n for s in stats)
    value = sum(s.value * s.n for s in stats) / total
    if any(s.stderr is None for s in stats) or total <= len(stats):
        return Stat(value, None, total)
    pooled_var = sum((s.n - 1) * s.stderr ** 2 * s.n for s in stats) / (total - len(stats))
    return Stat(value, math.sqrt(pooled_var / total), total)
