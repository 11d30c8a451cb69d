"""The chunked LM loss (--lm-loss chunked): the same loss and gradients as the model's own, without
ever holding the whole logits; training with it follows the same trajectory as with full logits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from downcycle.errors import DowncycleError
from downcycle.training import run_train
from downcycle.training.losses import lm as lm_loss
from downcycle.training.losses.lm import chunked_lm_loss_sum

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(n=37, hidden=16, vocab=50, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g).mul_(0.3).requires_grad_()
    b = torch.randn(vocab, generator=g).requires_grad_() if bias else None
    return h, w, b, torch.randint(0, vocab, (n,), generator=g)


@pytest.mark.parametrize("rows", [1, 8, 37, 1000])  # one row, uneven chunks, exactly one chunk, larger than N
@pytest.mark.parametrize("bias", [True, False])
def test_loss_and_gradients_equal_the_full_computation(rows, bias):
    h, w, b, t = _inputs(bias=bias)
    want = F.cross_entropy(F.linear(h, w, b), t, reduction="sum")
    want_grads = torch.autograd.grad(want, [x for x in (h, w, b) if x is not None])
    got = chunked_lm_loss_sum(h, w, b, t, rows)
    got_grads = torch.autograd.grad(got * 2.5, [x for x in (h, w, b) if x is not None])  # the incoming gradient scales them
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got, 2.5 * g_want, rtol=1e-4, atol=1e-5)


def test_frozen_output_layer_gets_no_gradient_and_no_grad_mode_gives_the_same_loss():
    h, w, b, t = _inputs()
    w.requires_grad_(False)
    b.requires_grad_(False)
    loss = chunked_lm_loss_sum(h, w, b, t, 8)
    loss.backward()
    assert w.grad is None and b.grad is None and h.grad is not None
    want = F.cross_entropy(F.linear(h, w, b), t, reduction="sum")
    torch.testing.assert_close(h.grad, torch.autograd.grad(want, h)[0], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(chunked_lm_loss_sum(h, w, b, t, 8), want.detach(), rtol=1e-5, atol=1e-4)


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_autocast_computes_the_output_layer_in_the_autocast_dtype():
    h, w, b, t = _inputs(n=64, hidden=32, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.cross_entropy(F.linear(h, w, b), t, reduction="sum")  # what the model's head and loss compute
        got = chunked_lm_loss_sum(h, w, b, t, 16)
    fp32 = F.cross_entropy(F.linear(h, w, b), t, reduction="sum")
    assert got.dtype == torch.float32
    assert abs(got.item() - want.item()) < 0.05 * abs(want.item() - fp32.item()) + 1e-3 * abs(want.item())


@pytest.mark.parametrize("method", ["full", "lora"])
def test_training_with_the_chunked_loss_follows_the_full_loss(tiny_model, tmp_path, method, datasets, train_config, weights):
    src = tiny_model("llama")  # untied head
    runs = {}
    for mode in ("full", "chunked"):
        out = tmp_path / mode
        result = run_train(train_config(src, out, method=method, lm_loss=mode, max_steps=4, eval_every=2, lora_r=4), datasets=datasets())
        runs[mode] = (result, _log(out), weights(out))
    assert any("LM loss chunked" in n for n in runs["chunked"][0].notes)
    assert not any("LM loss chunked" in n for n in runs["full"][0].notes)
    full_log, chunked_log = runs["full"][1], runs["chunked"][1]
    assert [r["split"] for r in full_log] == [r["split"] for r in chunked_log]
    for a, b in zip(full_log, chunked_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
    for name, tensor in runs["full"][2].items():
        torch.testing.assert_close(runs["chunked"][2][name], tensor, rtol=1e-3, atol=1e-5)


def test_tied_embeddings_train_the_same_with_the_chunked_loss(tiny_model, tmp_path, datasets, train_config, weights):
    src = tiny_model("qwen2")  # tied input and output embeddings
    trained = {}
    for mode in ("full", "chunked"):
        run_train(train_config(src, tmp_path / mode, lm_loss=mode, max_steps=3), datasets=datasets())
        trained[mode] = weights(tmp_path / mode)
    for name, tensor in trained["full"].items():
        torch.testing.assert_close(trained["chunked"][name], tensor, rtol=1e-3, atol=1e-5)


def test_auto_chunks_only_large_logits(tiny_model, tmp_path, monkeypatch, datasets, train_config):
    src = tiny_model("llama")
    small = run_train(train_config(src, tmp_path / "a", max_steps=1), datasets=datasets())
    assert not any("LM loss chunked" in n for n in small.notes)  # 4 x 31 x 128 float32 logits: tiny
    monkeypatch.setattr(lm_loss, "AUTO_CHUNK_FROM_BYTES", 1000)
    large = run_train(train_config(src, tmp_path / "b", max_steps=1), datasets=datasets())
    assert any("LM loss chunked" in n for n in large.notes)


def test_a_head_that_transforms_the_logits_is_refused_or_left_alone(tiny_model, tmp_path, datasets, train_config):
    src = tiny_model("gemma2")  # final_logit_softcapping
    with pytest.raises(DowncycleError, match="--lm-loss chunked: .*final_logit_softcapping"):
        run_train(train_config(src, tmp_path / "a", lm_loss="chunked", max_steps=1), datasets=datasets())
    with pytest.raises(DowncycleError, match="--lm-loss chunked: distillation"):
        run_train(train_config(src, tmp_path / "b", method="distill", teacher=str(src), lm_loss="chunked", max_steps=1), datasets=datasets())


def test_the_probe_catches_a_head_it_does_not_know(tiny_model, tmp_path, monkeypatch, datasets, train_config):
    """A model whose loss is not body -> output layer (here: logits scaled in forward, under a config
    key the list does not name) fails the one-time probe: an error when asked for, the full loss on auto."""
    from transformers import LlamaForCausalLM

    real_forward = LlamaForCausalLM.forward

    def scaled(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        out.logits = out.logits * 0.5
        return out

    monkeypatch.setattr(LlamaForCausalLM, "forward", scaled)
    src = tiny_model("llama")
    with pytest.raises(DowncycleError, match="--lm-loss chunked: this model's loss is not"):
        run_train(train_config(src, tmp_path / "a", lm_loss="chunked", max_steps=1), datasets=datasets())
    monkeypatch.setattr(lm_loss, "AUTO_CHUNK_FROM_BYTES", 1000)
    result = run_train(train_config(src, tmp_path / "b", max_steps=1), datasets=datasets())
    assert not any("LM loss chunked" in n for n in result.notes)  # trained on the model's own (scaled) loss
