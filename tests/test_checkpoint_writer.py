"""The shard writer: page-aligned layout, shard splitting, and byte-exact copies."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from downcycle.checkpoint import open_checkpoint, plan_shards, write_shards
from downcycle.checkpoint import writer
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
