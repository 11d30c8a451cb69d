"""A cut model's logits equal those of the source model with the same layers kept in memory."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from downcycle.architecture.layers import INDEX_BUILT
from downcycle.errors import DowncycleError
from downcycle.surgery.cut import cut
from downcycle.surgery.layerspec import parse_layers
from downcycle.recipe import CutConfig
from downcycle.tiny import FAMILIES

SPECS = ["0-3", "0,2,5", "0-3,2-5"]  # first-k; non-contiguous; with repeats (deeper than a slice)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cut_logits_equal_in_memory_reference(tiny_model, tmp_path, ids, family, spec, keep_layers_in_memory):
    src = tiny_model(family)
    out = tmp_path / "cut"
    kept = parse_layers(spec, 6)
    if family in INDEX_BUILT and kept != list(range(len(kept))):  # a layer that moves computes something else: refused
        with pytest.raises(DowncycleError, match=f"model_type {family}"):
            cut(CutConfig(source=str(src), out=out, layers=spec))
        assert not out.exists()
        return
    result = cut(CutConfig(source=str(src), out=out, layers=spec))
    assert result.kept_layers == kept

    source = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    reference = keep_layers_in_memory(source, kept)
    cut_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert cut_model.config.get_text_config().num_hidden_layers == len(kept)
    torch.testing.assert_close(_logits(cut_model, ids), _logits(reference, ids))
    # and the test can fail: the full source model computes something else
    assert not torch.allclose(_logits(source, ids), _logits(cut_model, ids), atol=1e-3)


@pytest.mark.parametrize("family", ["gemma2", "qwen2", "cohere2"])
def test_implicit_layer_types_are_written_out(tiny_model, tmp_path, ids, family, keep_layers_in_memory):
    """Older checkpoints omit layer_types; a cut that let transformers re-derive them for the new
    depth would give kept layers the wrong attention type. The logits catch it."""
    src = tiny_model(family)
    old_style = tmp_path / "old"
    old_style.mkdir()
    for f in src.iterdir():
        (old_style / f.name).write_bytes(f.read_bytes())
    config = json.loads((src / "config.json").read_text())
    config.pop("layer_types")
    (old_style / "config.json").write_text(json.dumps(config))
    spec = "1,2,3,5"
    cut(CutConfig(source=str(old_style), out=tmp_path / "cut", layers=spec))
    written = json.loads((tmp_path / "cut" / "config.json").read_text())
    source = AutoModelForCausalLM.from_pretrained(old_style, dtype=torch.float32).eval()
    assert written["layer_types"] == [source.config.layer_types[i] for i in parse_layers(spec, 6)]
    reference = keep_layers_in_memory(source, parse_layers(spec, 6))
    cut_model = AutoModelForCausalLM.from_pretrained(tmp_path / "cut", dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(cut_model, ids), _logits(reference, ids))

    # negative control: the naive cut (only num_hidden_layers changed) computes something else
    naive = dict(config, num_hidden_layers=4)
    (tmp_path / "cut" / "config.json").write_text(json.dumps(naive))
    naive_model = AutoModelForCausalLM.from_pretrained(tmp_path / "cut", dtype=torch.float32).eval()
    assert naive_model.config.layer_types != written["layer_types"]
    assert not torch.allclose(_logits(naive_model, ids), _logits(reference, ids), atol=1e-4)


def test_cut_model_generates_with_kv_cache(tiny_model, tmp_path):
    """Repeated layers get their own cache slots: cached greedy decoding equals uncached."""
    out = tmp_path / "cut"
    cut(CutConfig(source=str(tiny_model("qwen2")), out=out, layers="0-3,2-5"))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    prompt = torch.tensor([[5, 6, 7, 8]])
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_multimodal_text_config_cut(tmp_path, ids, keep_layers_in_memory):
    """Gemma-3 with a vision tower: only the text decoder's layers are cut (nested text_config)."""
    import transformers

    text = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, initializer_range=0.2,
                layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                       image_token_index=127, boi_token_index=125, eoi_token_index=126)
    torch.manual_seed(0)
    transformers.Gemma3ForConditionalGeneration(config).eval().save_pretrained(tmp_path / "src")
    cut(CutConfig(source=str(tmp_path / "src"), out=tmp_path / "cut", layers="2,3,5,0"))
    written = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert written["text_config"]["num_hidden_layers"] == 4 and written["vision_config"]["num_hidden_layers"] == 2
    source = AutoModelForCausalLM.from_pretrained(tmp_path / "src", dtype=torch.float32).eval()
    reference = keep_layers_in_memory(source, [2, 3, 5, 0])
    cut_model = AutoModelForCausalLM.from_pretrained(tmp_path / "cut", dtype=torch.float32).eval()
    text_ids = ids[:, :12] % 120 + 3  # no image/boi/eoi tokens
    torch.testing.assert_close(_logits(cut_model, text_ids), _logits(reference, text_ids))
    assert not torch.allclose(_logits(source, text_ids), _logits(cut_model, text_ids), atol=1e-3)
