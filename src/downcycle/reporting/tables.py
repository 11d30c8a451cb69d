"""The report's tables as rows of formatted cells, shared by the Markdown and HTML renderers so that
both show the same numbers with the same precision."""

from __future__ import annotations

from typing import Any

from .summary import Summary

__all__ = ["fmt_bytes", "fmt_value", "healed_table", "model_table"]
_HEADINGS = {"loss/nll": "val loss (nats/token)", "loss/perplexity": "perplexity", "loss/bits_per_byte": "bits per byte",
             "loss/kl_ref": "KL(reference‖model) (nats/token)"}


def fmt_value(value: Any) -> str:
    """Metric values with four decimals; a missing value as an en dash."""
    return "–" if value is None else f"{value:.4f}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def fmt_params(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}M" if n >= 1e4 else str(n)


def model_table(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Head and rows: model, role, how it was made, parameters, weights on disk, then each metric."""
    head = ["model", "role", "strategy / method", "parameters", "weights on disk"] + [_HEADINGS.get(c, c) for c in summary.columns]
    rows = []
    for r in summary.rows:
        how = " / ".join(x for x in (r["strategy"], r["method"]) if x) or ("source" if r["role"] == "reference" else "–")
        rows.append([r["model"], r["role"], how, fmt_params(r.get("parameters")), fmt_bytes(r.get("bytes"))]
                    + [fmt_value(r.get(c)) for c in summary.columns])
    return head, rows


def healed_table(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Head and rows: each healed model's cut, strategy, method, tokens, and the share of the loss gap it recovers."""
    head = ["healed model", "from cut", "strategy", "method", "tokens trained", "val loss: cut", "healed", "reference",
            "gap recovered"]
    rows = []
    for h in summary.healed:
        cut = f"{h['cut'] or 'reference'} (control)" if h.get("role") == "control" else h["cut"] or "–"
        rows.append([h["model"], cut, h["strategy"] or "–", h["method"] or "–",
                     f"{h['tokens']:,}" if h["tokens"] is not None else "–", fmt_value(h["loss_cut"]), fmt_value(h["loss"]),
                     fmt_value(h["loss_ref"]), "–" if h["recovered"] is None else f"{h['recovered']:.1%}"])
    return head, rows
