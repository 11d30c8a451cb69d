"""Held-out language modelling: total NLL, perplexity and bits per byte, with a sliding window.

A document's tokens ``t_1..t_n`` are preceded by a prefix token (BOS, else EOS), so that every
token, the first included, is predicted and every byte of the text is accounted for. Targets are
scored in chunks of ``stride`` tokens; each chunk sees up to ``window`` tokens of input, so every
target after the first window has at least ``window - stride`` tokens of context. With
``stride >= n`` (a document that fits the window) this is one forward pass over the whole
document. Sums over sums: total NLL in nats over all tokens and all documents, divided once::

    nll = sum(NLL) / tokens      perplexity = exp(nll)      bits_per_byte = sum(NLL) / (ln 2 * bytes)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["LossTotals", "document_nll", "windows"]


@dataclass
class LossTotals:
    """Running sums for the loss task."""

    nll: float = 0.0  # nats
    tokens: int = 0
    bytes: int = 0
    documents: int = 0

    def add(self, nll: float, tokens: int, nbytes: int) -> None:
        self.nll += nll
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
        (lo, s, e): feed ``x[lo:e-1]`` (at most ``window`` tokens) and score targets ``x[s:e]``.
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    out = []
    for s in range(1, n_inputs, stride):
        e = min(s + stride, n_inputs)
        out.append((max(0, e - 1 - window), s, e))
    return out


def document_nll(model: Any, ids: list[int], window: int, stride: int) -> float:
    """Total NLL (nats) of ``ids[1:]`` given its predecessors, in sliding windows.

    Args:
        model: a causal LM.
        ids: the token ids with the prefix token first, shape (m,).
        window: most tokens fed in one forward pass (at most the model's maximum length).
        stride: targets scored per window (``<= window``).
    """
    import torch

    device = next(model.parameters()).device
    x = torch.tensor(ids, dtype=torch.long, device=device)
    total = 0.0
    with torch.inference_mode():
        for lo, s, e in windows(len(ids), window, stride):
            inp = x[lo:e - 1].unsqueeze(0)  # (1, T)
            keep = torch.arange(s - 1 - lo, e - 1 - lo, device=device)  # positions predicting x[s:e]
            logits = model(input_ids=inp, logits_to_keep=keep).logits[0].float()  # (e - s, V)
            total -= float(logits.log_softmax(-1).gather(1, x[s:e, None]).double().sum())
    return total
