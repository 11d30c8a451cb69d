"""The pictures a person looks at after ``downcycle analyze`` (matplotlib, Agg backend, PNG).

- ``angular_distance.png``: d(l, l+n) over start layer ``l`` (x) and block size ``n`` (y), as in
  Gromov et al. 2024, Fig. 1; the block the plan drops is outlined.
- ``block_influence.png``: BI per layer (ShortGPT), dropped layers highlighted.
- ``nll.png`` (when the NLL search ran): the calibration NLL increase with each layer removed alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DowncycleError

__all__ = ["plot_angular", "plot_per_layer", "require_pyplot"]


def require_pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files, no window).

    Raises:
        DowncycleError: matplotlib is not installed, with what to install.
    """
    try:
        import matplotlib
    except ImportError:
        raise DowncycleError("plots need matplotlib: pip install 'downcycle[plots]' (or pass --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_angular(matrix: list[list[float | None]], path: Path, title: str, dropped: list[int] | None = None) -> Path:
    """Heatmap of ``matrix[l][n-1]`` (rows: start layer, columns: block size); empty where ``l + n > L``."""
    import numpy as np

    plt = require_pyplot()
    num = len(matrix)
    grid = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float).T  # (n, l)
    fig, ax = plt.subplots(figsize=(1.2 + 0.35 * num, 1.0 + 0.3 * num), dpi=120)
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis_r", aspect="auto",
                      extent=(-0.5, num - 0.5, 0.5, num + 0.5), vmin=0.0)
    fig.colorbar(image, ax=ax, label="angular distance arccos(cos)/π")
    if dropped and _contiguous(dropped):
        ax.add_patch(plt.Rectangle((dropped[0] - 0.5, len(dropped) - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_xlabel("first layer dropped, l")
    ax.set_ylabel("block size n (layers l..l+n-1)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_per_layer(values: list[float], path: Path, title: str, ylabel: str, dropped: list[int] | None = None) -> Path:
    """Bar chart of one value per layer; ``dropped`` layers in red."""
    plt = require_pyplot()
    dropped_set = set(dropped or [])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(values) + 1.5), 3.2), dpi=120)
    colors = ["tab:red" if i in dropped_set else "tab:blue" for i in range(len(values))]
    ax.bar(range(len(values)), values, color=colors)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xlabel("layer (red: dropped by the plan)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _contiguous(layers: list[int]) -> bool:
    return layers == list(range(layers[0], layers[0] + len(layers)))
