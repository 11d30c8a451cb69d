"""The ``loss`` task of a model run one decoder layer at a time (:mod:`.layerwise_target`): the
windows and batches :mod:`.perplexity` makes, queued, then every batch through layer 0, layer 1,
...; the last layer's states go through the model's own final norm and output layer at the scored
positions only. The same batches, the same sums in the same order: the same figures as in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..output_layer import rows_nll
from .layerwise_target import LayerwiseTarget

__all__ = ["LayerwiseScorer"]


class LayerwiseScorer:
    """:class:`~downcycle.evaluation.perplexity._Scorer`'s interface: ``pool`` queues, ``finish`` runs."""

    def __init__(self, target: LayerwiseTarget) -> None:
        self.target = target
        self.norm, self.head = target.scoring()
        self.pools: list[list[list[tuple[Any, Any, int]]]] = []

    def pool(self, pool: list[tuple[Any, Any, int]], batch_tokens: int, on_scored: Callable[[int], None] | None) -> None:
        from .perplexity import window_batches

        self.pools.append(list(window_batches(sorted(pool, key=lambda w: -len(w[0])), batch_tokens)))

    def finish(self, on_scored: Callable[[int], None] | None) -> dict[tuple[int, int], tuple[float, list]]:
        """Every batch's NLL sum by (pool, batch), as the in-memory scorer returns them."""
        import torch

        from .perplexity import batch_tensors

        batches = [b for pool in self.pools for b in pool]
        if not batches:
            return {}
        device = self.target.lw.device
        tensors = [[t.to(device) for t in batch_tensors(b)] for b in batches]

        def nll(b: int, hidden: Any) -> float:
            _, row, col, target = tensors[b]
            return float(rows_nll(self.norm(hidden)[row, col], self.head, target).sum(dtype=torch.float64))

        with torch.inference_mode():
            sums = self.target.finals([{"input_ids": t[0]} for t in tensors], nll)
        if on_scored is not None:
            on_scored(sum(int(t[3].numel()) for t in tensors))
        keys = [(p, b) for p, pool in enumerate(self.pools) for b in range(len(pool))]
        return {key: (value, []) for key, value in zip(keys, sums)}
