"""What a cut writes beside the weights, and how: sidecars, manifest, mergekit YAML, shards."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from downcycle.surgery.cut import cut
from downcycle.surgery.plan import Plan
from downcycle.recipe import CutConfig


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.safetensors"))}


def test_sidecars_copied_and_manifest_written(tiny_model, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model("llama"), src)
    sidecars = {"tokenizer.json": "{}", "tokenizer_config.json": '{"chat_template": "x"}', "special_tokens_map.json": "{}",
                "chat_template.jinja": "{{ messages }}", "LICENSE": "licence text"}
    for name, text in sidecars.items():
        (src / name).write_text(text)
    (src / "README.md").write_text("the source's card")
    (src / "original").mkdir()
    (src / "original" / "consolidated.00.pth").write_bytes(b"pickle")
    out = tmp_path / "out"
    cut(CutConfig(source=str(src), out=out, layers="0-2,4"))
    names = {p.name for p in out.iterdir()}
    assert set(sidecars) | {"generation_config.json", "config.json", "model.safetensors", "downcycle.json", "mergekit.yaml", "README.md"} == names
    assert "the source's card" not in (out / "README.md").read_text()  # downcycle's card, not the source's
    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["stage"] == "cut" and manifest["config"]["layers"] == "0-2,4"
    assert manifest["outputs"]["kept_layers"] == [0, 1, 2, 4] and manifest["outputs"]["dropped_layers"] == [3, 5]
    assert manifest["inputs"]["hashes"]["config.json"] == hashlib.sha256((src / "config.json").read_bytes()).hexdigest()
    assert manifest["versions"]["safetensors"] and manifest["versions"]["python"]
    assert "git_revision" in manifest
    mk = (out / "mergekit.yaml").read_text()
    assert "merge_method: passthrough" in mk and "layer_range: [0, 3]" in mk and "layer_range: [4, 5]" in mk


def test_plan_and_drop_equal_layers(tiny_model, tmp_path):
    src = tiny_model("qwen2")
    plan = tmp_path / "plan.json"
    Plan([0, 1, 2, 5], source_layers=6, strategy="test").save(plan)
    outs = {}
    for how, value in [("layers", "0-2,5"), ("drop", "3-4"), ("plan", plan)]:
        outs[how] = tmp_path / how
        cut(CutConfig(source=str(src), out=outs[how], **{how: value}))
    assert _digest(outs["layers"]) == _digest(outs["drop"]) == _digest(outs["plan"])
    configs = [json.loads((o / "config.json").read_text()) for o in outs.values()]
    assert configs[0] == configs[1] == configs[2]


def test_tied_embeddings_stay_tied_untied_head_copied(tiny_model, tmp_path):
    for family, tied in [("gemma2", True), ("llama", False)]:
        out = tmp_path / family
        cut(CutConfig(source=str(tiny_model(family)), out=out, layers="0,1"))
        with safe_open(out / "model.safetensors", "pt") as f:
            assert ("lm_head.weight" in f.keys()) is not tied
        assert json.loads((out / "downcycle.json").read_text())["outputs"]["lm_head"] == ("tied" if tied else "separate")
        model = AutoModelForCausalLM.from_pretrained(out)
        same = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        assert same is tied


def test_sharded_output_has_a_correct_index_and_aligned_headers(tiny_model, tmp_path):
    src = tiny_model("mixtral")
    out = tmp_path / "out"
    cut(CutConfig(source=str(src), out=out, layers="5,0-3", max_shard_size="60KB"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    total = 0
    for shard in shards:
        raw = (out / shard).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        assert (8 + n) % 8 == 0
        with safe_open(out / shard, "pt") as f:
            assert {k for k, v in index["weight_map"].items() if v == shard} == set(f.keys())
            total += sum(f.get_tensor(k).nbytes for k in f.keys())
    assert index["metadata"]["total_size"] == total
    # layer 0 of the cut is source layer 5, byte for byte
    with safe_open(src / "model.safetensors", "pt") as f:
        expected = f.get_tensor("model.layers.5.self_attn.q_proj.weight")
    with safe_open(out / index["weight_map"]["model.layers.0.self_attn.q_proj.weight"], "pt") as f:
        assert torch.equal(f.get_tensor("model.layers.0.self_attn.q_proj.weight"), expected)
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 5


def test_resharding_a_sharded_source(tiny_model, tmp_path):
    """A sharded source (with index) cuts to the same bytes as the single-file one."""
    src = tiny_model("phi3")
    cut(CutConfig(source=str(src), out=tmp_path / "sharded", layers="0-5", max_shard_size="50KB"))
    cut(CutConfig(source=str(tmp_path / "sharded"), out=tmp_path / "a", layers="1,3"))
    cut(CutConfig(source=str(src), out=tmp_path / "b", layers="1,3"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
