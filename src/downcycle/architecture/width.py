"""The width axis of model families, as data: which axis of which tensor is an MLP neuron, a query
head, a KV head or an embedding channel, in every family ``downcycle prune`` can shrink.

A tensor's rule gives, for each of its axes, the *segments* laid end to end along it: ``(kind, m)``
is one block of ``count(kind)`` units, each ``m`` elements wide (``m x head_dim`` for the two head
kinds). So Llama's ``q_proj.weight`` [heads*hd, hidden] is ``((HEADS, 1),), ((HIDDEN, 1),)``;
Phi-3's fused ``qkv_proj`` rows are ``(HEADS, 1), (KV_HEADS, 1), (KV_HEADS, 1)`` (q, then k, then
v); GPT-NeoX's ``query_key_value`` rows interleave per head, ``[head, (q, k, v), head_dim]``, so
they are one segment ``(HEADS, 3)``; GPT-2's Conv1D weights are stored ``[in, out]``, transposed
against nn.Linear. An axis given as None is kept whole (the vocabulary rows of an embedding).

Norm weights are marked: pruning channels of their axis changes the mean they take (over fewer
channels), which the surgery compensates (:mod:`downcycle.surgery.width`). The kind of norm is the
family's: ``rms`` (``x / rms(x) * w``), ``rms1p`` (Gemma: ``x / rms(x) * (1 + w)``) or ``layernorm``
(mean and variance, weight and bias). Qwen3's and Gemma3's q/k norms act on one head's head_dim and
are untouched by head pruning; OLMo2's span the whole projection and are sliced with the heads.

A family not listed, a tensor without a rule, or a config feature named in :data:`WIDTH_REFUSED`
(mixture-of-experts layers, per-layer sizes) is refused, never pruned wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DowncycleError

FFN, HEADS, KV_HEADS, HIDDEN = "ffn", "heads", "kv_heads", "hidden"
KINDS = (FFN, HEADS, KV_HEADS, HIDDEN)
HEAD_KINDS = (HEADS, KV_HEADS)  # their units are head_dim elements wide

Segment = tuple[str, int]  # (kind, elements per unit; for the head kinds, in head_dims)
Axis = tuple[Segment, ...]

__all__ = [
    "FFN",
    "HEADS",
    "HEAD_KINDS",
    "HIDDEN",
    "KINDS",
    "KV_HEADS",
    "WIDTH_FAMILIES",
    "WIDTH_REFUSED",
    "Axis",
    "Rule",
    "WidthFamily",
    "width_family",
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
    """One family's width layout.

    Attributes:
        sizes: kind -> the config field holding its count. No ``kv_heads`` entry: multi-head
            attention, one KV head per query head (GPT-2, GPT-NeoX).
        head_dim: the config field transformers reads the head size from; None where it always
            computes hidden_size / heads (then heads and hidden can only shrink together).
        norm: ``rms``, ``rms1p`` or ``layernorm`` (see the module docstring).
        layer: a decoder layer's tensors, by name after the layer prefix (``self_attn.q_proj.weight``).
        others: the tensors outside the layers, by full name (embeddings, final norm, head).
        embedding: the token embedding (with tied embeddings, also the output layer's weight).
        final_norm: the norm before the output layer.
        embed_scale: transformers multiplies the embedding output by sqrt(hidden_size), taken from
            the config (Gemma), so pruning channels changes that factor.
        down_proj, o_proj: the layer tensors whose input is the MLP's neuron activations and the
            heads' concatenated outputs (where the importance of neurons and heads is measured).
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
    defaults: dict[str, tuple[str, int]] = field(default_factory=dict)  # kind -> (field, multiplier) when the size is null


def _one(kind: str, m: int = 1) -> Axis:
    return ((kind, m),)


F, H, Q, KV = _one(FFN), _one(HIDDEN), _one(HEADS), _one(KV_HEADS)
COPY = Rule(())


def _linear(out: Axis | None, inp: Axis | None) -> Rule:
    """An nn.Linear weight, stored [out, in]."""
    return Rule((out, inp))


def _vector(axis: Axis) -> Rule:
    return Rule((axis,))


def _norm(axis: Axis) -> Rule:
    return Rule((axis,), norm=True)


def _proj(name: str, out: Axis, inp: Axis) -> dict[str, Rule]:
    """A projection's weight and its (optional) bias."""
    return {f"{name}.weight": _linear(out, inp), f"{name}.bias": _vector(out)}


_HF_SIZES = {FFN: "intermediate_size", HEADS: "num_attention_heads", KV_HEADS: "num_key_value_heads", HIDDEN: "hidden_size"}
_ATTENTION = {**_proj("self_attn.q_proj", Q, H), **_proj("self_attn.k_proj", KV, H), **_proj("self_attn.v_proj", KV, H),
              **_proj("self_attn.o_proj", H, Q)}
_GATED_MLP = {**_proj("mlp.gate_proj", F, H), **_proj("mlp.up_proj", F, H), **_proj("mlp.down_proj", H, F)}
_PRE_NORMS = {"input_layernorm.weight": _norm(H), "post_attention_layernorm.weight": _norm(H)}
_SANDWICH_NORMS = {**_PRE_NORMS, "pre_feedforward_layernorm.weight": _norm(H), "post_feedforward_layernorm.weight": _norm(H)}
_HEAD_DIM_QK_NORMS = {"self_attn.q_norm.weight": COPY, "self_attn.k_norm.weight": COPY}  # over one head's head_dim
_HF_OTHERS = {"model.embed_tokens.weight": _linear(None, H), "model.norm.weight": _norm(H), "lm_head.weight": _linear(None, H)}


def _hf(layer: dict[str, Rule], norm: str = "rms", embed_scale: bool = False) -> WidthFamily:
    """A family with transformers' Llama names (``model.layers.N.self_attn.q_proj`` ...)."""
    return WidthFamily(_HF_SIZES, "head_dim", norm, layer, _HF_OTHERS, "model.embed_tokens.weight", "model.norm.weight",
                       "mlp.down_proj.weight", "self_attn.o_proj.weight", embed_scale)


_LLAMA = _hf({**_ATTENTION, **_GATED_MLP, **_PRE_NORMS})
# GPT-2: Conv1D weights are [in, out]; c_attn's outputs are q | k | v, each heads x head_dim.
_GPT2_QKV: Axis = ((HEADS, 1), (HEADS, 1), (HEADS, 1))
_GPT2 = WidthFamily(
    {FFN: "n_inner", HEADS: "n_head", HIDDEN: "n_embd"}, None, "layernorm",
    {"attn.c_attn.weight": Rule((H, _GPT2_QKV)), "attn.c_attn.bias": _vector(_GPT2_QKV),
     "attn.c_proj.weight": Rule((Q, H)), "attn.c_proj.bias": _vector(H),
     "mlp.c_fc.weight": Rule((H, F)), "mlp.c_fc.bias": _vector(F), "mlp.c_proj.weight": Rule((F, H)), "mlp.c_proj.bias": _vector(H),
     "ln_1.weight": _norm(H), "ln_1.bias": _vector(H), "ln_2.weight": _norm(H), "ln_2.bias": _vector(H),
     "attn.bias": COPY, "attn.masked_bias": COPY},  # causal-mask buffers of older checkpoints
    {"transformer.wte.weight": _linear(None, H), "transformer.wpe.weight": _linear(None, H), "transformer.ln_f.weight": _norm(H),
     "transformer.ln_f.bias": _vector(H), "lm_head.weight": _linear(None, H)},
    "transformer.wte.weight", "transformer.ln_f.weight", "mlp.c_proj.weight", "attn.c_proj.weight",
    defaults={FFN: ("n_embd", 4)},  # n_inner null: 4 x n_embd
)  # fmt: skip
# GPT-NeoX: query_key_value's outputs interleave per head: [head, (q, k, v), head_dim].
_NEOX_QKV = _one(HEADS, 3)
_GPT_NEOX = WidthFamily(
    {FFN: "intermediate_size", HEADS: "num_attention_heads", HIDDEN: "hidden_size"}, None, "layernorm",
    {**_proj("attention.query_key_value", _NEOX_QKV, H), **_proj("attention.dense", H, Q),
     **_proj("mlp.dense_h_to_4h", F, H), **_proj("mlp.dense_4h_to_h", H, F),
     "input_layernorm.weight": _norm(H), "input_layernorm.bias": _vector(H),
     "post_attention_layernorm.weight": _norm(H), "post_attention_layernorm.bias": _vector(H),
     "attention.bias": COPY, "attention.masked_bias": COPY, "attention.rotary_emb.inv_freq": COPY},  # buffers of older checkpoints
    {"gpt_neox.embed_in.weight": _linear(None, H), "gpt_neox.final_layer_norm.weight": _norm(H),
     "gpt_neox.final_layer_norm.bias": _vector(H), "embed_out.weight": _linear(None, H)},
    "gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm.weight", "mlp.dense_4h_to_h.weight", "attention.dense.weight",
)  # fmt: skip

WIDTH_FAMILIES: dict[str, WidthFamily] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "smollm3": _LLAMA,
    "qwen2": _LLAMA,  # q/k/v biases: the optional biases of _ATTENTION
    "qwen3": _hf({**_ATTENTION, **_GATED_MLP, **_PRE_NORMS, **_HEAD_DIM_QK_NORMS}),
    "gemma2": _hf({**_ATTENTION, **_GATED_MLP, **_SANDWICH_NORMS}, "rms1p", embed_scale=True),
    "gemma3_text": _hf({**_ATTENTION, **_GATED_MLP, **_SANDWICH_NORMS, **_HEAD_DIM_QK_NORMS}, "rms1p", embed_scale=True),
    # OLMo2: norms after attention and MLP only; q/k norms over the whole projection, sliced with the heads
    "olmo2": _hf({**_ATTENTION, **_GATED_MLP, "post_attention_layernorm.weight": _norm(H), "post_feedforward_layernorm.weight": _norm(H),
                  "self_attn.q_norm.weight": _norm(Q), "self_attn.k_norm.weight": _norm(KV)}),
    # Phi-3: fused qkv_proj (q, then k, then v) and gate_up_proj (gate, then up; transformers chunks it in two)
    "phi3": _hf({**_proj("self_attn.qkv_proj", ((HEADS, 1), (KV_HEADS, 1), (KV_HEADS, 1)), H), **_proj("self_attn.o_proj", H, Q),
                 **_proj("mlp.gate_up_proj", ((FFN, 1), (FFN, 1)), H), **_proj("mlp.down_proj", H, F), **_PRE_NORMS}),
    "gpt2": _GPT2,
    "gpt_neox": _GPT_NEOX,
}
# Config features no width rule expresses: field -> why.
WIDTH_REFUSED = {
    "num_local_experts": "mixture-of-experts layers (each expert is an MLP of its own)",
    "num_experts": "mixture-of-experts layers (each expert is an MLP of its own)",
    "n_routed_experts": "mixture-of-experts layers (each expert is an MLP of its own)",
    "hidden_size_per_layer_input": "per-layer input embeddings",
}


def width_refusal(cfg: dict) -> str | None:
    """Why no width layout expresses this (text) config -- a feature of :data:`WIDTH_REFUSED`, as
    ``"field=value: why"`` -- or None."""
    for key, why in WIDTH_REFUSED.items():
        if cfg.get(key):
            return f"{key}={cfg[key]}: {why}"
    return None


def width_family(model_type: str) -> WidthFamily:
    """The width layout of ``model_type``.

    Raises:
        DowncycleError: for a family whose width layout downcycle does not know.
    """
    if model_type not in WIDTH_FAMILIES:
        raise DowncycleError(f"cannot prune the width of a {model_type!r} model: downcycle knows the width layout of "
                             f"{', '.join(sorted(WIDTH_FAMILIES))}")
    return WIDTH_FAMILIES[model_type]
