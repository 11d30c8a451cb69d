"""Which role a tensor plays, by its module path: the names transformers gives the projections,
norms and embeddings of a decoder (``self_attn.q_proj``, ``attn.c_attn``, ``mlp.dense_4h_to_h``,
``fc2``, ``ln_1``, ``lm_head`` ...), as tables. A name none of them matches has no role, and the
checkpoint's width is refused naming it.
"""

from __future__ import annotations

import re

from .layers import POSITION_TABLE
from .width import HIDDEN, Rule

__all__ = [
    "ATTENTION_MODULES",
    "BUFFER",
    "DOWN",
    "EMBEDDINGS",
    "GATE",
    "GATE_UP",
    "K_NORM",
    "MLP_MODULES",
    "NORM",
    "OUTPUT_LAYERS",
    "QKV",
    "Q_NORM",
    "SCALAR",
    "UP",
    "K",
    "O",
    "Q",
    "V",
    "layer_role",
    "other_rule",
]

ATTENTION_MODULES = ("self_attn", "attn", "attention", "self_attention")
MLP_MODULES = ("mlp", "feed_forward", "ffn")
Q, K, V, O, QKV, Q_NORM, K_NORM, GATE, UP, DOWN, GATE_UP = "q", "k", "v", "o", "qkv", "q_norm", "k_norm", "gate", "up", "down", "gate_up"
NORM, BUFFER, SCALAR = "norm", "buffer", "scalar"  # a norm over the hidden size; copied as it is (a buffer, a learned scalar)
ATTENTION_ROLES = {
    "q_proj": Q, "query": Q, "k_proj": K, "key": K, "v_proj": V, "value": V,
    "o_proj": O, "out_proj": O, "dense": O, "c_proj": O,
    "qkv_proj": QKV, "query_key_value": QKV, "c_attn": QKV, "Wqkv": QKV,
    "q_norm": Q_NORM, "q_layernorm": Q_NORM, "query_layernorm": Q_NORM,
    "k_norm": K_NORM, "k_layernorm": K_NORM, "key_layernorm": K_NORM,
}  # fmt: skip
MLP_ROLES = {
    "gate_proj": GATE, "up_proj": UP, "c_fc": UP, "fc1": UP, "fc_in": UP, "dense_h_to_4h": UP,
    "down_proj": DOWN, "c_proj": DOWN, "fc2": DOWN, "fc_out": DOWN, "dense_4h_to_h": DOWN, "gate_up_proj": GATE_UP,
}  # fmt: skip
LAYER_MLP_ROLES = {"fc1": UP, "fc2": DOWN}  # OPT, XGLM: the MLP's linears sit in the layer itself
ACTIVATIONS = ("act_fn", "act")  # learned scalars of an activation (Apertus' xIELU): copied
MASK_BUFFERS = ("bias", "masked_bias")  # on the attention module itself: causal masks of older GPT-2 / NeoX checkpoints
NORM_NAME = re.compile(r"norm|^ln(_|$)")
EMBEDDINGS = ("embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings")
OUTPUT_LAYERS = ("lm_head", "embed_out", "output", "output_projection")

_H = ((HIDDEN, 1),)


def layer_role(suffix: str) -> str | None:
    """The role of a layer tensor by its name after ``prefix.N.`` (``self_attn.q_proj.weight``)."""
    *modules, param = suffix.split(".")
    if modules[-1:] == ["rotary_emb"] and param == "inv_freq":
        return BUFFER
    if len(modules) >= 2 and modules[0] in ATTENTION_MODULES and modules[1] in ATTENTION_MODULES:
        modules = modules[1:]  # GPT-Neo: attn.attention.q_proj
    if len(modules) == 1:
        (module,) = modules
        if module in ATTENTION_MODULES:
            return BUFFER if param in MASK_BUFFERS else None
        if param not in ("weight", "bias"):
            return None
        return NORM if NORM_NAME.search(module) else LAYER_MLP_ROLES.get(module)
    if len(modules) == 2:
        block, module = modules
        if block in MLP_MODULES and module in ACTIVATIONS:
            return SCALAR
        if param not in ("weight", "bias"):
            return None
        if block in ATTENTION_MODULES:
            return ATTENTION_ROLES.get(module)
        if block in MLP_MODULES:
            return MLP_ROLES.get(module)
    return None


def other_rule(name: str) -> Rule | None:
    """The rule of a tensor outside the decoder layers: embeddings, norms, the output layer."""
    *modules, param = name.split(".")
    leaf = modules[-1] if modules else ""
    if param == "weight" and (leaf in EMBEDDINGS or leaf in OUTPUT_LAYERS or POSITION_TABLE.search(name)):
        return Rule((None, _H))  # [vocab or positions, hidden]
    if param == "bias" and leaf in OUTPUT_LAYERS:
        return Rule((None,))
    if NORM_NAME.search(leaf) and param in ("weight", "bias"):
        return Rule((_H,), norm=param == "weight")
    return None


