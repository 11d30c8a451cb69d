"""Architecture knowledge: layer location, implicit per-layer fields (checked against transformers'
own derivation), and the translation or refusal of position-encoded config fields."""

from __future__ import annotations

import pytest
import transformers

from downcycle.architecture import IMPLICIT_PER_LAYER, infer_layout
from downcycle.errors import DowncycleError
from downcycle.surgery.depth import cut_config

_CLASSES = {"gemma2": "Gemma2Config", "gemma3_text": "Gemma3TextConfig", "cohere2": "Cohere2Config", "exaone4": "Exaone4Config",
            "qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "qwen2_moe": "Qwen2MoeConfig", "smollm3": "SmolLM3Config"}
_VARIANTS = [
    {},
    {"sliding_window_pattern": 3},
    {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 5},
    {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 2, "no_rope_layer_interval": 3},
]


@pytest.mark.parametrize("model_type", sorted(IMPLICIT_PER_LAYER))
@pytest.mark.parametrize("variant", range(len(_VARIANTS)))
def test_implicit_fields_match_transformers(model_type, variant):
    raw = {"model_type": model_type, "num_hidden_layers": 9, **_VARIANTS[variant]}
    config = getattr(transformers, _CLASSES[model_type])(**{k: v for k, v in raw.items() if k != "model_type"})
    for field, derive in IMPLICIT_PER_LAYER[model_type].items():
        ours = dict(raw)
        for earlier, d in IMPLICIT_PER_LAYER[model_type].items():  # later fields may use earlier ones
            if earlier == field:
                break
            ours[earlier] = d(ours, 9)
        assert derive(ours, 9) == list(getattr(config, field)), (model_type, field)


def _layout(cfg, n=6, prefix="model.layers."):
    names = ["model.embed_tokens.weight"] + [f"{prefix}{i}.mlp.w.weight" for i in range(n)] + ["lm_head.weight"]
    return infer_layout(cfg, names)


def test_layout_finds_layers_of_several_namings():
    for prefix, cfg in [("model.layers.", {"num_hidden_layers": 6}), ("transformer.h.", {"n_layer": 6}),
                        ("gpt_neox.layers.", {"num_hidden_layers": 6})]:
        layout = _layout({"model_type": "x", **cfg}, prefix=prefix)
        assert layout.prefix == prefix and layout.num_layers == 6 and not layout.tied_embeddings
        assert layout.layer_name(4, f"{prefix}1.mlp.w.weight") == f"{prefix}4.mlp.w.weight"


def test_layout_nested_text_config_ignores_vision_tower():
    cfg = {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "num_hidden_layers": 4},
           "vision_config": {"num_hidden_layers": 4}}
    names = [f"model.language_model.layers.{i}.mlp.w.weight" for i in range(4)]
    names += [f"model.vision_tower.encoder.layers.{i}.mlp.w.weight" for i in range(4)]
    layout = infer_layout(cfg, names + ["model.language_model.embed_tokens.weight"])
    assert layout.prefix == "model.language_model.layers." and layout.text_path == ("text_config",)
    assert layout.tied_embeddings
    new, _ = cut_config(cfg, layout, [0, 3])
    assert new["text_config"]["num_hidden_layers"] == 2 and new["vision_config"]["num_hidden_layers"] == 4


def test_layout_refuses_unknown_and_extra_layers():
    with pytest.raises(DowncycleError, match="cannot find the 8 decoder layers"):
        _layout({"model_type": "x", "num_hidden_layers": 8})
    names = [f"model.layers.{i}.w" for i in range(7)]
    with pytest.raises(DowncycleError, match="layer 6 .* beyond num_hidden_layers=6"):
        infer_layout({"model_type": "deepseek_v3", "num_hidden_layers": 6}, names)


def _cut(cfg, kept, n=6):
    return cut_config({"model_type": "x", "num_hidden_layers": n, **cfg}, _layout({"model_type": "x", "num_hidden_layers": n, **cfg}, n), kept)[0]


def test_per_layer_lists_and_strings_are_sliced():
    new = _cut({"layer_types": list("abcdef"), "mlp_layer_types": list("uvwxyz"), "hybrid_override_pattern": "M*M-M*",
                "eos_token_id": [1, 2, 3, 4, 5, 6]}, [5, 0, 0])
    assert new["layer_types"] == ["f", "a", "a"] and new["mlp_layer_types"] == ["z", "u", "u"]
    assert new["hybrid_override_pattern"] == "*MM" and new["eos_token_id"] == [1, 2, 3, 4, 5, 6]
    assert new["num_hidden_layers"] == 3


def test_index_lists_are_remapped():
    assert _cut({"mlp_only_layers": [0, 4]}, [0, 1, 4, 4])["mlp_only_layers"] == [0, 2, 3]


def test_sparse_step_becomes_explicit():
    new = _cut({"num_experts": 4, "decoder_sparse_step": 2, "mlp_only_layers": [3]}, [0, 1, 3, 5])
    # dense: 0 (odd position rule), 3 (listed); sparse: 1, 5
    assert new["decoder_sparse_step"] == 1 and new["mlp_only_layers"] == [0, 2]


def test_first_k_dense_translated_or_refused():
    assert _cut({"first_k_dense_replace": 3}, [0, 2, 4, 5])["first_k_dense_replace"] == 2
    assert _cut({"first_k_dense_replace": 3}, [4, 5])["first_k_dense_replace"] == 0
    with pytest.raises(DowncycleError, match="first_k_dense_replace=3"):
        _cut({"first_k_dense_replace": 3}, [0, 4, 1])


def test_periodic_fields():
    new = _cut({"attn_layer_period": 2, "attn_layer_offset": 1}, [0, 1, 2, 3])
    assert (new["attn_layer_period"], new["attn_layer_offset"]) == (2, 1)
    new = _cut({"attn_layer_period": 2, "attn_layer_offset": 1}, [1, 2, 4])
    assert [j % new["attn_layer_period"] == new["attn_layer_offset"] for j in range(3)] == [True, False, False]
    with pytest.raises(DowncycleError, match="attn_layer_period"):
        _cut({"attn_layer_period": 2, "attn_layer_offset": 1}, [0, 1, 3, 5, 2, 4])


def test_pattern_removed_when_it_no_longer_describes_layer_types():
    types = ["sliding_attention", "full_attention"] * 3
    assert _cut({"sliding_window_pattern": 2, "layer_types": types}, [0, 1, 2, 3])["sliding_window_pattern"] == 2
    assert "sliding_window_pattern" not in _cut({"sliding_window_pattern": 2, "layer_types": types}, [1, 2])


def test_kv_sharing():
    types = ["sliding_attention", "full_attention"] * 4
    cfg = {"layer_types": types, "num_kv_shared_layers": 4}
    assert _cut(cfg, [0, 1, 2, 3, 4, 5], n=8)["num_kv_shared_layers"] == 2
    assert _cut(cfg, [0, 1, 2, 3], n=8)["num_kv_shared_layers"] == 0
    with pytest.raises(DowncycleError, match="shares the KV cache of layer 3"):
        _cut(cfg, [0, 1, 2, 5, 7], n=8)
    with pytest.raises(DowncycleError, match="must stay at the end"):
        _cut(cfg, [0, 1, 2, 3, 6, 1], n=8)


def test_refusals():
    with pytest.raises(DowncycleError, match="per-layer input embeddings"):
        _cut({"hidden_size_per_layer_input": 256}, [0, 1])
    with pytest.raises(DowncycleError, match="mystery_layer_split=3"):
        _cut({"mystery_layer_split": 3}, [0, 1])


def test_family_facts_for_other_stages():
    from types import SimpleNamespace

    from downcycle.architecture import is_mlp_module, logit_transform, num_layers, uses_sliding_window

    assert num_layers({"num_hidden_layers": 4}) == 4 and num_layers({"n_layer": 3}) == 3
    assert num_layers({"text_config": {"num_hidden_layers": 5}, "vision_config": {"num_hidden_layers": 2}}) == 5
    with pytest.raises(DowncycleError, match="no layer count"):
        num_layers({"hidden_size": 8})
    assert uses_sliding_window({"sliding_window": 4}) and not uses_sliding_window({"sliding_window": 4, "use_sliding_window": False})
    assert uses_sliding_window(SimpleNamespace(layer_types=["full_attention", "sliding_attention"]))
    assert not uses_sliding_window(SimpleNamespace(sliding_window=None, layer_types=["full_attention"]))
    assert logit_transform({"final_logit_softcapping": 30.0}) == "final_logit_softcapping=30.0"
    assert logit_transform(SimpleNamespace(logit_scale=1.0)) is None and logit_transform(None) is None
    assert is_mlp_module("model.layers.3.mlp.up_proj") and is_mlp_module("model.layers.0.block_sparse_moe.experts.1.w1")
    assert not is_mlp_module("model.layers.3.self_attn.q_proj")
