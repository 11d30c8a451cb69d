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

With a reference model, every batch also runs through the reference, and at each scored position
the KL(reference‖model) of the two next-token distributions is summed per document, the
log-probabilities a chunk of rows at a time (:func:`downcycle.output_layer.position_nll_kl`): the
same tokens, windows and context as the NLL, whose value does not change (bit for bit, unless the
reference needs its own logits where the model does not, which makes the batches smaller). Layer by
layer (:mod:`.layerwise_loss`) the reference runs so too, and the figures are the same.

Across processes (:mod:`.distributed`) every process makes the same pools and batches and scores
every N-th batch; each batch's sums are gathered and added in the order one process adds them (per
pool, then pools; a document's KL window by window), so the totals are the same to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..architecture import loaded_text_config
from ..errors import DowncycleError
from ..output_layer import LOGIT_BYTES, checked_split, position_nll, position_nll_kl
from .distributed import ONE_PROCESS, Processes
from .metrics import ratio_stderr

__all__ = ["BATCH_TOKENS", "MAX_PADDING", "POOL_BATCHES", "BatchSum", "LossTotals", "Scored", "batch_sum", "document_nll",
           "score_documents", "total_nll", "windows"]

BATCH_TOKENS = 8192  # input tokens per forward pass (rows x longest row): bounds the activations
POOL_BATCHES = 16  # windows sorted by length together: this many batches' worth of tokens
MAX_PADDING = 0.1  # the most padding a batch may hold, as a share of its tokens (a window runs alone if need be)
# One batch's sums: its total NLL (nats, float64) and, with a reference, each window's (document, KL) in batch order.
BatchSum = tuple[float, list[tuple[int, float]]]


@dataclass
class LossTotals:
    """Running sums for the loss task."""

    nll: float = 0.0  # nats
    tokens: int = 0
    bytes: int = 0
    documents: int = 0
    doc_tokens: list[int] = field(default_factory=list)  # scored tokens of each document
    kl: list[float] | None = None  # with a reference: total KL(reference‖model) of each document, nats

    def add_document(self, tokens: int, nbytes: int) -> None:
        self.tokens += tokens
        self.bytes += nbytes
        self.documents += 1
        self.doc_tokens.append(tokens)

    def metrics(self) -> dict[str, float]:
        out = {"nll": self.nll / self.tokens, "perplexity": math.exp(self.nll / self.tokens)}
        if self.bytes:
            out["bits_per_byte"] = self.nll / (math.log(2) * self.bytes)
        return out

    def kl_ref(self) -> tuple[float, float | None]:
        """KL(reference‖model) per token: total KL over total tokens, and its standard error over documents."""
        assert self.kl is not None and len(self.kl) == len(self.doc_tokens), "KL of every document"
        return sum(self.kl) / self.tokens, ratio_stderr(self.kl, self.doc_tokens)


@dataclass
class Scored:
    """What :func:`score_documents` sums."""

    nll: float  # nats, over every document
    kl: list[float] | None  # with a reference: per document, KL(reference‖model) summed over its tokens (nats)


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
    return score_documents(model, documents, window, stride, batch_tokens=batch_tokens, on_scored=on_scored).nll


def score_documents(model: Any, documents: Iterable[list[int]], window: int, stride: int, *, batch_tokens: int = BATCH_TOKENS,
                    on_scored: Callable[[int], None] | None = None, reference: Any = None,
                    processes: Processes = ONE_PROCESS) -> Scored:
    """:func:`total_nll`, and with ``reference`` (a causal LM of the same vocabulary) the
    KL(reference‖model) at every scored token, summed per document (in the order of ``documents``).
    With several ``processes`` each scores its share of the batches, and every one returns the totals."""
    import torch

    documents_seen = 0

    def run() -> dict[tuple[int, int], BatchSum]:
        nonlocal documents_seen
        scorer = _scorer(model, reference, processes)
        pool, pooled = [], 0
        for d, ids in enumerate(documents):
            documents_seen = d + 1
            x = torch.tensor(ids, dtype=torch.long)
            for lo, s, e in windows(len(ids), window, stride):
                pool.append((x[lo : e - 1], x[s:e], d))  # (fed, targets, document): views
                pooled += e - 1 - lo
            if pooled >= POOL_BATCHES * batch_tokens:
                scorer.pool(pool, batch_tokens, on_scored)
                pool, pooled = [], 0
        scorer.pool(pool, batch_tokens, on_scored)
        return scorer.finish(on_scored)

    sums = processes.merge(run)
    return _totals(sums, documents_seen, reference is not None)


def _totals(sums: dict[tuple[int, int], BatchSum], documents: int, with_kl: bool) -> Scored:
    """The sums of every batch, keyed (pool, batch), added as one process adds them: each pool's
    batches in order from 0.0, then the pools in order; each document's KL window by window."""
    total, subtotal, current = 0.0, 0.0, None
    kl = [0.0] * documents
    for (p, _), (nll, parts) in sorted(sums.items()):
        if p != current:
            total, subtotal, current = total + subtotal, 0.0, p
        subtotal += nll
        for d, value in parts:
            kl[d] += value
    return Scored(total + subtotal, kl if with_kl else None)


def document_nll(model: Any, ids: list[int], window: int, stride: int) -> float:
    """Total NLL (nats) of ``ids[1:]`` given its predecessors: :func:`total_nll` of one document."""
    return total_nll(model, [ids], window, stride)


class _Scorer:
    """Summed NLL of batches of windows: the body and a chunked output layer, or the model's logits.
    ``pool`` scores a pool's batches (those of this process), ``finish`` returns their sums by (pool, batch)."""

    def __init__(self, model: Any, reference: Any = None, processes: Processes = ONE_PROCESS) -> None:
        self.model, self.reference, self.processes = model, reference, processes
        self.device = next(model.parameters()).device
        cfg = loaded_text_config(model.config)
        self.vocab = int(getattr(cfg, "vocab_size", 0) or 2**17)
        self.head: tuple[Any, Any] | None = None
        self.ref_head: tuple[Any, Any] | None = None
        self.checked = False
        self.sums: dict[tuple[int, int], BatchSum] = {}
        self.pools = self.batches = 0  # seen so far; batches are numbered over all pools, as processes share them out

    def pool(self, pool: list[tuple[Any, Any, int]], batch_tokens: int, on_scored: Callable[[int], None] | None) -> None:
        """Sum over ``pool``'s ``(fed, targets, document)`` windows, longest first, in batches of ``batch_tokens``."""
        import torch

        order = sorted(pool, key=lambda w: -len(w[0]))
        if order and not self.checked:  # once: probed on the longest window
            probe = torch.cat([order[0][0], order[0][1][-1:]])
            self.head, self.checked = checked_split(self.model, probe), True
            if self.reference is not None:
                self.ref_head = checked_split(self.reference, probe)
        if self.head is None or (self.reference is not None and self.ref_head is None):
            # a model's own logits of every scored position of a batch are held at once
            batch_tokens = min(batch_tokens, max(1, LOGIT_BYTES // (4 * self.vocab)))
        p, self.pools = self.pools, self.pools + 1
        for b, batch in enumerate(window_batches(order, batch_tokens)):
            if self.processes.mine(self.batches):
                self.sums[(p, b)] = self._sum(batch)
            self.batches += 1
            if on_scored is not None:  # with several processes: as if all kept this one's pace
                on_scored(sum(len(t) for _, t, _ in batch))

    def finish(self, on_scored: Callable[[int], None] | None) -> dict[tuple[int, int], BatchSum]:
        return self.sums

    def _sum(self, batch: list[tuple[Any, Any, int]]) -> BatchSum:
        """The float64 sum of the float32 NLL of every target of ``batch``; with a reference, each
        window's KL summed over its targets."""
        import torch

        args = [t.to(self.device) for t in batch_tensors(batch)]
        with torch.inference_mode():
            if self.reference is None:
                return batch_sum(batch, position_nll(self.model, self.head, *args), None)
            return batch_sum(batch, *position_nll_kl(self.model, self.head, self.reference, self.ref_head, *args))


def batch_sum(batch: list[tuple[Any, Any, int]], nll: Any, kl: Any) -> BatchSum:
    """``batch``'s sums from the ``(N,)`` float32 NLL and KL (None: no reference) of its targets, in
    :func:`batch_tensors`' order: the float64 NLL sum and each window's (document, KL sum)."""
    import torch

    parts: list[tuple[int, float]] = []
    if kl is not None:
        kl, start = kl.double().cpu(), 0
        for _, targets, d in batch:
            parts.append((d, float(kl[start : start + len(targets)].sum())))
            start += len(targets)
    return float(nll.sum(dtype=torch.float64)), parts


def window_batches(order: list[tuple[Any, Any, int]], batch_tokens: int) -> Iterable[list[tuple[Any, Any, int]]]:
    """``order``'s windows (longest first) cut into batches of at most ``batch_tokens`` input tokens,
    at most ``MAX_PADDING`` of them padding."""
    i = 0
    while i < len(order):
        width, j, real = len(order[i][0]), i + 1, len(order[i][0])  # the batch's row length, its end, its real tokens
        while j < len(order) and (j - i + 1) * width <= batch_tokens and \
                real + len(order[j][0]) >= (1 - MAX_PADDING) * (j - i + 1) * width:
            real, j = real + len(order[j][0]), j + 1
        yield order[i:j]
        i = j


def batch_tensors(batch: list[tuple[Any, Any, int]]) -> tuple[Any, Any, Any, Any]:
    """``(ids (B, L), row, col, target (N,))``: the windows right-padded (no scored position sees the
    padding) and the positions that predict each target."""
    import torch

    B, L = len(batch), len(batch[0][0])
    ids = torch.zeros(B, L, dtype=torch.long)
    rows, cols = [], []
    for b, (fed, targets, _) in enumerate(batch):
        ids[b, : len(fed)] = fed
        rows.append(torch.full((len(targets),), b, dtype=torch.long))
        cols.append(torch.arange(len(fed) - len(targets), len(fed)))
    return ids, torch.cat(rows), torch.cat(cols), torch.cat([t for _, t, _ in batch])


def _scorer(model: Any, reference: Any, processes: Processes) -> Any:
    """The in-memory scorer, or the layer-wise one (run in one process: refused across several)."""
    from .layerwise_target import as_target

    target = as_target(model)
    if target is not None:
        from .layerwise_loss import LayerwiseScorer

        return LayerwiseScorer(target, reference)
    import torch

    if reference is not None and not isinstance(reference, torch.nn.Module):
        raise DowncycleError("the reference runs layer by layer, so must the model (run both the same way)")
    return _Scorer(model, reference, processes)
