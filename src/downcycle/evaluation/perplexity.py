"""Held-out language modelling: total NLL, perplexity and bits per byte, with a sliding window.

A document's tokens ``t_1..t_n`` are preceded by a prefix token (BOS, else EOS), so that every
token, the first included, is predicted and every byte of the text is accounted for. Targets are
scored in chunks of ``stride`` tokens; each chunk sees up to ``window`` tokens of input, so every
target after the first window has at least ``window - stride`` tokens of context. With
``stride >= n`` (a document that fits the window) this is one forward pass over the whole
document. Sums over sums: total NLL in nats over all tokens and all documents, divided once::

    nll = sum(NLL) / tokens      perplexity = exp(nll)      bits_per_byte = sum(NLL) / (ln 2 * bytes)

How. Every window is an independent forward pass, so the windows of many documents run together:
a pool of windows (``POOL_BATCHES`` batches' worth) is sorted by length, longest first, and cut into
batches of at most ``BATCH_TOKENS`` input tokens (rows x longest row) of which at most ``MAX_PADDING``
are padding (a window unlike its neighbours runs alone), each row padded on the right.
Causal attention never lets a position see a later one, so the padding changes no scored position
and needs no mask. The body's hidden states of the scored positions only go through the output
layer, ``LOGIT_BYTES`` of float32 logits at a time (:mod:`downcycle.output_layer`); a model whose
logits are not its body's states through one linear layer (softcapping, a wrapped head) uses its
own logits of the scored positions instead, in batches sized so those logits stay within
``LOGIT_BYTES`` (one row at least). Each token's NLL is float32, their sum float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..architecture import loaded_text_config
from ..output_layer import LOGIT_BYTES, checked_split, position_nll

__all__ = ["BATCH_TOKENS", "MAX_PADDING", "POOL_BATCHES", "LossTotals", "document_nll", "total_nll", "windows"]

BATCH_TOKENS = 8192  # input tokens per forward pass (rows x longest row): bounds the activations
POOL_BATCHES = 16  # windows sorted by length together: this many batches' worth of tokens
MAX_PADDING = 0.1  # the most padding a batch may hold, as a share of its tokens (a window runs alone if need be)


@dataclass
class LossTotals:
    """Running sums for the loss task."""

    nll: float = 0.0  # nats
    tokens: int = 0
    bytes: int = 0
    documents: int = 0

    def add_document(self, tokens: int, nbytes: int) -> None:
        self.tokens += tokens
        self.bytes += nbytes
        self.documents += 1

    def metrics(self) -> dict[str, float]:
        out = {"nll": self.nll / self.tokens, "perplexity": math.exp(self.nll / self.tokens)}
        if self.bytes:
            out["bits_per_byte"] = self.nll / (math.log(2) * self.bytes)
        return out


def windows(n_inputs: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Chunks of a sequence ``x_0..x_{m-1}`` (``m = n_inputs``) whose targets are ``x_1..x_{m-1}``.

    Returns:
        (lo, s, e): feed ``x[lo:e-1]`` (at most ``window`` tokens) and score targets ``x[s:e]``, which
        the last ``e - s`` positions fed predict.
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    out = []
    for s in range(1, n_inputs, stride):
        e = min(s + stride, n_inputs)
        out.append((max(0, e - 1 - window), s, e))
    return out


def total_nll(model: Any, documents: Iterable[list[int]], window: int, stride: int, *,
              batch_tokens: int = BATCH_TOKENS, on_scored: Callable[[int], None] | None = None) -> float:
    """Total NLL (nats) of every document's ``ids[1:]`` given its predecessors, in sliding windows.

    Args:
        model: a causal LM (eval mode).
        documents: token id lists, each with the prefix token first; read as the pools fill.
        window: most tokens fed in one forward pass (at most the model's maximum length).
        stride: targets scored per window (``<= window``).
        batch_tokens: most input tokens per forward pass (a longer window runs alone).
        on_scored: called with the number of targets of each batch once it is scored.
    """
    import torch

    scorer = _Scorer(model)
    total, pool, pooled = 0.0, [], 0
    for ids in documents:
        x = torch.tensor(ids, dtype=torch.long)
        for lo, s, e in windows(len(ids), window, stride):
            pool.append((x[lo : e - 1], x[s:e]))  # (fed, targets): views
            pooled += e - 1 - lo
        if pooled >= POOL_BATCHES * batch_tokens:
            total += scorer.pool(pool, batch_tokens, on_scored)
            pool, pooled = [], 0
    return total + scorer.pool(pool, batch_tokens, on_scored)


def document_nll(model: Any, ids: list[int], window: int, stride: int) -> float:
    """Total NLL (nats) of ``ids[1:]`` given its predecessors: :func:`total_nll` of one document."""
    return total_nll(model, [ids], window, stride)


class _Scorer:
    """Summed NLL of batches of windows: the body and a chunked output layer, or the model's logits."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        cfg = loaded_text_config(model.config)
        self.vocab = int(getattr(cfg, "vocab_size", 0) or 2**17)
        self.head: tuple[Any, Any] | None = None
        self.checked = False

    def pool(self, pool: list[tuple[Any, Any]], batch_tokens: int, on_scored: Callable[[int], None] | None) -> float:
        """Sum over ``pool``'s ``(fed, targets)`` windows, longest first, in batches of ``batch_tokens``."""
        import torch

        order = sorted(pool, key=lambda w: -len(w[0]))
        if order and not self.checked:  # once: probed on the longest window
            self.head, self.checked = checked_split(self.model, torch.cat([order[0][0], order[0][1][-1:]])), True
        if self.head is None:  # the model's own logits of every scored position of a batch are held at once
            batch_tokens = min(batch_tokens, max(1, LOGIT_BYTES // (4 * self.vocab)))
        total, i = 0.0, 0
        while i < len(order):
            width, j, real = len(order[i][0]), i + 1, len(order[i][0])  # the batch's row length, its end, its real tokens
            while j < len(order) and (j - i + 1) * width <= batch_tokens and \
                    real + len(order[j][0]) >= (1 - MAX_PADDING) * (j - i + 1) * width:
                real, j = real + len(order[j][0]), j + 1
            batch, i = order[i:j], j
            total += float(self._nll(batch).sum(dtype=torch.float64))
            if on_scored is not None:
                on_scored(sum(len(t) for _, t in batch))
        return total

    def _nll(self, batch: list[tuple[Any, Any]]) -> Any:
        """``(N,)`` float32 NLL of every target of ``batch``, in batch order."""
        import torch

        B, L = len(batch), len(batch[0][0])
        ids = torch.zeros(B, L, dtype=torch.long)  # right padding: no scored position sees it
        rows, cols = [], []
        for b, (fed, targets) in enumerate(batch):
            ids[b, : len(fed)] = fed
            rows.append(torch.full((len(targets),), b, dtype=torch.long))
            cols.append(torch.arange(len(fed) - len(targets), len(fed)))
        row, col, target = torch.cat(rows), torch.cat(cols), torch.cat([t for _, t in batch])
        with torch.inference_mode():
            return position_nll(self.model, self.head, *(t.to(self.device) for t in (ids, row, col, target)))
