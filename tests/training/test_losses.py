"""Distillation and LM losses against hand computations."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from downcycle.training.losses.kl import DISTILL_LOSSES, forward_kl, reverse_kl
from downcycle.training.losses.lm import lm_loss_sum


def test_forward_kl_matches_a_hand_computation_with_temperature():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 2.5
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        for s, t in zip(s_row, t_row):
            p, q = math.exp(t / T) / zt, math.exp(s / T) / zs
            expected += p * math.log(p / q)
    expected *= T**2
    assert forward_kl(student, teacher, T).item() == pytest.approx(expected, rel=1e-6)
    # reverse KL swaps the roles
    assert reverse_kl(teacher, student, T).item() == pytest.approx(expected, rel=1e-6)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(6, 11)
    for loss in DISTILL_LOSSES.values():
        assert loss(logits, logits.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
        assert loss(logits, logits + torch.randn(6, 11), 3.0).item() > 1e-3


def test_lm_loss_sum_equals_transformers_mean_loss_times_tokens(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model("llama")).eval()
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
        total, tokens = lm_loss_sum(out.logits, ids)
    assert tokens == 2 * 8
    torch.testing.assert_close(total / tokens, out.loss, rtol=1e-5, atol=1e-6)


def test_distill_with_teacher_equal_to_student_has_zero_kl(tiny_model):
    from transformers import AutoModelForCausalLM

    from downcycle.training.methods import DistillMethod

    student = AutoModelForCausalLM.from_pretrained(tiny_model("llama")).eval()
    method = DistillMethod()
    method.attach(copy.deepcopy(student), "forward_kl", alpha=0.3, temperature=2.0)
    batch = {"input_ids": torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(1))}
    with torch.no_grad():
        out = method.loss(student, batch)
    assert out.parts["kl"].item() == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(out.total, 0.7 * out.parts["lm"])


def test_distill_loss_mixes_lm_and_kl_by_alpha(tiny_model):
    from transformers import AutoModelForCausalLM

    from downcycle.training.methods import DistillMethod

    student = AutoModelForCausalLM.from_pretrained(tiny_model("llama")).eval()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model("llama", num_hidden_layers=3)).eval()
    ids = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(2))
    method = DistillMethod()
    method.attach(teacher, "forward_kl", alpha=0.25, temperature=3.0)
    with torch.no_grad():
        out = method.loss(student, {"input_ids": ids})
        s, t = student(ids).logits[:, :-1].reshape(-1, 128), teacher(ids).logits[:, :-1].reshape(-1, 128)
        kl = (torch.softmax(t / 3, -1) * (torch.log_softmax(t / 3, -1) - torch.log_softmax(s / 3, -1))).sum() * 9
        nll = torch.nn.functional.cross_entropy(s, ids[:, 1:].reshape(-1), reduction="sum")
    assert out.tokens == 12
    torch.testing.assert_close(out.parts["kl"], kl, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.total, 0.75 * nll + 0.25 * kl, rtol=1e-4, atol=1e-4)
