"""THE plan builder: a strategy's choice of layers, from scores in memory or from ``scores.json``.

``downcycle analyze`` (and ``cut --keep``) choose from the analysis they just ran; the pipeline
chooses every cut of a recipe or sweep from the one analysis on disk (the strategies only rank the
stored scores, the SLEB search's removal order included, so another depth costs no forward pass).
Both go through :func:`make_plan`, so a plan's details read the same whichever way it was made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import DowncycleError
from ..surgery.plan import Plan
from .analyze import check_metric
from .nll import GreedyRemoval
from .strategies import get_strategy

__all__ = ["make_plan", "plan_from_scores"]


def make_plan(num_layers: int, strategy: str, keep: int, metric: str | None, values_of: Callable[[str], Any],
              **details: Any) -> Plan:
    """The plan ``strategy`` makes keeping ``keep`` of ``num_layers`` layers.

    Args:
        metric: what it ranks by (None: the strategy's default; checked against the strategy).
        values_of: metric name -> its values (a pair metric's ``L x L`` lists, a layer metric's ``L``
            floats, or the :class:`~downcycle.analysis.nll.GreedyRemoval` of ``nll``).
        details: more entries for the plan's details (calibration, model, where the scores are).
    """
    strat = get_strategy(strategy)
    metric = check_metric(strat, metric)
    values = values_of(metric) if metric is not None else None
    kept = strat.select(num_layers, keep, values)
    dropped = [i for i in range(num_layers) if i not in kept]
    doc = {"metric": metric, "keep": keep, "dropped_layers": dropped, "score_of_choice": score_of_choice(values, strat.name, metric, dropped)}
    return Plan(kept, num_layers, strat.name, {**doc, **details})


def plan_from_scores(scores: dict[str, Any], strategy: str, keep: int, metric: str | None = None, **details: Any) -> Plan:
    """The plan ``strategy`` makes from ``scores`` (a parsed ``scores.json``) keeping ``keep`` layers."""

    def values_of(name: str) -> Any:
        if name == "nll":
            if "nll" not in scores:
                raise DowncycleError(f"strategy {strategy!r} needs the NLL search, which the analysis did not run")
            return GreedyRemoval.from_json(scores["nll"])
        if name not in scores:
            raise DowncycleError(f"metric {name!r} is not in the analysis scores")
        return scores[name]

    return make_plan(int(scores["num_layers"]), strategy, keep, metric, values_of, **details)


def score_of_choice(values: Any, strategy: str, metric: str | None, dropped: list[int]) -> Any:
    """The score that justified the choice: the dropped block's distance, or the dropped layers' scores."""
    n = len(dropped)
    if metric is None or n == 0:
        return None
    if metric == "nll":
        return {"base_nll": values.base_nll, "nll_after_each_removal": [values.steps[i][l] for i, l in enumerate(values.removed[:n])]}
    if strategy == "block":
        return {f"d({dropped[0]},{dropped[0] + n})": values[dropped[0]][n - 1]}
    if values and isinstance(values[0], list):
        return {str(i): values[i][0] for i in dropped}
    return {str(i): values[i] for i in dropped}
