"""``downcycle prune --data D``: two stages in one command, the width-importance pass that
``downcycle analyze --width`` runs (it loads the model: torch) and the prune that keeps the most
important units, its scores and plots written beside the weights (``OUT/analysis/``). With
``--scores`` or ``--plan`` this is the plain, torch-free prune."""

from __future__ import annotations

from pathlib import Path

from ..recipe import PruneConfig
from ..surgery.prune import PruneResult, check_source, prune
from .cut import ANALYSIS_DIR

__all__ = ["run_prune"]


def run_prune(config: PruneConfig) -> PruneResult:
    """The prune of ``config``; with ``--data``, the importance pass chooses the kept units first."""
    if config.data is None:
        return prune(config)
    from ..analysis.width import width_scores_for_prune, write_width_files

    source = check_source(config)  # what needs no scores is checked before the model loads
    scores = width_scores_for_prune(source, config.data, samples=config.samples, seq_len=config.seq_len, seed=config.seed,
                                    device=config.device)

    def beside(directory: Path) -> None:
        (directory / ANALYSIS_DIR).mkdir()
        write_width_files(directory / ANALYSIS_DIR, scores)

    return prune(config, scores=scores, beside=beside)
