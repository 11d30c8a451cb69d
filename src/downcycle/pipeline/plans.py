"""A cut plan for any strategy and depth from an analysis already on disk (its ``scores.json``).

One analysis pass serves every cut of a recipe or sweep: the strategies only rank the stored scores
(the SLEB search's removal order included), so choosing at another depth costs no forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..analysis.strategies import get_strategy
from ..errors import DowncycleError
from ..surgery.plan import Plan

__all__ = ["plan_from_scores", "write_plan"]


def plan_from_scores(scores: dict[str, Any], strategy: str, keep: int, metric: str | None = None) -> Plan:
    """The plan ``strategy`` makes from ``scores`` (a parsed ``scores.json``) keeping ``keep`` layers."""
    from ..analysis.analyze import check_metric

    strat = get_strategy(strategy)
    metric = check_metric(strat, metric)
    num = int(scores["num_layers"])
    values = None
    if metric == "nll":
        if "nll" not in scores:
            raise DowncycleError(f"strategy {strategy!r} needs the NLL search, which the analysis did not run")
        doc = scores["nll"]
        values = SimpleNamespace(base_nll=doc["base_nll"], removed=doc["removed"],
                                 steps=[{int(k): v for k, v in step.items()} for step in doc["steps"]])
    elif metric is not None:
        if metric not in scores:
            raise DowncycleError(f"metric {metric!r} is not in the analysis scores")
        values = scores[metric]
    kept = strat.select(num, keep, values)
    details = {"metric": metric, "keep": keep, "dropped_layers": [i for i in range(num) if i not in kept],
               "derived_from": "scores.json of the pipeline's analysis stage"}
    return Plan(kept, num, strategy, details)


def write_plan(analysis_dir: Path, path: Path, strategy: str, keep: int, num_layers: int, metric: str | None = None) -> list[int]:
    """Derive the plan from ``analysis_dir/scores.json`` (when the strategy ranks by scores) and write
    it to ``path`` atomically; returns the kept layers."""
    scores: dict[str, Any] = {"num_layers": num_layers}
    if metric is not None or get_strategy(strategy).metric_kinds:  # it ranks by the analysis's scores
        scores_path = Path(analysis_dir) / "scores.json"
        if not scores_path.is_file():
            raise DowncycleError(f"{scores_path}: missing; the analysis stage must run first")
        scores = json.loads(scores_path.read_text())
    plan = plan_from_scores(scores, strategy, keep, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan.save(path)
    return plan.kept_layers
