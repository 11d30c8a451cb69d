"""A causal LM's output layer on its own: whether a model's logits are its body's hidden states
through one linear layer, and that layer's per-token NLL a chunk of rows at a time, so that a large
vocabulary's logits are never held whole. Training's chunked LM loss (``--lm-loss``), the ``loss``
evaluation task (and its KL against a reference model) and the SLEB search (``analyze --strategy
nll``) all go through here.
"""

from __future__ import annotations

from typing import Any

from .architecture import logit_transform
from .errors import DowncycleError

__all__ = ["LOGIT_BYTES", "checked_split", "chunk_logits", "linear_token_nll", "position_nll", "position_nll_kl", "rows_nll", "rows_nll_kl",
           "same_vocabulary", "split_head"]

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


def _scored_rows(model: Any, split: tuple[Any, Any] | None, ids: Any, row: Any, col: Any, attention_mask: Any = None) -> tuple[Any, Any]:
    """``(rows, head)``: the final hidden states ``(N, H)`` of positions ``(row, col)`` and the output
    layer (``split``), or the model's own float32 logits ``(N, V)`` of them and None."""
    import torch

    if split is not None:
        body, head = split
        hidden = body(input_ids=ids, attention_mask=attention_mask, use_cache=False).last_hidden_state  # (B, L, H)
        return hidden[row, col], head
    keep = torch.unique(col)  # sorted
    logits = model(input_ids=ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
    return logits[row, torch.searchsorted(keep, col)].float(), None  # (N, V)


def rows_nll(rows: Any, head: Any, target: Any) -> Any:
    """``(N,)`` float32 NLL of ``target`` from final hidden states ``rows`` through ``head`` (chunked),
    or, with ``head`` None, from ``rows`` that are already float32 logits ``(N, V)``."""
    import torch

    if head is not None:
        return linear_token_nll(rows, head.weight, head.bias, target, max(1, LOGIT_BYTES // (4 * head.out_features)))
    return torch.logsumexp(rows, -1) - rows.gather(1, target[:, None]).squeeze(1)


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
    return rows_nll(*_scored_rows(model, split, ids, row, col, attention_mask), target)


def position_nll_kl(model: Any, split: tuple[Any, Any] | None, reference: Any, reference_split: tuple[Any, Any] | None,
                    ids: Any, row: Any, col: Any, target: Any) -> tuple[Any, Any]:
    """:func:`position_nll` of ``model`` (the same computation, so the same values) and, at the same
    positions, KL(reference‖model) of the two next-token distributions (:func:`rows_nll_kl`).

    Args:
        reference, reference_split: the reference model (same vocabulary) and its split, as for ``model``.

    Returns:
        ``(N,)`` float32 NLL and ``(N,)`` float32 KL, in nats.
    """
    rows, head = _scored_rows(model, split, ids, row, col)
    ref_device = next(reference.parameters()).device
    ref_rows, ref_head = _scored_rows(reference, reference_split, *(t.to(ref_device) for t in (ids, row, col)))
    return rows_nll_kl(rows, head, ref_rows, ref_head, target)


def same_vocabulary(width: int, ref_width: int) -> None:
    """Refuses (:class:`DowncycleError`) a reference whose logits per token (``ref_width``) are not the model's (``width``)."""
    if width != ref_width:
        raise DowncycleError(f"the reference has {ref_width} logits per token, the model {width}: KL needs the same vocabulary")


def rows_nll_kl(rows: Any, head: Any, ref_rows: Any, ref_head: Any, target: Any) -> tuple[Any, Any]:
    """:func:`rows_nll` of ``rows`` and KL(reference‖model) of the two next-token distributions at the
    same positions, ``sum_v p_ref(v) (log p_ref(v) - log p_model(v))``, a chunk of rows at a time:
    neither model's full-vocabulary log-probabilities of all positions are held at once.

    Args:
        rows, head: the model's final hidden states ``(N, H)`` and output layer, or float32 logits
            ``(N, V)`` and None (as :func:`_scored_rows` returns them).
        ref_rows, ref_head: the reference's, the same way (same vocabulary; any device).
        target: ``(N,)`` next-token ids.

    Returns:
        ``(N,)`` float32 NLL and ``(N,)`` float32 KL, in nats, on ``rows``' device.
    """
    import torch

    nll = rows_nll(rows, head, target)

    def logits(x: Any, layer: Any) -> Any:
        return x if layer is None else chunk_logits(x, layer.weight, layer.bias)  # (n, V) float32

    width = head.out_features if head is not None else rows.shape[1]
    same_vocabulary(width, ref_head.out_features if ref_head is not None else ref_rows.shape[1])
    kl = torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device)
    chunk = max(1, LOGIT_BYTES // (4 * 4 * width))  # about four (n, V) float32 tensors live at once
    for start in range(0, rows.shape[0], chunk):
        stop = start + chunk
        log_q = logits(rows[start:stop], head).log_softmax(-1)  # (n, V): the model
        log_p = logits(ref_rows[start:stop], ref_head).to(log_q.device).log_softmax(-1)  # (n, V): the reference
        p = log_p.exp()
        kl[start:stop] = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)  # 0 log 0 = 0 (a token the reference rules out)
    return nll, kl


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
