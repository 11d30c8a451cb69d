"""``downcycle compare``: one table of every model x metric, with deltas against a reference model and
parameter counts, as Markdown, CSV and JSON, plus one bar chart per task (PNG).

Charts show each task's headline metric (``acc_norm`` where the task has it, else ``acc``; the
validation loss for ``loss``; ``exact_match[strict-match]`` for GSM8K) per model, with standard-error bars, reference first, as the seed's
"reference vs cut vs healed" figures do.

Beside the table, the paired comparisons (``--pairs MODEL:BASELINE,...``; default: every model
against the reference) on the same items: each task's headline metric (:mod:`.paired`), and the
continuous per-item metrics, per task and pooled over tasks (:mod:`.item_metrics`): differences of
accuracy, gold log-likelihood (total and per character) and Brier score with their paired standard
errors, the mean choice KL and the flips both ways (``compare.json``: ``paired``, ``item_paired``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..artifacts.atomic import atomic_output_dir, check_new_output
from ..artifacts.manifest import write_manifest
from ..errors import DowncycleError
from ..evaluation.results import RESULTS_NAME, EvalResults, read_results
from ..recipe import CompareConfig, inputs_of, to_dict

__all__ = ["CompareResult", "collect", "headline", "is_shown_metric", "run_compare", "summary", "table_rows"]
_SHOWN = ("acc", "acc_norm", "acc_bytes", "nll", "perplexity", "bits_per_byte", "kl_ref")
_SHOWN_PREFIXES = ("exact_match",)  # generative tasks: exact_match[<filter>]
_LOWER_IS_BETTER = {"nll", "perplexity", "bits_per_byte", "kl_ref"}


def is_shown_metric(metric: str) -> bool:
    """Whether the comparison table (and a model card's evaluation table) shows ``metric``."""
    return metric in _SHOWN or metric.startswith(_SHOWN_PREFIXES)


@dataclass
class CompareResult:
    out: Path
    files: list[str]
    markdown: str


def result_files(paths: list[str]) -> list[Path]:
    """The results.json files named by ``paths``: files, or directories (a model's directory, or an
    eval output with one subdirectory per model)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / RESULTS_NAME).is_file():
            subs = sorted(d / RESULTS_NAME for d in p.iterdir() if (d / RESULTS_NAME).is_file())
            if not subs:
                raise DowncycleError(f"{p}: no results.json in it or its subdirectories")
            files += subs
        else:
            files.append(p / RESULTS_NAME if p.is_dir() else p)
    return files


def collect(paths: list[str]) -> list[EvalResults]:
    """Results from files or directories (a model's directory, or an eval output with one per model)."""
    found = [read_results(f) for f in result_files(paths)]
    names = [r.model.name for r in found]
    for r in found:  # same directory name from different runs: tell them apart
        if names.count(r.model.name) > 1:
            r.model.name = f"{r.model.name} ({Path(r.model.path).parent.name})"
    return found


def headline(task: str, metrics: dict) -> str:
    """The metric a task is charted by."""
    if task == "loss" or "nll" in metrics:
        return "nll"
    for m in ("acc_norm", "acc", "exact_match[strict-match]"):
        if m in metrics:
            return m
    return next(iter(metrics))


def table_rows(results: list[EvalResults], reference: str) -> tuple[list[str], list[dict]]:
    """Columns ``task/metric`` (in first-seen order) and one row per model with values and deltas."""
    columns: list[str] = []
    for r in results:
        for task, t in r.tasks.items():
            for m in t.metrics:
                if is_shown_metric(m) and f"{task}/{m}" not in columns:
                    columns.append(f"{task}/{m}")
    ref = next(r for r in results if r.model.name == reference)
    rows = []
    for r in results:
        row = {"model": r.model.name, "parameters": r.model.parameters,
               "parameters_vs_reference": r.model.parameters / ref.model.parameters if ref.model.parameters else None}
        for col in columns:
            task, m = col.split("/")
            value = _value(r, task, m)
            base = _value(ref, task, m)
            row[col] = value
            row[f"{col} delta"] = None if value is None or base is None else value - base
            stat = r.tasks.get(task)
            row[f"{col} stderr"] = stat.metrics[m].stderr if stat and m in stat.metrics else None
        rows.append(row)
    return columns, rows


def _value(r: EvalResults, task: str, metric: str) -> float | None:
    t = r.tasks.get(task)
    return t.metrics[metric].value if t and metric in t.metrics else None


def _fmt(value: float | None, delta: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if delta else f"{value:.4f}"


def markdown(columns: list[str], rows: list[dict], reference: str) -> str:
    head = ["model", "params"] + columns
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"] + (" (reference)" if row["model"] == reference else ""), f"{row['parameters'] / 1e6:.2f}M"]
        for col in columns:
            cell = _fmt(row[col])
            if row["model"] != reference and row[f"{col} delta"] is not None:
                cell += f" ({_fmt(row[f'{col} delta'], True)})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nDeltas in parentheses are against {reference}. Lower is better for "
            f"{', '.join(sorted(_LOWER_IS_BETTER))}; higher for accuracies.\n")
    return "\n".join(lines) + "\n" + note


def _plot(directory: Path, task: str, metric: str, results: list[EvalResults]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.model.name for r in results if task in r.tasks]
    values = [r.tasks[task].metrics[metric].value for r in results if task in r.tasks]
    errors = [r.tasks[task].metrics[metric].stderr or 0.0 for r in results if task in r.tasks]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 1.5), 3.6))
    colors = plt.get_cmap("tab10").colors
    bars = ax.bar(names, values, yerr=errors, capsize=4, color=[colors[i % 10] for i in range(len(names))])
    ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    label = "validation loss (nats/token)" if metric == "nll" else metric
    ax.set_ylabel(label)
    ax.set_title(f"{task}: {label}" + (" (lower is better)" if metric in _LOWER_IS_BETTER else ""))
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    name = f"{task}.png"
    fig.savefig(directory / name, dpi=120)
    plt.close(fig)
    return name


def run_compare(cfg: CompareConfig) -> CompareResult:
    """Write the comparison of ``cfg.results`` into ``cfg.out``."""
    check_new_output(Path(cfg.out), cfg.force, inputs_of(cfg))
    results = collect(cfg.results)
    names = [r.model.name for r in results]
    reference = cfg.reference if cfg.reference is not None else names[0]
    if reference not in names:
        raise DowncycleError(f"--reference {reference!r}: no such model (models: {', '.join(names)})")
    columns, rows = table_rows(results, reference)
    md = markdown(columns, rows, reference)
    from .item_paired import ITEM_NOTE, item_rows, item_table, parse_pairs
    from .markdown import PAIRED_NOTE, md_table
    from .paired import paired_rows, paired_table

    dirs = [f.parent for f in result_files(cfg.results)]
    models = [(r.model.name, r, d) for r, d in zip(results, dirs)]
    chosen = parse_pairs(cfg.pairs, names) if cfg.pairs else [(n, reference) for n in names if n != reference]
    pairs = paired_rows(models, chosen)
    if any(p.diff is not None for p in pairs):
        note = PAIRED_NOTE.replace("Each model against the reference, and each healed model against its cut",
                                   "Each model against its baseline (--pairs)") if cfg.pairs else \
            PAIRED_NOTE.replace(", and each healed model against its cut", "")
        md += "\n## Paired comparison\n\n" + note + "\n\n" + md_table(*paired_table(pairs)) + "\n"
    exclude = tuple(t.strip() for t in (cfg.pool_exclude or "").split(",") if t.strip())
    items = item_rows(models, chosen, exclude)
    if any(r.n for r in items):
        md += ("\n## Paired item metrics\n\n" + ITEM_NOTE + "\n\n### Pooled over tasks\n\n" + md_table(*item_table(items, pooled_only=True))
               + "\n\n### Per task\n\n" + md_table(*item_table(items)) + "\n")
    files = ["compare.md", "compare.csv", "compare.json"]
    with atomic_output_dir(Path(cfg.out), force=cfg.force) as tmp:
        (tmp / "compare.md").write_text(md)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "compare.csv").write_text(buf.getvalue())
        paired = [dataclasses.asdict(p) | {"significant": p.significant} for p in pairs]
        (tmp / "compare.json").write_text(json.dumps({"reference": reference, "columns": columns, "rows": rows, "paired": paired,
                                                      "item_paired": [r.as_dict() for r in items]}, indent=2) + "\n")
        if cfg.plots:
            tasks = list(dict.fromkeys(t for r in results for t in r.tasks))
            for task in tasks:
                first = next(r.tasks[task] for r in results if task in r.tasks)
                files.append(_plot(tmp, task, headline(task, first.metrics), results))
        inputs = {"results": list(cfg.results), "models": {r.model.name: {"path": r.model.path, **r.model.hashes} for r in results}}
        write_manifest(tmp, "compare", to_dict(cfg), inputs, {"files": files})
    return CompareResult(Path(cfg.out), files, md)


def summary(result: CompareResult) -> str:
    """The table itself, then what was written."""
    return f"{result.markdown}\nwrote {result.out}: {', '.join(result.files)}"
