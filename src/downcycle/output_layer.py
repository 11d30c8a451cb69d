"""A causal LM's output layer on its own: whether a model's logits are its body's hidden states
through one linear layer, and that layer's per-token NLL a chunk of rows at a time, so that a large
vocabulary's logits are never held whole. Training's chunked LM loss (``--lm-loss``), the ``loss``
evaluation task and the SLEB search (``analyze --strategy nll``) all go through here.
"""

from __future__ import annotations

from typing import Any

from .architecture import logit_transform

__all__ = ["LOGIT_BYTES", "checked_split", "chunk_logits", "linear_token_nll", "position_nll", "split_head"]

LOGIT_BYTES = 64 * 2**20  # float32 logits held at once by position_nll's chunked output layer


def split_head(model: Any) -> tuple[Any, Any] | str:
    """``(body, output layer)`` of a causal LM whose logits are ``output_layer(body(...).last_hidden_state)``,
    or why it cannot be split that way."""
    import torch

    if hasattr(model, "module"):  # DDP / DeepSpeed: calling inside the wrapper would skip its gradient hooks
        return "the model is wrapped for distributed training"
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:
        return f"its output layer is a {type(head).__name__}, not a plain linear layer (e.g. LoRA or 4-bit on lm_head)"
    body = getattr(inner, "base_model", inner)
    if body is inner:
        return "no separate body module"
    # A head that softcaps or scales: the body's hidden states through the output layer would be a
    # different function, so the split is refused.
    transform = logit_transform(getattr(inner, "config", None))
    if transform:
        return f"its config transforms the logits ({transform})"
    return body, head


def chunk_logits(hidden: Any, weight: Any, bias: Any) -> Any:
    """``(n, V)`` float32 logits of ``hidden`` ``(n, H)``; under autocast the layer runs in the autocast
    dtype, as the model's own head would."""
    import torch.nn.functional as F

    return F.linear(hidden, weight, bias).float()


def linear_token_nll(hidden: Any, weight: Any, bias: Any, targets: Any, chunk_rows: int) -> Any:
    """Per-row cross entropy of ``hidden @ weight.T + bias`` against ``targets``, ``chunk_rows`` rows of
    logits at a time (no gradient: training's chunked loss has its own backward).

    Args:
        hidden: ``(N, H)`` final hidden states (after the final norm) of the predicting positions.
        weight: ``(V, H)`` output layer; ``bias``: ``(V,)`` or None.
        targets: ``(N,)`` next-token ids.
        chunk_rows: rows per chunk (peak memory: ``chunk_rows x V`` float32 logits).

    Returns:
        ``(N,)`` float32 NLL in nats, ``logsumexp(logits) - logits[target]`` per row.
    """
    import torch

    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_rows):
        logits = chunk_logits(hidden[start : start + chunk_rows], weight, bias)  # (n, V)
        target = targets[start : start + chunk_rows]
        out[start : start + chunk_rows] = torch.logsumexp(logits, -1) - logits.gather(1, target[:, None]).squeeze(1)
    return out


def position_nll(model: Any, split: tuple[Any, Any] | None, ids: Any, row: Any, col: Any, target: Any,
                 attention_mask: Any = None) -> Any:
    """NLL of ``target`` as predicted at positions ``(row, col)`` of ``ids``: only those positions
    go through the output layer.

    Args:
        model: a causal LM accepting ``logits_to_keep``.
        split: ``(body, output layer)`` from :func:`checked_split`: the body's hidden states of the
            positions through the output layer, ``LOGIT_BYTES`` of logits at a time; None: the
            model's own logits of the positions any row needs (``(B, K, V)`` at once).
        ids: ``(B, L)`` token ids (``attention_mask`` the same shape, or None).
        row, col, target: ``(N,)`` each.

    Returns:
        ``(N,)`` float32 NLL in nats.
    """
    import torch

    if split is not None:
        body, head = split
        hidden = body(input_ids=ids, attention_mask=attention_mask, use_cache=False).last_hidden_state  # (B, L, H)
        return linear_token_nll(hidden[row, col], head.weight, head.bias, target, max(1, LOGIT_BYTES // (4 * head.out_features)))
    keep = torch.unique(col)  # sorted
    logits = model(input_ids=ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
    picked = logits[row, torch.searchsorted(keep, col)].float()  # (N, V)
    return torch.logsumexp(picked, -1) - picked.gather(1, target[:, None]).squeeze(1)


def checked_split(model: Any, probe: Any) -> tuple[Any, Any] | None:
    """:func:`split_head` of ``model``, if the split's NLL is the model's own on ``probe`` (1-D token
    ids, at least 2; the first 33 are used), else None: a head the config does not reveal."""
    import torch

    split = split_head(model)
    if isinstance(split, str):
        return None
    ids = probe[:33].reshape(1, -1).to(next(model.parameters()).device)
    n = ids.shape[1] - 1
    row, col = torch.zeros(n, dtype=torch.long, device=ids.device), torch.arange(n, device=ids.device)
    with torch.inference_mode():
        want = position_nll(model, None, ids, row, col, ids[0, 1:]).sum()
        got = position_nll(model, split, ids, row, col, ids[0, 1:]).sum()
    return split if bool(torch.isclose(got, want, rtol=1e-3, atol=1e-4)) else None
