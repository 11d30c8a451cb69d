"""The torch-free slicing writer: rows, columns and rescaling of any float dtype (bfloat16 through its
bits, rounded as torch rounds), the byte-range and the gathering paths agreeing, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from downcycle.checkpoint import open_checkpoint, slicing
from downcycle.checkpoint.slicing import SliceJob, write_sliced
from downcycle.errors import DowncycleError


@pytest.fixture
def ckpt(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(48, 40, generator=g).to(torch.bfloat16),
        "f16": torch.randn(48, 40, generator=g).to(torch.float16),
        "f32": torch.randn(48, 40, generator=g),
        "norm": (torch.rand(40, generator=g) * 4 - 2).to(torch.bfloat16),
        "i64": torch.arange(12),
    }
    src = tmp_path / "src"
    src.mkdir()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    return open_checkpoint(src), tensors


ROWS, COLS = [0, 1, 2, 7, 8, 30, 47], [39, 3, 4, 5, 20]


@pytest.mark.parametrize("name", ["bf16", "f16", "f32"])
def test_rows_columns_and_rescale_match_torch(ckpt, tmp_path, name):
    index, tensors = ckpt
    jobs = [SliceJob("rows", index.tensors[name], rows=ROWS), SliceJob("cols", index.tensors[name], cols=COLS),
            SliceJob("both", index.tensors[name], rows=ROWS, cols=COLS, scale=1.7),
            SliceJob("one_plus", index.tensors[name], rows=ROWS, scale=0.6, shift=1.0), SliceJob("whole", index.tensors[name])]
    (tmp_path / "out").mkdir()
    write_sliced(tmp_path / "out", jobs, {"format": "pt"}, 10**9)
    got, t = load_file(tmp_path / "out" / "model.safetensors"), tensors[name]
    assert torch.equal(got["rows"], t[ROWS]) and torch.equal(got["cols"], t[:, COLS]) and torch.equal(got["whole"], t)
    # torch computes in float32 and rounds once to the dtype, to nearest even: so does the writer
    assert torch.equal(got["both"], (t[ROWS][:, COLS].float() * 1.7).to(t.dtype))
    assert torch.equal(got["one_plus"], (0.6 * (t[ROWS].float() + 1.0) - 1.0).to(t.dtype))


def test_bf16_rounding_is_to_nearest_even(tmp_path):
    """Values exactly halfway between two bfloat16 numbers go to the even one, like torch's."""
    bits = np.array([0x3F80, 0x3F81, 0x3F82, 0x3F83, 0xBF81, 0x7F7F], dtype=np.uint16)  # 1.0, 1.0078, ..., -1.0078, max
    x = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
    for scale in (1.5, 1.25, 0.5000001, 1 + 2**-9):
        ours = slicing._rescale(bits.reshape(1, -1), "BF16", scale, 0.0).reshape(-1)
        theirs = (x.float() * scale).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        assert (ours == theirs).all(), (scale, ours, theirs)


def test_gathered_rows_equal_copied_ranges(ckpt, tmp_path, monkeypatch):
    index, tensors = ckpt
    job = [SliceJob("x", index.tensors["f32"], rows=ROWS), SliceJob("n", index.tensors["norm"], rows=[1, 2, 3, 30])]
    (tmp_path / "ranges").mkdir()
    (tmp_path / "gathered").mkdir()
    monkeypatch.setattr(slicing, "MIN_RUN_BYTES", 0)
    write_sliced(tmp_path / "ranges", job, {}, 10**9)
    monkeypatch.setattr(slicing, "MIN_RUN_BYTES", 10**9)
    monkeypatch.setattr(slicing, "BLOCK_BYTES", 200)  # a few rows per block: blocks that hold no kept row, runs across blocks
    write_sliced(tmp_path / "gathered", job, {}, 10**9)
    a, b = (tmp_path / "ranges" / "model.safetensors").read_bytes(), (tmp_path / "gathered" / "model.safetensors").read_bytes()
    assert a == b
    assert torch.equal(load_file(tmp_path / "gathered" / "model.safetensors")["x"], tensors["f32"][ROWS])


def test_refuses_what_it_cannot_do(ckpt):
    index, _ = ckpt
    with pytest.raises(DowncycleError, match="cannot rescale a I64 tensor"):
        SliceJob("x", index.tensors["i64"], scale=2.0)
    with pytest.raises(DowncycleError, match="kept rows must be increasing"):
        SliceJob("x", index.tensors["f32"], rows=[3, 1])
    with pytest.raises(DowncycleError, match="cannot slice"):
        SliceJob("x", index.tensors["norm"], cols=[1])


def test_memory_is_bounded_by_a_block_not_the_tensor(tmp_path, monkeypatch):
    """A 16 MiB tensor's columns gathered in 256 KiB blocks: Python's and numpy's allocations peak
    near two blocks, not the tensor."""
    src = tmp_path / "src"
    src.mkdir()
    save_file({"w": torch.zeros(4096, 1024, dtype=torch.float32)}, src / "model.safetensors")
    index = open_checkpoint(src)
    monkeypatch.setattr(slicing, "BLOCK_BYTES", 256 * 1024)
    (tmp_path / "out").mkdir()
    job = [SliceJob("w", index.tensors["w"], rows=list(range(0, 4096, 3)), cols=list(range(0, 1024, 2)), scale=2.0)]
    tracemalloc.start()
    try:
        write_sliced(tmp_path / "out", job, {}, 10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 256 * 1024 + 512 * 1024, peak  # the tensor is 16 MiB, its pruned copy 2.7 MiB
    assert load_file(tmp_path / "out" / "model.safetensors")["w"].shape == (1366, 512)
