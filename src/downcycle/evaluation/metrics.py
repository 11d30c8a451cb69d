"""Multiple-choice metrics and their aggregation, defined as lm-evaluation-harness defines them.

Per document: ``acc`` is 1 when the argmax of the summed log-likelihoods is the gold choice;
``acc_norm`` divides each log-likelihood by the choice's length in characters, ``acc_bytes`` by its
UTF-8 length (ties go to the first choice, like ``numpy.argmax``). A task reports the mean and the
standard error of the mean (sample standard deviation / sqrt(n)). A group (MMLU) pools its
subtasks weighted by size, and pools their standard errors with the pooled-variance formula the
harness uses (``pooled_sample_stderr``).

Beside the harness's 0/1 accuracies, continuous per-item metrics that can show a change of the
model's distribution too small to flip an answer (:func:`item_metrics`): the gold choice's
log-likelihood, its per-character form (the normalisation acc_norm uses) and the Brier score of
the choice distribution (softmax over the choices' log-likelihoods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Stat", "choice_log_probs", "doc_metrics", "item_metrics", "mean_stat", "pool_stats", "ratio_stderr"]


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


def choice_log_probs(lls: list[float]) -> list[float]:
    """Log of the softmax over the choices' summed log-likelihoods: the model's distribution over the
    choices of one item (the harness's ``acc`` is its argmax)."""
    top = max(lls)  # the log-sum-exp with its largest term factored out, so no exp underflows to 0
    log_total = top + math.log(sum(math.exp(ll - top) for ll in lls))
    return [ll - log_total for ll in lls]


def item_metrics(lls: list[float], gold: int, choice_chars: list[int] | None) -> dict[str, float | None]:
    """Continuous metrics of one single-answer item.

    Args:
        lls: summed log-likelihood (nats) of each choice.
        gold: index of the correct choice.
        choice_chars: each choice's length in characters, as :func:`doc_metrics` divides by for
            acc_norm (None: unknown, e.g. samples written before they were recorded).

    Returns:
        ``gold_ll`` (nats), ``gold_ll_char`` (nats per character of the gold choice; None without
        ``choice_chars``) and ``brier`` = sum over choices c of (p_c - [c = gold])^2, p the softmax
        over ``lls`` (0 for certainty on the gold choice, 2 for certainty on a wrong one).
    """
    probs = [math.exp(lp) for lp in choice_log_probs(lls)]
    brier = sum((p - (1.0 if c == gold else 0.0)) ** 2 for c, p in enumerate(probs))
    per_char = lls[gold] / float(choice_chars[gold]) if choice_chars is not None else None
    return {"gold_ll": lls[gold], "gold_ll_char": per_char, "brier": brier}


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


def ratio_stderr(totals: list[float], counts: list[int]) -> float | None:
    """Standard error of ``sum(totals) / sum(counts)`` (a per-token mean whose units, documents, are
    independent but of unequal size), by the usual linearisation of a ratio of sums::

        R = sum(y) / sum(n)      SE = sqrt(m / (m - 1) * sum((y_i - R n_i)^2)) / sum(n)

    over the ``m`` documents (None for fewer than two).
    """
    m, total = len(totals), sum(counts)
    if m < 2 or not total:
        return None
    r = sum(totals) / total
    return math.sqrt(m / (m - 1) * sum((y - r * n) ** 2 for y, n in zip(totals, counts))) / total
