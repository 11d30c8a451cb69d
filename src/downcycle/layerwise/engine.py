"""Every batch through decoder layer 0, then every batch through layer 1, ...: one layer's weights
resident at a time.

What the model passes each layer is recorded first, by the model itself: one forward per batch in
which layer 0 runs for real (its input, ``x_0``, and output, ``x_1``, recorded, and the form of its
output learnt) and every later layer is replaced, for that pass only, by a stand-in that records
its arguments (masks, position embeddings, flags: per layer, so a sliding-window layer gets its own
mask) and hands its input on; the last stand-in stops the forward before the norm and head. Those
arguments depend on positions and masks, never on the hidden states, so replaying them with the
real states gives each layer exactly the call it gets inside the model. (AutoGPTQ records layer 0's
arguments alone, which is not enough for models whose layers differ in attention type.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import DowncycleError
from .skeleton import LayerwiseModel
from .store import StateStore

__all__ = ["LayerwiseRun", "STATE_BUDGET", "run_layerwise"]

STATE_BUDGET = 4 * 2**30  # bytes of states between layers kept in memory; the rest spills to disk

Visit = Callable[[int, int, Any], None]  # (state index l = 0..L, batch index, x_l (B, S, d))


@dataclass
class LayerwiseRun:
    """What a run cost: layers, batches, seconds, the most bytes of layer weights and of states held
    in memory, and the bytes of states spilled to disk."""

    num_layers: int
    batches: int
    seconds: float
    weight_bytes: int
    state_bytes: int
    spilled_bytes: int


class _Stop(Exception):
    pass


def _hidden(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, hidden: Any) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _output_state(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


def run_layerwise(lw: LayerwiseModel, batches: Iterable[Any], visit: Visit, *, budget: int = STATE_BUDGET,
                  spill_dir: Any = None, progress: bool = False) -> LayerwiseRun:
    """Run ``batches`` through ``lw`` layer by layer, calling ``visit(l, b, x_l)`` with every state:
    ``x_0`` the embedding output entering layer 0, ..., ``x_L`` the last layer's output before the
    final norm, for every batch ``b`` in turn.

    Args:
        batches: ``{"input_ids", "attention_mask"}`` mappings, ``(ids, mask)`` tuples or id tensors.
        budget: bytes of states kept in memory between layers; beyond it they go to ``spill_dir``.
    """
    import torch

    from ..progress import progress_bar

    inputs = [_ids_and_mask(b, lw.device) for b in batches]
    n = lw.num_layers
    calls: list[list[tuple[tuple, dict] | None]] = [[None] * n for _ in inputs]  # [batch][layer] -> (args, kwargs)
    seen: dict[str, Any] = {}
    start = time.perf_counter()
    states = StateStore(budget, spill_dir)
    originals = {i: lw.layers[i].forward for i in range(1, n)}

    def stand_in(i: int):
        def forward(*args: Any, **kwargs: Any) -> Any:
            calls[seen["batch"]][i] = (args, kwargs)
            if i == n - 1:
                raise _Stop
            hidden = _hidden(args, kwargs)
            return (hidden,) if seen["tuple"] else hidden
        return forward

    def record_first(module: Any, args: tuple, kwargs: dict) -> None:
        calls[seen["batch"]][0] = (args, kwargs)

    def after_first(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        seen["tuple"] = isinstance(output, (tuple, list))
        seen["x1"] = _output_state(output)
        if n == 1:
            raise _Stop

    layer0 = lw.materialise(0)
    handles = [layer0.register_forward_pre_hook(record_first, with_kwargs=True),
               layer0.register_forward_hook(after_first, with_kwargs=True)]
    for i in range(1, n):
        lw.layers[i].forward = stand_in(i)
    try:
        with torch.inference_mode(), progress_bar(total=n, desc="layers", unit="layer", disable=not progress, leave=False) as bar:
            for b, (ids, mask) in enumerate(inputs):
                seen["batch"] = b
                try:
                    lw.model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _Stop:
                    pass
                else:
                    raise DowncycleError(f"{type(lw.model).__name__}: the forward did not reach its last decoder layer")
                visit(0, b, _hidden(*calls[b][0]))
                visit(1, b, seen["x1"])
                states.put(b, seen.pop("x1"))
                calls[b][0] = None
            for h in handles:
                h.remove()
            handles = []
            for i in originals:  # the layers' own forward back before any of them runs
                vars(lw.layers[i]).pop("forward", None)
            originals = {}
            lw.release(0)
            bar.update(1)
            for i in range(1, n):
                layer = lw.materialise(i)
                for b in range(len(inputs)):
                    args, kwargs = _with_hidden(*calls[b][i], states.pop(b))
                    calls[b][i] = None
                    hidden = _output_state(layer(*args, **kwargs))
                    visit(i + 1, b, hidden)
                    if i < n - 1:
                        states.put(b, hidden)
                lw.release(i)
                bar.update(1)
    finally:
        for h in handles:
            h.remove()
        for i in originals:
            vars(lw.layers[i]).pop("forward", None)
        for i in range(n):
            lw.release(i)
        peak, spilled = states.peak_bytes, states.spilled_bytes
        states.close()
    return LayerwiseRun(n, len(inputs), time.perf_counter() - start, lw.loaded_bytes, peak, spilled)


def _ids_and_mask(batch: Any, device: Any) -> tuple[Any, Any]:
    if isinstance(batch, dict):
        ids, mask = batch["input_ids"], batch.get("attention_mask")
    elif isinstance(batch, (tuple, list)):
        ids, mask = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        ids, mask = batch, None
    return ids.to(device), (mask.to(device) if mask is not None else None)
