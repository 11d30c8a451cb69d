"""The picture of a width importance (``width/importance.png``; matplotlib, Agg backend), three panels:

- query heads: a layers x heads heatmap, the KV groups' boundaries as white lines;
- MLP neurons: each layer's importances sorted from high to low (one curve per layer, dark = early),
  over the neuron's rank as a fraction of the width -- how sharply each layer concentrates;
- embedding channels: the importances sorted from high to low.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plots import require_pyplot

PLOT_NAME = "importance.png"

__all__ = ["PLOT_NAME", "plot_width"]


def plot_width(scores: dict[str, Any], directory: Path) -> Path:
    """Draw ``scores`` (the ``scores.json`` document) into ``directory / PLOT_NAME``; returns the path."""
    import numpy as np

    plt = require_pyplot()
    layers, heads, kv = scores["num_layers"], scores["num_attention_heads"], scores["num_key_value_heads"]
    fig, (ax_h, ax_f, ax_d) = plt.subplots(1, 3, figsize=(13.5, max(3.6, 1.5 + 0.12 * layers)), dpi=120)

    grid = np.array(scores["heads"], dtype=float)  # (L, h)
    image = ax_h.imshow(grid, origin="lower", aspect="auto", cmap="viridis", extent=(-0.5, heads - 0.5, -0.5, layers - 0.5))
    for boundary in range(heads // kv, heads, heads // kv):
        ax_h.axvline(boundary - 0.5, color="white", lw=1.0)
    fig.colorbar(image, ax=ax_h, label="importance")
    ax_h.set_xlabel(f"query head ({kv} KV groups of {heads // kv})")
    ax_h.set_ylabel("layer")
    ax_h.set_title("attention heads", fontsize=9)

    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, layers))
    for layer, values in enumerate(scores["ffn"]):
        ranked = np.sort(np.asarray(values, dtype=float))[::-1]
        ax_f.plot(np.linspace(0.0, 1.0, len(ranked)), ranked, color=colors[layer], lw=0.9)
    ax_f.set_xlabel(f"neuron rank / {scores['intermediate_size']} (sorted, per layer)")
    ax_f.set_ylabel("importance")
    ax_f.set_title("MLP neurons (dark: early layers, light: late)", fontsize=9)

    hidden = np.sort(np.asarray(scores["hidden"], dtype=float))[::-1]
    ax_d.plot(np.arange(len(hidden)), hidden, color="tab:blue", lw=1.0)
    ax_d.set_xlabel(f"channel rank (of {scores['hidden_size']}, sorted)")
    ax_d.set_ylabel("importance (summed over the norms)")
    ax_d.set_title("embedding channels", fontsize=9)
    fig.suptitle(f"width importance, {scores['model_type']}: mean |x| over {scores['seq_len']} tokens, "
                 f"L2 over {scores['samples']} windows", fontsize=10)
    fig.tight_layout()
    path = Path(directory) / PLOT_NAME
    fig.savefig(path)
    plt.close(fig)
    return path
