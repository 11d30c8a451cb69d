"""Distillation losses: a registry from name to a function of student and teacher logits.

Every loss returns a **sum over tokens** (not a mean), so the loop can divide once by the global
token count (sums over sums). Temperature scaling follows Hinton et al., "Distilling the Knowledge in
a Neural Network" (2015): both distributions are softened by ``T`` and the KL term is multiplied by
``T**2`` so its gradient scale does not shrink as ``T`` grows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..output_layer import chunk_logits, linear_token_nll

__all__ = ["DISTILL_LOSSES", "chunked_lm_loss_sum", "forward_kl", "get_distill_loss", "lm_loss_sum", "reverse_kl"]


def lm_loss_sum(logits: Any, input_ids: Any) -> tuple[Any, int]:
    """Summed next-token cross entropy of a causal LM on packed sequences.

    Args:
        logits: ``(B, T-1, V)`` scores of the positions that have a next token (see
            :func:`downcycle.training.lm_loss.forward_logits`), or ``(B, T, V)`` for all positions.
        input_ids: ``(B, T)`` tokens; the labels are the same tokens shifted left by one.

    Returns:
        The summed NLL in float32 (a 0-d tensor) and the number of predicted tokens ``B * (T - 1)``.
    """
    import torch.nn.functional as F

    B, T = input_ids.shape
    assert logits.dim() == 3 and logits.shape[0] == B and logits.shape[1] in (T - 1, T), (logits.shape, input_ids.shape)
    if logits.shape[1] == T:
        logits = logits[:, :-1]  # (B, T-1, V); a copy below, avoided when the model computed only T-1 positions
    pred = logits.reshape(-1, logits.shape[-1]).float()  # (B*(T-1), V)
    target = input_ids[:, 1:].reshape(-1)  # (B*(T-1),)
    return F.cross_entropy(pred, target, reduction="sum"), target.numel()


def chunked_lm_loss_sum(hidden: Any, weight: Any, bias: Any, targets: Any, chunk_rows: int) -> Any:
    """Summed cross entropy of ``hidden @ weight.T + bias`` against ``targets``, never holding the
    whole ``(N, V)`` logits: the output layer and the loss run a chunk of rows at a time.

    With gradients needed, each chunk's gradient (softmax minus one-hot) is used at once, in the
    forward pass, for the gradients of ``hidden``, ``weight`` and ``bias`` (the latter two only if
    they require grad), so the backward pass only scales them; no chunk is computed twice. Peak
    memory for the loss is one chunk of logits plus the gradients themselves, instead of the logits,
    their log-softmax and its gradient for every position (at Llama-3's vocabulary and 8,192 tokens,
    ~4 GB each per sequence). The floating-point work is the same as the full computation's.

    Under autocast the output layer runs in the autocast dtype, as the model's own head would, and
    the loss is summed in float32. (torch 2.13's ``F.linear_cross_entropy`` does the same job, but
    returns the sum in its inputs' dtype, bf16 under autocast, and with its default chunking a step
    took 1.16x the time of full logits on this CPU, where this implementation's takes 0.93x:
    benchmarks/bench_lm_loss.py.)

    Args:
        hidden: ``(N, H)`` final hidden states (after the final norm) of the predicting positions.
        weight: ``(V, H)`` output layer; ``bias``: ``(V,)`` or None.
        targets: ``(N,)`` next-token ids.
        chunk_rows: rows per chunk.

    Returns:
        A 0-d float32 tensor: the summed NLL.
    """
    import torch

    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _chunked_function().apply(hidden, weight, bias, targets, chunk_rows)
    return linear_token_nll(hidden, weight, bias, targets, chunk_rows).sum()


@functools.cache
def _chunked_function() -> Any:
    """The autograd Function, built on first use (this module does not import torch at import time)."""
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, chunk_rows: int) -> Any:  # type: ignore[override]
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            need_b = bias is not None and ctx.needs_input_grad[2]
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
            grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, hidden.shape[0], chunk_rows):
                h, target = hidden[start : start + chunk_rows], targets[start : start + chunk_rows]
                logits = chunk_logits(h, weight, bias)  # (n, V) float32
                lse = torch.logsumexp(logits, -1)
                rows = torch.arange(h.shape[0], device=h.device)
                total += (lse - logits[rows, target]).sum()
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                grad[rows, target] -= 1.0  # d(sum NLL)/d(logits)
                if need_h:
                    grad_h[start : start + chunk_rows] = grad.to(weight.dtype) @ weight
                if need_w:
                    grad_w.add_(grad.t().to(h.dtype) @ h)
                if need_b:
                    grad_b.add_(grad.sum(0))
            ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in (grad_h, grad_w, grad_b)))
            ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
            ctx.needs = (need_h, need_w, need_b)
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:  # type: ignore[override]
            saved = ctx.saved_tensors
            out = [(g * grad_out).to(dt) if need else None for g, need, dt in zip(saved, ctx.needs, ctx.dtypes)]
            return out[0], out[1], out[2], None, None

    return ChunkedLinearCrossEntropy




def forward_kl(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T**2 * sum_tokens KL(p_teacher^T || p_student^T)``, the classic distillation loss.

    Args:
        student_logits, teacher_logits: ``(N, V)`` scores for the same ``N`` token positions.
        temperature: ``T > 0``; both logit tensors are divided by it before the softmax.

    Returns:
        A 0-d float32 tensor: the KL summed over the ``N`` positions, times ``T**2``. It is 0 when
        the two logit tensors are equal.
    """
    import torch.nn.functional as F

    assert student_logits.shape == teacher_logits.shape, (student_logits.shape, teacher_logits.shape)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    # KL(t || s) = sum_v p_t (log p_t - log p_s); log_target avoids exp/log round trips.
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="sum", log_target=True)
    return kl * temperature**2


def reverse_kl(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T**2 * sum_tokens KL(p_student^T || p_teacher^T)``: mode-seeking (as in MiniLLM, Gu et al. 2023)."""
    import torch.nn.functional as F

    assert student_logits.shape == teacher_logits.shape, (student_logits.shape, teacher_logits.shape)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_teacher, log_p_student, reduction="sum", log_target=True)
    return kl * temperature**2


# name -> loss(student_logits (N, V), teacher_logits (N, V), temperature) -> summed loss
DISTILL_LOSSES: dict[str, Callable[[Any, Any, float], Any]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
}


def get_distill_loss(name: str) -> Callable[[Any, Any, float], Any]:
    from ..errors import DowncycleError

    try:
        return DISTILL_LOSSES[name]
    except KeyError:
        raise DowncycleError(f"--distill-loss {name!r}: unknown (known: {', '.join(DISTILL_LOSSES)})") from None
