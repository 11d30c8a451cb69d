"""``downcycle card`` and the report's card refresh: a model card with its evaluation results.

The card itself (front matter, how the model was made) is written from the manifests by
:mod:`downcycle.artifacts.card`; this adds the ``## Evaluation`` section, a table of the metrics
the comparison table shows, from the model's ``results.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import card
from ..errors import DowncycleError
from ..evaluation.results import read_results
from .compare import is_shown_metric

__all__ = ["card_text", "check_results_of", "evaluation_lines", "run_card", "summary", "write_card"]


def evaluation_lines(results: Any) -> list[str]:
    """The ``## Evaluation`` section's lines for an ``EvalResults``: how it was evaluated, then a table."""
    rows = [(task, metric, v) for task, t in results.tasks.items() for metric, v in t.metrics.items()
            if is_shown_metric(metric)]
    cfg = results.config or {}
    lines = [f"Evaluated by `downcycle eval` (tasks `{cfg.get('tasks')}`" + (f", held-out text `{cfg['data']}`" if cfg.get("data") else "")
             + (f", first {cfg['limit']} items" if cfg.get("limit") else "") + ").", "",
             "| task | metric | value | stderr |", "|---|---|---|---|"]
    lines += [f"| {t} | {m} | {v.value:.4f} | {'–' if v.stderr is None else f'{v.stderr:.4f}'} |" for t, m, v in rows]
    return lines


def _evaluation(results: Any) -> list[str]:
    if isinstance(results, (str, Path)):
        results = read_results(results)
    return [] if results is None else evaluation_lines(results)


def card_text(model_dir: Path, results: Any = None) -> str:
    """The card of ``model_dir`` (a ``cut`` or ``train`` output); ``results``: its ``EvalResults`` (or ``results.json``)."""
    return card.card_text(model_dir, _evaluation(results))


def write_card(model_dir: Path, results: Any = None) -> Path:
    """Write ``model_dir/README.md`` with the evaluation of ``results`` (an ``EvalResults`` or the path of
    a ``results.json``), if given; returns its path."""
    return card.write_card(model_dir, _evaluation(results))


def run_card(config: Any) -> Path:
    """``downcycle card``: (re)write a model directory's card, with its results if given (refused
    when they are another model's)."""
    results = None if config.results is None else read_results(config.results)
    if results is not None:
        check_results_of(config.model_dir, results, config.results)
    return write_card(config.model_dir, results)


def check_results_of(model_dir: Path, results: Any, where: Path) -> None:
    """Refuse ``results`` (read from ``where``) of another model than ``model_dir``: a model that
    is still where the results say it was, or (a moved model) one whose config.json hash differs
    from the one they record.

    Raises:
        DowncycleError: naming the results file, the model they record and ``model_dir``.
    """
    from ..artifacts.hashes import file_sha256

    evaluated, here = Path(results.model.path), Path(model_dir)
    if evaluated.exists() and evaluated.resolve() != here.resolve():
        raise DowncycleError(f"--results {where}: the results of {evaluated}, not of {model_dir}")
    recorded, config = results.model.hashes.get("config.json"), here / "config.json"
    if recorded is not None and config.is_file() and recorded != file_sha256(config):
        raise DowncycleError(f"--results {where}: the results of {evaluated}, whose config.json differs from {config}'s")


def summary(path: Path) -> str:
    return f"wrote {path}"
