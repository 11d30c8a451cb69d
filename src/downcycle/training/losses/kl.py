"""Distillation losses: a registry from name to a function of student and teacher logits (the LM loss
is :mod:`.lm`'s).

Every loss returns a **sum over tokens** (not a mean), so the loop can divide once by the global
token count (sums over sums). Temperature scaling follows Hinton et al., "Distilling the Knowledge in
a Neural Network" (2015): both distributions are softened by ``T`` and the KL term is multiplied by
``T**2`` so its gradient scale does not shrink as ``T`` grows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DISTILL_LOSSES", "forward_kl", "get_distill_loss", "reverse_kl"]


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
    from ...errors import DowncycleError

    try:
        return DISTILL_LOSSES[name]
    except KeyError:
        raise DowncycleError(f"--distill-loss {name!r}: unknown (known: {', '.join(DISTILL_LOSSES)})") from None
