"""What `downcycle prune` writes: depth and width in one command (equal to a cut then a prune, and to
the in-memory reference), the plan, manifest, card and summary; the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.numpy import load_file

from downcycle import cli
from downcycle.recipe import CutConfig
from downcycle.surgery.cut import cut
from downcycle.surgery.prune import summary


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_depth_and_width_in_one_command_equal_depth_then_width(tiny_model, tmp_path, ids, family, one_torch_thread, shape, logits,
                                                               load, masked, write_plan, random_rows, heads_in_groups, run_prune,
                                                               keep_layers_in_memory):
    src = tiny_model(family)
    kept = [0, 2, 3, 5]
    ffn, heads = random_rows(shape.layers, shape.ffn, 32, seed=1), heads_in_groups([[0, 1]] * shape.layers, 1, seed=2)
    hidden = list(range(4, 32))
    run_prune(src, tmp_path / "both", plan=write_plan(tmp_path / "plan.json", ffn=ffn, heads=heads, hidden=hidden), layers="0,2-3,5")
    cut(CutConfig(source=str(src), out=tmp_path / "cut", layers="0,2-3,5"))
    sub = write_plan(tmp_path / "sub.json", ffn=[ffn[i] for i in kept], heads=[heads[i] for i in kept], hidden=hidden)
    run_prune(tmp_path / "cut", tmp_path / "then", plan=sub)

    both, then = load_file(tmp_path / "both" / "model.safetensors"), load_file(tmp_path / "then" / "model.safetensors")
    assert both.keys() == then.keys()
    for name in both:
        assert (both[name] == then[name]).all(), name
    config = json.loads((tmp_path / "both" / "config.json").read_text())
    assert config == json.loads((tmp_path / "then" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"], config["num_attention_heads"], config["hidden_size"]) == (4, 32, 2, 28)

    reference = keep_layers_in_memory(load(src), kept)
    with masked(reference, family, ffn=ffn, heads=heads, hidden=hidden, layer_map=kept):
        expected = logits(reference, ids)
    torch.testing.assert_close(logits(load(tmp_path / "both"), ids), expected, rtol=1e-4, atol=1e-4)


def test_outputs_manifest_card_and_summary(tiny_model, tmp_path, shape, load, write_plan, random_rows, run_prune):
    src = tiny_model("llama")
    plan = write_plan(tmp_path / "plan.json", ffn=random_rows(shape.layers, shape.ffn, 16, seed=3), kv_heads=[[1]] * shape.layers)
    result = run_prune(src, tmp_path / "out", plan=plan, drop="1")
    out = tmp_path / "out"
    assert {"model.safetensors", "config.json", "width_plan.json", "downcycle.json", "README.md"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "width_plan.json").read_text())
    # a kept group keeps its query heads
    assert saved["kv_heads"] == [[1]] * shape.layers and saved["heads"] == [[2, 3]] * shape.layers
    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["stage"] == "prune" and manifest["config"]["drop"] == "1"
    outputs = manifest["outputs"]
    assert outputs["sizes_before"] == {"ffn": 64, "heads": 4, "kv_heads": 2, "hidden": 32}
    assert outputs["sizes_after"] == {"ffn": 16, "heads": 2, "kv_heads": 1, "hidden": 32}
    assert outputs["kept_layers"] == [0, 2, 3, 4, 5] and outputs["dropped_layers"] == [1]
    assert set(manifest["inputs"]["hashes"]) >= {"config.json", "shard_headers", "plan"}
    assert outputs["parameters_after"] == sum(p.numel() for p in load(out).parameters())
    assert outputs["parameters_before"] == sum(p.numel() for p in load(src).parameters())
    card = (out / "README.md").read_text()
    assert "downcycle prune" in card and "MLP neurons 64 -> 16" in card and "width-pruning" in card and "layer-pruning" in card
    line = summary(result)
    assert "ffn 64 -> 16" in line and "layers 6 -> 5" in line and f"{outputs['parameters_before']:,} -> {outputs['parameters_after']:,}" in line


def test_cli_end_to_end_and_force(tiny_model, tmp_path, capsys, shape, write_plan, random_rows):
    src, out = tiny_model("qwen2"), tmp_path / "out"
    plan = write_plan(tmp_path / "plan.json", ffn=random_rows(shape.layers, shape.ffn, 48, seed=4))
    assert cli.main(["prune", str(src), str(out), "--plan", str(plan)]) == 0
    assert "ffn 64 -> 48" in capsys.readouterr().out
    again = write_plan(tmp_path / "again.json", ffn=random_rows(shape.layers, shape.ffn, 32, seed=5))
    assert cli.main(["prune", str(src), str(out), "--plan", str(again)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["prune", str(src), str(out), "--plan", str(again), "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 32
    # a pruned model's plan is accepted back by --plan
    assert cli.main(["prune", str(src), str(tmp_path / "copy"), "--plan", str(out / "width_plan.json")]) == 0
    assert load_file(tmp_path / "copy" / "model.safetensors").keys() == load_file(out / "model.safetensors").keys()


def test_sharded_output_with_small_shards(tiny_model, tmp_path, ids, one_torch_thread, shape, logits, load, write_plan,
                                          random_rows, run_prune):
    src = tiny_model("phi3")
    plan = write_plan(tmp_path / "plan.json", ffn=random_rows(shape.layers, shape.ffn, 40, seed=6), hidden=list(range(24)))
    result = run_prune(src, tmp_path / "one", plan=plan)
    many = run_prune(src, tmp_path / "many", plan=plan, max_shard_size="20KB", threads=2)
    assert len(result.shards) == 1 and len(many.shards) > 2
    assert (tmp_path / "many" / "model.safetensors.index.json").is_file()
    torch.testing.assert_close(logits(load(tmp_path / "many"), ids), logits(load(tmp_path / "one"), ids))
