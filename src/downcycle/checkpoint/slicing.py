"""Writing safetensors shards whose tensors are slices of a source's, in bounded memory, without torch.

Each output tensor is a :class:`SliceJob`: its source, the rows and columns it keeps (None: all) and
an optional affine rescale ``y = scale * (x + shift) - shift`` (``shift`` 0: a plain scale, as an
RMSNorm weight gets; 1: Gemma's ``(1 + w)`` form). It is written by the cheapest means that does it:

- kept whole and not rescaled: the tensor's bytes copied file to file (the cut's byte-range copy);
- rows sliced, in long runs (heads: head_dim rows each): each run of consecutive kept rows is one
  byte range, copied the same way;
- columns sliced, rescaled, or rows in short runs (neurons): the source rows from the next kept one
  are read a block at a time (at most :data:`BLOCK_BYTES`, 16 MiB),
  viewed as unsigned integers of the element's width (so any dtype, bfloat16 included, is gathered
  without knowing it), the kept rows and columns gathered with numpy, rescaled if asked, and written.

Memory is therefore bounded by one block plus its gathered copy, whatever the model's size; the
page cache does the rest. Rescaling reads F32, F16, F64 and BF16 (through the float32 whose upper
16 bits it is, rounded back to nearest even).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import DowncycleError
from .safetensors_index import DTYPE_SIZES, INDEX_NAME, TensorEntry
from .writer import OutShard, copy_range, encode_header, plan_shards, shard_names

BLOCK_BYTES = 16 * 1024 * 1024  # source bytes read at once for a gather or a rescale
# Kept rows are copied as byte ranges when their runs average at least this much; shorter runs (MLP
# neurons chosen one by one) are gathered from blocks instead: one read per block, not one call per row.
MIN_RUN_BYTES = 256 * 1024
_FLOATS = ("F32", "F16", "F64", "BF16")

__all__ = ["BLOCK_BYTES", "SliceJob", "write_sliced"]


@dataclass(frozen=True)
class SliceJob:
    """One output tensor: ``source`` with only ``rows`` (axis 0) and ``cols`` (axis 1) kept, in the
    order given (rows increasing), then rescaled by ``scale`` (``shift``: see the module docstring)."""

    name: str
    source: TensorEntry
    rows: Sequence[int] | None = None
    cols: Sequence[int] | None = None
    scale: float | None = None
    shift: float = 0.0

    def __post_init__(self) -> None:
        dims = len(self.source.shape)
        if (self.rows is not None and dims < 1) or (self.cols is not None and dims != 2):
            raise DowncycleError(f"{self.source.name}: cannot slice a tensor of shape {list(self.source.shape)} that way")
        if self.rows is not None and any(b <= a for a, b in zip(self.rows, self.rows[1:])):
            raise DowncycleError(f"{self.source.name}: kept rows must be increasing")
        if (self.rows is not None or self.cols is not None or self.scale is not None) and self.source.dtype not in DTYPE_SIZES:
            raise DowncycleError(f"{self.source.name}: cannot slice a {self.source.dtype} tensor")
        if self.scale is not None and self.source.dtype not in _FLOATS:
            raise DowncycleError(f"{self.source.name}: cannot rescale a {self.source.dtype} tensor (only {', '.join(_FLOATS)})")

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.source.shape)
        if self.rows is not None:
            shape[0] = len(self.rows)
        if self.cols is not None:
            shape[1] = len(self.cols)
        return tuple(shape)

    @property
    def verbatim(self) -> bool:
        return self.rows is None and self.cols is None and self.scale is None

    def entry(self) -> TensorEntry:
        """The output tensor as a header entry (its bytes still those of the source, for shard planning)."""
        size = DTYPE_SIZES.get(self.source.dtype)
        nbytes = self.source.nbytes if self.verbatim or size is None else math.prod(self.shape) * size
        return TensorEntry(self.name, self.source.dtype, self.shape, self.source.file, self.source.start, nbytes)


def write_sliced(out_dir: Path, jobs: list[SliceJob], metadata: dict[str, str], max_shard_bytes: int, threads: int = 1) -> list[str]:
    """Write ``jobs`` as safetensors shards (and their index, when there are several) into ``out_dir``,
    up to ``threads`` shards at a time.

    Returns:
        The shard file names, in order.
    """
    by_name = {job.name: job for job in jobs}
    shards = plan_shards([(job.name, job.entry()) for job in jobs], max_shard_bytes)
    names = shard_names(len(shards))
    if len(shards) > 1:
        import json

        weight_map = {t: name for name, shard in zip(names, shards) for t, _ in shard.tensors}
        index = {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": weight_map}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shards))), thread_name_prefix="downcycle-slice") as pool:
        futures = [pool.submit(_write_shard, out_dir / name, shard, by_name, metadata, stop) for name, shard in zip(names, shards)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()  # the others give up within one block
            raise
    return names


def _write_shard(path: Path, shard: OutShard, jobs: dict[str, SliceJob], metadata: dict[str, str], stop: threading.Event) -> None:
    with path.open("wb", buffering=0) as dst:  # unbuffered: the byte-range copies write through the same descriptor
        _write_all(dst.fileno(), encode_header(shard, metadata))
        for name, _ in shard.tensors:
            _write_tensor(jobs[name], dst.fileno(), stop)


def _write_tensor(job: SliceJob, fd: int, stop: threading.Event) -> None:
    src = job.source
    if job.verbatim:
        copy_range(src.file, src.start, src.nbytes, fd, None, stop)
        return
    total_rows = src.shape[0] if src.shape else 1
    row_bytes = src.nbytes // total_rows if total_rows else 0
    kept = range(total_rows) if job.rows is None else job.rows
    runs = _runs(kept)
    if job.cols is None and job.scale is None and len(kept) * row_bytes >= len(runs) * MIN_RUN_BYTES:
        for first, count in runs:  # long runs of whole rows: byte ranges, copied in the kernel
            copy_range(src.file, src.start + first * row_bytes, count * row_bytes, fd, None, stop)
        return
    import numpy as np

    width = np.dtype(f"<u{DTYPE_SIZES[src.dtype]}")  # elements as integers of their width: gathered without decoding
    rows = np.asarray(kept, dtype=np.intp)
    cols = None if job.cols is None else np.asarray(job.cols, dtype=np.intp)
    per_block = max(1, BLOCK_BYTES // max(row_bytes, 1))
    with src.file.open("rb") as f:
        i = 0
        while i < len(rows):  # a block of source rows from the next kept one, then the kept rows in it
            if stop.is_set():
                raise InterruptedError("another shard failed")
            first = int(rows[i])
            end = min(first + per_block, total_rows)
            j = int(np.searchsorted(rows, end))
            data = os.pread(f.fileno(), (end - first) * row_bytes, src.start + first * row_bytes)
            if len(data) != (end - first) * row_bytes:
                raise DowncycleError(f"{src.file}: unexpected end of file in tensor {src.name!r}")
            block = np.frombuffer(data, dtype=width).reshape(end - first, -1)
            if j - i != end - first:
                block = np.take(block, rows[i:j] - first, axis=0)
            if cols is not None:
                block = np.take(block, cols, axis=1)  # take: several times faster than block[:, cols]
            if job.scale is not None:
                block = _rescale(block, src.dtype, job.scale, job.shift)
            _write_all(fd, memoryview(np.ascontiguousarray(block).reshape(-1).view(np.uint8)))  # no copy to bytes
            i = j


def _rescale(bits, dtype: str, scale: float, shift: float):
    """``scale * (x + shift) - shift`` of the elements whose bit patterns are ``bits``, in the same
    dtype: computed in float32 (float64 for F64) and rounded once, to nearest even, as torch does."""
    import numpy as np

    if dtype == "F64":
        x = bits.view(np.float64)
        return (scale * (x + shift) - shift).view(bits.dtype)
    if dtype == "BF16":
        x = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        x = bits.view({"F32": np.float32, "F16": np.float16}[dtype])
    with np.errstate(over="ignore"):  # beyond the dtype's range: inf, as torch gives
        y = np.float32(scale) * (x.astype(np.float32) + np.float32(shift)) - np.float32(shift)
        if dtype != "BF16":
            return y.astype(x.dtype).view(bits.dtype)
    u = y.view(np.uint32)  # bfloat16 is the upper half of a float32: round the lower half away
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    return np.where(np.isnan(y), np.uint16(0x7FC0), rounded)


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """``(first, count)`` runs of consecutive indices, in order."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.write(fd, view[done:])
