"""Width pruning of every family downcycle infers a layout for beyond the ones its table listed
(those: tests/test_prune_exact.py), on tiny random float32 models: (a) dead neurons and heads pruned
leave the logits as they were; (b) any choice of kept units equals the source with the others
masked in memory; (c) hidden channels: exact under RMSNorm (eps ~0), and under LayerNorm exact in
every tensor but the norms (which are approximate, and said so); the importance pass runs on each;
the kinds a family cannot prune exactly are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from downcycle.analysis.width import width_importance
from downcycle.errors import DowncycleError
from downcycle.recipe import PruneConfig
from downcycle.surgery.prune import prune

LAYERS = 2
FFN, HEADS, HIDDEN, HEAD_DIM = 64, 4, 32, 8  # downcycle.tiny's sizes
EPS0 = {"rms_norm_eps": 1e-12}
# case -> (family, config overrides, KV heads, heads shrink only with hidden (heads x head_dim = hidden), RMSNorm, kinds refused)
CASES = {
    "gemma": ("gemma", {}, 2, False, True, ()),
    "vaultgemma": ("vaultgemma", {}, 2, False, True, ()),
    "olmo": ("olmo", {}, 2, False, False, ("hidden",)),  # LayerNorms without weights: nothing to rescale
    "olmo3": ("olmo3", EPS0, 2, False, True, ()),  # q/k norms over all heads: exact up to their eps
    "granite": ("granite", {}, 2, False, True, ()),
    "helium": ("helium", {}, 2, True, True, ()),  # o_proj is hidden_size x hidden_size
    "glm": ("glm", {}, 2, False, True, ()),
    "glm4": ("glm4", {}, 2, False, True, ()),
    "cohere": ("cohere", {}, 2, False, False, ()),
    "cohere2": ("cohere2", {}, 2, False, False, ()),
    "exaone4": ("exaone4", {}, 2, False, True, ()),
    "arcee": ("arcee", {}, 2, False, True, ()),
    "seed_oss": ("seed_oss", {}, 2, False, True, ()),
    "ernie4_5": ("ernie4_5", {}, 2, False, True, ()),
    "hyperclovax": ("hyperclovax", {}, 2, False, True, ()),
    "jais2": ("jais2", {}, 2, False, False, ()),
    "apertus": ("apertus", {}, 2, False, True, ()),
    "nemotron": ("nemotron", {}, 2, False, False, ()),
    "starcoder2": ("starcoder2", {}, 2, False, False, ()),
    "stablelm": ("stablelm", {}, 2, True, False, ()),
    "phi": ("phi", {}, 2, False, False, ()),  # reads head_dim (its qk_layernorm variant: hidden / heads)
    "persimmon": ("persimmon", {}, 4, True, False, ()),
    "gptj": ("gptj", {}, 4, True, False, ()),
    "gpt_bigcode": ("gpt_bigcode", {}, 1, True, False, ()),
    "gpt_bigcode-mha": ("gpt_bigcode", {"multi_query": False}, 4, True, False, ()),
    "falcon": ("falcon", {}, 1, True, False, ()),
    "falcon-mha": ("falcon", {"multi_query": False}, 4, True, False, ()),
    "falcon-grouped": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}, 2, True, False, ("heads", "hidden")),
    "opt": ("opt", {}, 4, True, False, ()),
    "nanochat": ("nanochat", {}, 2, False, True, ("hidden",)),  # RMSNorms without weights
    "cwm": ("cwm", {}, 2, False, True, ()),
    "ministral": ("ministral", {}, 2, False, True, ()),
    "ministral3": ("ministral3", {}, 2, False, True, ()),
    "hunyuan_v1_dense": ("hunyuan_v1_dense", {}, 2, False, True, ()),
    "biogpt": ("biogpt", {}, 4, True, False, ()),  # tied, sqrt(hidden) embedding scale folded into the final LayerNorm
    "biogpt-untied": ("biogpt", {"tie_word_embeddings": False}, 4, True, False, ()),
    "gpt_neo": ("gpt_neo", {"attention_types": [[["global", "local"], 1]]}, 4, True, False, ()),
    "codegen": ("codegen", {}, 4, True, False, ("heads", "hidden")),
    "xglm": ("xglm", {}, 4, True, False, ("heads", "hidden")),
}  # fmt: skip
# hidden pruning's slicing, checked with the norms identities; BioGPT's tied embedding scale lives in its final
# norm then (checked by tensor below)
HIDDEN_CASES = [c for c in CASES if "hidden" not in CASES[c][5] and c != "biogpt"]


# KV groups that can go apart from their query heads: grouped-query attention whose heads prune alone
KV_CASES = [c for c, (_, _, kv, together, _, refused) in CASES.items() if 1 < kv < HEADS and not together and "heads" not in refused]


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))


def _source(tiny_model, case):
    family, overrides, *_ = CASES[case]
    return tiny_model(family, num_hidden_layers=LAYERS, **overrides)


def _close(actual, expected, tol=5e-5):
    """Equal up to float32 rounding (the pruned model's smaller matmuls sum in another order)."""
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def _run(src, out, **options):
    return prune(PruneConfig(source=str(src), out=out, **options))


def _heads_plan(wo, case, seed):
    """Kept query heads for a prune of heads alone (None where the head size follows the hidden
    size or heads are refused): one per KV group (GQA), two of four (one KV head, or one per head)."""
    _, _, kv, derived, _, refused = CASES[case]
    if derived or "heads" in refused:
        return None
    group = HEADS // kv
    return wo.heads_in_groups([list(range(kv))] * LAYERS, 1, group, seed) if group > 1 else wo.random_rows(LAYERS, HEADS, 2, seed)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_dead_neurons_and_heads_pruned_leave_the_logits(wo, tiny_model, tmp_path, ids, case, one_torch_thread):
    family = CASES[case][0]
    down, o, _ = wo.names(family)
    kept_ffn = wo.random_rows(LAYERS, FFN, 40, seed=1)
    kept_heads = _heads_plan(wo, case, seed=2)
    model = wo.load(_source(tiny_model, case))
    with torch.no_grad():
        for i, layer in enumerate(wo.layers_of(model)):
            layer.get_submodule(down).weight[:, wo.complement(kept_ffn[i], FFN)] = 0
            if kept_heads is not None:
                dead = wo.head_columns(wo.complement(kept_heads[i], HEADS))
                layer.get_submodule(o).weight[:, dead] = 0
                if family in wo.QK_OVER_ALL_HEADS:
                    layer.self_attn.q_proj.weight[dead, :] = 0
    model.save_pretrained(tmp_path / "dead")
    plan = {"ffn": kept_ffn} if kept_heads is None else {"ffn": kept_ffn, "heads": kept_heads}
    result = _run(tmp_path / "dead", tmp_path / "out", plan=wo.write_plan(tmp_path / "plan.json", **plan))
    assert result.sizes_after["ffn"] == 40 and result.sizes_after["heads"] == (HEADS if kept_heads is None else 2)
    _close(wo.logits(wo.load(tmp_path / "out"), ids), wo.logits(model, ids))
    assert result.parameters_after < result.parameters_before


@pytest.mark.parametrize("case, variant", [(c, "heads") for c in sorted(CASES)] + [(c, "kv") for c in sorted(KV_CASES)])
def test_b_any_choice_equals_the_source_masked_in_memory(wo, tiny_model, tmp_path, ids, case, variant, one_torch_thread):
    family, _, kv, *_ = CASES[case]
    heads = _heads_plan(wo, case, seed=6)
    ffn = wo.random_rows(LAYERS, FFN, 24, seed=4)
    kv_rows = wo.random_rows(LAYERS, kv, 1, seed=5) if variant == "kv" else None
    if kv_rows is not None:
        heads = wo.heads_in_groups(kv_rows, 1, HEADS // kv, seed=7)
    src = _source(tiny_model, case)
    plan = wo.write_plan(tmp_path / "plan.json", ffn=ffn, heads=heads, kv_heads=kv_rows)
    _run(src, tmp_path / "out", plan=plan)
    source, pruned = wo.load(src), wo.load(tmp_path / "out")
    with wo.masked(source, family, ffn=ffn, heads=heads, kv_heads=kv_rows, kv=kv):
        expected = wo.logits(source, ids)
    _close(wo.logits(pruned, ids), expected)
    assert not torch.allclose(wo.logits(source, ids), expected, atol=1e-3)  # the masking mattered: the test can fail


@pytest.mark.parametrize("case", sorted(HIDDEN_CASES))
def test_c_hidden_channels(wo, tiny_model, tmp_path, ids, case, one_torch_thread):
    """RMSNorm (eps ~0): channels that are zero throughout the residual stream prune exactly. LayerNorm:
    approximate, and said so; with the norms identities in both models, every other tensor is sliced
    exactly (where the head size is hidden / heads, with two heads: hidden = 2 x head_dim)."""
    family, overrides, kv, derived, rms, _ = CASES[case]
    src = tiny_model(family, num_hidden_layers=LAYERS, **{**overrides, **(EPS0 if rms else {})})
    keep = 2 * HEAD_DIM if derived else 20
    hidden = sorted(torch.randperm(HIDDEN, generator=torch.Generator().manual_seed(8))[:keep].tolist())
    heads = None
    if derived:  # two heads: one of each KV group, two of the query heads of one KV head, two heads with their KV
        heads = [[0, 2]] * LAYERS if kv == 2 else wo.random_rows(LAYERS, HEADS, 2, seed=9)
    ffn = wo.random_rows(LAYERS, FFN, 24, seed=10)
    result = _run(src, tmp_path / "out", plan=wo.write_plan(tmp_path / "plan.json", ffn=ffn, heads=heads, hidden=hidden))
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert result.sizes_after["hidden"] == keep
    source, pruned = wo.load(src), wo.load(tmp_path / "out")
    if rms:
        assert not any("approximate" in n for n in result.notes) and written["head_dim"] == HEAD_DIM
    else:
        assert any("approximate" in n for n in result.notes)
        source, pruned = wo.without_norms(source), wo.without_norms(pruned)
    with wo.masked(source, family, ffn=ffn, heads=heads, hidden=hidden, kv=kv):
        expected = wo.logits(source, ids)
    _close(wo.logits(pruned, ids), expected, tol=5e-5 if rms else 1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_importance_pass_scores_every_unit(wo, tiny_model, case, one_torch_thread):
    _, _, kv, *_ = CASES[case]
    model = wo.load(_source(tiny_model, case))
    scores = width_importance(model, [torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(1))])
    assert [len(scores[k]) for k in ("ffn", "heads", "kv_heads")] == [LAYERS] * 3
    assert [len(scores[k][0]) for k in ("ffn", "heads", "kv_heads")] == [FFN, HEADS, kv] and len(scores["hidden"]) == HIDDEN
    assert scores["num_key_value_heads"] == kv and all(any(v > 0 for v in row) for row in scores["ffn"] + scores["heads"])


@pytest.mark.parametrize("case, plan, needle", [
    ("codegen", {"heads": [[0, 1]] * LAYERS, "hidden": list(range(16))},
     "cannot prune the attention heads of a 'codegen' model: qkv_proj packs q, v and k of the heads in 4 model-parallel blocks"),
    ("xglm", {"hidden": list(range(16))}, "cannot prune the hidden channels of a 'xglm' model: its sinusoidal position embeddings"),
    ("falcon-grouped", {"heads": [[0, 2]] * LAYERS}, "cannot prune the attention heads of a 'falcon' model: query_key_value interleaves"),
])  # fmt: skip
def test_a_refused_kind_is_one_line_and_writes_nothing(wo, tiny_model, tmp_path, case, plan, needle):
    with pytest.raises(DowncycleError) as err:
        _run(_source(tiny_model, case), tmp_path / "out", plan=wo.write_plan(tmp_path / "plan.json", **plan))
    assert str(err.value) == needle or str(err.value).startswith(needle), err.value
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    with pytest.raises(DowncycleError, match=needle.split(":")[0]):  # refused before any scores: --data would not load the model
        from downcycle.surgery.prune import check_source

        check_source(PruneConfig(source=str(_source(tiny_model, case)), out=tmp_path / "out2", scores=tmp_path / "s.json",
                                 heads=2 if "heads" in plan else None, hidden=16 if "heads" not in plan else None))


def test_a_tied_embedding_scale_is_folded_into_the_final_layernorm(wo, tiny_model, tmp_path):
    """BioGPT multiplies its embedding by sqrt(hidden_size) (``scale_embedding``) and ties the output
    layer to it: the pruned embedding is scaled by s = sqrt(d / d') to keep the residual stream, so
    the output layer sees s x its slice, and the final LayerNorm's weight and bias take 1 / s (its
    weight also takes sqrt(d / d') for the variance over fewer channels)."""
    from safetensors.numpy import load_file

    src = _source(tiny_model, "biogpt")
    hidden = [1, 2, 3, 5, 8, 13, 21, 30, 4, 6, 7, 9, 10, 11, 12, 14]
    hidden.sort()
    _run(src, tmp_path / "out", plan=wo.write_plan(tmp_path / "plan.json", heads=[[1, 3]] * LAYERS, hidden=hidden))
    before, after = load_file(src / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    s = (HIDDEN / len(hidden)) ** 0.5
    assert "output_projection.weight" not in after
    torch.testing.assert_close(torch.from_numpy(after["biogpt.embed_tokens.weight"]),
                               torch.from_numpy(before["biogpt.embed_tokens.weight"][:, hidden]) * s)
    torch.testing.assert_close(torch.from_numpy(after["biogpt.layer_norm.weight"]), torch.from_numpy(before["biogpt.layer_norm.weight"][hidden]))
    torch.testing.assert_close(torch.from_numpy(after["biogpt.layer_norm.bias"]), torch.from_numpy(before["biogpt.layer_norm.bias"][hidden]) / s)
