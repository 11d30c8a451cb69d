"""``downcycle cut`` as a compound command: with ``--keep K --strategy S --data D`` an analysis chooses the
layers first (its plan, scores and plots written beside the weights, ``OUT/analysis/``); with ``--heal
METHOD --data D`` the cut is healed as it is written (``downcycle heal``'s output, no plain cut left
behind). Without either, this is the plain cut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..recipe import CutConfig, HealConfig, to_dict
from ..surgery.cut import CutResult, check_paths, cut, select_layers

ANALYSIS_DIR = "analysis"  # cut --keep: plan.json, scores.json and plots of the analysis

__all__ = ["ANALYSIS_DIR", "run_cut", "summary"]


def run_cut(config: CutConfig) -> Any:
    """The cut of ``config``; with ``--keep``, the analysis ``downcycle analyze`` would run with its
    options (imports torch) chooses the layers first; with ``--heal``, the healed cut is written."""
    if config.keep is None and config.heal is None:
        return cut(config)
    src = check_paths(config)  # the paths are checked before the model loads
    analysis = plan = None
    if config.keep is not None:
        from ..analysis.run import plan_for_cut

        analysis, plan = plan_for_cut(config, src)
    if config.heal is not None:
        return _heal(config, src, plan.kept_layers if plan is not None else None)
    from ..analysis.run import write_files

    def beside(directory: Path) -> None:
        (directory / ANALYSIS_DIR).mkdir()
        write_files(directory / ANALYSIS_DIR, analysis, plan)

    return cut(config, kept=plan.kept_layers, beside=beside)


def _heal(config: CutConfig, src: Path, kept: list[int] | None) -> Any:
    from ..architecture import infer_layout
    from ..checkpoint import open_checkpoint
    from ..healing.run import heal_layers
    from ..loading import read_config

    if kept is None:
        kept = select_layers(config, infer_layout(read_config(src), list(open_checkpoint(src).tensors)).num_layers)
    heal = HealConfig(model=config.source, out=config.out, method=config.heal, data=config.data, samples=config.heal_samples,
                      seq_len=config.heal_seq_len, force=config.force, progress=config.progress)
    return heal_layers(heal, config.source, kept, {"cut": to_dict(config)})


def summary(result: Any) -> str:
    """The cut's summary, or the heal's when the cut was healed."""
    if isinstance(result, CutResult):
        from ..surgery.cut import summary as cut_summary

        return cut_summary(result)
    from ..healing.run import summary as heal_summary

    return heal_summary(result)
