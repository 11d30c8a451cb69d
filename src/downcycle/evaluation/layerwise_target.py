"""A model evaluated one decoder layer at a time (:mod:`downcycle.layerwise`), as the tasks see it:
its skeleton (config, embeddings, final norm, head) and one call, :meth:`LayerwiseTarget.finals`,
that runs batches through every layer and hands each batch's last state to a function. The loss
task (:mod:`.layerwise_loss`) and the log-likelihood tasks (:mod:`.scoring`) reduce those states
through the model's own final norm and output layer at the scored positions only.

A depth cut evaluated beside other cuts of the same reference is a :class:`LayerwiseTarget` too
(:class:`~downcycle.evaluation.shared_cuts.SharedCut`), whose ``finals`` come from one run of the
reference's layers as a tree."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from ..decoder import final_norm
from ..errors import DowncycleError
from ..output_layer import split_head

__all__ = ["LayerwiseTarget", "as_target", "batches_digest"]

T = TypeVar("T")


class LayerwiseTarget:
    """One model run layer by layer on its own.

    Attributes:
        lw: its :class:`~downcycle.layerwise.LayerwiseModel` (``lw.model``: the skeleton).
        budget: bytes of states between layers held in memory (None: the engine's default); the rest spill to disk.
        last_run: what the latest run cost (:class:`~downcycle.layerwise.LayerwiseRun`), or None.
    """

    def __init__(self, lw: Any, budget: int | None = None) -> None:
        self.lw, self.budget = lw, budget
        self.last_run: Any = None
        self._scoring: tuple[Any, Any] | None = None

    @property
    def model(self) -> Any:
        return self.lw.model

    def scoring(self) -> tuple[Any, Any]:
        """``(final norm, output layer)``: what the last state goes through to become logits.

        Raises:
            DowncycleError: logits that are more than the final states through one linear layer.
        """
        if self._scoring is None:
            split = split_head(self.lw.model)
            if isinstance(split, str):
                raise DowncycleError(f"--layerwise: the model's logits are not its final hidden states through one linear layer ({split})")
            self._scoring = (final_norm(self.lw.model), split[1])
        return self._scoring

    def finals(self, batches: list[dict[str, Any]], fn: Callable[[int, Any], T], progress: bool = False) -> list[T]:
        """``[fn(b, x_L of batch b) for every batch]``, the batches run through every layer.

        Args:
            batches: the model's forward arguments (``input_ids``, optional ``attention_mask``, ``position_ids``).
            fn: reduces a batch's last state ``(B, S, d)`` (before the final norm) to what is kept.
        """
        from ..layerwise import run_layerwise

        out: list[Any] = [None] * len(batches)
        last = self.lw.num_layers

        def visit(l: int, b: int, hidden: Any) -> None:
            if l == last:
                out[b] = fn(b, hidden)

        self.last_run = run_layerwise(self.lw, batches, visit, progress=progress,
                                      **({} if self.budget is None else {"budget": self.budget}))
        return out


def as_target(model: Any) -> LayerwiseTarget | None:
    """``model`` as a :class:`LayerwiseTarget` (a bare ``LayerwiseModel`` wrapped), or None for a model in memory."""
    from ..layerwise import LayerwiseModel

    if isinstance(model, LayerwiseTarget):
        return model
    if isinstance(model, LayerwiseModel):
        return LayerwiseTarget(model)
    return None


def batches_digest(batches: list[dict[str, Any]]) -> str:
    """What identifies a list of batches: every tensor's name, shape, dtype and bytes."""
    import torch

    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            t = batch[key].detach().cpu().contiguous()
            h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
