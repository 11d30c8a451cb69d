"""A cut plan for any strategy and depth from an analysis already on disk (its ``scores.json``),
written where the cut stage reads it; the choice itself is the analysis's
(:func:`downcycle.analysis.choice.plan_from_scores`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..analysis.choice import plan_from_scores
from ..analysis.strategies import get_strategy
from ..errors import DowncycleError

__all__ = ["write_plan"]


def write_plan(analysis_dir: Path, path: Path, strategy: str, keep: int, num_layers: int, metric: str | None = None) -> list[int]:
    """Derive the plan from ``analysis_dir/scores.json`` (when the strategy ranks by scores) and write
    it to ``path`` atomically; returns the kept layers."""
    scores: dict[str, Any] = {"num_layers": num_layers}
    if metric is not None or get_strategy(strategy).metric_kinds:  # it ranks by the analysis's scores
        scores_path = Path(analysis_dir) / "scores.json"
        if not scores_path.is_file():
            raise DowncycleError(f"{scores_path}: missing; the analysis stage must run first")
        scores = json.loads(scores_path.read_text())
    plan = plan_from_scores(scores, strategy, keep, metric, derived_from=f"scores.json of the pipeline's {Path(analysis_dir).name} stage")
    path.parent.mkdir(parents=True, exist_ok=True)
    plan.save(path)
    return plan.kept_layers
