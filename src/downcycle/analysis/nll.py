"""SLEB-style greedy layer removal by calibration NLL.

Song et al. 2024, "SLEB: Streamlining LLMs through Redundancy Verification and Elimination of
Transformer Blocks" (arXiv:2402.09025), Algorithm 1: repeat ``k`` times -- for every remaining layer,
measure the calibration loss of the model with that layer (and those already chosen) removed, and
remove the one whose removal hurts least. Iteration ``i`` costs ``L - i`` forward passes over the
calibration set, so the whole search costs ``sum_{i<k} (L - i)`` passes: far costlier than the
one-pass metrics, which is why it is optional.

The loss is next-token NLL as a sum over sums: total NLL of every predicted non-padding token,
divided once by their count. Layers are removed in memory by making them identities
(:func:`~downcycle.decoder.skip_layers`); nothing is copied.

How. Removing layer ``c`` changes nothing before ``c``. So the states entering the layers of the
current (already pruned) model are kept, on every calibration batch, and a candidate ``c`` runs
only the layers after it, from the kept state entering ``c`` (with ``c`` removed, that state enters
``c + 1``). The model's own forward still runs, with the layers before the start skipped and a
forward pre-hook handing the kept state to the start layer as its input, so attention masks,
rotary embeddings, the final norm and the output layer are the model's own, in every family. The
same inputs go through the same operations, so every candidate's NLL is the one a full forward
gives (tests/analysis/test_nll.py checks it against one). After each removal ``r`` the states
entering the layers after ``r`` are recomputed, from ``r`` on. Memory: the kept states take
``(L - 1) x tokens x hidden`` values in the model's dtype; when that exceeds ``STATE_CACHE_BYTES``
only every ``s``-th layer's input is kept (``s`` the smallest stride that fits) and a candidate
starts from the nearest kept layer at or before it (``s = L``: every candidate a full forward).
Only the predicted non-padding positions go through the output layer, a chunk of rows at a time
(:mod:`downcycle.output_layer`), so a large vocabulary's logits are never held for a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..output_layer import checked_split, position_nll
from ..decoder import find_decoder_layers, layer_input, skip_layers, with_layer_input
from .hidden_stats import batch_mask

__all__ = ["STATE_CACHE_BYTES", "GreedyRemoval", "cache_stride", "calibration_nll", "greedy_removal"]

STATE_CACHE_BYTES = 2 * 2**30  # the most the kept layer inputs may take (see the module docstring)


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

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GreedyRemoval:
        """The search as :meth:`to_json` wrote it (layer keys back to ints)."""
        return cls(doc["base_nll"], list(doc["removed"]), [{int(k): v for k, v in step.items()} for step in doc["steps"]])


def calibration_nll(model: Any, batches: Sequence[Any]) -> float:
    """Mean next-token NLL (nats) over every predicted non-padding token of ``batches``."""
    import torch

    inputs = _on_device(batches, next(model.parameters()).device)
    split = checked_split(model, _probe_ids(inputs))
    total, count = 0.0, 0
    with torch.inference_mode():
        for ids, mask in inputs:
            nll, n = _batch_nll(model, split, ids, mask)
            total, count = total + nll, count + n
    if count == 0:
        raise ValueError("no calibration tokens to predict (sequences of length 1?)")
    return total / count


def cache_stride(num_layers: int, layer_bytes: int, budget: int = STATE_CACHE_BYTES) -> int:
    """Keep the inputs of layers ``s, 2s, ...`` (below ``num_layers``): the smallest ``s`` whose kept
    states (``layer_bytes`` each, over all batches) fit in ``budget``; ``num_layers`` keeps none."""
    fits = budget // max(1, layer_bytes)  # how many layers' inputs fit
    return min(num_layers, (num_layers - 1) // (fits + 1) + 1)


def greedy_removal(model: Any, batches: Sequence[Any], k: int, *, progress: bool = False,
                   protect: Sequence[int] = (), cache_bytes: int = STATE_CACHE_BYTES) -> GreedyRemoval:
    """Remove ``k`` layers one at a time, each time the one whose removal gives the lowest NLL.

    Args:
        model: a loaded causal LM in eval mode.
        batches: the calibration batches (a list, scored once per candidate).
        k: how many layers to remove.
        protect: layers never removed.
        cache_bytes: the most the kept layer inputs may take (see the module docstring).

    Returns:
        :class:`GreedyRemoval` with the removal order and every candidate's NLL at every step.
    """
    _, layers = find_decoder_layers(model)
    inputs = _on_device(batches, next(model.parameters()).device)
    tuple_outputs, token_bytes = _probe(model, layers, inputs)
    num = len(layers)
    states = _States(layers, inputs, cache_stride(num, token_bytes * sum(ids.numel() for ids, _ in inputs), cache_bytes),
                     tuple_outputs, checked_split(model, _probe_ids(inputs)))
    base = states.run(model, [], 0, capture=states.kept)
    assert base is not None
    result = GreedyRemoval(base)
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=sum(num - len(protect) - i for i in range(k)), desc="nll", unit="pass", leave=False)
    try:
        for i in range(k):
            step: dict[int, float] = {}
            for cand in range(num):
                if cand in result.removed or cand in protect:
                    continue
                nll = states.run(model, [*result.removed, cand], states.start(cand))
                assert nll is not None
                step[cand] = nll
                if bar is not None:
                    bar.update(1)
            best = min(step, key=lambda j: (step[j], j))
            result.removed.append(best)
            result.steps.append(step)
            if i + 1 < k:  # the inputs of the layers after `best` change
                states.run(model, result.removed, states.start(best), capture=[j for j in states.kept if j > best], score=False)
    finally:
        if bar is not None:
            bar.close()
    return result


class _Stop(Exception):
    """Raised once a pass that only keeps states has kept its last one."""


class _States:
    """The inputs of layers ``stride, 2 * stride, ...`` of the current model, on every batch."""

    def __init__(self, layers: Any, inputs: list[tuple[Any, Any]], stride: int, tuple_outputs: bool,
                 split: tuple[Any, Any] | None) -> None:
        self.layers, self.inputs, self.stride, self.tuple_outputs, self.split = layers, inputs, stride, tuple_outputs, split
        self.kept = list(range(stride, len(layers), stride))
        self.cache: list[dict[int, Any]] = [{} for _ in inputs]  # per batch: layer -> (B, S, d) state entering it

    def start(self, layer: int) -> int:
        """Where a pass that removes ``layer`` starts: the nearest kept layer at or before it (0: the embeddings)."""
        return layer // self.stride * self.stride

    def run(self, model: Any, removed: Sequence[int], start: int, capture: Sequence[int] = (),
            score: bool = True) -> float | None:
        """One pass over every batch, ``removed`` skipped, from the kept input of layer ``start``.

        Args:
            capture: layers (after ``start``) whose inputs this pass keeps.
            score: return the mean NLL; False stops each batch once the last of ``capture`` is kept.
        """
        import torch

        if not score and not capture:
            return None
        last = max(capture, default=-1)
        here: dict[str, Any] = {}  # "states": the kept states of the batch being run

        def substitute(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return with_layer_input(args, kwargs, here["states"][start].clone())  # a copy: the kept state stays as it is

        def keep(index: int) -> Any:
            def hook(module: Any, args: tuple, kwargs: dict) -> None:
                here["states"][index] = layer_input(args, kwargs).clone()
                if not score and index == last:
                    raise _Stop

            return hook

        handles = [self.layers[start].register_forward_pre_hook(substitute, with_kwargs=True)] if start else []
        handles += [self.layers[j].register_forward_pre_hook(keep(j), with_kwargs=True) for j in capture]
        total, count = 0.0, 0
        try:
            with skip_layers(self.layers, sorted(set(removed) | set(range(start))), self.tuple_outputs), torch.inference_mode():
                for (ids, mask), states in zip(self.inputs, self.cache):
                    here["states"] = states
                    try:
                        nll, n = _batch_nll(model, self.split, ids, mask)
                    except _Stop:
                        continue
                    total, count = total + nll, count + n
        finally:
            for h in handles:
                h.remove()
        if not score:
            return None
        if count == 0:
            raise ValueError("no calibration tokens to predict (sequences of length 1?)")
        return total / count


def _batch_nll(model: Any, split: tuple[Any, Any] | None, ids: Any, mask: Any) -> tuple[float, int]:
    """Summed NLL (float64 sum of float32 terms) of the predicted non-padding tokens of one batch, and
    their count; only those positions go through the output layer (:func:`~downcycle.output_layer.position_nll`)."""
    import torch

    target = ids[:, 1:]
    valid = torch.ones_like(target, dtype=torch.bool) if mask is None else (mask[:, 1:].bool() & mask[:, :-1].bool())
    row, col = valid.nonzero(as_tuple=True)  # (N,) each, row-major
    nll = position_nll(model, split, ids, row, col, target[row, col], attention_mask=mask)
    return float(nll.sum(dtype=torch.float64)), int(row.numel())


def _probe_ids(inputs: list[tuple[Any, Any]]) -> Any:
    """The non-padding tokens of the first batch's longest row: the output layer's probe."""
    ids, mask = inputs[0]
    if mask is None:
        return ids[0]
    longest = int(mask.sum(1).argmax())
    return ids[longest][mask[longest].bool()]


def _on_device(batches: Sequence[Any], device: Any) -> list[tuple[Any, Any]]:
    out = []
    for batch in batches:
        ids, mask = batch_mask(batch)
        out.append((ids.to(device), mask.to(device) if mask is not None else None))
    return out


def _probe(model: Any, layers: Any, inputs: list[tuple[Any, Any]]) -> tuple[bool, int]:
    """Whether the decoder layers return tuples (older transformers) or tensors, and the bytes of one
    token's hidden state: one tiny forward."""
    import torch

    seen: list[Any] = []
    handle = layers[0].register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.inference_mode():
            model(input_ids=inputs[0][0][:1, :2], use_cache=False)
    finally:
        handle.remove()
    out = seen[0]
    state = out[0] if isinstance(out, tuple) else out
    return isinstance(out, tuple), state.shape[-1] * state.element_size()
