"""The ``loss`` task of a model run one decoder layer at a time (:mod:`.layerwise_target`): the
windows and batches :mod:`.perplexity` makes, queued, then every batch through layer 0, layer 1,
...; the last layer's states go through the model's own final norm and output layer at the scored
positions only. The same batches, the same sums in the same order: the same figures as in memory.

With a reference (``--reference``, run layer by layer too), the reference runs first over the very
same batches and keeps, per batch, only its final norm's output at the scored positions
(:class:`ReferenceRows`: ``(N, hidden)``, never ``(N, vocab)``; in memory up to the engine's state
budget, then on disk); then the model runs, and each batch's NLL and KL(reference‖model) come from
the two sets of rows through the two output layers (:func:`~downcycle.output_layer.rows_nll_kl`,
what the in-memory scorer computes). The rows of the latest batches are kept for the next model
that asks for the same batches: the reference's layers run once for every model of an evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import DowncycleError
from ..output_layer import rows_nll, rows_nll_kl, same_vocabulary
from .layerwise_target import LayerwiseTarget, as_target, batches_digest

__all__ = ["LayerwiseScorer", "ReferenceRows"]


class ReferenceRows:
    """A reference run layer by layer as the KL needs it: per batch, its final norm's output at the
    scored positions ``(N, H)``, kept for the latest batches asked until :meth:`close`.

    Attributes:
        target: the reference; ``norm``, ``head``: its final norm and output layer.
        store: the latest batches' rows by batch index (a :class:`~downcycle.layerwise.StateStore`), or None.
        runs: how many times the reference's layers have run.
    """

    def __init__(self, target: LayerwiseTarget) -> None:
        self.target = target
        try:
            self.norm, self.head = target.scoring()
        except DowncycleError as e:
            raise DowncycleError(f"{e}: the reference, {target.lw.source}") from None
        self.store: Any = None
        self.runs = 0
        self._key: str | None = None

    def fill(self, tensors: list[list[Any]]) -> None:
        """Hold the rows of batches ``(ids, row, col, target)`` (:func:`.perplexity.batch_tensors`):
        kept already when they are the latest batches asked, else run now."""
        import torch

        from ..layerwise import StateStore
        from ..layerwise.engine import STATE_BUDGET

        device = self.target.lw.device
        tensors = [[t.to(device) for t in batch[:3]] for batch in tensors]
        key = batches_digest([{"input_ids": ids, "row": row, "col": col} for ids, row, col in tensors])
        if key == self._key:
            return
        self.close()
        store = StateStore(STATE_BUDGET if self.target.budget is None else self.target.budget)

        def keep(b: int, hidden: Any) -> None:
            _, row, col = tensors[b]
            store.put(b, self.norm(hidden)[row, col])  # (N, H): a copy, not a view of the batch's states

        with torch.inference_mode():
            self.target.finals([{"input_ids": ids} for ids, _, _ in tensors], keep)
        self.store, self._key, self.runs = store, key, self.runs + 1

    def get(self, b: int) -> Any:
        """Batch ``b``'s rows ``(N, H)`` on the output layer's device, in a tensor of their own: one read back
        from disk lies in a memory map, where the output layer's matmul may round differently."""
        return self.store.get(b).to(self.head.weight.device, copy=True)

    def close(self) -> None:
        """Release the rows kept (memory and spill directory)."""
        if self.store is not None:
            self.store.close()
        self.store, self._key = None, None


def _reference_rows(reference: Any) -> tuple[ReferenceRows | None, bool]:
    """``(the reference's rows, whether they are this scorer's own to close)``."""
    if reference is None or isinstance(reference, ReferenceRows):
        return reference, False
    target = as_target(reference)
    if target is None:
        raise DowncycleError("--layerwise: the model runs layer by layer, so must the reference (run both the same way)")
    return ReferenceRows(target), True


class LayerwiseScorer:
    """:class:`~downcycle.evaluation.perplexity._Scorer`'s interface: ``pool`` queues, ``finish`` runs.

    ``reference``: None, :class:`ReferenceRows` (shared, left open) or a reference run layer by
    layer (a :class:`LayerwiseTarget` or ``LayerwiseModel``: its rows released after ``finish``)."""

    def __init__(self, target: LayerwiseTarget, reference: Any = None) -> None:
        self.target = target
        self.norm, self.head = target.scoring()
        self.reference, self._own = _reference_rows(reference)
        if self.reference is not None:
            same_vocabulary(self.head.out_features, self.reference.head.out_features)
        self.pools: list[list[list[tuple[Any, Any, int]]]] = []

    def pool(self, pool: list[tuple[Any, Any, int]], batch_tokens: int, on_scored: Callable[[int], None] | None) -> None:
        from .perplexity import window_batches

        self.pools.append(list(window_batches(sorted(pool, key=lambda w: -len(w[0])), batch_tokens)))

    def finish(self, on_scored: Callable[[int], None] | None) -> dict[tuple[int, int], tuple[float, list]]:
        """Every batch's NLL sum (and each window's KL) by (pool, batch), as the in-memory scorer returns them."""
        import torch

        from .perplexity import batch_sum, batch_tensors

        batches = [b for pool in self.pools for b in pool]
        if not batches:
            return {}
        device = self.target.lw.device
        tensors = [[t.to(device) for t in batch_tensors(b)] for b in batches]
        try:
            if self.reference is not None:
                self.reference.fill(tensors)

            def score(b: int, hidden: Any) -> tuple[float, list]:
                _, row, col, target = tensors[b]
                rows = self.norm(hidden)[row, col]  # (N, H)
                if self.reference is None:
                    return batch_sum(batches[b], rows_nll(rows, self.head, target), None)
                return batch_sum(batches[b], *rows_nll_kl(rows, self.head, self.reference.get(b), self.reference.head, target))

            with torch.inference_mode():
                sums = self.target.finals([{"input_ids": t[0]} for t in tensors], score)
        finally:
            if self._own:
                self.reference.close()
        # A cut family's members share one run (the first one's ``score``): every member scores the KL or none does.
        assert self.reference is None or all(parts for _, parts in sums), "a KL for every batch"
        if on_scored is not None:
            on_scored(sum(int(t[3].numel()) for t in tensors))
        keys = [(p, b) for p, pool in enumerate(self.pools) for b in range(len(pool))]
        return dict(zip(keys, sums))
