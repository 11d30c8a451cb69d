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
    largest = max(sum(t.numel() * 4 for t in layer.state_dict().values()) for layer in lw.layers)  # parameters and saved buffers
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


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_hidden_stats_layer_by_layer_equal_the_whole_models(tiny_model, family):
    """Every one-pass metric's sums (angular distances, Block Influence), bitwise, padding included."""
    from transformers import AutoModelForCausalLM

    from downcycle.analysis.hidden_stats import collect_hidden_stats, collect_hidden_stats_layerwise

    path = tiny_model(family)
    batches = _batches(64, padded=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    whole = collect_hidden_stats(model, batches)
    for budget in (None, 0):  # in memory, and every state spilled to disk
        layered = collect_hidden_stats_layerwise(open_layerwise(path, dtype="float32"), batches, budget=budget)
        for name in ("cos_sum", "angle_sum", "last_cos_sum", "last_angle_sum"):
            assert torch.equal(getattr(layered, name), getattr(whole, name)), (family, name, budget)
        assert (layered.tokens, layered.sequences) == (whole.tokens, whole.sequences)


def test_analyze_layerwise_writes_the_same_scores_and_plan(tmp_path):
    """`analyze --layerwise` on the shipped reference: scores.json and plan.json as the in-memory run's."""
    import json
    from pathlib import Path

    from downcycle.cli import main

    root = Path(__file__).resolve().parents[2]
    common = [str(root / "examples" / "reference"), "--data", str(root / "examples" / "corpus" / "moby_dick.jsonl.gz"),
              "--samples", "8", "--seq-len", "64", "--batch-size", "4", "--keep", "9", "--dtype", "float32", "--no-plots", "--no-progress"]
    assert main(["analyze", *common, "--out", str(tmp_path / "whole"), "--no-layerwise"]) == 0
    assert main(["analyze", *common, "--out", str(tmp_path / "layered"), "--layerwise"]) == 0
    for name in ("scores.json", "plan.json"):
        whole = json.loads((tmp_path / "whole" / name).read_text())
        layered = json.loads((tmp_path / "layered" / name).read_text())
        if name == "plan.json":
            whole["details"]["model"].pop("layerwise"), layered["details"]["model"].pop("layerwise")
        assert layered == whole, name


def test_a_model_that_does_not_fit_runs_layer_by_layer_by_itself(tiny_model, monkeypatch):
    from downcycle.layerwise import memory

    path = tiny_model("llama")
    stored = memory.weight_bytes(path)
    assert memory.weight_bytes(path, "bfloat16") * 2 == stored  # the tiny model is saved in float32
    monkeypatch.setattr(memory, "available_bytes", lambda device: stored)  # free memory: the weights alone, no headroom
    assert not memory.fits_in_memory(path, "float32", "cpu") and memory.fits_in_memory(path, "bfloat16", "cpu")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_loss_task_layer_by_layer_equals_in_memory(tiny_model, family, tmp_path):
    """`eval --tasks loss --layerwise`: the same NLL, tokens and bytes as the in-memory run, with windows
    strided so that batches mix lengths; generative tasks refused in one line."""
    import json
    import shutil
    from pathlib import Path

    from downcycle.cli import main

    root = Path(__file__).resolve().parents[2]
    path = tiny_model(family, vocab_size=8192)
    for f in (root / "examples" / "tokenizer").iterdir():
        shutil.copy2(f, path / f.name)
    text = str(root / "examples" / "corpus" / "kjv.jsonl.gz")
    common = [str(path), "--tasks", "loss", "--data", text, "--limit", "12", "--window", "48", "--stride", "32", "--no-progress"]
    assert main(["eval", *common, "--out", str(tmp_path / "whole"), "--no-layerwise"]) == 0
    assert main(["eval", *common, "--out", str(tmp_path / "layered"), "--layerwise"]) == 0
    whole = json.loads((tmp_path / "whole" / path.name / "results.json").read_text())["tasks"]["loss"]["metrics"]
    layered = json.loads((tmp_path / "layered" / path.name / "results.json").read_text())["tasks"]["loss"]["metrics"]
    assert layered == whole
    assert main(["eval", str(path), "--tasks", "loss,gsm8k", "--data", text, "--out", str(tmp_path / "gen"), "--layerwise"]) == 1
