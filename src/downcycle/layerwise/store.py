"""The states between decoder layers, one tensor per batch, kept in memory up to a budget and
written to disk beyond it (each as its own safetensors file, read back memory-mapped), freed as soon
as the next layer has consumed them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["StateStore"]


class StateStore:
    """Tensors by key, at most ``budget`` bytes of them in memory; the rest spilled to ``spill_dir``
    (a temporary directory, removed by :meth:`close`).

    Attributes:
        peak_bytes: the most bytes held in memory at once; spilled_bytes: everything written to disk.
    """

    def __init__(self, budget: int, spill_dir: str | Path | None = None) -> None:
        self.budget = int(budget)
        self._root = Path(spill_dir) if spill_dir is not None else None
        self._dir: Path | None = None
        self._mem: dict[Any, Any] = {}
        self._disk: dict[Any, Path] = {}
        self.bytes = 0
        self.peak_bytes = 0
        self.spilled_bytes = 0

    def put(self, key: Any, tensor: Any) -> None:
        """Keep ``tensor`` under ``key`` (replacing what was there)."""
        self.drop(key)
        size = tensor.numel() * tensor.element_size()
        if self.bytes + size <= self.budget:
            self._mem[key] = tensor
            self.bytes += size
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            return
        from safetensors.torch import save_file

        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="downcycle-states-", dir=self._root))
        path = self._dir / f"{len(self._disk)}-{abs(hash(key))}.safetensors"
        save_file({"t": tensor.detach().contiguous().cpu()}, str(path))
        self._disk[key] = path
        self.spilled_bytes += size

    def get(self, key: Any) -> Any:
        """The tensor under ``key`` (read back from disk if it was spilled)."""
        if key in self._mem:
            return self._mem[key]
        from safetensors import safe_open

        with safe_open(str(self._disk[key]), framework="pt") as f:
            return f.get_tensor("t")

    def pop(self, key: Any) -> Any:
        """The tensor under ``key``, no longer kept."""
        tensor = self.get(key)
        self.drop(key)
        return tensor

    def drop(self, key: Any) -> None:
        if key in self._mem:
            t = self._mem.pop(key)
            self.bytes -= t.numel() * t.element_size()
        elif key in self._disk:
            self._disk.pop(key).unlink(missing_ok=True)

    def __contains__(self, key: Any) -> bool:
        return key in self._mem or key in self._disk

    def close(self) -> None:
        self._mem.clear()
        self._disk.clear()
        self.bytes = 0
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
