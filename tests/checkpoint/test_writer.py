"""The shard writer: page-aligned layout, shard splitting, and byte-exact copies."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from downcycle.artifacts.quantities import parse_quantity as parse_size
from downcycle.checkpoint import open_checkpoint, plan_shards, write_shards, writer


def _source(tmp_path: Path, names_sizes: dict[str, int], name="model.safetensors") -> Path:
    rng = np.random.default_rng(0)
    save_file({n: rng.integers(0, 255, size, dtype=np.uint8) for n, size in names_sizes.items()}, tmp_path / name)
    return tmp_path / name


def _entries(tmp_path: Path, files: dict[str, dict[str, int]]) -> list:
    """(name, entry) pairs of every tensor of the given source files, in file then name order."""
    from downcycle.checkpoint.safetensors_index import read_header

    entries = []
    for fname, sizes in files.items():
        path = _source(tmp_path, sizes, fname)
        header, start, _ = read_header(path)
        for name in sorted(n for n in header if n != "__metadata__"):
            lo, hi = header[name]["data_offsets"]
            entries.append((name, writer.TensorEntry(name, header[name]["dtype"], tuple(header[name]["shape"]), path, start + lo, hi - lo)))
    return entries


def test_output_is_page_aligned_with_the_source_and_byte_exact(tmp_path):
    sizes = {f"model.layers.{i}.w": 3 * 4096 for i in range(6)} | {"model.embed.w": 4096 * 2 + 8}
    _source(tmp_path, sizes)
    ckpt = open_checkpoint(tmp_path)
    kept = [(f"model.layers.{j}.w", ckpt.tensors[f"model.layers.{i}.w"]) for j, i in enumerate([5, 1, 2])]
    out = tmp_path / "out"
    out.mkdir()
    write_shards(out, plan_shards(kept, 10**9), {"format": "pt"})
    raw = (out / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    for name, entry in kept:
        start = 8 + n + header[name]["data_offsets"][0]
        assert start % 4096 == entry.start % 4096, name  # the kernel can copy whole pages
    loaded, source = load_file(out / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    for j, i in enumerate([5, 1, 2]):
        assert np.array_equal(loaded[f"model.layers.{j}.w"], source[f"model.layers.{i}.w"])


def test_copy_calls_start_on_64k_destination_boundaries(tmp_path, monkeypatch):
    """A run's first call copies only up to the next 64 KiB boundary, so that every later call
    starts on one: a long in-kernel copy from a mid-page start is much slower (see writer.py)."""
    monkeypatch.setattr(writer, "_CHUNK", 256 * 1024)
    sizes = {f"model.layers.{i}.w": 300_000 + 4096 * i for i in range(4)}
    _source(tmp_path, sizes)
    ckpt = open_checkpoint(tmp_path)
    kept = [(n, ckpt.tensors[n]) for n in ("model.layers.3.w", "model.layers.0.w", "model.layers.1.w")]
    calls, real = [], writer._copy_chunk

    def record(src_fd, offset, count, dst_fd):
        calls.append((os.lseek(dst_fd, 0, os.SEEK_CUR), count))
        return real(src_fd, offset, count, dst_fd)

    monkeypatch.setattr(writer, "_copy_chunk", record)
    out = tmp_path / "out"
    out.mkdir()
    write_shards(out, plan_shards(kept, 10**9), {"format": "pt"})
    block = writer._BLOCK
    unaligned = [(pos, n) for pos, n in calls if pos % block]
    assert len(unaligned) == 2  # the first call of each of the two runs (layer 3; layers 0-1)
    assert all(n < block and (pos + n) % block == 0 for pos, n in unaligned)  # ... and stops at the next boundary
    assert all(n <= writer._CHUNK for _, n in calls) and len(calls) > 4
    loaded, source = load_file(out / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert all(np.array_equal(loaded[n], source[n]) for n, _ in kept)


def test_shards_split_at_size_and_at_large_source_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_MIN_SPLIT", 10_000)
    entries = _entries(tmp_path, {"a.safetensors": {"a1": 6000, "a2": 6000}, "b.safetensors": {"b1": 6000}})
    by_source = plan_shards(entries, 10**9)
    assert [[n for n, _ in s.tensors] for s in by_source] == [["a1", "a2"], ["b1"]]
    by_size = plan_shards(entries, 7000)
    assert [[n for n, _ in s.tensors] for s in by_size] == [["a1"], ["a2"], ["b1"]]
    monkeypatch.setattr(writer, "_MIN_SPLIT", 10**9)
    assert len(plan_shards(entries, 10**9)) == 1


def test_a_large_enough_output_is_also_split_at_the_tensor_nearest_its_middle(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_MIN_SPLIT", 1000)
    # one source file: 6000 + 1000 + 2000 + 3000 bytes, middle 6000 -> after the first tensor
    one = _entries(tmp_path, {"one.safetensors": {"t1": 6000, "t2": 1000, "t3": 2000, "t4": 3000}})
    monkeypatch.setattr(writer, "_HALVE_FROM", 12_000)
    assert [[n for n, _ in s.tensors] for s in plan_shards(one, 10**9)] == [["t1"], ["t2", "t3", "t4"]]
    monkeypatch.setattr(writer, "_HALVE_FROM", 12_001)  # smaller outputs stay whole
    assert len(plan_shards(one, 10**9)) == 1
    # as in a cut of a 1 GB model: the middle falls inside the first source file's bytes, and the
    # split at the source change stays: 10500 bytes, middle 5250 -> 4500 | 2000 | 4000 bytes
    two = _entries(tmp_path, {"a.safetensors": {"a1": 1000, "a2": 2000, "a3": 1500, "a4": 2000},
                              "b.safetensors": {"b1": 2000, "b2": 2000}})
    monkeypatch.setattr(writer, "_HALVE_FROM", 1000)
    assert [[n for n, _ in s.tensors] for s in plan_shards(two, 10**9)] == [["a1", "a2", "a3"], ["a4"], ["b1", "b2"]]


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("512MiB") == 512 * 2**20 and parse_size("1000") == 1000


def _two_source_shards(tmp_path: Path, scale: int = 1) -> list:
    """Six tensors over two source files, planned into (at least) two output shards."""
    entries = _entries(tmp_path, {"a.safetensors": {f"model.layers.{i}.w": scale * 5000 + i for i in range(3)},
                                  "b.safetensors": {f"model.layers.{i}.w": scale * 7000 + i for i in range(3, 6)}})
    return plan_shards(entries, scale * 13_000)


def test_concurrent_copies_write_the_same_bytes(tmp_path):
    shards = _two_source_shards(tmp_path)
    assert len(shards) >= 2
    outs = {}
    for threads in (1, 2, 4):
        out = tmp_path / f"out{threads}"
        out.mkdir()
        names = write_shards(out, shards, {"format": "pt"}, threads=threads)
        outs[threads] = {n: (out / n).read_bytes() for n in [*names, "model.safetensors.index.json"]}
    assert outs[1] == outs[2] == outs[4]
    index = json.loads(outs[2]["model.safetensors.index.json"])
    assert list(index["weight_map"]) == [name for s in shards for name, _ in s.tensors]  # shard order, not copy order


def test_a_failing_copy_stops_the_others_and_is_raised(tmp_path, monkeypatch):
    shards = _two_source_shards(tmp_path, scale=40)
    real, started = writer._copy_chunk, []

    def flaky(src_fd, offset, count, dst_fd):
        started.append(offset)
        if len(started) == 1:
            raise OSError(5, "simulated I/O failure")
        return real(src_fd, offset, min(count, 64), dst_fd)  # small steps: the other copy sees the stop

    monkeypatch.setattr(writer, "_copy_chunk", flaky)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="simulated I/O failure"):
        write_shards(out, shards, {"format": "pt"}, threads=2)
    # the other thread gave up within a few steps instead of copying its shard (thousands of steps)
    assert 64 * len(started) < min(s.nbytes for s in shards) / 4


@pytest.mark.parametrize("cores", [1, 2])
def test_the_caller_waits_for_a_spare_core_only_when_copies_use_them_all(tmp_path, monkeypatch, cores):
    """``wait_for_spare_core`` returns at once when a core is free, and otherwise only once a
    copying thread has run out of work."""
    import threading

    shards = _two_source_shards(tmp_path)
    real, release = writer._copy_chunk, threading.Event()

    def held(src_fd, offset, count, dst_fd):
        assert release.wait(10)
        return real(src_fd, offset, count, dst_fd)

    monkeypatch.setattr(writer, "_copy_chunk", held)
    monkeypatch.setattr(writer, "usable_cores", lambda: cores)
    out = tmp_path / "out"
    out.mkdir()
    returned = threading.Event()
    with writer.start_shards(out, shards, {"format": "pt"}, threads=1) as copying:
        waiter = threading.Thread(target=lambda: (copying.wait_for_spare_core(), returned.set()))
        waiter.start()
        assert returned.wait(0.5) is (cores > 1)  # one copying thread: a second core is spare
        release.set()  # the copy ends; its thread has no more work
        assert returned.wait(10)
        waiter.join()
    assert [p.name for p in sorted(out.iterdir())] == sorted([*copying.names, "model.safetensors.index.json"])
