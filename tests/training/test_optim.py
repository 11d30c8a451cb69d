"""Learning-rate schedules (known values) and optimizer construction."""

from __future__ import annotations

import importlib.util
import os
import sys

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


def test_8bit_optimizer_without_bitsandbytes_is_a_one_line_error(monkeypatch):
    for name in ("bitsandbytes", "bitsandbytes.optim"):  # import -> ImportError, installed or not
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(DowncycleError, match="needs bitsandbytes"):
        build_optimizer("paged_adamw_32bit", [torch.nn.Parameter(torch.zeros(2, 2))], 1e-3, 0.0)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None and not os.environ.get("CI"),
                    reason="bitsandbytes is not installed (the dev extra has it, so CI runs this)")
def test_8bit_adamw_steps_on_the_cpu_close_to_adamw():
    p8, p32 = (torch.nn.Parameter(torch.linspace(-1, 1, 64 * 64).reshape(64, 64)) for _ in range(2))
    opts = [build_optimizer(name, [p], lr=1e-2, weight_decay=0.0) for name, p in (("adamw_8bit", p8), ("adamw", p32))]
    for _ in range(3):
        for p, opt in zip((p8, p32), opts):
            p.grad = torch.cos(torch.arange(p.numel(), dtype=torch.float32)).reshape(p.shape)
            opt.step()
    moved = (p32 - torch.linspace(-1, 1, 64 * 64).reshape(64, 64)).abs()
    assert moved.min() > 0.02  # Adam moves every weight by about lr per step
    torch.testing.assert_close(p8, p32, rtol=0, atol=5e-3)  # 8-bit moments: the same update up to their rounding (2e-3 here)
