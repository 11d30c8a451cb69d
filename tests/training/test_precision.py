"""--precision: ``auto`` is bf16 autocast on a CPU exactly when it has native bf16 matrix instructions
(AVX512-BF16 or AMX), and bf16 autocast training on a CPU lowers validation loss as fp32 does."""

from __future__ import annotations

import json

import pytest
import torch

from downcycle import loading
from downcycle.training import run_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_on_a_cpu_exactly_when_it_has_native_bf16(native, monkeypatch, tiny_model, tmp_path, datasets, train_config):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    want = "bf16" if native else "fp32"
    assert loading.resolve_precision("auto", "cpu") == want
    assert loading.resolve_precision("fp32", "cpu") == "fp32" and loading.resolve_precision("bf16", "cpu") == "bf16"
    out = tmp_path / "out"
    run_train(train_config(tiny_model("llama"), out, precision="auto", device="cpu", max_steps=1), datasets=datasets())
    assert json.loads((out / "downcycle.json").read_text())["outputs"]["precision"] == want  # resolved, recorded


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True), (False, False)])
def test_the_capability_probe_reads_the_cpus_bf16_instructions(avx512_bf16, amx, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert loading.cpu_has_native_bf16() is (avx512_bf16 or amx)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bf16_autocast_training_on_a_cpu_lowers_validation_loss_as_fp32_does(method, tiny_model, tmp_path, datasets,
                                                                             train_config):
    src, drops, starts = tiny_model("llama"), {}, {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        result = run_train(train_config(src, out, method=method, precision=precision, device="cpu", max_steps=12, lr=1e-2,
                                        lora_r=8), datasets=datasets())
        assert json.loads((out / "downcycle.json").read_text())["outputs"]["precision"] == precision
        drops[precision], starts[precision] = result.val_loss_start - result.val_loss, result.val_loss_start
    assert starts["bf16"] != starts["fp32"]  # the same weights: bf16 autocast really computed the loss
    assert drops["fp32"] > 1.0, drops  # the task is learnable in 12 steps (here: 2.3 full, 1.6 LoRA)
    assert drops["bf16"] == pytest.approx(drops["fp32"], rel=0.1), drops  # here within 3% and 5%
