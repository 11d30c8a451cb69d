"""The in-memory analysis: scores from a loaded model and calibration batches, then a layer choice.

This is the library core of ``downcycle analyze`` with no files involved:

>>> analysis = analyze_model(model, as_batches(ids, 8))
>>> kept = choose_layers(analysis, "block", keep=24)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DowncycleError
from .hidden_stats import HiddenStats, collect_hidden_stats
from .metrics import METRICS, get_metric
from .nll import GreedyRemoval, greedy_removal
from .strategies import Strategy, get_strategy, resolve_keep

__all__ = ["Analysis", "analysis_of", "analyze_model", "check_metric", "choose_layers"]


@dataclass
class Analysis:
    """Every metric's scores for one model on one calibration set.

    Attributes:
        num_layers: L, the model's decoder depth.
        stats: the one-pass sums (see :class:`~downcycle.analysis.hidden_stats.HiddenStats`).
        scores: metric name -> its values (pair metrics: ``L x L`` lists, ``None`` where
            ``l + n > L``; layer metrics: ``L`` floats). ``nll`` is in :attr:`greedy`.
        greedy: the SLEB search, when it ran.
        width: the width importance (``analyze --width``: :mod:`~downcycle.analysis.width`), when it ran.
    """

    num_layers: int
    stats: HiddenStats
    scores: dict[str, Any] = field(default_factory=dict)
    greedy: GreedyRemoval | None = None
    width: dict[str, Any] | None = None

    def metric_values(self, name: str) -> Any:
        if name == "nll":
            if self.greedy is None:
                raise DowncycleError("the nll metric needs the NLL search (it did not run)")
            return self.greedy
        return self.scores[name]

    def to_json(self) -> dict[str, Any]:
        """``scores.json``: every score, and the means behind them."""
        doc: dict[str, Any] = {
            "num_layers": self.num_layers,
            "states": "x_l = residual stream entering decoder layer l (l < L); x_L = last layer output before the final norm",
            "tokens": self.stats.tokens,
            "sequences": self.stats.sequences,
            "angular_index": "angular-*[l][n-1] = d(x_l, x_{l+n}); null where l+n > L",
            **self.scores,
            "cos_mean": self.stats.mean("cos").tolist(),
            "cos_last": self.stats.mean("last_cos").tolist(),
        }
        if self.greedy is not None:
            doc["nll"] = self.greedy.to_json()
        return doc


def analyze_model(model: Any, batches: Sequence[Any], *, nll_removals: int | None = None, nll_batches: Sequence[Any] | None = None,
                  progress: bool = False) -> Analysis:
    """One streaming pass for every one-pass metric, then (optionally) the greedy NLL search.

    Args:
        model: a loaded causal LM in eval mode.
        batches: calibration batches (see :func:`~downcycle.analysis.hidden_stats.collect_hidden_stats`).
        nll_removals: how many layers the SLEB search removes (None: do not run it).
        nll_batches: the batches the search scores (default: ``batches``).
        progress: tqdm bars.
    """
    stats = collect_hidden_stats(model, batches, progress=progress)
    greedy = None
    if nll_removals is not None:
        greedy = greedy_removal(model, list(nll_batches if nll_batches is not None else batches), nll_removals, progress=progress)
    return analysis_of(stats, greedy)


def analysis_of(stats: HiddenStats, greedy: GreedyRemoval | None = None) -> Analysis:
    """Every one-pass metric's scores from the pass's sums (and the NLL search, when it ran)."""
    scores = {name: m.compute(stats) for name, m in METRICS.items() if m.compute is not None}
    return Analysis(stats.num_layers, stats, scores, greedy)


def check_metric(strategy: Strategy, metric: str | None) -> str | None:
    """The metric ``strategy`` ranks by: ``metric`` if it fits, the strategy's default if None.

    Raises:
        DowncycleError: a metric that is unknown or of a kind the strategy cannot use.
    """
    if metric is None:
        return strategy.default_metric
    m = get_metric(metric)
    if not strategy.metric_kinds:
        raise DowncycleError(f"--metric {metric}: strategy {strategy.name!r} uses no metric")
    if m.kind not in strategy.metric_kinds and m.name not in strategy.metric_kinds:
        raise DowncycleError(f"--metric {metric}: strategy {strategy.name!r} needs a {' or '.join(strategy.metric_kinds)} metric, "
                             f"{metric!r} is a {m.kind} metric")
    return metric


def choose_layers(analysis: Analysis, strategy: str, keep: str | float, metric: str | None = None) -> list[int]:
    """The sorted source layers ``strategy`` keeps, ranking by ``metric`` (default: the strategy's)."""
    strat = get_strategy(strategy)
    metric = check_metric(strat, metric)
    count = resolve_keep(keep, analysis.num_layers)
    values = analysis.metric_values(metric) if metric is not None else None
    return strat.select(analysis.num_layers, count, values)
