"""Distillation a chunk of positions at a time: the student's and the teacher's output layers, the LM
loss and the KL run over a few hundred positions at once, so that the ``(batch, seq, vocab)`` float32
logits of either model, and their log-softmaxes and gradients, are never held whole.

The teacher runs its body once per micro-batch under ``torch.inference_mode``; its logits are made a
chunk at a time, next to the student's. Each chunk's loss is differentiated at once, in the forward
pass (as :func:`~downcycle.training.losses.lm.chunked_lm_loss_sum` does for the LM loss), so the backward
pass only scales the gradients of the student's hidden states and output layer; no chunk is computed
twice. The KL is any loss of the registry (:data:`~downcycle.training.losses.kl.DISTILL_LOSSES`), over
the first ``vocab`` logits when the two embeddings are padded to different sizes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ...output_layer import chunk_logits, split_head

__all__ = ["CHUNK_BYTES", "ChunkedDistill", "chunked_distill_sums"]

# float32 logits per chunk, of each model. Under 32 MiB, glibc's malloc serves a freed block again
# from its heap; larger blocks are mapped afresh and page-faulted at every use (its mmap threshold
# stops rising at 32 MiB). At SmolLM2's 49,152-token vocabulary, both output layers and the loss of
# 4 x 255 positions (forward and backward, bf16 autocast, one thread) took 2.1-2.6 CPU seconds in
# 160-row chunks, 3.8-4.1 in 341-row (64 MiB) chunks, 3.9-4.3 on whole logits (bench_precision.py --loss-only).
CHUNK_BYTES = 30 * 2**20


def chunked_distill_sums(hidden: Any, weight: Any, bias: Any, teacher_logits: Callable[[int, int], Any], targets: Any,
                         kd: Callable[[Any, Any, float], Any], temperature: float, alpha: float, chunk_rows: int,
                         vocab: int | None = None) -> tuple[Any, Any, Any]:
    """``(1 - alpha) * NLL + alpha * kd(student, teacher)``, summed over ``N`` positions, ``chunk_rows`` at a time.

    Args:
        hidden: ``(N, H)`` the student's final hidden states (after the final norm) of the predicting positions.
        weight: ``(V, H)`` the student's output layer; ``bias``: ``(V,)`` or None.
        teacher_logits: ``(start, stop) -> (stop - start, V_t)`` the teacher's logits of those rows, without gradient.
        targets: ``(N,)`` next-token ids.
        kd: a distillation loss of the registry, ``(student (n, V'), teacher (n, V'), T) -> sum``.
        temperature, alpha: as :class:`~downcycle.training.methods.DistillMethod`'s.
        chunk_rows: rows per chunk.
        vocab: the KL compares the first ``vocab`` logits of both (None: all; the sizes must then agree).

    Returns:
        ``(total, nll, kl)``, 0-d float32 tensors; only ``total`` carries a gradient.
    """
    import torch

    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (hidden, weight, bias)):
        return _function().apply(hidden, weight, bias, teacher_logits, targets, kd, temperature, alpha, chunk_rows, vocab)
    sums = torch.zeros(3, dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_rows):
        stop = min(start + chunk_rows, hidden.shape[0])
        logits = chunk_logits(hidden[start:stop], weight, bias)
        sums += torch.stack(_logits_loss(logits, teacher_logits(start, stop), targets[start:stop], kd, temperature, alpha, vocab))
    return sums[0], sums[1], sums[2]


def _logits_loss(logits: Any, t_logits: Any, target: Any, kd: Callable[[Any, Any, float], Any], temperature: float,
                 alpha: float, vocab: int | None) -> tuple[Any, Any, Any]:
    """``(total, nll, kl)`` of one chunk's ``(n, V)`` float32 student logits and ``(n, V_t)`` teacher logits."""
    import torch.nn.functional as F

    nll = F.cross_entropy(logits, target, reduction="sum")
    if vocab is not None:  # padding rows beyond the shared tokenizer's ids: left out of the KL
        logits, t_logits = logits[:, :vocab], t_logits[:, :vocab]
    assert logits.shape == t_logits.shape, (logits.shape, t_logits.shape)
    kl = kd(logits, t_logits, temperature)
    return (1.0 - alpha) * nll + alpha * kl, nll, kl


@functools.cache
def _function() -> Any:
    """The autograd Function, built on first use (this module does not import torch at import time)."""
    import torch
    import torch.nn.functional as F

    class ChunkedDistillation(torch.autograd.Function):
        """Per chunk: the student's logits, autograd over the loss of those logits alone (softmaxes,
        KL: elementwise), then the output layer's gradients as explicit matrix products into buffers
        reused by every chunk, in the dtype autocast would use. Allocating nothing of the size of the
        weight per chunk is what keeps small chunks cheap."""

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, teacher_logits: Any, targets: Any, kd: Any,  # type: ignore[override]
                    temperature: float, alpha: float, chunk_rows: int, vocab: int | None) -> Any:
            needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
            kind = hidden.device.type
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype  # of the products
            w = weight.to(dtype)  # a copy only under autocast, made once for all chunks
            b = None if bias is None else bias.to(dtype)
            grad_h = torch.empty_like(hidden) if needs[0] else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if needs[1] else None
            grad_b = torch.zeros_like(bias, dtype=torch.float32) if needs[2] else None
            product = torch.empty_like(weight, dtype=dtype) if needs[1] and dtype != torch.float32 else None
            sums = torch.zeros(3, dtype=torch.float32, device=hidden.device)
            # Operands are all in ``dtype`` already, so autocast (on for the teacher's logits) casts nothing here.
            for start in range(0, hidden.shape[0], chunk_rows):
                stop = min(start + chunk_rows, hidden.shape[0])
                h = hidden[start:stop].to(dtype)  # (n, H)
                logits = F.linear(h, w, b).float().requires_grad_()  # (n, V) float32, a leaf of the graph below
                t_logits = teacher_logits(start, stop)
                with torch.enable_grad():
                    parts = _logits_loss(logits, t_logits, targets[start:stop], kd, temperature, alpha, vocab)
                (g,) = torch.autograd.grad(parts[0], logits)  # (n, V) d(total)/d(logits)
                sums += torch.stack([p.detach() for p in parts])
                if needs[2]:
                    grad_b.add_(g.sum(0))
                g = g.to(dtype)
                if needs[0]:
                    grad_h[start:stop] = g @ w
                if needs[1] and product is None:
                    grad_w.addmm_(g.t(), h)
                elif needs[1]:
                    torch.mm(g.t(), h, out=product)
                    grad_w.add_(product)
            ctx.save_for_backward(*(x if x is not None else torch.empty(0) for x in (grad_h, grad_w, grad_b)))
            ctx.needs, ctx.dtypes = needs, (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
            total, nll, kl = sums[0].clone(), sums[1].clone(), sums[2].clone()
            ctx.mark_non_differentiable(nll, kl)
            return total, nll, kl

        @staticmethod
        def backward(ctx: Any, grad_total: Any, _grad_nll: Any, _grad_kl: Any) -> Any:  # type: ignore[override]
            out = [(g * grad_total).to(dt) if need else None for g, need, dt in zip(ctx.saved_tensors, ctx.needs, ctx.dtypes)]
            return out[0], out[1], out[2], None, None, None, None, None, None, None

    return ChunkedDistillation


class ChunkedDistill:
    """The chunked distillation of a student and a teacher whose logits are their bodies' last hidden
    states through one linear layer (:func:`~downcycle.output_layer.split_head`).

    ``shared_vocab``: the leading logits the KL compares when the two output layers differ in size
    (embeddings padded over one tokenizer, see :func:`downcycle.compat.check_distill`).
    """

    def __init__(self, student: tuple[Any, Any], teacher: tuple[Any, Any], kd: Callable[[Any, Any, float], Any],
                 temperature: float, alpha: float, shared_vocab: int | None = None) -> None:
        from ...errors import DowncycleError

        (self.body, self.head), (self.t_body, self.t_head) = student, teacher
        self.kd, self.temperature, self.alpha = kd, temperature, alpha
        s, t = self.head.out_features, self.t_head.out_features
        if s != t and (shared_vocab is None or shared_vocab > min(s, t)):
            raise DowncycleError(f"teacher and student disagree on the vocabulary ({t} vs {s} logits)")
        self.vocab = None if s == t else shared_vocab
        self.rows = max(1, CHUNK_BYTES // (4 * max(s, t)))

    @classmethod
    def build(cls, student: Any, teacher: Any, kd: Callable[[Any, Any, float], Any], temperature: float, alpha: float,
              shared_vocab: int | None = None) -> ChunkedDistill | str:
        """The chunked loss of the pair, or why a model of it cannot be split into body and output layer."""
        splits = []
        for who, model in (("the student", student), ("the teacher", teacher)):
            split = split_head(model)
            if isinstance(split, str):
                return f"{who}: {split}"
            splits.append(split)
        return cls(splits[0], splits[1], kd, temperature, alpha, shared_vocab)

    def __call__(self, batch: dict[str, Any]) -> tuple[Any, Any, Any, int]:
        """``(total, nll, kl, tokens)`` of ``batch`` (``input_ids`` ``(B, T)``), sums over its ``B * (T - 1)`` predicted tokens."""
        import torch

        ids = batch["input_ids"]
        hidden = self.body(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]  # (B, T-1, H)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        t_device = self.t_head.weight.device
        with torch.inference_mode():  # the teacher's body once; its logits a chunk at a time, below
            t_hidden = self.t_body(input_ids=ids.to(t_device), use_cache=False).last_hidden_state[:, :-1]
            t_hidden = t_hidden.reshape(-1, t_hidden.shape[-1])  # (B*(T-1), H_t)

        def teacher_logits(start: int, stop: int) -> Any:
            return chunk_logits(t_hidden[start:stop], self.t_head.weight, self.t_head.bias).to(hidden.device)

        total, nll, kl = chunked_distill_sums(hidden, self.head.weight, self.head.bias, teacher_logits, ids[:, 1:].reshape(-1),
                                              self.kd, self.temperature, self.alpha, self.rows, self.vocab)
        return total, nll, kl, ids.shape[0] * (ids.shape[1] - 1)

    def probe_disagrees(self, model: Any, full_loss: Callable[[dict[str, Any]], Any]) -> str | None:
        """Why this loss differs from ``full_loss`` (the same objective from the models' own logits) on a
        probe sequence, or None. Eval mode, no grad; the probe's tokens come from a private generator."""
        import torch

        vocab = min(self.head.out_features, self.t_head.out_features)
        probe = {"input_ids": torch.randint(0, vocab, (1, 33), generator=torch.Generator().manual_seed(0)).to(self.head.weight.device)}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                want, got = full_loss(probe), self(probe)[0]
        finally:
            model.train(was_training)
        return None if bool(torch.isclose(got, want, rtol=1e-4, atol=1e-3)) else "a probe gave a different loss than the models' own logits"
