"""``downcycle prune``: write a checkpoint with fewer MLP neurons, attention heads and embedding
channels (the same sizes in every layer) and, with ``--layers`` / ``--drop``, fewer layers.

Reads only safetensors headers to plan (:mod:`.width` on top of :mod:`.depth`'s layer cut), then
writes each output tensor sliced from its source one block at a time
(:mod:`downcycle.checkpoint.slicing`) into a temporary sibling directory renamed into place at the
end. Memory is bounded by a block, never by the model, and torch is never imported. The kept
units come from a ``width_plan.json`` (``--plan``) or are the most important by a ``scores.json``
(``--scores``, or one measured first with ``--data``: :mod:`downcycle.compound.prune`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..architecture import FFN, HEADS, HIDDEN, KINDS, KV_HEADS, LayerLayout, infer_layout
from ..artifacts.atomic import atomic_output_dir, check_free_space
from ..artifacts.quantities import BYTES, parse_quantity
from ..checkpoint import Checkpoint, open_checkpoint
from ..checkpoint.slicing import write_sliced
from ..errors import DowncycleError
from ..jsonfile import read_json
from ..loading import config_objection, read_config
from ..recipe import PruneConfig, output_dict, to_dict
from .cut import MERGEKIT_NAME, check_paths, copy_threads, source_inputs
from .depth import cut_config, describe, tensor_plan
from .layerspec import drop_to_keep, format_layers, parse_layers
from .width import WidthModel, kept_sizes, refuse_kinds, width_config, width_jobs, width_model
from .width_plan import OPTION, WIDTH_PLAN_NAME, WidthPlan, check_plan, load_width_plan, save_width_plan, select_width

__all__ = ["PruneResult", "check_source", "prune", "summary"]


@dataclass
class PruneResult:
    out: Path
    sizes_before: dict[str, int]
    sizes_after: dict[str, int]
    layers_before: int
    layers_after: int
    parameters_before: int
    parameters_after: int
    bytes_written: int
    shards: list[str]
    notes: list[str] = field(default_factory=list)


def _plan(config: PruneConfig, scores: dict[str, Any] | None, sizes: dict[str, int], num_layers: int) -> WidthPlan:
    """The width plan of ``--plan``, or chosen from ``--scores`` (or the scores measured for ``--data``)."""
    if config.plan is not None:
        plan = check_plan(load_width_plan(config.plan), sizes, num_layers, where=str(config.plan))
        kept = {kind: len(plan.kept(kind, 0)) if getattr(plan, kind) is not None else sizes[kind] for kind in KINDS}
        for kind in KINDS:
            asked = getattr(config, kind)
            if asked is not None and asked != kept[kind]:
                raise DowncycleError(f"{OPTION[kind]} {asked}: {config.plan} keeps {kept[kind]}")
        return plan
    if scores is None:
        scores = read_json(config.scores, "expected a scores.json written by `downcycle analyze --width`")
    model_sizes = {"num_layers": num_layers, "intermediate_size": sizes[FFN], "num_attention_heads": sizes[HEADS],
                   "num_key_value_heads": sizes[KV_HEADS], "hidden_size": sizes[HIDDEN]}
    where = config.scores or "the calibration pass"
    for key, value in model_sizes.items():
        if isinstance(scores, dict) and scores.get(key) is not None and scores[key] != value:
            raise DowncycleError(f"{where}: scores are for a model with {key}={scores[key]}, the source has {value}")
    plan = select_width(scores, ffn=config.ffn, heads=config.heads, kv_heads=config.kv_heads, hidden=config.hidden)
    return check_plan(plan, sizes, num_layers)


def _layers(config: PruneConfig, num_layers: int) -> list[int]:
    if config.layers is not None:
        return parse_layers(config.layers, num_layers)
    if config.drop is not None:
        return drop_to_keep(config.drop, num_layers)
    return list(range(num_layers))


def _open(config: PruneConfig) -> tuple[Path, dict[str, Any], Checkpoint, LayerLayout, WidthModel, list[int]]:
    """The source, checked for everything that needs no scores: paths, family, tensors, layers."""
    src = check_paths(config)  # type: ignore[arg-type]  # reads source, out, force and the inputs
    source_config = read_config(src)
    ckpt = open_checkpoint(src)
    layout = infer_layout(source_config, list(ckpt.tensors))
    model = width_model(source_config, layout, ckpt.tensors)
    refuse_kinds(model, [kind for kind in KINDS if getattr(config, kind) not in (None, model.sizes[kind])])
    return src, source_config, ckpt, layout, model, _layers(config, layout.num_layers)


def check_source(config: PruneConfig) -> Path:
    """Refuse, before a calibration pass loads the model, what the prune would refuse without
    scores (an existing output, an unknown tensor, a kind the family cannot prune, a bad layer spec); returns the
    source's local directory."""
    return _open(config)[0]


def prune(config: PruneConfig, scores: dict[str, Any] | None = None, beside: Callable[[Path], None] | None = None) -> PruneResult:
    """Prune ``config.source`` to the sizes (and layers) of ``config`` and write it to ``config.out``.

    Args:
        scores: a ``scores.json`` document measured by the caller (``--data``); else ``--scores``
            or ``--plan`` name the choice.
        beside: called with the directory being filled, to write more files beside the weights
            before the manifest and the card (``--data``: the scores and their plots).
    """
    out = Path(config.out)
    src, source_config, ckpt, layout, model, kept_layers = _open(config)
    plan = _plan(config, scores, model.sizes, layout.num_layers)
    depth_cut = kept_layers != list(range(layout.num_layers))
    new_config, notes = cut_config(source_config, layout, kept_layers) if depth_cut else (source_config, [])
    new_config, width_notes = width_config(new_config, model, plan)
    notes += width_notes
    objection = config_objection(new_config)
    if objection is not None:  # e.g. Gemma 3's config wants hidden_size a multiple of the heads, its head_dim stated or not
        sizes = ", ".join(f"{OPTION[k]} {n}" for k, n in kept_sizes(model, plan).items() if n != model.sizes[k])
        raise DowncycleError(f"{sizes}: transformers would not load the pruned {layout.model_type} config ({objection})")
    jobs = width_jobs(model, layout, plan, tensor_plan(layout, ckpt.tensors, kept_layers))
    total = sum(job.entry().nbytes for job in jobs)
    check_free_space(out, total)
    before = sum(math.prod(e.shape) for e in ckpt.tensors.values())
    after = sum(math.prod(job.shape) for job in jobs)
    sizes = kept_sizes(model, plan)
    with atomic_output_dir(out, force=config.force) as tmp:
        shards = write_sliced(tmp, jobs, {"format": "pt", **ckpt.metadata},
                              parse_quantity(config.max_shard_size, "--max-shard-size", BYTES), copy_threads(config.threads))
        from ..artifacts.card import write_card
        from ..artifacts.hashes import file_sha256
        from ..artifacts.manifest import write_manifest
        from ..artifacts.sidecars import copy_sidecars

        (tmp / "config.json").write_text(json.dumps(new_config, indent=2) + "\n")
        copy_sidecars(src, tmp, rewritten={"config.json", WIDTH_PLAN_NAME, MERGEKIT_NAME})
        save_width_plan(plan, tmp / WIDTH_PLAN_NAME)
        if beside is not None:
            beside(tmp)
        inputs = source_inputs(config.source, src, ckpt)
        for name in ("plan", "scores"):
            if getattr(config, name) is not None:
                inputs["hashes"][name] = file_sha256(getattr(config, name))
        outputs = {
            **describe(kept_layers, layout.num_layers),
            "layers_spec": format_layers(kept_layers),
            "model_type": layout.model_type,
            "sizes_before": model.sizes,
            "sizes_after": sizes,
            "parameters_before": before,
            "parameters_after": after,
            "width_plan": WIDTH_PLAN_NAME,
            "width_plan_sha256": file_sha256(tmp / WIDTH_PLAN_NAME),
            "lm_head": "tied" if layout.tied_embeddings else "separate",
            "bytes": total,
            "shards": shards,
            "config_notes": notes,
        }
        write_manifest(tmp, "prune", to_dict(config), inputs, outputs, hashed=output_dict(config))
        write_card(tmp)
    return PruneResult(out, model.sizes, sizes, layout.num_layers, len(kept_layers), before, after, total, shards, notes)


_LABELS = {FFN: "ffn", HEADS: "heads", KV_HEADS: "kv heads", HIDDEN: "hidden"}


def summary(result: PruneResult) -> str:
    """What ``downcycle prune`` wrote: sizes and parameters before -> after, and the notes."""
    sizes = ", ".join(f"{_LABELS[k]} {result.sizes_before[k]} -> {result.sizes_after[k]}" for k in KINDS)
    share = result.parameters_after / result.parameters_before
    lines = [(f"wrote {result.out}: {sizes}, layers {result.layers_before} -> {result.layers_after}; parameters "
              f"{result.parameters_before:,} -> {result.parameters_after:,} ({share:.1%}); "
              f"{result.bytes_written / 1e6:.1f} MB in {len(result.shards)} shard(s)")]
    return "\n".join(lines + [f"  note: {note}" for note in result.notes])
