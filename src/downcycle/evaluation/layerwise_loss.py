"""The ``loss`` task of a model run one decoder layer at a time (:mod:`downcycle.layerwise`): the
windows and batches :mod:`.perplexity` makes, queued, then every batch through layer 0, layer 1,
...; the last layer's states go through the model's own final norm and output layer at the scored
positions only. The same batches, the same sums in the same order: the same figures as in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..decoder import final_norm
from ..errors import DowncycleError
from ..output_layer import rows_nll, split_head

__all__ = ["LayerwiseScorer"]


class LayerwiseScorer:
    """:class:`~downcycle.evaluation.perplexity._Scorer`'s interface: ``pool`` queues, ``finish`` runs."""

    def __init__(self, lw: Any) -> None:
        split = split_head(lw.model)
        if isinstance(split, str):
            raise DowncycleError(f"--layerwise: the model's logits are not its final hidden states through one linear layer ({split})")
        self.lw, self.head, self.norm = lw, split[1], final_norm(lw.model)
        self.pools: list[list[list[tuple[Any, Any, int]]]] = []

    def pool(self, pool: list[tuple[Any, Any, int]], batch_tokens: int, on_scored: Callable[[int], None] | None) -> None:
        from .perplexity import window_batches

        self.pools.append(list(window_batches(sorted(pool, key=lambda w: -len(w[0])), batch_tokens)))

    def finish(self, on_scored: Callable[[int], None] | None) -> dict[tuple[int, int], tuple[float, list]]:
        """Every batch's NLL sum by (pool, batch), as the in-memory scorer returns them."""
        import torch

        from ..layerwise import run_layerwise
        from .perplexity import batch_tensors

        batches = [b for pool in self.pools for b in pool]
        if not batches:
            return {}
        tensors = [[t.to(self.lw.device) for t in batch_tensors(b)] for b in batches]
        sums: list[float] = [0.0] * len(batches)
        last = self.lw.num_layers

        def visit(l: int, b: int, hidden: Any) -> None:
            if l != last:
                return
            _, row, col, target = tensors[b]
            sums[b] = float(rows_nll(self.norm(hidden)[row, col], self.head, target).sum(dtype=torch.float64))
            if on_scored is not None:
                on_scored(int(target.numel()))

        with torch.inference_mode():
            run_layerwise(self.lw, [{"input_ids": t[0]} for t in tensors], visit)
        keys = [(p, b) for p, pool in enumerate(self.pools) for b in range(len(pool))]
        return {key: (value, []) for key, value in zip(keys, sums)}
