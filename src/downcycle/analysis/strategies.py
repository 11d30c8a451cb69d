"""Layer-selection strategies: a registry from name to :class:`Strategy`, listed by ``downcycle ls``.

Every strategy maps ``(L, keep, scores)`` to the sorted source layers to keep, where ``scores`` holds
the values of the metric it ranks by (see :mod:`downcycle.analysis.metrics`). This module does not
import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DowncycleError

__all__ = ["STRATEGIES", "Strategy", "get_strategy", "resolve_keep"]


@dataclass(frozen=True)
class Strategy:
    """A way to choose layers. ``metric_kinds`` are the metric kinds it can rank by (empty: it needs
    no scores) and ``default_metric`` the one used when none is given."""

    name: str
    description: str
    select: Callable[[int, int, Any], list[int]]
    metric_kinds: tuple[str, ...] = ()
    default_metric: str | None = None


def resolve_keep(keep: str | float, num_layers: int, option: str = "--keep") -> int:
    """How many layers to keep: an integer count (``"24"``) or a fraction of the depth (``"0.75"``,
    rounded to the nearest layer); ``option`` is what the user typed it as (errors name it)."""
    text = str(keep).strip()
    try:
        value = int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        raise DowncycleError(f"{option} {keep!r}: expected a layer count (24) or a fraction of the depth (0.75)") from None
    count = value if isinstance(value, int) else (round(value * num_layers) if 0 < value <= 1 else -1)
    if not 1 <= count <= num_layers:
        raise DowncycleError(f"{option} {keep!r}: must keep between 1 and {num_layers} of the model's {num_layers} layers")
    return count


def _first(num: int, keep: int, scores: Any) -> list[int]:
    return list(range(keep))


def _first_last(num: int, keep: int, scores: Any) -> list[int]:
    head = (keep + 1) // 2
    return list(range(head)) + list(range(num - (keep - head), num))


def _uniform(num: int, keep: int, scores: Any) -> list[int]:
    if keep == 1:
        return [0]
    return sorted({round(i * (num - 1) / (keep - 1)) for i in range(keep)})


def _block(num: int, keep: int, scores: Any) -> list[int]:
    """Gromov et al. 2024: drop the ``n = L - keep`` contiguous layers ``l*..l*+n-1`` with
    ``l* = argmin_l d(x_l, x_{l+n})``; the final layer is kept (``l + n <= L - 1``), as they do."""
    n = num - keep
    if n == 0:
        return list(range(num))
    starts = [l for l in range(num - n) if scores[l][n - 1] is not None]  # l + n <= L - 1
    if not starts:  # keep == 0 is refused earlier; only a 1-layer model could get here
        starts = [0]
    best = min(starts, key=lambda l: (scores[l][n - 1], l))
    return [i for i in range(num) if not best <= i < best + n]


def _lowest(num: int, keep: int, scores: Any) -> list[int]:
    """ShortGPT: drop the ``L - keep`` layers with the lowest per-layer score (ties: the later one)."""
    if keep == num:
        return list(range(num))
    per_layer = _per_layer(scores, num)
    order = sorted(range(num), key=lambda i: (per_layer[i], -i))
    return sorted(set(range(num)) - set(order[: num - keep]))


def _greedy(num: int, keep: int, scores: Any) -> list[int]:
    """SLEB: the first ``L - keep`` layers of the greedy removal order."""
    removed = scores.removed[: num - keep]
    if len(removed) < num - keep:
        raise DowncycleError(f"the NLL search removed only {len(scores.removed)} layers; {num - keep} are needed")
    return [i for i in range(num) if i not in removed]


def _per_layer(scores: Any, num: int) -> list[float]:
    """A layer metric as is; a pair metric at block size 1 (the distance across each layer)."""
    if hasattr(scores, "steps"):  # a GreedyRemoval: NLL with each layer removed alone
        return [scores.steps[0].get(i, float("inf")) for i in range(num)]
    if scores and isinstance(scores[0], list):
        return [row[0] for row in scores]
    return list(scores)


STRATEGIES: dict[str, Strategy] = {
    "first": Strategy("first", "keep the first layers (the seed's choice; Inheritune)", _first),
    "first-last": Strategy("first-last", "keep the first and the last halves of the kept depth", _first_last),
    "uniform": Strategy("uniform", "keep layers evenly spaced over the depth, first and last included", _uniform),
    "block": Strategy("block", "drop the contiguous block with the smallest angular distance, keep the final layer (Gromov et al. 2024)",
                      _block, ("pair",), "angular-last"),
    "bi": Strategy("bi", "drop the layers with the lowest Block Influence, or lowest score of a per-layer metric (ShortGPT)",
                   _lowest, ("layer", "pair"), "bi"),
    "nll": Strategy("nll", "remove layers greedily, each time the one whose removal raises calibration NLL least (SLEB)",
                    _greedy, ("nll",), "nll"),
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise DowncycleError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)}; see `downcycle ls`)")
    return STRATEGIES[name]
