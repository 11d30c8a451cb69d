"""SLEB's greedy NLL search one decoder layer at a time = in memory: the same removal order and every
candidate's NLL at every step (1e-6 relative; padded batches, sliding and full layers, tied and GPT-2
heads); and `analyze --strategy nll --layerwise` writes the plan the in-memory run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from downcycle.layerwise import open_layerwise

ROOT = Path(__file__).resolve().parents[2]


def _batches(vocab):
    ids = torch.randint(3, vocab, (4, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # a padded row
    return [{"input_ids": ids[i : i + 2], "attention_mask": mask[i : i + 2]} for i in (0, 2)]


@pytest.mark.parametrize("family, overrides", [("llama", {}), ("gemma3_text", {}), ("gpt2", {}), ("llama", {"tie_word_embeddings": True})])
def test_the_search_layer_by_layer_equals_the_search_in_memory(tiny_model, family, overrides):
    from transformers import AutoModelForCausalLM

    from downcycle.analysis.nll import greedy_removal
    from downcycle.analysis.nll_layerwise import greedy_removal_layerwise

    path = tiny_model(family, **overrides)
    batches = _batches(64)
    whole = greedy_removal(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), batches, 3, protect=[0])
    layered = greedy_removal_layerwise(open_layerwise(path, dtype="float32"), batches, 3, protect=[0])
    assert layered.removed == whole.removed
    assert layered.base_nll == pytest.approx(whole.base_nll, rel=1e-6)
    for a, b in zip(layered.steps, whole.steps):
        assert a.keys() == b.keys() and 0 not in a
        for layer in a:
            assert a[layer] == pytest.approx(b[layer], rel=1e-6), (family, layer)
    assert len({round(v, 6) for v in whole.steps[0].values()}) > 1  # candidates told apart: the order means something


def test_analyze_nll_layerwise_writes_the_same_plan(tmp_path):
    from downcycle.cli import main

    common = [str(ROOT / "examples" / "reference"), "--data", str(ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz"),
              "--samples", "4", "--seq-len", "32", "--batch-size", "2", "--keep", "9", "--strategy", "nll", "--nll-samples", "2",
              "--dtype", "float32", "--no-plots", "--no-progress"]
    assert main(["analyze", *common, "--out", str(tmp_path / "whole"), "--no-layerwise"]) == 0
    assert main(["analyze", *common, "--out", str(tmp_path / "layered"), "--layerwise"]) == 0
    whole, layered = (json.loads((tmp_path / d / "plan.json").read_text()) for d in ("whole", "layered"))
    assert layered["kept_layers"] == whole["kept_layers"]
    steps = [json.loads((tmp_path / d / "scores.json").read_text())["nll"] for d in ("whole", "layered")]
    assert steps[1]["removed"] == steps[0]["removed"]
