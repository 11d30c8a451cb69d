"""A cut, planned: the new config and the list of (new tensor name, source bytes). No torch here.

``cut_config`` rewrites the decoder's config for the kept source layers using the field tables in
:mod:`downcycle.architecture`; ``tensor_plan`` maps every output tensor to the bytes it is copied
from. Anything that a cut cannot express raises :class:`DowncycleError` before a byte is written.
"""

from __future__ import annotations

import copy
from typing import Any

from ..architecture import (
    EXTRA_PER_LAYER_FIELDS, IMPLICIT_PER_LAYER, INDEX_LIST_FIELDS, LAYER_COUNT_KEYS, PATTERN_FIELDS, PERIODIC_FIELDS,
    THRESHOLD_FIELDS, Config, LayerLayout, refusal,
)  # fmt: skip
from ..checkpoint.safetensors_index import TensorEntry
from ..errors import DowncycleError

__all__ = ["cut_config", "tensor_plan"]


def cut_config(config: Config, layout: LayerLayout, kept: list[int]) -> tuple[Config, list[str]]:
    """The config of the model made of source layers ``kept`` (in order, repeats allowed).

    Returns:
        (new config, notes): notes say, in words, every field that was translated or removed.
    """
    new = copy.deepcopy(config)
    cfg = new
    for key in layout.text_path:
        cfg = cfg[key]
    n, notes = layout.num_layers, []
    why = refusal(cfg, kept, n)
    if why:
        raise DowncycleError(f"cannot cut this {layout.model_type} model: {why}")
    for field, derive in IMPLICIT_PER_LAYER.get(layout.model_type, {}).items():
        if cfg.get(field) is None:
            cfg[field] = derive(cfg, n)
            notes.append(f"{field} was implicit; written out explicitly")
    _sparse_step(cfg, kept, notes)
    _kv_sharing(cfg, kept, n, layout.model_type)
    for key in list(cfg):
        value = cfg[key]
        if key in INDEX_LIST_FIELDS and isinstance(value, list):
            chosen = set(value)
            cfg[key] = [j for j, i in enumerate(kept) if i in chosen]
        elif ("layer" in key or key in EXTRA_PER_LAYER_FIELDS) and isinstance(value, (list, str)) and len(value) == n:
            cfg[key] = [value[i] for i in kept] if isinstance(value, list) else "".join(value[i] for i in kept)
    for key, matters in THRESHOLD_FIELDS.items():
        if isinstance(cfg.get(key), int):
            value = cfg[key]
            cfg[key] = _threshold(key, value, kept, matters(cfg), layout.model_type)
            if not _monotone([i < value for i in kept]):
                notes.append(f"{key}={value} cannot describe this layer order; set to {cfg[key]} (inert: layer_types is explicit)")
    for period_key, offset_key in PERIODIC_FIELDS:
        if isinstance(cfg.get(period_key), int) and isinstance(cfg.get(offset_key), int):
            cfg[period_key], cfg[offset_key] = _periodic(cfg, period_key, offset_key, kept)
    for key, listed in PATTERN_FIELDS.items():
        if isinstance(cfg.get(key), int) and isinstance(cfg.get(listed), list):
            p = cfg[key]
            if [(j + 1) % p != 0 for j in range(len(kept))] != [t != "full_attention" for t in cfg[listed]]:
                del cfg[key]
                notes.append(f"{key}={p} no longer describes the kept layers; removed ({listed} is explicit)")
    for key in LAYER_COUNT_KEYS:
        if cfg.get(key) == n:
            cfg[key] = len(kept)
    return new, notes


def _threshold(key: str, value: int, kept: list[int], matters: bool, model_type: str) -> int:
    """Layer i has the property iff i < value; keep that true for the new positions."""
    below = [i < value for i in kept]
    if matters and not _monotone(below):
        raise DowncycleError(
            f"cannot cut this {model_type} model to layers {kept}: {key}={value} requires layers below "
            f"{value} to come first, and this order puts layer {kept[below.index(True, below.index(False))]} after "
            f"layer {kept[below.index(False)]}"
        )
    return sum(below)


def _monotone(below: list[bool]) -> bool:
    return below == sorted(below, reverse=True)


def _periodic(cfg: Config, period_key: str, offset_key: str, kept: list[int]) -> tuple[int, int]:
    p, o = cfg[period_key], cfg[offset_key]
    want = [i % p == o for i in kept]
    for np_ in [p, *range(1, len(kept) + 1)]:
        for no in range(np_):
            if [j % np_ == no for j in range(len(kept))] == want:
                return np_, no
    raise DowncycleError(f"cannot cut to layers {kept}: no {period_key}/{offset_key} expresses which kept layers had the property")


def _sparse_step(cfg: Config, kept: list[int], notes: list[str]) -> None:
    """Qwen-MoE: layer i is dense iff i in mlp_only_layers or (i+1) % decoder_sparse_step != 0.

    Rewritten as decoder_sparse_step=1 plus an explicit mlp_only_layers, which expresses any order.
    mlp_only_layers is left in source indices; the generic index-list pass remaps it.
    """
    step = cfg.get("decoder_sparse_step")
    if not isinstance(step, int) or step == 1 or not cfg.get("num_experts"):
        return
    only = set(cfg.get("mlp_only_layers") or [])
    cfg["mlp_only_layers"] = sorted({i for i in kept if i in only or (i + 1) % step != 0})
    cfg["decoder_sparse_step"] = 1
    notes.append(f"decoder_sparse_step={step} rewritten as decoder_sparse_step=1 with explicit mlp_only_layers")


def _kv_sharing(cfg: Config, kept: list[int], n: int, model_type: str) -> None:
    """Gemma-3n style: the last k layers reuse the KV cache of the last unshared layer of their type."""
    k = cfg.get("num_kv_shared_layers")
    if not k:
        return
    types = cfg.get("layer_types") or ["full_attention"] * n
    first = n - k
    source_of = {t: max(i for i in range(first) if types[i] == t) for t in set(types[first:])}
    shared = [i >= first for i in kept]
    if shared != sorted(shared):
        raise DowncycleError(f"cannot cut this {model_type} model: KV-sharing layers ({first}-{n - 1}) must stay at the end")
    new_first = shared.index(True) if True in shared else len(kept)
    for j in range(new_first, len(kept)):
        t = types[kept[j]]
        unshared = [jj for jj in range(new_first) if types[kept[jj]] == t]
        if not unshared or kept[unshared[-1]] != source_of[t]:
            raise DowncycleError(
                f"cannot cut this {model_type} model: layer {kept[j]} shares the KV cache of layer {source_of[t]}, "
                "which the cut drops or moves"
            )
    cfg["num_kv_shared_layers"] = len(kept) - new_first


def tensor_plan(layout: LayerLayout, tensors: dict[str, TensorEntry], kept: list[int]) -> list[tuple[str, TensorEntry]]:
    """Every output tensor and the source bytes it copies, in on-disk order.

    Non-layer tensors stored before layer 0 in the source (embeddings, usually) come first, then
    the kept layers in their new order, then the other non-layer tensors (final norm, head). Each
    group keeps its source order, so runs adjacent in the source stay adjacent (one copy each).
    """
    by_pos = lambda name: (str(tensors[name].file), tensors[name].start)  # noqa: E731
    first_layer = min(by_pos(name) for name in layout.layers[0])
    others = sorted(layout.others, key=by_pos)
    plan = [(name, tensors[name]) for name in others if by_pos(name) < first_layer]
    for j, i in enumerate(kept):
        for name in sorted(layout.layers[i], key=by_pos):
            plan.append((layout.layer_name(j, name), tensors[name]))
    plan += [(name, tensors[name]) for name in others if by_pos(name) > first_layer]
    return plan


def describe(kept: list[int], source_layers: int) -> dict[str, Any]:
    """Facts about a selection worth recording in a manifest."""
    return {
        "kept_layers": kept,
        "source_layers": source_layers,
        "dropped_layers": [i for i in range(source_layers) if i not in set(kept)],
        "repeated_layers": sorted({i for i in kept if kept.count(i) > 1}),
    }
