"""``downcycle report DIR``: the experiment report, ``DIR/report.html`` (self-contained) and
``DIR/report.md`` (pictures in ``DIR/report/``), plus refreshed model cards.

The report is a derived view of the stage directories: every run rewrites it. ``DIR/report/`` is
replaced atomically (its ``samples.json`` read first and carried over), then the two documents are
each written to a temporary file and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts.atomic import atomic_output_dir, write_atomic
from ..artifacts.manifest import write_manifest
from ..errors import DowncycleError
from ..recipe import ReportConfig, to_dict
from .experiment import REPORT_DIR, discover

__all__ = ["ReportResult", "run_report", "summary"]
HTML_NAME, MD_NAME = "report.html", "report.md"


@dataclass
class ReportResult:
    html: Path
    markdown: Path
    figures: list[str]
    models: list[str]
    verdicts: list[str]
    cards: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)  # models whose samples were generated (not cached)
    samples: bool = False  # whether the report shows sample generations


def run_report(cfg: ReportConfig) -> ReportResult:
    """Discover the experiment in ``cfg.dir`` and write its report (and refresh its models' cards)."""
    from .bars import benchmark_figures
    from .figures import analysis_figures, loss_figures
    from .html import render_html
    from .item_paired import item_rows, item_table
    from .markdown import render_markdown
    from .paired import experiment_pair_names, experiment_pairs, paired_table
    from .samples import SAMPLES_NAME, read_samples, sample_generations
    from .summary import summarize

    root = Path(cfg.dir)
    if not root.is_dir():
        raise DowncycleError(f"{root}: not a directory (expected an experiment directory, e.g. `downcycle demo`'s output)")
    exp = discover(root)
    if not exp.models:
        raise DowncycleError(f"{root}: no models found (no downcycle.json of a cut or train stage under it)")
    summary = summarize(exp)
    notes = []
    unevaluated = [m.name for m in exp.models if m.results is None]
    if unevaluated:
        notes.append(f"Not evaluated (no eval stage's results.json for them): {', '.join(unevaluated)}.")
    if not exp.of_kind("analyze"):
        notes.append("No analyze stage in this directory: no layer-distance heatmap.")
    cache = read_samples(root / REPORT_DIR / SAMPLES_NAME)
    samples, generated = None, []
    if cfg.samples:
        samples = sample_generations(exp, list(cfg.prompt), cfg.new_tokens, cache, regenerate=cfg.regenerate, device=cfg.device)
        generated = [name for name, entry in samples["models"].items() if cache.get("models", {}).get(name) is not entry]
    title = f"downcycle experiment report: {root.resolve().name}"
    with atomic_output_dir(root / REPORT_DIR, force=True) as tmp:
        analysis, losses, bench = analysis_figures(exp, tmp), loss_figures(exp, tmp), benchmark_figures(exp, tmp)
        pairs = experiment_pairs(exp)
        paired = paired_table(pairs)
        items = item_rows(*experiment_pair_names(exp))
        pooled = item_table(items, pooled_only=True)
        kept = samples if samples is not None else cache if cache.get("models") else None  # --no-samples keeps the cache
        if kept is not None:
            (tmp / SAMPLES_NAME).write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n")
        md = render_markdown(title, summary, analysis, losses, samples, REPORT_DIR, notes, bench, paired, pooled)
        page = render_html(title, summary, analysis, losses, samples, tmp, notes, bench, paired, pooled)
        figures = [f.file for f in bench + analysis + losses]
        inputs = {s.name: {"stage": s.kind, "config_hash": s.manifest.get("config_hash")} for s in exp.stages}
        write_manifest(tmp, "report", to_dict(cfg), inputs,
                       {"files": [HTML_NAME, MD_NAME], "figures": figures, "verdicts": summary.verdicts,
                        "healed": summary.healed, "paired": [dataclasses.asdict(p) | {"significant": p.significant} for p in pairs],
                        "item_paired": [r.as_dict() for r in items]})
    write_atomic(root / MD_NAME, md)
    write_atomic(root / HTML_NAME, page)
    cards = []
    if cfg.cards:
        from .card import write_card

        for m in exp.models:
            if m.stage is not None and m.stage.kind in ("cut", "train"):
                write_card(m.path, m.results)
                cards.append(m.name)
    return ReportResult(root / HTML_NAME, root / MD_NAME, figures, [m.name for m in exp.models], summary.verdicts, cards, generated, bool(cfg.samples))


def summary(result: ReportResult) -> str:
    """The verdicts, then what was written."""
    cached = len(result.models) - len(result.generated)
    return "\n".join([f"  {verdict.replace('**', '')}" for verdict in result.verdicts] + [
        f"wrote {result.html} and {result.markdown} ({len(result.models)} models, {len(result.figures)} figures"
        + (f", samples: {len(result.generated)} generated, {cached} cached" if result.samples else "")
        + (f"; refreshed {len(result.cards)} model cards" if result.cards else "") + ")"])
