"""The shard writer: page-aligned layout, shard splitting, and byte-exact copies."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from downcycle.checkpoint import open_checkpoint, plan_shards, write_shards, writer
from downcycle.checkpoint.writer import parse_size


def _source(tmp_path: Path, names_sizes: dict[str, int], name="model.safetensors") -> Path:
    rng = np.random.default_rng(0)
    save_file({n: rng.integers(0, 255, size, dtype=np.uint8) for n, size in names_sizes.items()}, tmp_path / name)
    return tmp_path / name


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


def test_shards_split_at_size_and_at_large_source_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_MIN_SPLIT", 10_000)
    a = _source(tmp_path, {"a1": 6000, "a2": 6000}, "a.safetensors")
    b = _source(tmp_path, {"b1": 6000}, "b.safetensors")
    from downcycle.checkpoint.safetensors_index import read_header

    entries = []
    for path in (a, b):
        header, start, _ = read_header(path)
        for name, info in header.items():
            if name != "__metadata__":
                lo, hi = info["data_offsets"]
                entries.append((name, writer.TensorEntry(name, info["dtype"], tuple(info["shape"]), path, start + lo, hi - lo)))
    by_source = plan_shards(entries, 10**9)
    assert [[n for n, _ in s.tensors] for s in by_source] == [["a1", "a2"], ["b1"]]
    by_size = plan_shards(entries, 7000)
    assert [[n for n, _ in s.tensors] for s in by_size] == [["a1"], ["a2"], ["b1"]]
    monkeypatch.setattr(writer, "_MIN_SPLIT", 10**9)
    assert len(plan_shards(entries, 10**9)) == 1


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("512MiB") == 512 * 2**20 and parse_size("1000") == 1000


def _two_source_shards(tmp_path: Path, scale: int = 1) -> list:
    """Six tensors over two source files, planned into (at least) two output shards."""
    a = _source(tmp_path, {f"model.layers.{i}.w": scale * 5000 + i for i in range(3)}, "a.safetensors")
    b = _source(tmp_path, {f"model.layers.{i}.w": scale * 7000 + i for i in range(3, 6)}, "b.safetensors")
    entries = []
    for path in (a, b):
        from downcycle.checkpoint.safetensors_index import read_header

        header, start, _ = read_header(path)
        for name in sorted(n for n in header if n != "__metadata__"):
            lo, hi = header[name]["data_offsets"]
            entries.append((name, writer.TensorEntry(name, header[name]["dtype"], tuple(header[name]["shape"]), path, start + lo, hi - lo)))
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
