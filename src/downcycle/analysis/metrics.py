"""Layer-importance metrics: a registry from name to :class:`Metric`, listed by ``downcycle ls``.

A *pair* metric scores every contiguous block -- ``d[l][n]`` for removing layers ``l..l+n-1``,
``n = 1..L``, ``l = 0..L-n`` -- and a *layer* metric scores each layer alone. Low means redundant.
The *width* metric scores the units inside the layers instead (:mod:`downcycle.analysis.width`; it ranks
neurons, heads and channels for ``downcycle prune``, no layer strategy uses it).
The one-pass metrics are read off :class:`~downcycle.analysis.hidden_stats.HiddenStats` (no model
needed); ``nll`` needs forward passes with layers removed (:mod:`downcycle.analysis.nll`).

This module does not import torch at import time, so ``downcycle ls`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["METRICS", "Metric", "angular_matrix", "block_influence", "get_metric"]


@dataclass(frozen=True)
class Metric:
    """An importance score: its ``kind`` ("pair" or "layer"), what it costs, and how to compute it."""

    name: str
    kind: str
    description: str
    cost: str
    compute: Callable[[Any], list] | None = None  # HiddenStats -> scores; None: computed elsewhere (nll)


def angular_matrix(stats: Any, last_token: bool) -> list[list[float | None]]:
    """Angular distance of every block: ``d[l][n-1] = E[arccos(cos(x_l, x_{l+n})) / pi]``.

    Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers" (arXiv:2403.17887),
    Eq. 7: measured on the last token of each sequence (``last_token=True``), averaged over the
    calibration sequences; ``last_token=False`` averages over every non-padding token instead.
    ``x_l`` is the residual stream entering layer ``l`` and ``x_L`` the last layer's output before
    the final norm (see :mod:`downcycle.analysis.hidden_stats`).

    Returns:
        ``L`` rows (start layer ``l``) of ``L`` entries (block size ``n = 1..L``); ``None`` where
        ``l + n > L``.
    """
    mean = stats.mean("last_angle" if last_token else "angle").tolist()
    num = stats.num_layers
    return [[mean[l][l + n] if l + n <= num else None for n in range(1, num + 1)] for l in range(num)]


def block_influence(stats: Any) -> list[float]:
    """Block Influence of each layer, ``BI_i = 1 - E_tokens[cos(x_i, x_{i+1})]``.

    Men et al. 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You
    Expect" (arXiv:2403.03853), Eq. 1: the expectation is over every token of every calibration
    sequence (here: every non-padding token), so it is one sum of cosines over one token count.
    """
    cos = stats.mean("cos")
    return [1.0 - float(cos[i, i + 1]) for i in range(stats.num_layers)]


METRICS: dict[str, Metric] = {
    "angular-last": Metric("angular-last", "pair",
                           "angular distance arccos(cos)/pi between x_l and x_{l+n}, last token (Gromov et al. 2024)",
                           "one pass", lambda s: angular_matrix(s, last_token=True)),
    "angular-mean": Metric("angular-mean", "pair",
                           "angular distance arccos(cos)/pi between x_l and x_{l+n}, mean over all tokens",
                           "one pass", lambda s: angular_matrix(s, last_token=False)),
    "bi": Metric("bi", "layer", "Block Influence 1 - E[cos(x_i, x_{i+1})] over all tokens (ShortGPT, Men et al. 2024)",
                 "one pass", block_influence),
    "nll": Metric("nll", "layer", "calibration NLL with the layer removed, greedy and iterative (SLEB, Song et al. 2024)",
                  "sum over k removals of (L - i) passes"),
    "width": Metric("width", "width", "MLP neurons, attention heads and embedding channels by activation: mean |x| over the "
                    "sequence, L2 over the batch (Minitron, Muralidharan et al. 2024); analyze --width, prune", "one pass"),
}


def get_metric(name: str) -> Metric:
    from ..errors import DowncycleError

    if name not in METRICS:
        raise DowncycleError(f"unknown metric {name!r} (choose from {', '.join(METRICS)}; see `downcycle ls`)")
    return METRICS[name]
