"""The uncut reference as healing uses it: loaded whole, or run one decoder layer at a time from its
files (:mod:`downcycle.layerwise`) when it does not fit the memory at hand.

Healing asks the reference for two things: the states of a calibration pass (:meth:`Reference.capture`,
the same tensors either way) and, one at a time, a decoder layer with its weights (:meth:`Reference.layer`:
the layer a map is folded into, or the layer a replacement starts from). Layer by layer, the pass is
the engine's (every batch through layer 0, then layer 1, ...), the states the fits need are picked
from the states between layers and from hooks on the MLP blocks as each layer runs, and kept (memory
up to a budget, then disk) until the pass ends; the fits then read them batch by batch as they read
the in-memory pass's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..decoder import find_decoder_layers
from .states import Call, Needs, call_of, capture, mlp_module, mlp_output_norm

__all__ = ["Reference", "capture_layerwise"]


class Reference:
    """The reference model in memory (``model``), or its layer-by-layer skeleton (``lw``).

    Attributes:
        model: the ``transformers`` model (with ``lw``: its layers on the meta device until loaded).
        layers: its decoder layers.
        layerwise: whether it runs one layer at a time.
    """

    def __init__(self, model: Any = None, lw: Any = None) -> None:
        self.lw = lw
        self.model = lw.model if lw is not None else model
        self.layers = lw.layers if lw is not None else find_decoder_layers(model)[1]
        self.layerwise = lw is not None

    def capture(self, windows: Any, batch_size: int, needs: Needs, progress: bool = False,
                desc: str = "calibration") -> Iterator[tuple[dict[str, Any], dict[int, Call]]]:
        """:func:`.states.capture`'s batches, states and calls, in memory or layer by layer."""
        if self.lw is None:
            return capture(self.model, windows, batch_size, needs, progress, desc)
        return capture_layerwise(self.lw, windows, batch_size, needs, progress)

    @contextmanager
    def layer(self, index: int) -> Iterator[Any]:
        """Decoder layer ``index`` with its weights (layer by layer: loaded for the block, then released)."""
        if self.lw is None:
            yield self.layers[index]
            return
        layer = self.lw.materialise(index)
        try:
            yield layer
        finally:
            self.lw.release(index)


def capture_layerwise(lw: Any, windows: Any, batch_size: int, needs: Needs, progress: bool = False,
                      budget: int | None = None) -> Iterator[tuple[dict[str, Any], dict[int, Call]]]:
    """:func:`.states.capture` of the model ``lw`` runs one decoder layer at a time: the same full
    batches, the same states and calls, yielded once the pass has run every batch to the deepest
    layer needed.

    Args:
        budget: bytes of captured states kept in memory; the rest go to a temporary directory (the
            engine's own budget for the states between layers is separate). Default: the engine's.
    """
    from ..layerwise import StateStore, run_tree
    from ..layerwise.engine import STATE_BUDGET

    n = lw.num_layers
    deepest = needs.deepest(n)
    inputs = needs.inputs | needs.first
    batches = [windows[s : s + batch_size] for s in range(0, int(windows.shape[0]) - batch_size + 1, batch_size)]
    store = StateStore(STATE_BUDGET if budget is None else budget)
    mlp_out: dict[int, Any] = {}  # layer -> its MLP block's output for the batch it is running
    calls: dict[int, Call] = {}
    handles = []

    def mlp_hook(i: int):
        def hook(module: Any, args: tuple, output: Any) -> None:
            mlp_out[i] = (output[0] if isinstance(output, tuple) else output).detach().float()
        return hook

    def call_hook(i: int):  # fires when the model calls the layer (the recording pass) and when it is replayed
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            calls[i] = call_of(args, kwargs)
        return hook

    def visit(path: tuple[int, ...], b: int, hidden: Any) -> None:  # x_l: the input of layer l, the output of layer l - 1
        l = len(path)
        if l - 1 in needs.mlp:
            store.put((("mlp", l - 1), b), mlp_out.pop(l - 1))
        if l in needs.inputs or (l in needs.first and b == 0):
            store.put((("in", l), b), hidden.float())
        if needs.final and l == n:
            store.put(("final", b), hidden.float())

    for i in sorted(needs.mlp):
        handles.append((mlp_output_norm(lw.layers[i]) or mlp_module(lw.layers[i]))[1].register_forward_hook(mlp_hook(i)))
    for i in sorted(needs.calls_of):
        handles.append(lw.layers[i].register_forward_pre_hook(call_hook(i), with_kwargs=True))
    try:
        if batches:
            run_tree(lw, [range(deepest + 1)], batches, visit, progress=progress)
    finally:
        for h in handles:
            h.remove()
    keys = [("in", i) for i in sorted(inputs)] + [("mlp", i) for i in sorted(needs.mlp)] + ["final"] * needs.final
    # the engine runs in inference mode; healing trains on these states: plain tensors, copied outside it
    calls = {i: (tuple(_plain(v) for v in a), {k: _plain(v) for k, v in kw.items()}) for i, (a, kw) in calls.items()}
    try:
        for b in range(len(batches)):
            yield {key: _plain(store.pop((key, b))) for key in keys if (key, b) in store}, calls
    finally:
        store.close()


def _plain(value: Any) -> Any:
    """A tensor made by the engine (in inference mode) as a tensor autograd may save (a tuple's, such
    as position embeddings, too); anything else as is."""
    import torch

    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value.clone() if torch.is_tensor(value) and value.is_inference() else value
