"""Layer by layer = in memory: every state between layers, for every family of the tiny-model table,
bitwise; a sliding/full Gemma-3 and a tied model among them; spilled states read back the same; one
layer's weights resident at a time."""

from __future__ import annotations

import pytest
import torch

from downcycle.decoder import find_decoder_layers, layer_input
from downcycle.layerwise import open_layerwise, run_layerwise
from downcycle.tiny import FAMILIES

DENSE = [f for f in FAMILIES if f not in ("mixtral", "qwen2_moe")]


def in_memory_states(path, batches):
    """x_0..x_L of every batch from the whole model, by hooks: [batch][l] (B, S, d)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    _, layers = find_decoder_layers(model)
    out: list[list] = []
    hooks = [layer.register_forward_pre_hook(lambda m, a, k: out[-1].append(layer_input(a, k).clone()), with_kwargs=True)
             for layer in layers]
    hooks.append(layers[-1].register_forward_hook(lambda m, a, o: out[-1].append((o[0] if isinstance(o, tuple) else o).clone())))
    with torch.inference_mode():
        for b in batches:
            out.append([])
            model(**b, use_cache=False)
    for h in hooks:
        h.remove()
    return out


def layerwise_states(path, batches, **options):
    lw = open_layerwise(path, dtype="float32")
    out = [[None] * (lw.num_layers + 1) for _ in batches]

    def visit(l, b, x):
        out[b][l] = x.clone()

    run = run_layerwise(lw, batches, visit, **options)
    return out, run, lw


def _batches(vocab, padded=False):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (6, 12), generator=gen)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, :4] = 0  # left padding in one row
    return [{"input_ids": ids[i : i + 3], "attention_mask": mask[i : i + 3]} for i in (0, 3)]


@pytest.mark.parametrize("family", DENSE)
def test_every_state_equals_the_whole_model(tiny_model, family):
    path = tiny_model(family)
    batches = _batches(64, padded=family in ("llama", "gemma3_text"))
    expected = in_memory_states(path, batches)
    got, run, lw = layerwise_states(path, batches)
    for b, states in enumerate(expected):
        assert len(got[b]) == len(states) == lw.num_layers + 1
        for l, x in enumerate(states):
            torch.testing.assert_close(got[b][l], x, rtol=0, atol=0, msg=f"{family}: batch {b}, state {l}")
    assert all(p.device.type == "meta" for p in lw.layers.parameters())  # every layer released
    largest = max(sum(p.numel() * 4 for p in layer.parameters()) for layer in lw.layers)
    assert run.weight_bytes == largest  # never more than one layer resident


def test_spilled_states_give_the_same_states(tiny_model, tmp_path):
    path = tiny_model("gemma3_text")
    batches = _batches(64)
    expected, _, _ = layerwise_states(path, batches)
    got, run, _ = layerwise_states(path, batches, budget=0, spill_dir=tmp_path)
    assert run.spilled_bytes > 0 and run.state_bytes == 0
    for b in range(len(batches)):
        for l in range(len(expected[b])):
            assert torch.equal(got[b][l], expected[b][l])
    assert not any(tmp_path.iterdir())  # the spill directory is removed


def test_tied_embeddings_are_tied(tiny_model):
    lw = open_layerwise(tiny_model("llama", tie_word_embeddings=True), dtype="float32")
    assert lw.model.get_output_embeddings().weight is lw.model.get_input_embeddings().weight
    assert lw.model.get_output_embeddings().weight.device.type == "cpu"
