"""Layer replacement (LLM-Streamline, Chen et al., arXiv 2403.19135): a gap of dropped layers
replaced by ONE decoder layer, trained alone to map the states entering the gap to the states leaving
it, on reference states computed once and cached. A step costs one layer's forward and backward
(plus the frozen final norm and output layer for the ``kl`` loss), not the model's.

The layer starts as a copy of one of the gap's own layers (``init``: its last, by default; its first)
and sits at that layer's place, so a per-layer config field (attention type, window) is that layer's. It is
called with the arguments the model itself passed the layer at its place (position embeddings,
masks), captured, never re-derived. Losses:

- ``mse``: mean squared error between the layer's output and the state leaving the gap;
- ``cosine``: 1 − cosine similarity per token (blind to the norm of the state);
- ``kl``: for the tail gap only, KL(reference ‖ model) of the next-token distributions that the
  frozen final norm and output layer give the two states. SmolLM2's last states carry a few huge
  dimensions that dominate an MSE; the distributions weigh what the head reads (issue 29's trial:
  MSE left a held-out token KL of 10.4, this loss 2.5). A gap in the middle reaches the head only
  through the frozen layers after it, so ``kl`` there is refused.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import DowncycleError
from .gaps import Gap

__all__ = ["LOSSES", "ReplacementRun", "gap_loss", "train_replacement"]

LOSSES = ("auto", "mse", "cosine", "kl")


def resolve_loss(loss: str, gap: Gap) -> str:
    if loss == "auto":
        return "kl" if gap.tail else "mse"
    if loss == "kl" and not gap.tail:
        raise DowncycleError(f"--loss kl: gap {gap.name} is not the tail (it reaches the head only through the frozen layers after it); "
                             "use mse or cosine")
    return loss


@dataclass
class ReplacementRun:
    """One gap's replacement: its cached states (per batch) and the training's record."""

    gap: Gap
    loss: str
    inputs: list[Any] = field(default_factory=list)  # (B, S, d) float32 per batch
    targets: list[Any] = field(default_factory=list)
    call: tuple[tuple, dict] = ((), {})  # the arguments besides the input the model calls the layer at its place with
    report: dict[str, Any] = field(default_factory=dict)


def _tensor(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out


def gap_loss(kind: str, out: Any, target: Any, head: tuple[Any, Any] | None, positions: Any = None) -> Any:
    """The loss of ``out`` against ``target`` ((B, S, d) states), mean over tokens; ``kl`` only at ``positions``
    (indices into the B·S flattened tokens) when given: the output layer is most of the cost of a step."""
    import torch
    import torch.nn.functional as F

    if kind == "mse":
        return F.mse_loss(out.float(), target.float())
    if kind == "cosine":
        return (1 - F.cosine_similarity(out.float(), target.float(), dim=-1)).mean()
    norm, lm_head = head
    if positions is not None:
        out, target = out.reshape(-1, out.shape[-1])[positions], target.reshape(-1, target.shape[-1])[positions]
    with torch.no_grad():
        teacher = F.log_softmax(lm_head(norm(target)).float(), dim=-1)
    student = F.log_softmax(lm_head(norm(out)).float(), dim=-1)
    return F.kl_div(student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1]), log_target=True,
                    reduction="batchmean")


def _held_out(run: ReplacementRun, layer: Any, head: Any, autocast: Any) -> dict[str, float]:
    """Mean loss (and MSE) on the held-out batches: the last tenth of them, at least one."""
    import torch

    n = len(run.inputs)
    val = range(n - max(1, n // 10), n) if n > 1 else range(n)
    totals = {"loss": 0.0, "mse": 0.0}
    with torch.no_grad(), autocast():
        for i in val:
            out = _tensor(layer(run.inputs[i], *run.call[0], **run.call[1]))
            totals["loss"] += float(gap_loss(run.loss, out, run.targets[i], head))
            totals["mse"] += float(gap_loss("mse", out, run.targets[i], None))
    return {k: v / len(val) for k, v in totals.items()}


def train_replacement(run: ReplacementRun, source_layer: Any, head: tuple[Any, Any] | None, *, epochs: int, lr: float,
                      seed: int, precision: str, kl_fraction: float = 1.0, echo: Any = None) -> Any:
    """Train a copy of ``source_layer`` on ``run``'s cached batches (all but the held-out tenth), AdamW with a
    cosine schedule from ``lr`` (5% linear warm-up); returns the trained layer. Fills ``run.report``.

    ``kl_fraction``: the share of a batch's token positions (drawn afresh each step) that the ``kl`` loss
    scores: the layer runs on every token, the output layer only on those."""
    import contextlib

    import torch

    torch.manual_seed(seed)
    layer = copy.deepcopy(source_layer).float()
    layer.eval()  # no dropout: the replacement is trained as it will run
    for p in layer.parameters():
        p.requires_grad_(True)
    if head is not None:
        for p in [*head[0].parameters(), *head[1].parameters()]:
            p.requires_grad_(False)
    device = next(layer.parameters()).device
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    n = len(run.inputs)
    train = list(range(n - max(1, n // 10))) if n > 1 else [0]
    identity_mse = float(gap_loss("mse", run.inputs[train[0]], run.targets[train[0]], None))  # the plain cut: the gap skipped
    before = _held_out(run, layer, head, autocast)
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.0)
    total = max(1, epochs * len(train))
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    order = random.Random(seed)
    tokens = run.inputs[0].shape[0] * run.inputs[0].shape[1]
    scored = max(1, round(kl_fraction * tokens)) if run.loss == "kl" and kl_fraction < 1 else None
    losses = []
    for epoch in range(epochs):
        batches = list(train)
        order.shuffle(batches)
        running = 0.0
        for i in batches:
            positions = None if scored is None else torch.randperm(tokens, device=device)[:scored]
            with autocast():
                loss = gap_loss(run.loss, _tensor(layer(run.inputs[i], *run.call[0], **run.call[1])), run.targets[i], head, positions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        losses.append(running / len(batches))
        if echo is not None:
            echo(f"gap {run.gap.name}: epoch {epoch + 1}/{epochs} train {run.loss} {losses[-1]:.4f}")
    after = _held_out(run, layer, head, autocast)
    run.report = {"gap": run.gap.name, "replaces": run.gap.size, "loss": run.loss, "train_batches": len(train),
                  "held_out_batches": n - len(train), "epochs": epochs, "lr": lr,
                  "kl_fraction": kl_fraction if run.loss == "kl" else None, "train_loss_per_epoch": losses,
                  "held_out_before": before, "held_out_after": after, "first_batch_identity_mse": identity_mse}
    return layer
