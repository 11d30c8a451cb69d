"""Where training metrics go: a JSONL file (its format, read back and plotted, is
:mod:`downcycle.artifacts.loss_log`) and TensorBoard when installed.

Loggers are null objects rather than ``if`` guards scattered through the loop: a process that must
not write (not the main process, or TensorBoard not installed) gets a :class:`NullLogger`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from ..artifacts.loss_log import LOG_NAME, part_fields, record_step

__all__ = [
    "FanoutLogger",
    "JsonlLogger",
    "MetricLogger",
    "NullLogger",
    "TensorBoardLogger",
    "build_loggers",
    "part_fields",
]


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
            kept = [line for line in self.path.read_text().splitlines() if line.strip() and record_step(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a")

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


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
