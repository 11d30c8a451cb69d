"""Writing safetensors shards by copying byte ranges: no tensor is ever materialised.

Each output shard is a fresh header followed by the kept tensors' bytes, copied file-to-file with
``os.copy_file_range`` (in-kernel, reflinks where the filesystem can), ``os.sendfile`` where that is
refused, and a buffered copy as the last resort. Runs of tensors that are adjacent in the source are
copied with one call, so a decoder layer usually costs one system call. Output shards are written
by background threads, several files at once (an in-kernel copy releases the GIL, and two streams
move more bytes per second than one, both through the page cache and on NVMe), while the caller's
thread writes the small files beside them.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .safetensors_index import INDEX_NAME, METADATA_KEY, SINGLE_NAME, TensorEntry

_CHUNK = 64 * 1024 * 1024  # bytes per copy call, so progress moves and signals are seen
_ALIGN = 8  # safetensors pads the header so data starts 8-byte aligned
# In-kernel copies are fastest when source and destination offsets agree modulo the page size, and
# each call starts on a 64 KiB destination boundary (measured on ext4: ~2.5 GB/s when the offsets
# disagree vs ~3.7 GB/s aligned, and 0.29 vs 0.20 s/GB for a copy that starts mid-page vs on a
# boundary; see BENCHMARKS.md). Headers are padded with spaces, as the format allows.
_PAGE, _BLOCK = 4096, 64 * 1024
# A new output shard starts where the source shard changes (each output shard aligned to one source file), unless still smaller:
_MIN_SPLIT = 64 * 1024 * 1024
# From this size on, a new shard also starts at the tensor nearest the middle of the bytes, so that
# even a small output has two shards of about equal size for two threads to copy at once. (Writes
# into one file do not go faster with more threads: ext4, for one, serialises them on the inode.)
_HALVE_FROM = 128 * 1024 * 1024

__all__ = ["OutShard", "ShardCopy", "copy_range", "encode_header", "plan_shards", "shard_names", "start_shards", "usable_cores",
           "write_shards"]

Progress = Callable[[int], None]


@dataclass
class OutShard:
    """One output file: ``(output name, source entry)`` pairs in on-disk order."""

    tensors: list[tuple[str, TensorEntry]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for _, e in self.tensors)


def plan_shards(tensors: Iterable[tuple[str, TensorEntry]], max_shard_bytes: int) -> list[OutShard]:
    """Split tensors, in the given order, into shards of at most ``max_shard_bytes`` (a single larger
    tensor gets a shard of its own, as ``save_pretrained`` does). A shard of at least 64 MiB also
    ends where the source file changes, so that its bytes can be copied page-aligned, and an output
    of at least 128 MiB is also split at the tensor nearest its middle, so that two threads can
    share the copy evenly."""
    tensors = list(tensors)
    total = sum(e.nbytes for _, e in tensors)
    middle = _nearest_boundary(tensors, total // 2) if total >= _HALVE_FROM else None
    shards, size, offset = [OutShard()], 0, 0
    for name, entry in tensors:
        current = shards[-1]
        if current.tensors and (
            size + entry.nbytes > max_shard_bytes
            or (current.tensors[-1][1].file != entry.file and size >= _MIN_SPLIT)
            or offset == middle
        ):
            shards.append(OutShard())
            size = 0
        shards[-1].tensors.append((name, entry))
        size += entry.nbytes
        offset += entry.nbytes
    return shards


def _nearest_boundary(tensors: list[tuple[str, TensorEntry]], target: int) -> int:
    """The offset, among those where a tensor starts, nearest to ``target``."""
    best, offset = 0, 0
    for _, entry in tensors:
        if abs(offset - target) < abs(best - target):
            best = offset
        offset += entry.nbytes
    return best


def shard_names(count: int) -> list[str]:
    if count == 1:
        return [SINGLE_NAME]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def encode_header(shard: OutShard, metadata: dict[str, str]) -> bytes:
    """The header bytes (length prefix included) for ``shard`` with data laid out in order."""
    header: dict[str, object] = {METADATA_KEY: metadata} if metadata else {}
    offset = 0
    for name, e in shard.tensors:
        header[name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % _ALIGN)
    # Pad further so that the data start agrees, modulo the page size, with the source offsets of
    # most of the bytes: then the kernel copies whole pages.
    residue = _dominant_residue(shard)
    if residue is not None:
        raw += b" " * ((residue - 8 - len(raw)) % _PAGE)
    return struct.pack("<Q", len(raw)) + raw


def _dominant_residue(shard: OutShard) -> int | None:
    """The data start (mod page size) that page-aligns the largest share of the shard's bytes."""
    weight: dict[int, int] = {}
    offset = 0
    for _, e in shard.tensors:
        r = (e.start - offset) % _PAGE
        weight[r] = weight.get(r, 0) + e.nbytes
        offset += e.nbytes
    if not weight:
        return None
    best = max(weight, key=weight.__getitem__)
    return best if best % _ALIGN == 0 else None


def write_shards(
    out_dir: Path, shards: list[OutShard], metadata: dict[str, str], progress: Progress | None = None, threads: int = 1
) -> list[str]:
    """Write ``shards`` into ``out_dir`` and wait for them: :func:`start_shards`, then its ``wait``.

    Returns:
        The shard file names written.
    """
    with start_shards(out_dir, shards, metadata, progress, threads) as copy:
        pass
    return copy.names


def start_shards(
    out_dir: Path, shards: list[OutShard], metadata: dict[str, str], progress: Progress | None = None, threads: int = 1
) -> ShardCopy:
    """Start writing ``shards`` into ``out_dir`` (plus, at once, the index when there are several),
    up to ``threads`` files at a time, largest first, in background threads: the caller's thread is
    free for other work meanwhile. Use the result as a context manager (or call its ``wait``): on
    leaving the block normally it waits for the copies and raises the first error (or Ctrl-C) of any
    of them; on an exception it stops them. Either way every thread has finished with ``out_dir``
    when the block is left, and a failure stops every copy within one chunk.

    ``progress`` (if given) is called from the copying threads with each chunk's byte count.
    """
    names = shard_names(len(shards))
    if len(shards) > 1:
        weight_map = {t: name for name, shard in zip(names, shards) for t, _ in shard.tensors}
        index = {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": weight_map}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    jobs = sorted(zip(names, shards), key=lambda job: -job[1].nbytes)
    return ShardCopy(out_dir, jobs, metadata, progress, max(1, min(threads, len(jobs))), names)


class ShardCopy:
    """Output shards being copied by worker threads (see :func:`start_shards`)."""

    def __init__(self, out_dir: Path, jobs: list[tuple[str, OutShard]], metadata: dict[str, str], progress: Progress | None,
                 workers: int, names: list[str]) -> None:
        self.names = names
        self._out_dir, self._metadata, self._progress = out_dir, metadata, progress
        self._pending, self._lock, self._stop = iter(jobs), threading.Lock(), threading.Event()
        self._errors: list[BaseException] = []
        self._idle = threading.Event()  # set when a thread has no more work (or gave up)
        self._threads = [threading.Thread(target=self._work, name=f"downcycle-copy-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    job = next(self._pending, None)
                if job is None:
                    return
                _write_shard(self._out_dir / job[0], job[1], self._metadata, self._progress, self._stop)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread by wait()
            if not isinstance(e, _Stopped):
                self._errors.append(e)
            self._stop.set()
        finally:
            self._idle.set()

    def wait_for_spare_core(self) -> None:
        """Return once a CPU core is not busy copying: at once if there are more usable cores than
        copying threads, else when one of them has run out of work (or every copy has stopped).
        Work done on the caller's thread after this does not slow the copies down."""
        if len(self._threads) >= usable_cores():
            self._idle.wait()

    def wait(self) -> None:
        """Wait for every copy; raise the first error of any. Ctrl-C (or SIGTERM) while waiting
        stops the copies, and is raised once they have stopped."""
        try:
            for t in self._threads:
                t.join()
        except BaseException:
            self.cancel()
            raise
        if self._errors:
            raise self._errors[0]

    def cancel(self) -> None:
        """Stop the copies (within one chunk each) and wait until they have."""
        self._stop.set()
        for t in self._threads:
            t.join()

    def __enter__(self) -> ShardCopy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.wait()
        else:
            self.cancel()


def _write_shard(path: Path, shard: OutShard, metadata: dict[str, str], progress: Progress | None, stop: threading.Event | None) -> None:
    with path.open("wb") as dst:
        dst.write(encode_header(shard, metadata))
        dst.flush()
        for src, start, length in _runs(shard.tensors):
            copy_range(src, start, length, dst.fileno(), progress, stop)


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Stopped(Exception):
    """Another copy failed or was interrupted: this one gives up between chunks."""


def _runs(tensors: list[tuple[str, TensorEntry]]) -> list[tuple[Path, int, int]]:
    """Coalesce tensors that sit back to back in the same source file into single ranges."""
    runs: list[tuple[Path, int, int]] = []
    for _, e in tensors:
        if runs and runs[-1][0] == e.file and runs[-1][1] + runs[-1][2] == e.start:
            runs[-1] = (e.file, runs[-1][1], runs[-1][2] + e.nbytes)
        else:
            runs.append((e.file, e.start, e.nbytes))
    return runs


def copy_range(src: Path, start: int, length: int, dst_fd: int, progress: Progress | None, stop: threading.Event | None = None) -> None:
    """Copy ``length`` bytes of ``src`` from ``start`` to ``dst_fd``'s position (in kernel space where it can)."""
    with src.open("rb") as f:
        fd, done = f.fileno(), 0
        position = os.lseek(dst_fd, 0, os.SEEK_CUR)
        while done < length:
            if stop is not None and stop.is_set():
                raise _Stopped
            # Every call but a run's first starts on a 64 KiB destination boundary: the first copies
            # only up to that boundary. (Measured on ext4: a long copy from a mid-page start ran at
            # 0.29 s/GB, from a boundary at 0.20 s/GB.)
            misaligned = (position + done) % _BLOCK
            n = min(_BLOCK - misaligned if misaligned else _CHUNK, length - done)
            copied = _copy_chunk(fd, start + done, n, dst_fd)
            if copied == 0:
                raise OSError(errno.EIO, f"{src}: unexpected end of file at byte {start + done}")
            done += copied
            if progress:
                progress(copied)


def _copy_chunk(src_fd: int, offset: int, count: int, dst_fd: int) -> int:
    """Copy up to ``count`` bytes from ``src_fd`` at ``offset`` to ``dst_fd``'s current position."""
    for fast in (_copy_file_range, _sendfile):
        if fast is not None:
            try:
                return fast(src_fd, offset, count, dst_fd)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
    data = os.pread(src_fd, count, offset)
    view, written = memoryview(data), 0
    while written < len(data):
        written += os.write(dst_fd, view[written:])
    return len(data)


def _cfr(src_fd: int, offset: int, count: int, dst_fd: int) -> int:
    return os.copy_file_range(src_fd, dst_fd, count, offset)


def _sf(src_fd: int, offset: int, count: int, dst_fd: int) -> int:
    return os.sendfile(dst_fd, src_fd, offset, count)


_copy_file_range = _cfr if hasattr(os, "copy_file_range") else None
_sendfile = _sf if hasattr(os, "sendfile") else None
