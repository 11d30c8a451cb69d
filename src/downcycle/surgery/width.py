"""A width prune, planned: the new config and, for every output tensor, the rows and columns it keeps
and the rescale it gets (:class:`~downcycle.checkpoint.slicing.SliceJob`). No torch here.

Which axis of which tensor is a neuron, a head or a channel comes from the width layout inferred
by :mod:`downcycle.architecture.width_infer`; what a family cannot prune exactly (ALiBi heads, a
sinusoidal table's channels) is refused one kind at a time. The compensations that keep a prune
exact where it can be:

- **Norms over fewer channels.** An RMSNorm divides by the root mean square over its ``d``
  channels; kept alone, ``d'`` channels whose pruned companions were zero have a mean square
  ``d/d'`` times larger. So the weights are rescaled by ``sqrt(d/d')`` (Gemma's ``(1 + w)`` form:
  ``w' = sqrt(d/d') * (1 + w) - 1``), and a prune of channels that are zero throughout the residual
  stream is exact up to the norm's eps (``mean + eps`` over fewer channels). OLMo2's q/k norms span
  the whole projection, so head pruning rescales them by the same rule.
- **Gemma's embedding scale.** transformers multiplies Gemma's embedding output by
  ``sqrt(hidden_size)`` from the config, which becomes ``sqrt(d')``; the embedding is scaled by
  ``sqrt(d/d')`` to keep the residual stream as it was, and with tied embeddings (the output layer
  then sees the scaled matrix) the inverse is folded into the final norm (its weight and bias).
  ``scale_embedding: true`` (XGLM, BioGPT) is the same factor.
- **LayerNorm** (GPT-2, GPT-NeoX, Falcon, OPT, StableLM, Cohere ...; Nemotron's ``(1 + w)`` form
  rescaled as Gemma's) subtracts the mean over its channels, and the mean over fewer
  channels differs even when the pruned ones are zero: hidden pruning there is approximate (the
  weights are rescaled as for RMSNorm, which is exact for the variance of a zero-mean stream),
  and says so in a note recorded in the manifest. Neurons and heads are exact in every family.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from ..architecture import (
    HEADS,
    HIDDEN,
    KIND_WORDS,
    KINDS,
    NORM_KINDS,
    Config,
    LayerLayout,
    WidthFamily,
    width_layout,
)
from ..architecture.width import Axis, Rule, unit_width
from ..checkpoint.safetensors_index import TensorEntry
from ..checkpoint.slicing import SliceJob
from ..errors import DowncycleError
from .width_plan import OPTION, WidthPlan

__all__ = ["WidthModel", "kept_sizes", "refuse_kinds", "width_config", "width_jobs", "width_model"]

LAYERNORM_NOTE = ("hidden channels pruned under LayerNorm: its mean is taken over fewer channels, so the prune is approximate "
                  "even for channels that were zero (weights rescaled by sqrt(d/d') for the variance); heal it")


@dataclass(frozen=True)
class WidthModel:
    """A source model's width: its inferred layout, its sizes (``kv_heads`` = ``heads`` for
    multi-head attention) and head size."""

    model_type: str
    family: WidthFamily
    sizes: dict[str, int]
    head_dim: int
    tied: bool


def width_model(config: Config, layout: LayerLayout, tensors: dict[str, TensorEntry]) -> WidthModel:
    """The width of the model of ``config`` whose tensors are ``tensors``, inferred from both
    (:func:`~downcycle.architecture.width_layout`): every tensor has a rule and the shape it implies.

    Raises:
        DowncycleError: for a multimodal config, a refused feature, a size field that is not one
            integer, a tensor without a rule or of another shape, a family none of whose kinds prunes exactly.
    """
    if layout.text_path:
        raise DowncycleError(f"cannot prune the width of a {layout.model_type} model nested in {layout.text_path[0]}")
    found = width_layout(config, {name: entry.shape for name, entry in tensors.items()}, layout)
    return WidthModel(layout.model_type, found.family, found.sizes, found.head_dim, layout.tied_embeddings)


def refuse_kinds(model: WidthModel, kinds: list[str]) -> None:
    """Refuse pruning any of ``kinds`` that ``model`` cannot prune exactly, naming why.

    Raises:
        DowncycleError: ``cannot prune the <units> of a '<family>' model: <why>``.
    """
    for kind in kinds:
        if kind in model.family.refused:
            raise DowncycleError(f"cannot prune the {KIND_WORDS[kind]} of a {model.model_type!r} model: {model.family.refused[kind]}")


def _rule(model: WidthModel, layout: LayerLayout, name: str) -> Rule:
    if name.startswith(layout.prefix):
        suffix = name[len(layout.prefix):].split(".", 1)[1]
        rule = model.family.layer.get(suffix)
    else:
        rule = model.family.others.get(name)
    if rule is None:
        raise DowncycleError(f"{name}: no {model.model_type} width rule says which of its axes are neurons, heads or channels; "
                             "downcycle cannot prune this model's width")
    return rule


def _axis_index(model: WidthModel, axis: Axis | None, kept: dict[str, list[int] | None]) -> list[int] | None:
    """The kept elements of one tensor axis, in order (None: all of them)."""
    if axis is None or all(kept[kind] is None for kind, _ in axis):
        return None
    out: list[int] = []
    offset = 0
    for kind, m in axis:
        unit = unit_width(kind, m, model.head_dim)
        for u in kept[kind] if kept[kind] is not None else range(model.sizes[kind]):
            out.extend(range(offset + u * unit, offset + (u + 1) * unit))
        offset += model.sizes[kind] * unit
    return out


def kept_sizes(model: WidthModel, plan: WidthPlan) -> dict[str, int]:
    """The sizes after ``plan`` (of a checked plan: the same in every layer)."""
    return {kind: model.sizes[kind] if getattr(plan, kind) is None else len(plan.kept(kind, 0)) for kind in KINDS}


def width_config(config: Config, model: WidthModel, plan: WidthPlan) -> tuple[Config, list[str]]:
    """The config of the pruned model (``config`` may already be a depth cut's).

    Returns:
        (new config, notes): notes say, in words, what was written besides the sizes.

    Raises:
        DowncycleError: for a family whose head size transformers derives from the hidden size
            (GPT-2, GPT-NeoX), or whose heads must fill it (Helium), when the kept heads and channels
            do not keep heads x head_dim = hidden; for a kind the family cannot prune exactly.
    """
    new, notes = copy.deepcopy(config), []
    sizes = kept_sizes(model, plan)
    family = model.family
    refuse_kinds(model, [kind for kind in KINDS if sizes[kind] != model.sizes[kind]])
    if (family.head_dim is None or family.heads_fill_hidden) and sizes[HEADS] * model.head_dim != sizes[HIDDEN]:
        why = (f"computes the head size as {family.sizes[HIDDEN]} / {family.sizes[HEADS]}" if family.head_dim is None else
               f"builds the attention output projection {family.sizes[HIDDEN]} wide on both sides")
        raise DowncycleError(f"{OPTION[HEADS]} {sizes[HEADS]} with {OPTION[HIDDEN]} {sizes[HIDDEN]}: transformers' {model.model_type} "
                             f"{why}, so heads and hidden shrink together: keep {OPTION[HIDDEN]} = {OPTION[HEADS]} x {model.head_dim}")
    for kind, key in family.sizes.items():
        if sizes[kind] != model.sizes[kind] or new.get(key) is None:
            new[key] = sizes[kind]
    for key, kind in family.mirrors.items():
        new[key] = sizes[kind]
    heads_or_hidden = (sizes[HEADS], sizes[HIDDEN]) != (model.sizes[HEADS], model.sizes[HIDDEN])
    if family.head_dim is not None and new.get(family.head_dim) is None and heads_or_hidden:
        new[family.head_dim] = model.head_dim
        notes.append(f"{family.head_dim}={model.head_dim} written out (it was derived from hidden_size / num_attention_heads)")
    if NORM_KINDS[family.norm][1] and sizes[HIDDEN] != model.sizes[HIDDEN]:
        notes.append(LAYERNORM_NOTE)
    return new, notes


def width_jobs(model: WidthModel, layout: LayerLayout, plan: WidthPlan, depth: list[tuple[str, TensorEntry]]) -> list[SliceJob]:
    """Every output tensor of the prune: ``depth`` is the depth cut's tensor plan (``(output name,
    source entry)`` in on-disk order; every layer, for a width prune alone), each tensor sliced by
    its rule and the plan's kept units for its source layer."""
    d, d_kept = model.sizes[HIDDEN], kept_sizes(model, plan)[HIDDEN]
    embed_scale = math.sqrt(d / d_kept) if model.family.embed_scale and d_kept != d else None
    final_bias = model.family.final_norm.removesuffix(".weight") + ".bias"
    jobs = []
    for name, entry in depth:
        rule = _rule(model, layout, entry.name)
        if not rule.axes:
            jobs.append(SliceJob(name, entry))
            continue
        layer = int(entry.name[len(layout.prefix):].split(".", 1)[0]) if entry.name.startswith(layout.prefix) else 0
        kept = {kind: plan.kept(kind, layer) for kind in KINDS}
        index = [_axis_index(model, axis, kept) for axis in rule.axes]
        scale = None
        if rule.norm:
            scale = math.sqrt(entry.shape[0] / len(index[0])) if index[0] is not None else None
            if entry.name == model.family.final_norm and embed_scale is not None and model.tied:
                scale = (scale or 1.0) / embed_scale  # the output layer sees the scaled embedding
        elif entry.name == model.family.embedding:
            scale = embed_scale
        elif entry.name == final_bias and embed_scale is not None and model.tied:
            scale = 1.0 / embed_scale  # a LayerNorm's bias feeds the output layer too (BioGPT)
        if scale is not None and math.isclose(scale, 1.0, rel_tol=0, abs_tol=1e-12):
            scale = None
        shift = NORM_KINDS[model.family.norm][0] if rule.norm else 0.0
        jobs.append(SliceJob(name, entry, index[0], index[1] if len(index) > 1 else None, scale, shift))
    return jobs
