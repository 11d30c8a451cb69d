"""Bad input: a clear one-line error naming the file, key or value, a non-zero exit, no output left."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

from downcycle.checkpoint import writer


@pytest.fixture
def src(tiny_model, tmp_path):
    """A private copy of a tiny Llama that a test may damage."""
    dst = tmp_path / "src"
    shutil.copytree(tiny_model("llama"), dst)
    return dst


@pytest.mark.parametrize(
    "spec, needle",
    [("0-6", "layer 6"), ("7", "layer 7"), ("", "empty"), ("0-2,,4", "empty item"), ("a-b", "'a-b'"),
     ("3-1", "descending"), ("4:2", "selects no layers"), (":99", "99")],
)
def test_bad_layer_spec(capsys, src, tmp_path, spec, needle, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", spec)
    assert_clean_failure(code, err, tmp_path / "out", needle)


def test_drop_everything(capsys, src, tmp_path, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--drop", "0-5")
    assert_clean_failure(code, err, tmp_path / "out", "drops all 6 layers")


def test_needs_exactly_one_selection(capsys, src, tmp_path, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3", "--drop", "4")
    assert_clean_failure(code, err, tmp_path / "out", "exactly one of --layers, --drop or --plan")


def test_existing_output_refused_without_force(capsys, src, tmp_path, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "cut", src, out, "--layers", "0-3")
    assert code == 1 and "already exists" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "mine"
    assert run_cli(capsys, "cut", src, out, "--layers", "0-3", "--force")[0] == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_missing_source(capsys, tmp_path, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "cut", tmp_path / "nope", tmp_path / "out", "--layers", "0")
    assert_clean_failure(code, err, tmp_path / "out", "nope", "no such model directory")


def test_hub_id_offline(capsys, tmp_path, monkeypatch, run_cli, assert_clean_failure):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "cut", "someorg/some-model", tmp_path / "out", "--layers", "0")
    assert_clean_failure(code, err, tmp_path / "out", "someorg/some-model", "Hugging Face Hub")


def test_bin_only_checkpoint(capsys, src, tmp_path, run_cli, assert_clean_failure):
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", "pytorch_model.bin", "downcycle convert")


def test_missing_config(capsys, src, tmp_path, run_cli, assert_clean_failure):
    (src / "config.json").unlink()
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", "config.json", "not found")


def test_truncated_shard(capsys, src, tmp_path, run_cli, assert_clean_failure):
    path = src / "model.safetensors"
    os.truncate(path, path.stat().st_size - 100)
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", "model.safetensors", "truncated")


def test_corrupt_header(capsys, src, tmp_path, run_cli, assert_clean_failure):
    path = src / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json ..."
    path.write_bytes(bytes(data))
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", "model.safetensors", "corrupt")


def test_header_length_beyond_file(capsys, src, tmp_path, run_cli, assert_clean_failure):
    path = src / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    path.write_bytes(bytes(data))
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", "model.safetensors", "header of")


@pytest.fixture
def sharded_src(src, tmp_path, capsys, run_cli):
    """(directory, index): the source re-sharded into several files with an index, via a full-depth cut."""
    sharded = tmp_path / "sharded"
    assert run_cli(capsys, "cut", src, sharded, "--layers", "0-5", "--max-shard-size", "100KB")[0] == 0
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    return sharded, index


def test_missing_shard(capsys, src, tmp_path, run_cli, assert_clean_failure, sharded_src):
    sharded, index = sharded_src
    victim = sorted(set(index["weight_map"].values()))[1]
    (sharded / victim).unlink()
    code, err = run_cli(capsys, "cut", sharded, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", victim, "missing")


def test_missing_tensor(capsys, src, tmp_path, run_cli, assert_clean_failure, sharded_src):
    sharded, index = sharded_src
    index["weight_map"]["model.layers.2.mlp.extra.weight"] = sorted(set(index["weight_map"].values()))[0]
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    code, err = run_cli(capsys, "cut", sharded, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", "model.layers.2.mlp.extra.weight", "missing tensor")


def test_bad_plan(capsys, src, tmp_path, run_cli, assert_clean_failure):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"kept_layers": "0-3"}))
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--plan", plan)
    assert_clean_failure(code, err, tmp_path / "out", "plan.json", "kept_layers")
    plan.write_text(json.dumps({"kept_layers": [0, 1], "source_layers": 32}))
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--plan", plan)
    assert_clean_failure(code, err, tmp_path / "out", "32-layer")
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--plan", tmp_path / "absent.json")
    assert_clean_failure(code, err, tmp_path / "out", "absent.json", "not found")


def test_not_enough_disk_space(capsys, src, tmp_path, monkeypatch, run_cli, assert_clean_failure):
    from types import SimpleNamespace

    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bavail=1, f_frsize=1000))  # 1000 bytes free
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3")
    assert_clean_failure(code, err, tmp_path / "out", "not enough free disk space")


@pytest.mark.parametrize("sharding", [[], ["--max-shard-size", "10KB", "--threads", "3"]], ids=["one-file", "concurrent-shards"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_failure_mid_write_leaves_nothing(capsys, src, tmp_path, monkeypatch, exc, sharding, run_cli, assert_clean_failure):
    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        raise exc(5, "simulated I/O failure") if exc is OSError else exc()

    monkeypatch.setattr(writer, "copy_range", boom)
    out = tmp_path / "out"
    if exc is KeyboardInterrupt:
        code, err = run_cli(capsys, "cut", src, out, "--layers", "0-3", *sharding)
        assert code == 130 and "interrupted" in err
    else:
        code, err = run_cli(capsys, "cut", src, out, "--layers", "0-3", *sharding)
        assert_clean_failure(code, err, out, "simulated I/O failure")
    assert calls and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_output_inside_source_refused(capsys, src, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "cut", src, src / "sub", "--layers", "0-3")
    assert_clean_failure(code, err, src / "sub", "must not be the source")


def test_negative_threads(capsys, src, tmp_path, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "cut", src, tmp_path / "out", "--layers", "0-3", "--threads", "-1")
    assert_clean_failure(code, err, tmp_path / "out", "--threads", "-1")
