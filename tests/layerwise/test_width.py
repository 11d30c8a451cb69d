"""The width importance pass one decoder layer at a time = in memory: the same scores.json document,
float for float, on families of every width layout kind (GQA with RMSNorm, Gemma-3's sliding and full
layers with its (1 + w) norms, fused-projection and LayerNorm ones); `analyze --width --layerwise`
writes the same width scores as the in-memory run; and prune --data on a model that does not fit scores
it layer by layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from downcycle.layerwise import open_layerwise

ROOT = Path(__file__).resolve().parents[2]


def _batches(vocab):
    ids = torch.randint(3, vocab, (6, 12), generator=torch.Generator().manual_seed(0))
    return [ids[i : i + 3] for i in (0, 3)]


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "qwen3", "phi3", "gpt2", "gpt_neox", "olmo2"])
def test_width_scores_layer_by_layer_equal_the_whole_models(tiny_model, family):
    from transformers import AutoModelForCausalLM

    from downcycle.analysis.width import width_importance

    path = tiny_model(family)
    batches = _batches(64)
    whole = width_importance(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), batches)
    layered = width_importance(open_layerwise(path, dtype="float32"), batches)
    assert layered == whole
    assert any(v > 0 for v in whole["hidden"]) and any(v > 0 for row in whole["ffn"] for v in row)  # something was measured


def test_analyze_width_layerwise_writes_the_same_width_scores(tmp_path):
    from downcycle.cli import main

    common = [str(ROOT / "examples" / "reference"), "--data", str(ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz"),
              "--samples", "4", "--seq-len", "32", "--batch-size", "2", "--keep", "9", "--dtype", "float32", "--width",
              "--no-plots", "--no-progress"]
    assert main(["analyze", *common, "--out", str(tmp_path / "whole"), "--no-layerwise"]) == 0
    assert main(["analyze", *common, "--out", str(tmp_path / "layered"), "--layerwise"]) == 0
    whole, layered = (json.loads(next((tmp_path / d).rglob("width/scores.json")).read_text()) for d in ("whole", "layered"))
    assert layered == whole


def test_prune_data_scores_a_model_that_does_not_fit_layer_by_layer(real_model, monkeypatch):
    from downcycle.analysis import width
    from downcycle.layerwise import memory

    calls = []
    real = width.width_importance
    monkeypatch.setattr(width, "width_importance", lambda model, *a, **k: calls.append(type(model).__name__) or real(model, *a, **k))
    data = str(ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz")
    path = real_model  # a tiny Llama with the shipped tokenizer
    fits = width.width_scores_for_prune(path, data, samples=4, seq_len=16, seed=0, dtype="float32")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)  # as if nothing fitted
    layered = width.width_scores_for_prune(path, data, samples=4, seq_len=16, seed=0, dtype="float32")
    assert calls == ["LlamaForCausalLM", "LayerwiseModel"] and layered == fits
