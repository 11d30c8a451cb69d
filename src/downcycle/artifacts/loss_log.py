"""The training log: ``train_log.jsonl`` in a run's directory, one JSON object per line (``step``,
``split`` of ``train`` or ``val``, ``tokens``, ``loss`` and whatever parts the method's loss
reports), and its plot ``loss.png``. ``train`` writes both; the report reads the log again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["LOG_NAME", "PART_FIELDS", "PLOT_NAME", "RECORD_FIELDS", "part_fields", "plot_losses", "read_log", "record_step"]

LOG_NAME = "train_log.jsonl"
PLOT_NAME = "loss.png"
# A train record holds "loss" (the method's objective, per token) and, when the method's loss has
# more than one named part, each part per token under its field: the LM term, the quantity
# validation measures, as "lm_loss"; any other part (distillation's "kl") under its own name.
PART_FIELDS = {"lm": "lm_loss"}
# The record fields that are not loss parts.
RECORD_FIELDS = ("step", "split", "tokens", "loss", "lr", "tokens_per_s", "grad_norm")


_PART_LABELS = {"kl": "train KL term (T² · KL)"}


def part_fields(parts: dict[str, float]) -> dict[str, float]:
    """The log fields of a loss's per-token named parts: none for a single part (it is the loss itself)."""
    if len(parts) < 2:
        return {}
    return {PART_FIELDS.get(name, name): value for name, value in parts.items()}


def record_step(line: str) -> int:
    """The step of one line of the log; a torn last line (a killed run) counts as after every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line from a kill: drop it


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(records: list[dict[str, Any]], png: Path, title: str = "") -> bool:
    """Train and validation loss against tokens seen, as a PNG (matplotlib, Agg backend).

    The train curve is the LM loss, the quantity validation measures. A run whose loss has parts logs
    its objective as ``loss`` (distillation: ``(1 - alpha) * LM + alpha * T^2 * KL``), not comparable
    with validation loss; its LM term (``lm_loss``) is drawn instead, and its other parts (the KL
    term) on an axis of their own.

    Returns:
        False (and writes nothing) when matplotlib is not installed (the ``plots`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    distill = any("lm_loss" in r for r in train)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    lm = [(r["tokens"], r.get("lm_loss", r["loss"])) for r in train]
    val = [(r["tokens"], r["loss"]) for r in records if r.get("split") == "val" and "loss" in r]
    if lm:
        ax.plot(*zip(*lm), "-", label="train LM loss" if distill else "train loss", markersize=4, linewidth=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", markersize=4, linewidth=1.2)
    handles, labels = ax.get_legend_handles_labels()
    others = [k for k in dict.fromkeys(k for r in train for k in r) if k not in (*RECORD_FIELDS, *PART_FIELDS.values())]
    if distill and others:
        ax_kl = ax.twinx()
        for name, color in zip(others, ("tab:green", "tab:red", "tab:purple", "tab:brown")):
            points = [(r["tokens"], r[name]) for r in train if name in r]
            ax_kl.plot(*zip(*points), ":", color=color, label=_PART_LABELS.get(name, f"train {name} term"), linewidth=1.2)
        ax_kl.set_ylabel("KL to the teacher (T² · nats / token)" if others == ["kl"] else "other loss terms (nats / token)")
        more = ax_kl.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.set_xlabel("training tokens")
    ax.set_ylabel("LM loss (nats / token)" if distill else "loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return True
