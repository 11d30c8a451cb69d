"""``downcycle cut --keep K --strategy S --data D``: two stages in one command, an analysis that
chooses the layers and the cut that keeps them, its plan, scores and plots written beside the
weights (``OUT/analysis/``). Without ``--keep`` this is the plain cut."""

from __future__ import annotations

from pathlib import Path

from ..recipe import CutConfig
from ..surgery.cut import CutResult, check_paths, cut

ANALYSIS_DIR = "analysis"  # cut --keep: plan.json, scores.json and plots of the analysis

__all__ = ["ANALYSIS_DIR", "run_cut"]


def run_cut(config: CutConfig) -> CutResult:
    """The cut of ``config``; with ``--keep``, the analysis ``downcycle analyze`` would run with its
    options (imports torch) chooses the layers first."""
    if config.keep is None:
        return cut(config)
    from ..analysis.run import plan_for_cut, write_files

    analysis, plan = plan_for_cut(config, check_paths(config))  # the paths are checked before the model loads

    def beside(directory: Path) -> None:
        (directory / ANALYSIS_DIR).mkdir()
        write_files(directory / ANALYSIS_DIR, analysis, plan)

    return cut(config, kept=plan.kept_layers, beside=beside)
