"""Cut and prune on real weights of a second family: Gemma 3 270M (``make gemma3``; a base model, 18
layers of which five in six attend through a 512-token sliding window, one KV head under four query
heads, tied 262,144-token embeddings, norms after attention and MLP). A 700-token input crosses the
window, so a kept layer that took the wrong attention type would show.

- a cut's logits equal the uncut model with the same layers removed in memory, bit for bit, and each
  kept layer keeps its own attention type (the cut drops a full-attention layer among others);
- neurons made dead on disk (their gate and up rows zero) are found by the activation pass of
  ``prune --data`` and pruned, and the logits stay as they were;
- any choice of heads and neurons equals the source with the others masked to zero in memory.

Runs only where the converted model is present; the weights are under the Gemma Terms of Use
(``models/gemma3-270m/GEMMA_TERMS.html``).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
GEMMA3 = ROOT / "models" / "gemma3-270m"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not (GEMMA3 / "model.safetensors").is_file(), reason=f"{GEMMA3} is absent (`make gemma3` writes it)")]
EVERY = 5  # logits compared at every 5th position (the 262,144-token vocabulary makes all 700 rows 0.7 GB)
# A prune's smaller matmuls sum in another order: measured at most 1.8e-4 on these logits (of magnitude ~30)
CLOSE = {"rtol": 1e-4, "atol": 1e-3}


def _load(path: Path):
    from downcycle.loading import load_model

    return load_model(path, dtype="float32")


def _logits(model, ids):
    with torch.inference_mode():
        return model(ids, logits_to_keep=torch.arange(0, ids.shape[1], EVERY)).logits


@pytest.fixture(scope="module")
def source():
    from downcycle.loading import load_tokenizer

    text = json.loads(gzip.open(ROOT / "examples" / "corpus" / "kjv.jsonl.gz", "rt").readline())["text"]
    ids = load_tokenizer(GEMMA3)(text, return_tensors="pt").input_ids[:, :700]
    model = _load(GEMMA3)
    assert ids.shape[1] == 700 > model.config.sliding_window
    return model, ids


def test_a_cut_equals_the_model_with_those_layers_removed_in_memory(source, keep_layers_in_memory, run_cli, capsys, tmp_path):
    model, ids = source
    kept = [0, 1, 2] + list(range(9, 18))  # drops 3-8, the full-attention layer 5 among them
    code, err = run_cli(capsys, "cut", str(GEMMA3), str(tmp_path / "cut"), "--drop", "3-8")
    assert code == 0, err
    cut = _load(tmp_path / "cut")
    types = model.config.layer_types
    assert cut.config.layer_types == [types[i] for i in kept]
    assert cut.config.layer_types.count("full_attention") == 2  # source layers 11 and 17
    expected = _logits(keep_layers_in_memory(model, kept), ids)
    assert torch.equal(_logits(cut, ids), expected)
    assert not torch.allclose(_logits(model, ids), expected, atol=1e-2)  # the cut changed the model: the test can fail


def _with_tokenizer(model, path: Path) -> Path:
    model.save_pretrained(path)
    for f in GEMMA3.iterdir():
        if f.name.startswith("tokenizer"):
            shutil.copy2(f, path / f.name)
    return path


def _hooks(model, ffn: list[list[int]] | None, heads: list[list[int]] | None, head_dim: int):
    """Forward pre-hooks zeroing what ``ffn``/``heads`` do not keep at the down and o projections' inputs."""
    handles = []
    for i, layer in enumerate(model.model.layers):
        for module, kept, unit, n in ((layer.mlp.down_proj, ffn, 1, model.config.intermediate_size),
                                      (layer.self_attn.o_proj, heads, head_dim, model.config.num_attention_heads)):
            if kept is None:
                continue
            dead = [u * unit + j for u in range(n) if u not in kept[i] for j in range(unit)]

            def zero(mod, args, dead=dead):
                x = args[0].clone()
                x[..., dead] = 0
                return (x, *args[1:])

            handles.append(module.register_forward_pre_hook(zero))
    return handles


def test_dead_neurons_are_found_by_the_activation_pass_and_pruned_exactly(source, run_cli, capsys, tmp_path):
    model, ids = source
    n_layers, width = model.config.num_hidden_layers, model.config.intermediate_size
    g = torch.Generator().manual_seed(0)
    dead = [sorted(torch.randperm(width, generator=g)[:256].tolist()) for _ in range(n_layers)]
    original = {k: v.clone() for k, v in model.state_dict().items() if ".mlp." in k}
    try:
        with torch.no_grad():
            for layer, rows in zip(model.model.layers, dead):
                layer.mlp.gate_proj.weight[rows] = 0
                layer.mlp.up_proj.weight[rows] = 0
        src = _with_tokenizer(model, tmp_path / "dead")
        expected = _logits(model, ids)
    finally:
        model.load_state_dict(original, strict=False)
    code, err = run_cli(capsys, "prune", str(src), str(tmp_path / "out"), "--data", str(ROOT / "examples" / "corpus" / "kjv.jsonl.gz"),
                        "--samples", "4", "--seq-len", "128", "--ffn", str(width - 256))
    assert code == 0, err
    plan = json.loads((tmp_path / "out" / "width_plan.json").read_text())
    assert plan["ffn"] == [[u for u in range(width) if u not in set(rows)] for rows in dead]  # the dead ones were found
    pruned = _load(tmp_path / "out")
    assert pruned.config.intermediate_size == width - 256
    torch.testing.assert_close(_logits(pruned, ids), expected, **CLOSE)


def test_any_choice_of_heads_and_neurons_equals_the_source_masked_in_memory(source, run_prune, write_plan, tmp_path):
    model, ids = source
    n_layers, width, heads = model.config.num_hidden_layers, model.config.intermediate_size, model.config.num_attention_heads
    g = torch.Generator().manual_seed(1)
    ffn = [sorted(torch.randperm(width, generator=g)[:1536].tolist()) for _ in range(n_layers)]
    kept_heads = [sorted(torch.randperm(heads, generator=g)[:2].tolist()) for _ in range(n_layers)]  # 640 channels: 1, 2 or 4 heads
    plan = write_plan(tmp_path / "plan.json", ffn=ffn, heads=kept_heads)
    run_prune(GEMMA3, tmp_path / "out", plan=plan)
    pruned = _load(tmp_path / "out")
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (2, 1)
    handles = _hooks(model, ffn, kept_heads, model.config.head_dim)
    try:
        expected = _logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(_logits(pruned, ids), expected, **CLOSE)
    assert not torch.allclose(_logits(model, ids), expected, atol=1e-2)  # the masking mattered
