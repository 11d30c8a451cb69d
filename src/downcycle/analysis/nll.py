"""SLEB-style greedy layer removal by calibration NLL.

Song et al. 2024, "SLEB: Streamlining LLMs through Redundancy Verification and Elimination of
Transformer Blocks" (arXiv:2402.09025), Algorithm 1: repeat ``k`` times -- for every remaining layer,
measure the calibration loss of the model with that layer (and those already chosen) removed, and
remove the one whose removal hurts least. Iteration ``i`` costs ``L - i`` forward passes over the
calibration set, so the whole search costs ``sum_{i<k} (L - i)`` passes: far costlier than the
one-pass metrics, which is why it is optional.

The loss is next-token NLL as a sum over sums: total NLL of every predicted non-padding token,
divided once by their count. Layers are removed in memory by making them identities
(:func:`~downcycle.analysis.decoder.skip_layers`); nothing is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .decoder import find_decoder_layers, skip_layers
from .hidden_stats import batch_mask

__all__ = ["GreedyRemoval", "calibration_nll", "greedy_removal"]


@dataclass
class GreedyRemoval:
    """The result of a greedy search.

    Attributes:
        base_nll: mean NLL of the full model.
        removed: layers in the order they were removed.
        steps: per iteration, ``{layer: mean NLL with it (and the earlier removals) removed}``.
    """

    base_nll: float
    removed: list[int] = field(default_factory=list)
    steps: list[dict[int, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"base_nll": self.base_nll, "removed": self.removed,
                "steps": [{str(k): v for k, v in step.items()} for step in self.steps]}


def calibration_nll(model: Any, batches: Sequence[Any]) -> float:
    """Mean next-token NLL (nats) over every predicted non-padding token of ``batches``."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            ids, mask = batch_mask(batch)
            ids = ids.to(device)
            mask = mask.to(device) if mask is not None else None
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]  # (B, S-1, V)
            target = ids[:, 1:]
            valid = torch.ones_like(target, dtype=torch.bool) if mask is None else (mask[:, 1:].bool() & mask[:, :-1].bool())
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                    reduction="none")
            total += float(nll[valid.reshape(-1)].sum(dtype=torch.float64))
            count += int(valid.sum())
    if count == 0:
        raise ValueError("no calibration tokens to predict (sequences of length 1?)")
    return total / count


def greedy_removal(model: Any, batches: Sequence[Any], k: int, *, progress: bool = False,
                   protect: Sequence[int] = ()) -> GreedyRemoval:
    """Remove ``k`` layers one at a time, each time the one whose removal gives the lowest NLL.

    Args:
        model: a loaded causal LM in eval mode.
        batches: the calibration batches (iterated ``sum (L - i)`` times: a list, not a generator).
        k: how many layers to remove.
        protect: layers never removed.

    Returns:
        :class:`GreedyRemoval` with the removal order and every candidate's NLL at every step.
    """
    _, layers = find_decoder_layers(model)
    tuple_outputs = _returns_tuple(model, layers, batches)
    result = GreedyRemoval(calibration_nll(model, batches))
    num = len(layers)
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=sum(num - len(protect) - i for i in range(k)), desc="nll", unit="pass", leave=False)
    try:
        for _ in range(k):
            step: dict[int, float] = {}
            for cand in range(num):
                if cand in result.removed or cand in protect:
                    continue
                with skip_layers(layers, [*result.removed, cand], tuple_outputs):
                    step[cand] = calibration_nll(model, batches)
                if bar is not None:
                    bar.update(1)
            best = min(step, key=lambda i: (step[i], i))
            result.removed.append(best)
            result.steps.append(step)
    finally:
        if bar is not None:
            bar.close()
    return result


def _returns_tuple(model: Any, layers: Any, batches: Sequence[Any]) -> bool:
    """Whether the decoder layers return tuples (older transformers) or tensors: one tiny probe."""
    import torch

    seen: list[bool] = []
    handle = layers[0].register_forward_hook(lambda m, a, out: seen.append(isinstance(out, tuple)))
    try:
        ids, _ = batch_mask(batches[0])
        with torch.inference_mode():
            model(input_ids=ids[:1, :2].to(next(model.parameters()).device), use_cache=False)
    finally:
        handle.remove()
    return bool(seen and seen[0])
