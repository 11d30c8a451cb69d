"""The width axis of model families, as types: which axis of which tensor is an MLP neuron, a query
head, a KV head or an embedding channel. The layout of a checkpoint is inferred from its config and
tensors (:mod:`.width_infer`), with the facts only transformers' code holds in a small table
(:mod:`.width_facts`).

A tensor's rule gives, for each of its axes, the *segments* laid end to end along it: ``(kind, m)``
is one block of ``count(kind)`` units, each ``m`` elements wide (``m x head_dim`` for the two head
kinds). So Llama's ``q_proj.weight`` [heads*hd, hidden] is ``((HEADS, 1),), ((HIDDEN, 1),)``;
Phi-3's fused ``qkv_proj`` rows are ``(HEADS, 1), (KV_HEADS, 1), (KV_HEADS, 1)`` (q, then k, then
v); GPT-NeoX's ``query_key_value`` rows interleave per head, ``[head, (q, k, v), head_dim]``, so
they are one segment ``(HEADS, 3)``; GPT-2's Conv1D weights are stored ``[in, out]``, transposed
against nn.Linear. An axis given as None is kept whole (the vocabulary rows of an embedding).

Norm weights are marked: pruning channels of their axis changes the mean they take (over fewer
channels), which the surgery compensates (:mod:`downcycle.surgery.width`). The kind of norm is the
family's (:data:`NORM_KINDS`): ``rms`` (``x / rms(x) * w``), ``rms1p`` (Gemma: ``x / rms(x) * (1 +
w)``), ``layernorm`` (mean and variance, weight and bias) or ``layernorm1p`` (Nemotron: ``(1 + w)``).
Qwen3's and Gemma3's q/k norms act on one head's head_dim and are untouched by head pruning;
OLMo2's span the whole projection and are sliced with the heads.

A config feature named in :data:`WIDTH_REFUSED` (mixture-of-experts layers, per-layer sizes), a
tensor without a rule, or a shape the config does not explain is refused, never pruned wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FFN, HEADS, KV_HEADS, HIDDEN = "ffn", "heads", "kv_heads", "hidden"
KINDS = (FFN, HEADS, KV_HEADS, HIDDEN)
HEAD_KINDS = (HEADS, KV_HEADS)  # their units are head_dim elements wide
# What a kind's units are, in messages ("cannot prune the attention heads of ...").
KIND_WORDS = {FFN: "MLP neurons", HEADS: "attention heads", KV_HEADS: "KV heads", HIDDEN: "hidden channels"}
# norm kind -> (offset added to the weight, whether the mean is subtracted)
NORM_KINDS = {"rms": (0.0, False), "rms1p": (1.0, False), "layernorm": (0.0, True), "layernorm1p": (1.0, True)}

Segment = tuple[str, int]  # (kind, elements per unit; for the head kinds, in head_dims)
Axis = tuple[Segment, ...]

__all__ = [
    "FFN",
    "HEADS",
    "HEAD_KINDS",
    "HIDDEN",
    "KINDS",
    "KIND_WORDS",
    "KV_HEADS",
    "NORM_KINDS",
    "WIDTH_REFUSED",
    "Axis",
    "Rule",
    "WidthFamily",
    "axis_length",
    "unit_width",
    "width_refusal",
]


@dataclass(frozen=True)
class Rule:
    """What each axis of one tensor is. ``axes`` has one entry per tensor axis (None: kept whole);
    ``()`` means the tensor is copied as it is whatever its shape (a buffer such as GPT-2's causal
    mask). ``norm``: a norm's weight, rescaled for the mean over fewer channels."""

    axes: tuple[Axis | None, ...]
    norm: bool = False


@dataclass(frozen=True)
class WidthFamily:
    """One checkpoint's width layout.

    Attributes:
        sizes: kind -> the config field holding its count. No ``kv_heads`` entry: multi-head
            attention, one KV head per query head (GPT-2, GPT-NeoX), or a fixed count (``constants``).
        head_dim: the config field transformers reads the head size from; None where it always
            computes hidden_size / heads (then heads and hidden can only shrink together).
        heads_fill_hidden: heads x head_dim must equal hidden_size, though head_dim is read
            (Helium's o_proj is hidden_size wide on both sides): heads and hidden shrink together.
        norm: a key of :data:`NORM_KINDS`.
        layer: a decoder layer's tensors, by name after the layer prefix (``self_attn.q_proj.weight``).
        others: the tensors outside the layers, by full name (embeddings, final norm, head).
        embedding: the token embedding (with tied embeddings, also the output layer's weight).
        final_norm: the norm before the output layer ("" where it has no weight: OLMo).
        down_proj, o_proj: the layer tensors whose input is the MLP's neuron activations and the
            heads' concatenated outputs (where the importance of neurons and heads is measured).
        embed_scale: transformers multiplies the embedding output by sqrt(hidden_size), taken from
            the config (Gemma), so pruning channels changes that factor.
        defaults: kind -> (field, multiplier) giving the size when its own field is null (GPT-2's
            ``n_inner``: 4 x ``n_embd``).
        refused: kind -> why that kind cannot be pruned exactly in this model (the others can).
        constants: kind -> a count no config field holds (multi-query attention: one KV head).
        mirrors: config field -> the kind whose size it repeats (OPT's ``word_embed_proj_dim``),
            rewritten with it.
    """

    sizes: dict[str, str]
    head_dim: str | None
    norm: str
    layer: dict[str, Rule]
    others: dict[str, Rule]
    embedding: str
    final_norm: str
    down_proj: str
    o_proj: str
    embed_scale: bool = False
    defaults: dict[str, tuple[str, int]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    constants: dict[str, int] = field(default_factory=dict)
    mirrors: dict[str, str] = field(default_factory=dict)
    heads_fill_hidden: bool = False


def unit_width(kind: str, m: int, head_dim: int) -> int:
    """Elements of one unit of a segment ``(kind, m)``."""
    return m * head_dim if kind in HEAD_KINDS else m


def axis_length(axis: Axis, sizes: dict[str, int], head_dim: int) -> int:
    """The length an axis has in a model of ``sizes``: the sum of its segments."""
    return sum(sizes[kind] * unit_width(kind, m, head_dim) for kind, m in axis)


# Config features no width rule expresses: field -> why.
WIDTH_REFUSED = {
    "num_local_experts": "mixture-of-experts layers (each expert is an MLP of its own)",
    "num_experts": "mixture-of-experts layers (each expert is an MLP of its own)",
    "n_routed_experts": "mixture-of-experts layers (each expert is an MLP of its own)",
    "moe_num_experts": "mixture-of-experts layers (each expert is an MLP of its own)",
    "hidden_size_per_layer_input": "per-layer input embeddings",
}


def width_refusal(cfg: dict) -> str | None:
    """Why no width layout expresses this (text) config -- a feature of :data:`WIDTH_REFUSED`, as
    ``"field=value: why"`` -- or None."""
    for key, why in WIDTH_REFUSED.items():
        if cfg.get(key):
            return f"{key}={cfg[key]}: {why}"
    return None
