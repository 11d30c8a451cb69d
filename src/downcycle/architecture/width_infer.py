"""A checkpoint's width layout, inferred from its config.json and its tensor names and shapes.

Generic rules first. Every tensor of a decoder layer gets a role from its module path after the
layer prefix (the names are tables in :mod:`.width_names`): ``<attention>.<projection>`` (``self_attn``, ``attn``, ``attention`` or
``self_attention``, also nested as GPT-Neo's ``attn.attention``; q/k/v/o as ``q_proj``, ``query``, ``o_proj``, ``out_proj``, ``dense``,
``c_proj`` ..., fused as ``qkv_proj``, ``query_key_value``, ``c_attn``, ``Wqkv``; q/k norms),
``<mlp>.<projection>`` (``mlp``, ``feed_forward``, ``ffn``; ``gate_proj``, ``up_proj``, ``c_fc``,
``fc1``, ``fc_in``, ``dense_h_to_4h``, their down counterparts, fused ``gate_up_proj``: gate then
up, as transformers chunks it), ``fc1`` / ``fc2`` in the layer itself (OPT), or a norm over the
hidden size (``*norm*``, ``ln_*``). Outside the layers: token and position embeddings, norms and
the output layer. A role fixes which axis is what (nn.Linear weights are ``[out, in]``); the config
gives the sizes (``hidden_size`` / ``n_embd`` / ``d_model``, ``num_attention_heads`` / ``n_head``
..., ``num_key_value_heads`` ..., ``intermediate_size`` / ``n_inner`` / ``ffn_dim`` ...), and every
tensor's shape must be what its rule and those sizes say, or it is refused by name. The norm's kind
follows the config's eps field (``rms_norm_eps``: RMSNorm; else LayerNorm, which makes hidden
pruning approximate; norms without weights (OLMo, NanoChat) leave nothing to rescale, and hidden
pruning is refused), the head size is ``head_dim`` when config.json has it, and an embedding scale
is said by ``scale_embedding``.

Then the facts only transformers' code holds (:mod:`.width_facts`): Gemma's ``(1 + w)`` norms and
embedding scale, fused-projection layouts, Conv1D's transposed weights, multi-query KV counts, and
the kinds a family cannot prune exactly (ALiBi slopes, a sinusoidal table) -- refused one kind at a
time, the rest of the model still pruned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DowncycleError
from .layers import Config, LayerLayout, infer_layout, text_config
from .width import (FFN, HEADS, HIDDEN, KIND_WORDS, KINDS, KV_HEADS, NORM_KINDS, Axis, Rule, WidthFamily, axis_length,
                    width_refusal)
from .width_facts import ONE_PER_HEAD, width_facts
from .width_names import (BUFFER, DOWN, EMBEDDINGS, GATE, GATE_UP, K_NORM, NORM, Q_NORM, QKV, SCALAR, UP, K, O, Q, V,
                          layer_role, other_rule)

__all__ = ["SIZE_FIELDS", "WidthLayout", "width_layout", "width_sizes"]

# kind -> the config fields that hold its size, first found wins
SIZE_FIELDS = {
    HIDDEN: ("hidden_size", "n_embd", "d_model"),
    HEADS: ("num_attention_heads", "n_head", "n_heads", "num_heads", "attention_heads"),
    KV_HEADS: ("num_key_value_heads", "num_kv_heads", "n_head_kv"),
    FFN: ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"),
}
FOUR_X_FIELDS = ("n_inner",)  # null: 4 x the hidden size (GPT-2, GPT-J, CodeGen, GPTBigCode)
MIRROR_FIELDS = {"word_embed_proj_dim": HIDDEN}  # OPT: the embedding width, equal to hidden_size unless projected

_F, _H, _Q, _KV = ((FFN, 1),), ((HIDDEN, 1),), ((HEADS, 1),), ((KV_HEADS, 1),)
# role -> (output axis, input axis) of its nn.Linear weight
_LINEAR: dict[str, tuple[Axis | None, Axis]] = {
    Q: (_Q, _H), K: (_KV, _H), V: (_KV, _H), O: (_H, _Q),
    GATE: (_F, _H), UP: (_F, _H), DOWN: (_H, _F), GATE_UP: (((FFN, 1), (FFN, 1)), _H),
}  # fmt: skip


@dataclass(frozen=True)
class WidthLayout:
    """A checkpoint's width: its layout, its sizes (``kv_heads`` = ``heads`` for multi-head
    attention) and head size."""

    model_type: str
    family: WidthFamily
    sizes: dict[str, int]
    head_dim: int


def _fields(cfg: Config, facts: Any) -> tuple[dict[str, str], dict[str, int], dict[str, tuple[str, int]]]:
    """(kind -> size field, kind -> fixed count, kind -> default for a null field)."""
    fields = {kind: next((n for n in names if n in cfg), None) for kind, names in SIZE_FIELDS.items()}
    fields.update(facts.fields)
    constants: dict[str, int] = {}
    if facts.kv == ONE_PER_HEAD:
        fields[KV_HEADS] = None
    elif isinstance(facts.kv, int):
        fields[KV_HEADS], constants[KV_HEADS] = None, facts.kv
    elif facts.kv is not None:
        fields[KV_HEADS] = facts.kv
    defaults = dict(facts.defaults)
    if fields[FFN] in FOUR_X_FIELDS and fields[HIDDEN]:
        defaults.setdefault(FFN, (fields[HIDDEN], 4))
    return {k: v for k, v in fields.items() if v is not None}, constants, defaults


def width_sizes(cfg: Config, family: WidthFamily, model_type: str) -> tuple[dict[str, int], int]:
    """The sizes (every kind; ``kv_heads`` = ``heads`` without a KV field or constant) and the head
    size of a model of ``family`` with this (text) config.

    Raises:
        DowncycleError: for a size that is not one positive integer (per-layer sizes).
    """
    sizes: dict[str, int] = {}
    for kind in (HIDDEN, HEADS, FFN, KV_HEADS):
        key = family.sizes.get(kind)
        value = cfg.get(key) if key else family.constants.get(kind)
        if value is None and kind in family.defaults:
            base, times = family.defaults[kind]
            value = cfg[base] * times if isinstance(cfg.get(base), int) else None
        if value is None and kind == KV_HEADS:
            value = sizes[HEADS]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DowncycleError(f"cannot prune the width of this {model_type} model: config {key or kind}={value!r} is not "
                                 "one positive integer (per-layer sizes are not supported)")
        sizes[kind] = value
    if sizes[HEADS] % sizes[KV_HEADS]:
        raise DowncycleError(f"config: {sizes[HEADS]} attention heads are not a multiple of {sizes[KV_HEADS]} KV heads")
    head_dim = cfg.get(family.head_dim) if family.head_dim else None
    return {kind: sizes[kind] for kind in KINDS}, head_dim or sizes[HIDDEN] // sizes[HEADS]


def _check_shape(name: str, rule: Rule, shape: Sequence[int], sizes: dict[str, int], head_dim: int, model_type: str) -> None:
    if not rule.axes:
        return
    if len(rule.axes) != len(shape) or any(axis is not None and axis_length(axis, sizes, head_dim) != n
                                           for axis, n in zip(rule.axes, shape)):
        raise DowncycleError(f"{name}: shape {list(shape)} is not what the {model_type} width layout expects from config sizes "
                             f"{sizes} (per-layer sizes or an unknown layout?)")


def _linear_rule(role: str, param: str, qkv: Axis | None, conv1d: bool) -> Rule:
    out, inp = (qkv, _H) if role == QKV else _LINEAR[role]
    if param == "bias":
        return Rule((out,))
    return Rule((inp, out)) if conv1d else Rule((out, inp))


def _head_norm_rule(role: str, param: str, length: int, head_dim: int, mean: bool, refused: dict[str, str], module: str) -> Rule:
    """A q/k norm: over one head's head_dim (shared by the heads: copied) or over the whole
    projection (OLMo2: sliced with the heads, and rescaled as an RMSNorm over fewer channels)."""
    axis = _Q if role == Q_NORM else _KV
    if length == head_dim:
        return Rule(())
    if mean:
        refused.setdefault(HEADS, f"its {module} is a LayerNorm over all heads, whose mean changes when heads go")
    return Rule((axis,), norm=param == "weight" and not mean)


def _unknown(name: str, model_type: str) -> DowncycleError:
    return DowncycleError(f"{name}: no {model_type} width rule says which of its axes are neurons, heads or channels; "
                          "downcycle cannot prune this model's width")


def _layer_roles(shapes: Mapping[str, Sequence[int]], layout: LayerLayout) -> tuple[dict[str, str], dict[str, Sequence[int]]]:
    """Every layer tensor's role, by its name after the layer prefix, and its shape in the first
    layer that has it."""
    roles: dict[str, str] = {}
    first: dict[str, Sequence[int]] = {}
    for name, shape in shapes.items():
        if not name.startswith(layout.prefix):
            continue
        suffix = name[len(layout.prefix):].split(".", 1)[1]
        role = layer_role(suffix)
        if role is None:
            raise _unknown(name, layout.model_type)
        if role == SCALAR and math.prod(shape) > 1:
            raise DowncycleError(f"{name}: an activation parameter of {math.prod(shape)} elements, not one; downcycle cannot "
                                 "prune this model's width")
        roles[suffix] = role
        first.setdefault(suffix, shape)
    return roles, first


def _refusals(cfg: Config, facts: Any, roles: dict[str, str], fields: dict[str, str]) -> dict[str, str]:
    """kind -> why it cannot be pruned exactly, from the facts, the config and the tensors' roles."""
    refused = dict(facts.refused)
    if FFN not in fields:  # BLOOM, MPT
        refused.setdefault(FFN, "no config field holds its MLP width")
    fused = next((s for s, r in roles.items() if r == QKV), None)
    if fused is not None and facts.qkv is None:
        refused.setdefault(HEADS, f"its fused {fused.rsplit('.', 1)[0]} has a layout of q, k and v downcycle does not know")
    if cfg.get("alibi"):
        refused.setdefault(HEADS, "ALiBi: each head's attention bias slope is computed from the number of heads")
    if NORM not in roles.values():  # OLMo's LayerNorms, NanoChat's RMSNorms
        refused.setdefault(HIDDEN, "its norms have no weights to rescale for the mean over fewer channels")
    for key, kind in MIRROR_FIELDS.items():
        if cfg.get(key) is not None and cfg[key] != cfg.get(fields[kind]):  # OPT with project_in / project_out
            refused.setdefault(kind, f"config {key}={cfg[key]} differs from {fields[kind]}={cfg.get(fields[kind])}")
    return refused


def _together(refused: dict[str, str], fields: dict[str, str], derived: bool) -> None:
    """Where heads x head_dim must equal the hidden size, a refusal of either is a refusal of both;
    KV heads go with their query heads."""
    tied = (f"its head size is {fields[HIDDEN]} / {fields[HEADS]}" if derived else
            f"its attention output projection is {fields[HIDDEN]} wide") + ", so heads and hidden channels go only together"
    for kind, other in ((HIDDEN, HEADS), (HEADS, HIDDEN)):
        if other in refused:
            refused.setdefault(kind, f"{tied}, and {KIND_WORDS[other]}: {refused[other]}")


def _others(shapes: Mapping[str, Sequence[int]], layout: LayerLayout) -> tuple[dict[str, Rule], str, str]:
    """The rules of the tensors outside the layers, the token embedding and the final norm."""
    rules: dict[str, Rule] = {}
    embedding = final_norm = ""
    for name in shapes:
        if name.startswith(layout.prefix):
            continue
        rule = other_rule(name)
        if rule is None:
            raise _unknown(name, layout.model_type)
        rules[name] = rule
        if name.count(".") and name.split(".")[-2] in EMBEDDINGS and not embedding:
            embedding = name
        if rule.norm and "embed" not in name:  # not BLOOM's word_embeddings_layernorm
            final_norm = name
    return rules, embedding, final_norm


def width_layout(config: Config, shapes: Mapping[str, Sequence[int]], layout: LayerLayout | None = None, *,
                 others: bool = True) -> WidthLayout:
    """The width layout of the checkpoint whose config.json is ``config`` and whose tensors have
    ``shapes`` (name -> shape). ``others=False``: the decoder layers' tensors only (no embedding or
    final norm is named; for hooking a loaded model's layers).

    Raises:
        DowncycleError: a refused config feature (experts ...), a tensor without a rule, a shape the
            config sizes do not explain, a missing MLP or attention output projection, or a model
            none of whose kinds can be pruned exactly. The message is one line naming the cause.
    """
    layout = layout or infer_layout(config, list(shapes))
    cfg, _ = text_config(config)
    model_type = layout.model_type
    why = width_refusal(cfg)
    if why:
        raise DowncycleError(f"cannot prune the width of a {model_type!r} model: {why}")
    facts = width_facts(model_type, cfg)
    fields, constants, defaults = _fields(cfg, facts)
    for kind in (HIDDEN, HEADS):
        if kind not in fields:
            raise DowncycleError(f"cannot prune the width of a {model_type!r} model: config.json has no {' / '.join(SIZE_FIELDS[kind])}")
    roles, first = _layer_roles(shapes, layout)
    down = next((s for s, r in roles.items() if r == DOWN and s.endswith(".weight")), None)
    o_proj = next((s for s, r in roles.items() if r == O and s.endswith(".weight")), None)
    if down is None or o_proj is None:
        missing = "MLP down projection" if down is None else "attention output projection"
        raise DowncycleError(f"cannot prune the width of a {model_type!r} model: no {missing} found in its layers ({layout.prefix}N.*)")
    refused = _refusals(cfg, facts, roles, fields)
    if FFN not in fields:  # the MLP width, read from the down projection
        constants[FFN] = int(first[down][0 if facts.conv1d else 1])
    norm = facts.norm or ("rms" if "rms_norm_eps" in cfg else "layernorm")
    head_dim_field = "head_dim" if cfg.get("head_dim") is not None or facts.reads_head_dim else None
    probe = WidthFamily(fields, head_dim_field, norm, {}, {}, "", "", down, o_proj, defaults=defaults, constants=constants)
    sizes, head_dim = width_sizes(cfg, probe, model_type)

    layer: dict[str, Rule] = {}
    for suffix, role in roles.items():
        param = suffix.rsplit(".", 1)[1]
        if role in (BUFFER, SCALAR):
            layer[suffix] = Rule(())
        elif role == NORM:
            layer[suffix] = Rule((_H,), norm=param == "weight")
        elif role in (Q_NORM, K_NORM):
            module = suffix.rsplit(".", 1)[0]
            layer[suffix] = _head_norm_rule(role, param, int(first[suffix][0]), head_dim, NORM_KINDS[norm][1], refused, module)
        else:
            layer[suffix] = _linear_rule(role, param, facts.qkv, facts.conv1d)
    other_rules, embedding, final_norm = _others(shapes, layout) if others else ({}, "", "")
    for name, shape in shapes.items():
        rule = layer[name[len(layout.prefix):].split(".", 1)[1]] if name.startswith(layout.prefix) else other_rules.get(name)
        if rule is not None:
            _check_shape(name, rule, shape, sizes, head_dim, model_type)

    if head_dim_field is None or facts.heads_fill_hidden:
        _together(refused, fields, head_dim_field is None)
    if HEADS in refused:
        refused.setdefault(KV_HEADS, f"they go with their query heads: {refused[HEADS]}")
    if all(kind in refused for kind in KINDS):
        reasons = "; ".join(f"{KIND_WORDS[k]}: {refused[k]}" for k in (FFN, HEADS, HIDDEN))
        raise DowncycleError(f"cannot prune the width of a {model_type!r} model: {reasons}")
    mirrors = {key: kind for key, kind in MIRROR_FIELDS.items() if cfg.get(key) is not None and kind not in refused}
    family = WidthFamily(fields, head_dim_field, norm, layer, other_rules, embedding, final_norm, down, o_proj,
                         facts.embed_scale or bool(cfg.get("scale_embedding")), defaults,
                         {k: refused[k] for k in KINDS if k in refused}, constants, mirrors, facts.heads_fill_hidden)
    return WidthLayout(model_type, family, sizes, head_dim)
