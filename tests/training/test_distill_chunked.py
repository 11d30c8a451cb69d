"""Chunked distillation (training/losses/distill_chunked.py): the loss and its gradients equal the unchunked
computation from whole logits, over the shared vocabulary too; training with it follows the same
trajectory as with the models' own logits; a pair it cannot split keeps the full loss."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from downcycle.errors import DowncycleError
from downcycle.training import run_train
from downcycle.training.losses.distill_chunked import ChunkedDistill, chunked_distill_sums
from downcycle.training.losses.kl import DISTILL_LOSSES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(n=37, hidden=16, vocab=50, t_vocab=50, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g).mul_(0.5).requires_grad_()
    b = torch.randn(vocab, generator=g).requires_grad_() if bias else None
    t_h, t_w = torch.randn(n, 24, generator=g), torch.randn(t_vocab, 24, generator=g).mul_(0.5)
    return h, w, b, t_h, t_w, torch.randint(0, min(vocab, t_vocab), (n,), generator=g)


@pytest.mark.parametrize("loss", sorted(DISTILL_LOSSES))
@pytest.mark.parametrize("rows", [1, 8, 37, 1000])  # one row, uneven chunks, exactly one chunk, larger than N
@pytest.mark.parametrize(("t_vocab", "vocab", "bias"), [(50, None, True), (50, None, False), (56, 48, True)])
def test_loss_and_gradients_equal_the_unchunked_computation(loss, rows, t_vocab, vocab, bias):
    h, w, b, t_h, t_w, t = _inputs(t_vocab=t_vocab, bias=bias)
    kd, temperature, alpha = DISTILL_LOSSES[loss], 2.0, 0.3
    params = [x for x in (h, w, b) if x is not None]
    logits, t_logits = F.linear(h, w, b), F.linear(t_h, t_w)  # (N, V), (N, V_t): whole
    nll = F.cross_entropy(logits, t, reduction="sum")
    keep = vocab or logits.shape[1]
    kl = kd(logits[:, :keep], t_logits[:, :keep], temperature)
    want = (1 - alpha) * nll + alpha * kl
    want_grads = torch.autograd.grad(want, params)
    got, got_nll, got_kl = chunked_distill_sums(h, w, b, lambda i, j: F.linear(t_h[i:j], t_w), t, kd, temperature, alpha, rows, vocab)
    assert not got_nll.requires_grad and not got_kl.requires_grad
    got_grads = torch.autograd.grad(got * 2.5, params)  # the incoming gradient scales them
    for a, e in ((got, want), (got_nll, nll), (got_kl, kl)):
        torch.testing.assert_close(a, e.detach(), rtol=1e-5, atol=1e-4)
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got, 2.5 * g_want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # evaluation: the same sums, no autograd Function
        again = chunked_distill_sums(h, w, b, lambda i, j: F.linear(t_h[i:j], t_w), t, kd, temperature, alpha, rows, vocab)
    torch.testing.assert_close(again[0], want.detach(), rtol=1e-5, atol=1e-4)


def test_a_frozen_output_layer_gets_no_gradient():
    h, w, b, t_h, t_w, t = _inputs()
    w.requires_grad_(False)
    b.requires_grad_(False)
    total, _, _ = chunked_distill_sums(h, w, b, lambda i, j: F.linear(t_h[i:j], t_w), t, DISTILL_LOSSES["forward_kl"], 2.0, 0.5, 8)
    total.backward()
    assert w.grad is None and b.grad is None and h.grad is not None


def _models(tiny_model):
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tiny_model("llama")).eval()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model("llama", num_hidden_layers=8, seed=3)).eval().requires_grad_(False)
    return student, teacher


def test_the_method_chunked_equals_the_method_on_whole_logits_with_every_gradient(tiny_model):
    from downcycle.training.methods import DistillMethod

    student, teacher = _models(tiny_model)
    batch = {"input_ids": torch.randint(3, 128, (3, 20), generator=torch.Generator().manual_seed(1))}
    results = {}
    for mode in ("full", "chunked"):
        method = DistillMethod()
        method.attach(teacher, loss="forward_kl", alpha=0.4, temperature=2.0)
        if mode == "chunked":
            method.chunked = ChunkedDistill.build(student, teacher, method.kd, 2.0, 0.4)
            method.chunked.rows = 7  # several uneven chunks of the 3 x 19 positions
        student.zero_grad(set_to_none=True)
        out = method.loss(student, batch)
        out.total.backward()
        results[mode] = (out, {n: p.grad.clone() for n, p in student.named_parameters()})
    (full, full_grads), (chunked, chunked_grads) = results["full"], results["chunked"]
    assert chunked.tokens == full.tokens == 3 * 19
    for key in ("lm", "kl"):
        torch.testing.assert_close(chunked.parts[key], full.parts[key], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(chunked.total, full.total, rtol=1e-5, atol=1e-4)
    for name, grad in full_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_training_chunked_follows_training_on_whole_logits(tiny_model, tmp_path, datasets, train_config, weights):
    src, teacher = tiny_model("llama"), tiny_model("llama", num_hidden_layers=8, seed=3)
    runs = {}
    for mode in ("full", "auto"):
        out = tmp_path / mode
        result = run_train(train_config(src, out, method="distill", teacher=str(teacher), lm_loss=mode, max_steps=4, eval_every=2),
                           datasets=datasets())
        runs[mode] = (result, _log(out), weights(out))
    assert any("distillation chunked" in n for n in runs["auto"][0].notes)
    assert not any("distillation chunked" in n for n in runs["full"][0].notes)
    full_log, chunked_log = runs["full"][1], runs["auto"][1]
    assert [(r["step"], r["split"]) for r in full_log] == [(r["step"], r["split"]) for r in chunked_log]
    for a, b in zip(full_log, chunked_log):
        for key in ("loss", "lm_loss", "kl"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (key, a, b)
    for name, tensor in runs["full"][2].items():
        torch.testing.assert_close(runs["auto"][2][name], tensor, rtol=1e-3, atol=1e-5)


def test_a_teacher_it_cannot_split_keeps_the_full_loss_or_is_refused_when_asked(tiny_model, tmp_path, datasets, train_config):
    src, teacher = tiny_model("llama"), tiny_model("gemma2")  # the teacher's logits are soft-capped
    result = run_train(train_config(src, tmp_path / "a", method="distill", teacher=str(teacher), max_steps=1), datasets=datasets())
    assert not any("distillation chunked" in n for n in result.notes)
    with pytest.raises(DowncycleError, match="--lm-loss chunked: distillation .* the teacher: .*final_logit_softcapping"):
        run_train(train_config(src, tmp_path / "b", method="distill", teacher=str(teacher), lm_loss="chunked", max_steps=1),
                  datasets=datasets())
