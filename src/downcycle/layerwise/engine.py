"""Every batch through decoder layer 0, then every batch through layer 1, ...: one layer's weights
resident at a time; and the same for several selections of a model's layers at once (the depth cuts
of one reference), run as a tree whose shared prefixes run once.

What the model passes each layer is recorded first, by the model itself: one forward per batch in
which layer 0 runs for real (its input, ``x_0``, and output, ``x_1``, recorded, and the form of its
output learnt) and every later layer is replaced, for that pass only, by a stand-in that records
its arguments (masks, position embeddings, flags: per layer, so a sliding-window layer gets its own
mask) and hands its input on; the last stand-in stops the forward before the norm and head. Those
arguments depend on positions and masks, never on the hidden states, so replaying them with the
real states gives each layer exactly the call it gets inside the model. (AutoGPTQ records layer 0's
arguments alone, which is not enough for models whose layers differ in attention type.)

A cut that keeps source layers ``k_0, k_1, ...`` is the same model as the source with the other
layers removed (what ``downcycle cut`` writes: the same tensors, per-layer config entries sliced),
so its layer ``j`` gets the call the source's layer ``k_j`` gets. The selections form a tree of
prefixes: the state after ``(k_0..k_j)`` is computed once for every selection that starts so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DowncycleError
from .skeleton import LayerwiseModel
from .store import StateStore

__all__ = ["LayerwiseRun", "STATE_BUDGET", "run_layerwise", "run_tree"]

STATE_BUDGET = 4 * 2**30  # bytes of states between layers kept in memory; the rest spills to disk

Visit = Callable[[int, int, Any], None]  # (state index l = 0..L, batch index, x_l (B, S, d))
TreeVisit = Callable[[tuple[int, ...], int, Any], None]  # (source layers run so far, batch index, state (B, S, d))


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
        batches: ``{"input_ids", "attention_mask", "position_ids"}`` mappings (the last two optional;
            the mask 2-D or the model's 4-D form), ``(ids, mask)`` tuples or id tensors.
        budget: bytes of states kept in memory between layers; beyond it they go to ``spill_dir``.
    """
    return run_tree(lw, [range(lw.num_layers)], batches, lambda path, b, x: visit(len(path), b, x),
                    budget=budget, spill_dir=spill_dir, progress=progress)


@dataclass
class _Node:
    path: tuple[int, ...]
    parent: int  # node index (-1: none, the root)
    children: int = 0


def _tree(paths: Sequence[Sequence[int]], n: int) -> list[_Node]:
    """Every prefix of every path, parents before children; node 0 is the empty prefix (``x_0``)."""
    nodes, index = [_Node((), -1)], {(): 0}
    for p in paths:
        bad = [i for i in p if not 0 <= i < n]
        if bad or not len(p):
            raise DowncycleError(f"layers {list(p)}: " + (f"layer {bad[0]} is out of range for a {n}-layer model" if bad else "none kept"))
        for j in range(1, len(p) + 1):
            prefix = tuple(p[:j])
            if prefix not in index:
                index[prefix] = len(nodes)
                nodes.append(_Node(prefix, index[prefix[:-1]]))
                nodes[index[prefix[:-1]]].children += 1
    return nodes


def run_tree(lw: LayerwiseModel, paths: Sequence[Sequence[int]], batches: Iterable[Any], visit: TreeVisit, *,
             budget: int = STATE_BUDGET, spill_dir: Any = None, progress: bool = False) -> LayerwiseRun:
    """Run ``batches`` through several selections of ``lw``'s layers (``paths``: source layer indices
    in order, repeats allowed), calling ``visit(prefix, b, x)`` once with the state after every
    distinct prefix of every path (``()``: the embedding output), for every batch ``b`` in turn.

    Depth by depth, each layer loaded once per depth for every prefix that runs it; a prefix's
    state is kept (memory up to ``budget``, then ``spill_dir``) until its last child has run.
    """
    import torch

    from ..progress import progress_bar

    inputs = [_forward_inputs(b, lw.device) for b in batches]
    n = lw.num_layers
    nodes = _tree(paths, n)
    first = next((k for k, node in enumerate(nodes) if node.path == (0,)), None)  # x_1 comes from the recording pass
    start = time.perf_counter()
    states = StateStore(budget, spill_dir)
    with torch.inference_mode(), progress_bar(total=len(nodes) - 1, desc="layers", unit="layer", disable=not progress, leave=False) as bar:
        try:
            calls = _record(lw, inputs, nodes, first, visit, states)
            bar.update(int(first is not None))
            depth_of: dict[int, list[int]] = {}
            for k, node in enumerate(nodes[1:], 1):
                if k != first:
                    depth_of.setdefault(len(node.path), []).append(k)
            last_use: dict[int, int] = {}  # layer -> the deepest depth it runs at (its calls kept until then)
            for node in nodes[1:]:
                last_use[node.path[-1]] = max(last_use.get(node.path[-1], 0), len(node.path))
            for depth in sorted(depth_of):
                order = sorted(depth_of[depth], key=lambda k: nodes[k].path[-1])
                last_child = {nodes[k].parent: k for k in order}
                for i in sorted({nodes[k].path[-1] for k in order}):
                    layer = lw.materialise(i)
                    for k in (k for k in order if nodes[k].path[-1] == i):
                        node = nodes[k]
                        for b in range(len(inputs)):
                            args, kwargs = _with_hidden(*calls[b][i], states.get((node.parent, b)))
                            hidden = _output_state(layer(*args, **kwargs))
                            visit(node.path, b, hidden)
                            if node.children:
                                states.put((k, b), hidden)
                            if last_child[node.parent] == k:
                                states.drop((node.parent, b))
                        bar.update(1)
                    lw.release(i)
                for i in [i for i, d in last_use.items() if d == depth]:
                    for c in calls:
                        c[i] = None
        finally:
            for i in range(n):
                lw.release(i)
            peak, spilled = states.peak_bytes, states.spilled_bytes
            states.close()
    return LayerwiseRun(n, len(inputs), time.perf_counter() - start, lw.loaded_bytes, peak, spilled)


def _record(lw: LayerwiseModel, inputs: list[dict], nodes: list[_Node], first: int | None, visit: TreeVisit,
            states: StateStore) -> list[list[tuple[tuple, dict] | None]]:
    """The recording pass: every layer's call for every batch (its hidden state left out, so that
    no state outlives its turn), ``x_0`` and ``x_1`` visited and kept where a later layer needs them."""
    n = lw.num_layers
    calls: list[list[tuple[tuple, dict] | None]] = [[None] * n for _ in inputs]  # [batch][layer] -> (args, kwargs)
    seen: dict[str, Any] = {}

    def stand_in(i: int):
        def forward(*args: Any, **kwargs: Any) -> Any:
            calls[seen["batch"]][i] = _with_hidden(args, kwargs, None)
            if i == n - 1:
                raise _Stop
            hidden = _hidden(args, kwargs)
            return (hidden,) if seen["tuple"] else hidden
        return forward

    def record_first(module: Any, args: tuple, kwargs: dict) -> None:
        seen["x0"] = _hidden(args, kwargs)
        calls[seen["batch"]][0] = _with_hidden(args, kwargs, None)

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
    root_needed = nodes[0].children > (first is not None)  # a path that does not start with layer 0
    try:
        for b, kwargs in enumerate(inputs):
            seen["batch"] = b
            try:
                lw.model(**kwargs, use_cache=False)
            except _Stop:
                pass
            else:
                raise DowncycleError(f"{type(lw.model).__name__}: the forward did not reach its last decoder layer")
            x0, x1 = seen.pop("x0"), seen.pop("x1")
            visit((), b, x0)
            if root_needed:
                states.put((0, b), x0)
            if first is not None:
                visit((0,), b, x1)
                if nodes[first].children:
                    states.put((first, b), x1)
    finally:
        for h in handles:
            h.remove()
        for i in range(1, n):  # the layers' own forward back before any of them runs
            vars(lw.layers[i]).pop("forward", None)
        lw.release(0)
    return calls


def _forward_inputs(batch: Any, device: Any) -> dict[str, Any]:
    """The model's forward arguments of one batch, on ``device``."""
    if isinstance(batch, dict):
        out = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if batch.get(k) is not None}
    elif isinstance(batch, (tuple, list)):
        out = {"input_ids": batch[0], **({"attention_mask": batch[1]} if len(batch) > 1 and batch[1] is not None else {})}
    else:
        out = {"input_ids": batch}
    return {k: v.to(device) for k, v in out.items()}
