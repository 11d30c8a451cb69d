"""The width layout inferred from config.json and the tensors' names and shapes: equal, for every
family the per-family table listed before inference, to that table (kept here as the oracle); the
families and kinds still refused, each with its one-line reason; and the tensors no rule explains."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors import safe_open

from downcycle.architecture import FFN, HEADS, HIDDEN, KV_HEADS, Rule, WidthFamily, width_layout
from downcycle.errors import DowncycleError


# -- the table downcycle kept before inference (src/downcycle/architecture/width.py, WIDTH_FAMILIES) --
def _one(kind, m=1):
    return ((kind, m),)


F, H, Q, KV = _one(FFN), _one(HIDDEN), _one(HEADS), _one(KV_HEADS)
COPY = Rule(())


def _proj(name, out, inp):
    return {f"{name}.weight": Rule((out, inp)), f"{name}.bias": Rule((out,))}


_HF_SIZES = {FFN: "intermediate_size", HEADS: "num_attention_heads", KV_HEADS: "num_key_value_heads", HIDDEN: "hidden_size"}
_ATTENTION = {**_proj("self_attn.q_proj", Q, H), **_proj("self_attn.k_proj", KV, H), **_proj("self_attn.v_proj", KV, H),
              **_proj("self_attn.o_proj", H, Q)}
_GATED_MLP = {**_proj("mlp.gate_proj", F, H), **_proj("mlp.up_proj", F, H), **_proj("mlp.down_proj", H, F)}
_PRE_NORMS = {"input_layernorm.weight": Rule((H,), norm=True), "post_attention_layernorm.weight": Rule((H,), norm=True)}
_SANDWICH = {**_PRE_NORMS, "pre_feedforward_layernorm.weight": Rule((H,), norm=True),
             "post_feedforward_layernorm.weight": Rule((H,), norm=True)}
_QK_HEAD_DIM = {"self_attn.q_norm.weight": COPY, "self_attn.k_norm.weight": COPY}
_HF_OTHERS = {"model.embed_tokens.weight": Rule((None, H)), "model.norm.weight": Rule((H,), norm=True),
              "lm_head.weight": Rule((None, H))}


def _hf(layer, norm="rms", embed_scale=False):
    return WidthFamily(_HF_SIZES, "head_dim", norm, layer, _HF_OTHERS, "model.embed_tokens.weight", "model.norm.weight",
                       "mlp.down_proj.weight", "self_attn.o_proj.weight", embed_scale)


_LLAMA = _hf({**_ATTENTION, **_GATED_MLP, **_PRE_NORMS})
_GPT2_QKV = ((HEADS, 1), (HEADS, 1), (HEADS, 1))
_LN = {f"{n}.{p}": Rule((H,), norm=p == "weight") for n in ("ln_1", "ln_2") for p in ("weight", "bias")}
TABLE = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "smollm3": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _hf({**_ATTENTION, **_GATED_MLP, **_PRE_NORMS, **_QK_HEAD_DIM}),
    "gemma2": _hf({**_ATTENTION, **_GATED_MLP, **_SANDWICH}, "rms1p", embed_scale=True),
    "gemma3_text": _hf({**_ATTENTION, **_GATED_MLP, **_SANDWICH, **_QK_HEAD_DIM}, "rms1p", embed_scale=True),
    "olmo2": _hf({**_ATTENTION, **_GATED_MLP, "post_attention_layernorm.weight": Rule((H,), norm=True),
                  "post_feedforward_layernorm.weight": Rule((H,), norm=True), "self_attn.q_norm.weight": Rule((Q,), norm=True),
                  "self_attn.k_norm.weight": Rule((KV,), norm=True)}),
    "phi3": _hf({**_proj("self_attn.qkv_proj", ((HEADS, 1), (KV_HEADS, 1), (KV_HEADS, 1)), H), **_proj("self_attn.o_proj", H, Q),
                 **_proj("mlp.gate_up_proj", ((FFN, 1), (FFN, 1)), H), **_proj("mlp.down_proj", H, F), **_PRE_NORMS}),
    "gpt2": WidthFamily(
        {FFN: "n_inner", HEADS: "n_head", HIDDEN: "n_embd"}, None, "layernorm",
        {"attn.c_attn.weight": Rule((H, _GPT2_QKV)), "attn.c_attn.bias": Rule((_GPT2_QKV,)), "attn.c_proj.weight": Rule((Q, H)),
         "attn.c_proj.bias": Rule((H,)), "mlp.c_fc.weight": Rule((H, F)), "mlp.c_fc.bias": Rule((F,)),
         "mlp.c_proj.weight": Rule((F, H)), "mlp.c_proj.bias": Rule((H,)), **_LN, "attn.bias": COPY, "attn.masked_bias": COPY},
        {"transformer.wte.weight": Rule((None, H)), "transformer.wpe.weight": Rule((None, H)),
         "transformer.ln_f.weight": Rule((H,), norm=True), "transformer.ln_f.bias": Rule((H,)), "lm_head.weight": Rule((None, H))},
        "transformer.wte.weight", "transformer.ln_f.weight", "mlp.c_proj.weight", "attn.c_proj.weight",
        defaults={FFN: ("n_embd", 4)}),
    "gpt_neox": WidthFamily(
        {FFN: "intermediate_size", HEADS: "num_attention_heads", HIDDEN: "hidden_size"}, None, "layernorm",
        {**_proj("attention.query_key_value", _one(HEADS, 3), H), **_proj("attention.dense", H, Q),
         **_proj("mlp.dense_h_to_4h", F, H), **_proj("mlp.dense_4h_to_h", H, F),
         **{f"{n}.{p}": Rule((H,), norm=p == "weight") for n in ("input_layernorm", "post_attention_layernorm") for p in ("weight", "bias")},
         "attention.bias": COPY, "attention.masked_bias": COPY, "attention.rotary_emb.inv_freq": COPY},
        {"gpt_neox.embed_in.weight": Rule((None, H)), "gpt_neox.final_layer_norm.weight": Rule((H,), norm=True),
         "gpt_neox.final_layer_norm.bias": Rule((H,)), "embed_out.weight": Rule((None, H))},
        "gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm.weight", "mlp.dense_4h_to_h.weight", "attention.dense.weight"),
}  # fmt: skip


def read(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """config.json and the safetensors shapes of a saved model."""
    with safe_open(path / "model.safetensors", "np") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 -- safe_open has no __iter__
    return json.loads((path / "config.json").read_text()), shapes


@pytest.mark.parametrize("family", sorted(TABLE))
def test_inference_equals_the_table_for_every_family_it_listed(tiny_model, family):
    config, shapes = read(tiny_model(family))
    found = width_layout(config, shapes).family
    prefix = {"gpt2": "transformer.h.", "gpt_neox": "gpt_neox.layers."}.get(family, "model.layers.")
    present = {n[len(prefix):].split(".", 1)[1] for n in shapes if n.startswith(prefix)}
    table = TABLE[family]
    # the table listed optional tensors (biases, buffers of older checkpoints); inference sees those present
    expected = replace(table, layer={k: v for k, v in table.layer.items() if k in present},
                       others={k: v for k, v in table.others.items() if k in shapes})
    assert set(present) <= set(table.layer) and set(shapes) - {n for n in shapes if n.startswith(prefix)} <= set(table.others)
    assert found == expected


def test_inference_equals_the_table_with_the_optional_tensors_present(tiny_model):
    """Qwen2's q/k/v biases; GPT-2's causal-mask buffers of older checkpoints."""
    config, shapes = read(tiny_model("qwen2"))
    assert "model.layers.0.self_attn.q_proj.bias" in shapes
    assert width_layout(config, shapes).family.layer["self_attn.q_proj.bias"] == TABLE["qwen2"].layer["self_attn.q_proj.bias"]
    config, shapes = read(tiny_model("gpt2"))
    shapes = {**shapes, "transformer.h.0.attn.bias": (1, 1, 128, 128), "transformer.h.0.attn.masked_bias": ()}
    layer = width_layout(config, shapes).family.layer
    assert layer["attn.bias"] == layer["attn.masked_bias"] == COPY


# family (a tiny model of tiny.py, config overrides) -> what is refused, as it reads in the message
REFUSED_FAMILIES = {
    "mixtral": ({}, "cannot prune the width of a 'mixtral' model: num_local_experts=4: mixture-of-experts layers"),
    "qwen2_moe": ({}, "cannot prune the width of a 'qwen2_moe' model: num_experts=4: mixture-of-experts layers"),
    "bloom": ({}, ("cannot prune the width of a 'bloom' model: MLP neurons: its MLP width is 4 x hidden_size, no config field; "
                   "attention heads: ALiBi")),
    "mpt": ({}, ("cannot prune the width of a 'mpt' model: MLP neurons: its MLP width is expansion_ratio x d_model, an integer "
                 "multiple; attention heads: ALiBi")),
    # a tensor no rule explains: BitNet's norm over the MLP's neurons, DiffLlama's differential-attention lambdas,
    # Granite-SWA's per-head attention sinks, LFM2's convolutions
    "bitnet": ({}, "model.layers.0.mlp.ffn_sub_norm.weight: no bitnet width rule says which of its axes are"),
    "diffllama": ({}, "model.layers.0.self_attn.lambda_k1: no diffllama width rule"),
    "granite_swa": ({}, "model.layers.0.self_attn.sinks: no granite_swa width rule"),
    "lfm2": ({}, "no lfm2 width rule"),
}


@pytest.mark.parametrize("family", sorted(REFUSED_FAMILIES))
def test_families_still_refused_say_why_in_one_line(tiny_model, family):
    overrides, why = REFUSED_FAMILIES[family]
    config, shapes = read(tiny_model(family, **overrides))
    with pytest.raises(DowncycleError) as err:
        width_layout(config, shapes)
    message = str(err.value)
    assert why in message and "\n" not in message, message


def test_per_layer_sizes_are_refused(tiny_model):
    """OpenELM-like configs: one MLP width or head count per layer."""
    config, shapes = read(tiny_model("llama"))
    for key in ("intermediate_size", "num_key_value_heads"):
        with pytest.raises(DowncycleError, match=re.escape(f"config {key}=[") + ".*per-layer sizes are not supported"):
            width_layout({**config, key: [config[key]] * config["num_hidden_layers"]}, shapes)


# family, config overrides -> kind -> the start of its refusal; the other kinds prune
KINDS_REFUSED = {
    ("codegen", ()): {HEADS: "qkv_proj packs q, v and k", HIDDEN: "its head size is n_embd / n_head"},
    ("xglm", ()): {HIDDEN: "its sinusoidal position embeddings", HEADS: "its head size is d_model / attention_heads"},
    ("falcon", (("new_decoder_architecture", True), ("num_kv_heads", 2))): {HEADS: "query_key_value interleaves each KV group"},
    ("falcon", (("alibi", True),)): {HEADS: "ALiBi"},
    ("phi", (("qk_layernorm", True),)): {},  # its q/k LayerNorms over head_dim: copied; head_dim is hidden / heads then
}


@pytest.mark.parametrize("family, overrides", sorted(KINDS_REFUSED), ids=lambda v: v if isinstance(v, str) else "-".join(k for k, _ in v))
def test_a_kind_that_cannot_be_exact_is_refused_alone(tiny_model, family, overrides):
    config, shapes = read(tiny_model(family, **dict(overrides)))
    found = width_layout(config, shapes)
    refused = KINDS_REFUSED[(family, overrides)]
    for kind, why in refused.items():
        assert found.family.refused[kind].startswith(why), found.family.refused
    assert FFN not in found.family.refused
    if family == "phi":
        assert found.family.head_dim is None


def test_a_tensor_no_rule_explains_is_refused_by_name(tiny_model):
    config, shapes = read(tiny_model("llama"))
    cases = {
        "model.layers.1.self_attn.lambda_q1": "model.layers.1.self_attn.lambda_q1: no llama width rule",  # DiffLlama-like
        "model.layers.0.self_attn.attn_sub_norm.weight": "attn_sub_norm.weight: no llama width rule",  # BitNet: a norm over the heads
        "model.vision_tower.proj.weight": "model.vision_tower.proj.weight: no llama width rule",
    }
    for name, needle in cases.items():
        with pytest.raises(DowncycleError, match=re.escape(needle)):
            width_layout(config, {**shapes, name: (8,)})
    with pytest.raises(DowncycleError, match=re.escape("model.layers.0.mlp.up_proj.weight: shape [60, 32] is not what")):
        width_layout(config, {**shapes, "model.layers.0.mlp.up_proj.weight": (60, 32)})
    with pytest.raises(DowncycleError, match="no attention output projection"):
        width_layout(config, {n: s for n, s in shapes.items() if "o_proj" not in n})
