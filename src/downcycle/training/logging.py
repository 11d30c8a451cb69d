"""Where training metrics go: a JSONL file, TensorBoard when installed, a PNG plot at the end.

Loggers are null objects rather than ``if`` guards scattered through the loop: a process that must
not write (not the main process, or TensorBoard not installed) gets a :class:`NullLogger`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "LOG_NAME",
    "PLOT_NAME",
    "FanoutLogger",
    "JsonlLogger",
    "MetricLogger",
    "NullLogger",
    "TensorBoardLogger",
    "build_loggers",
    "plot_losses",
    "read_log",
]

LOG_NAME = "train_log.jsonl"
PLOT_NAME = "loss.png"


class MetricLogger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """Accepts everything, writes nothing."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLogger:
    """One JSON object per line, flushed at once so a killed run loses nothing it reported.

    Args:
        path: the log file.
        resume_step: when resuming from a checkpoint at this step, records of later steps (written
            after the checkpoint, before the crash) are dropped so the resumed run rewrites them.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if line.strip() and _step(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a")

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line from a kill: drop it


class TensorBoardLogger:
    """Scalars ``{split}/{name}`` per step (needs the ``tensorboard`` package)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def log(self, record: dict[str, Any]) -> None:
        split = record.get("split", "train")
        for key, value in record.items():
            if key not in ("step", "split") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{split}/{key}", value, record["step"])

    def close(self) -> None:
        self.writer.close()


class FanoutLogger:
    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = loggers

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def build_loggers(run_dir: Path, is_main: bool, resume_step: int | None) -> Any:
    """JSONL (+ TensorBoard when importable) on the main process; a null logger elsewhere."""
    if not is_main:
        return NullLogger()
    loggers: list[Any] = [JsonlLogger(Path(run_dir) / LOG_NAME, resume_step)]
    try:
        loggers.append(TensorBoardLogger(Path(run_dir) / "tensorboard"))
    except ImportError:  # tensorboard is optional
        pass
    return FanoutLogger(loggers)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(records: list[dict[str, Any]], png: Path, title: str = "") -> bool:
    """Train and validation loss against tokens seen, as a PNG (matplotlib, Agg backend).

    The train curve is the LM loss, the quantity validation measures. A distillation run's logged
    ``loss`` is its objective ``(1 - alpha) * LM + alpha * T^2 * KL``, not comparable with validation
    loss; its LM term (``lm_loss``) is drawn instead, and its KL term on an axis of its own.

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
    kl = [(r["tokens"], r["kl"]) for r in train if "kl" in r]
    if distill and kl:
        ax_kl = ax.twinx()
        ax_kl.plot(*zip(*kl), ":", color="tab:green", label="train KL term (T² · KL)", linewidth=1.2)
        ax_kl.set_ylabel("KL to the teacher (T² · nats / token)")
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
