"""Learning-rate schedules (known values) and optimizer construction."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from downcycle.errors import DowncycleError
from downcycle.training.optim import build_optimizer, build_scheduler, lr_factor


def test_warmup_then_cosine_and_linear_known_values():
    # 4 warmup updates: 1/5, 2/5, 3/5, 4/5 of the peak; then decay over the remaining 10.
    assert [lr_factor(s, 14, 4, "cosine") for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr_factor(4, 14, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(9, 14, 4, "cosine") == pytest.approx(0.5)  # halfway: cos(pi/2)
    assert lr_factor(9, 14, 4, "linear") == pytest.approx(0.5)
    assert lr_factor(13, 14, 4, "linear") == pytest.approx(0.1)
    assert lr_factor(13, 14, 4, "constant") == 1.0


def test_scheduler_drives_the_optimizer_lr_and_round_trips_its_state():
    p = torch.nn.Parameter(torch.zeros(3, 3))
    opt = build_optimizer("adamw", [p], lr=0.1, weight_decay=0.0)
    sched = build_scheduler(opt, total_steps=10, warmup_steps=2, schedule="linear")
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * lr_factor(s, 10, 2, "linear") for s in range(5)])
    opt2 = build_optimizer("adamw", [p], lr=0.1, weight_decay=0.0)
    sched2 = build_scheduler(opt2, total_steps=10, warmup_steps=2, schedule="linear")
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_weight_decay_skips_vectors_and_nothing_to_train_is_an_error():
    w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer("adamw", [w, b], lr=1e-3, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    with pytest.raises(DowncycleError, match="nothing to train"):
        build_optimizer("adamw", [torch.nn.Parameter(torch.zeros(2), requires_grad=False)], 1e-3, 0.0)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_8bit_optimizer_without_bitsandbytes_is_a_one_line_error():
    with pytest.raises(DowncycleError, match="needs bitsandbytes"):
        build_optimizer("paged_adamw_32bit", [torch.nn.Parameter(torch.zeros(2, 2))], 1e-3, 0.0)
