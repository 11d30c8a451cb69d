"""The LM loss, in one place: the summed next-token cross entropy of a causal LM, from the model's own
logits (:func:`lm_loss_sum`) or through its output layer and cross-entropy a chunk of positions at a
time (:func:`chunked_lm_loss_sum`, ``--lm-loss``), so that a large vocabulary's logits are never held
whole. Every training method's LM term, and validation, goes through :class:`LMLoss`; distillation's
chunked loss (:mod:`.distill_chunked`) computes the same term next to the KL.
"""

from __future__ import annotations

import functools
from typing import Any

from ...errors import DowncycleError
from ...output_layer import chunk_logits, linear_token_nll, split_head
from ...recipe import TrainConfig

__all__ = ["AUTO_CHUNK_FROM_BYTES", "CHUNK_BYTES", "LMLoss", "chunked_lm_loss_sum", "forward_logits", "lm_loss_sum", "split_head"]

# --lm-loss: float32 logits per chunk, and (auto) the micro-batch logits size from which to chunk
CHUNK_BYTES = 64 * 2**20
AUTO_CHUNK_FROM_BYTES = 2**30


def forward_logits(model: Any, batch: dict[str, Any]) -> Any:
    """``(B, T-1, V)`` logits of the positions of ``batch["input_ids"]`` ``(B, T)`` that have a next token.

    Models that accept ``logits_to_keep`` (most transformers causal LMs) apply the LM head to those
    ``T-1`` positions only, so the logits come out contiguous: no copy of the largest activation
    (and its gradient) to drop the last position, and ``1/T`` less head compute.
    """
    import torch

    ids = batch["input_ids"]
    if _accepts_logits_to_keep(model):
        keep = torch.arange(ids.shape[1] - 1, device=ids.device)
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
        if logits.shape[1] == ids.shape[1] - 1:
            return logits
    else:
        logits = model(input_ids=ids, use_cache=False).logits
    return logits[:, :-1]


_LOGITS_TO_KEEP: dict[type, bool] = {}


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    inner = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft
    cls = type(inner)
    if cls not in _LOGITS_TO_KEEP:
        try:
            _LOGITS_TO_KEEP[cls] = "logits_to_keep" in inspect.signature(inner.forward).parameters
        except (TypeError, ValueError):
            _LOGITS_TO_KEEP[cls] = False
    return _LOGITS_TO_KEEP[cls]


class LMLoss:
    """Summed next-token NLL of a batch: through the model's logits (full), or through the body's hidden
    states and a chunked output layer + cross-entropy, as :meth:`configure` decides."""

    def __init__(self) -> None:
        self._head: tuple[Any, Any, int] | None = None  # (body, output layer, rows per chunk)

    def configure(self, model: Any, config: TrainConfig, seq_len: int) -> str | None:
        """Choose how the LM loss is computed (``--lm-loss``); returns a note for the run's output.

        Raises:
            DowncycleError: ``--lm-loss chunked`` on a model or method it cannot serve.
        """
        self._head = None
        if config.lm_loss == "full":
            return None
        split = split_head(model)
        if isinstance(split, str):
            if config.lm_loss == "chunked":
                raise DowncycleError(f"--lm-loss chunked: {split}; use --lm-loss full")
            return None
        body, head = split
        vocab = head.out_features
        logits_bytes = config.micro_batch * (seq_len - 1) * vocab * 4
        if config.lm_loss == "auto" and logits_bytes < AUTO_CHUNK_FROM_BYTES:
            return None
        rows = max(1, CHUNK_BYTES // (vocab * 4))
        self._head = (body, head, rows)
        if not self._agrees(model, vocab, head.weight.device):
            if config.lm_loss == "chunked":
                raise DowncycleError("--lm-loss chunked: this model's loss is not its body's hidden states through its output "
                                     "layer (a probe gave a different loss); use --lm-loss full")
            self._head = None  # auto: a head this check does not know; the model's own loss it is
            return None
        return (f"LM loss chunked: the output layer and cross-entropy run a chunk of positions at a time "
                f"(a micro-batch's float32 logits would take {logits_bytes / 2**30:.1f} GiB)")

    def __call__(self, model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
        """Summed next-token NLL of ``batch`` and the number of predicted tokens."""
        ids = batch["input_ids"]
        if self._head is None:
            return lm_loss_sum(forward_logits(model, batch), ids)
        body, head, rows = self._head
        hidden = body(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
        nll = chunked_lm_loss_sum(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias, ids[:, 1:].reshape(-1), rows)
        return nll, ids.shape[0] * (ids.shape[1] - 1)

    def _agrees(self, model: Any, vocab: int, device: Any) -> bool:
        """Whether the chunked loss equals the model's own on a probe sequence (eval mode, no grad; the
        probe's tokens come from a private generator, so no RNG state is touched)."""
        import torch

        probe = {"input_ids": torch.randint(0, vocab, (1, 32), generator=torch.Generator().manual_seed(0)).to(device)}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                want, _ = lm_loss_sum(forward_logits(model, probe), probe["input_ids"])
                got, _ = self(model, probe)
        finally:
            model.train(was_training)
        return bool(torch.isclose(got, want, rtol=1e-4, atol=1e-3))


def lm_loss_sum(logits: Any, input_ids: Any) -> tuple[Any, int]:
    """Summed next-token cross entropy of a causal LM on packed sequences.

    Args:
        logits: ``(B, T-1, V)`` scores of the positions that have a next token (see
            :func:`downcycle.training.losses.lm.forward_logits`), or ``(B, T, V)`` for all positions.
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
