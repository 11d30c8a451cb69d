"""The forward passes of the width importance pass (:mod:`.width`): the whole model batch by batch,
stopped at the output layer, or the model run one decoder layer at a time
(:mod:`downcycle.layerwise`); the hooks :func:`.width.width_importance` set on the layers' modules
fire the same way in both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import DowncycleError
from .hidden_stats import batch_mask

__all__ = ["StopForward", "run_in_memory", "run_layer_by_layer"]


class StopForward(Exception):
    """Raised by the output layer's hook: the pass needs nothing past the final norm."""


def _check_batch(batch: Any, seq_len: int | None) -> Any:
    """A batch's ids, refused when padded or of another length than the batches before."""
    ids, mask = batch_mask(batch)
    if mask is not None and not bool(mask.all()):
        raise DowncycleError("width importance takes full-length calibration windows (a batch has padding)")
    if seq_len is not None and ids.shape[1] != seq_len:
        raise DowncycleError(f"width importance: windows of {ids.shape[1]} and {seq_len} tokens (one length, please)")
    return ids


def run_in_memory(model: Any, batches: Iterable[Any], progress: bool, shape: list[int]) -> tuple[int, int]:
    """The forward passes; returns (windows, tokens per window). ``shape`` is set to each batch's (B, T)."""
    import torch

    from ..progress import progress_bar

    device = next(model.parameters()).device
    samples, seq_len = 0, None
    bar = progress_bar(batches, total=len(batches) if hasattr(batches, "__len__") else None, desc="width", unit="batch",
                       leave=False) if progress else batches
    with torch.inference_mode():
        for batch in bar:
            ids = _check_batch(batch, seq_len)
            seq_len = ids.shape[1]
            shape[:] = ids.shape
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except StopForward:
                pass
            else:  # pragma: no cover -- a model whose output layer never ran
                raise RuntimeError("the forward pass finished without reaching the output layer")
            samples += ids.shape[0]
    if seq_len is None:
        raise DowncycleError("width importance: no calibration batches")
    return samples, seq_len


def run_layer_by_layer(lw: Any, batches: Iterable[Any], progress: bool, shape: list[int], final: Any) -> tuple[int, int]:
    """:func:`run_in_memory` one decoder layer at a time: the layers' hooks fire as each runs its batches, and
    the last states go through the final norm into ``final`` (the output layer's input)."""
    import torch

    from ..decoder import final_norm
    from ..layerwise import run_layerwise

    ids, seq_len = [], None
    for batch in batches:
        ids.append(_check_batch(batch, seq_len))
        seq_len = ids[-1].shape[1]
    if seq_len is None:
        raise DowncycleError("width importance: no calibration batches")
    shape[:] = [-1, seq_len]  # one window length: OPT's flattened (B * T, C) folds back by it
    norm, n = final_norm(lw.model), lw.num_layers

    def visit(l: int, b: int, hidden: Any) -> None:
        if l == n:
            final.add(norm(hidden).detach().float().abs())

    with torch.inference_mode():
        run_layerwise(lw, ids, visit, progress=progress)
    return sum(int(i.shape[0]) for i in ids), seq_len
