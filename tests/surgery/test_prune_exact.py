"""A width-pruned model computes what the source computes with the pruned units zero, in every family
downcycle prunes: (a) dead neurons and heads pruned leave the logits as they were; (b) any choice,
against the source with the rest masked in memory; (c) embedding channels that are zero throughout
the residual stream, exact up to the norm's eps once the norms are rescaled (and measurably not
without); LayerNorm families as documented (approximate)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.numpy import load_file

from downcycle.surgery.width_plan import SCORES_KIND

WIDTH_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "smollm3", "gpt2", "gpt_neox"]
MHA = {"gpt2", "gpt_neox"}  # one KV head per query head, head size = hidden / heads

GQA_FAMILIES = [f for f in WIDTH_FAMILIES if f not in MHA]
RMS_FAMILIES = GQA_FAMILIES  # every family with grouped-query attention here also uses an RMSNorm


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))


def _source(tiny_model, family):
    """The tiny model of ``family``; OLMo2's with its norms' eps (nearly) 0: its q/k norms take the
    mean over the whole projection, so with the pruned heads' queries and keys zero a head prune is
    exact only up to that eps (as a hidden prune is, tested below with and without eps)."""
    return tiny_model(family, rms_norm_eps=1e-12) if family == "olmo2" else tiny_model(family)


def _close(actual, expected):
    """Equal up to float32 rounding: the pruned model's smaller matmuls and norms (which compute in float32
    whatever the dtype) sum in another order. (Measured: at most 2.5e-5 on logits up to 4.3, OLMo2 with
    one of its four heads kept, 5.4e-6 even with the models in float64.)"""
    torch.testing.assert_close(actual, expected, rtol=5e-5, atol=5e-5)


@pytest.fixture
def dead_source(tiny_model, tmp_path, load, oracle, decoder_layers, head_columns):
    """``dead_source(family, dead_ffn, dead_heads)`` -> (path, model): the tiny ``family`` model with
    neurons and query heads made dead on disk: their MLP output projection columns (Conv1D: rows) and
    their heads' attention output columns zeroed (OLMo2: also their query rows, for its q norm over
    the whole projection)."""

    def make(family, dead_ffn, dead_heads):
        model = load(_source(tiny_model, family))
        down, o, _ = oracle(family)
        with torch.no_grad():
            for i, layer in enumerate(decoder_layers(model)[2]):
                for name, dead in ((down, dead_ffn[i]), (o, head_columns(dead_heads[i]))):
                    module = layer.get_submodule(name)
                    if type(module).__name__ == "Conv1D":  # stored [in, out]
                        module.weight[dead, :] = 0
                    else:
                        module.weight[:, dead] = 0
                if family == "olmo2":
                    layer.self_attn.q_proj.weight[head_columns(dead_heads[i]), :] = 0
        path = tmp_path / "dead"
        model.save_pretrained(path)
        return path, model

    return make


@pytest.fixture
def weight_scores(oracle, decoder_layers, shape):
    """``weightweight_scores(model, family, n_kv)`` -> importance from the weights: a neuron's or head's L2
    norm of its output-projection columns."""

    def scores(model, family, n_kv):
        down, o, _ = oracle(family)
        ffn, heads = [], []
        for layer in decoder_layers(model)[2]:
            w_down, w_o = layer.get_submodule(down).weight, layer.get_submodule(o).weight
            if type(layer.get_submodule(down)).__name__ == "Conv1D":
                w_down, w_o = w_down.T, w_o.T
            ffn.append(w_down.norm(dim=0).tolist())
            heads.append(w_o.reshape(w_o.shape[0], shape.heads, shape.head_dim).norm(dim=(0, 2)).tolist())
        group = shape.heads // n_kv
        kv = [[sum(x * x for x in row[g * group:(g + 1) * group]) ** 0.5 for g in range(n_kv)] for row in heads]
        return {"kind": SCORES_KIND, "model_type": family, "num_layers": shape.layers, "hidden_size": shape.hidden,
                "intermediate_size": shape.ffn, "num_attention_heads": shape.heads, "num_key_value_heads": n_kv, "ffn": ffn,
                "heads": heads, "kv_heads": kv, "hidden": [1.0] * shape.hidden}

    return scores


@pytest.mark.parametrize("family", WIDTH_FAMILIES)
def test_a_dead_neurons_and_heads_pruned_leave_the_logits(tiny_model, tmp_path, ids, family, one_torch_thread, shape, complement,
                                                          logits, load, random_rows, heads_in_groups, run_prune, dead_source,
                                                          weight_scores):
    kept_ffn = random_rows(shape.layers, shape.ffn, 40, seed=1)
    mha = family in MHA
    kept_heads = ([[h for h in range(shape.heads)] for _ in range(shape.layers)] if mha
                  else heads_in_groups([[0, 1]] * shape.layers, 1, seed=2))
    src, model = dead_source(family, [complement(r, shape.ffn) for r in kept_ffn],
                              [complement(r, shape.heads) for r in kept_heads])
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(weight_scores(model, family, shape.heads if mha else shape.kv)))
    options = {"ffn": 40} if mha else {"ffn": 40, "heads": 2}
    result = run_prune(src, tmp_path / "out", scores=scores, **options)
    plan = json.loads((tmp_path / "out" / "width_plan.json").read_text())
    assert plan["ffn"] == kept_ffn and (mha or plan["heads"] == kept_heads)  # the dead ones were chosen
    pruned = load(tmp_path / "out")
    assert pruned.config.get_text_config().intermediate_size == 40 if family != "gpt2" else pruned.config.n_inner == 40
    _close(logits(pruned, ids), logits(model, ids))
    assert result.parameters_after < result.parameters_before


@pytest.mark.parametrize("family", GQA_FAMILIES)
def test_a_a_dead_kv_group_pruned_leaves_the_logits(tiny_model, tmp_path, ids, family, one_torch_thread, shape, complement,
                                                    head_columns, logits, load, random_rows, heads_in_groups, run_prune,
                                                    decoder_layers, dead_source, weight_scores):
    kept_kv = random_rows(shape.layers, shape.kv, 1, seed=3)
    kept_heads = heads_in_groups(kept_kv, 2, seed=0)
    src, model = dead_source(family, [[] for _ in range(shape.layers)], [complement(r, shape.heads) for r in kept_heads])
    if family == "olmo2":  # its k norm spans the whole projection: the dead group's keys are zero too
        with torch.no_grad():
            for layer, row in zip(decoder_layers(model)[2], kept_kv):
                layer.self_attn.k_proj.weight[head_columns(complement(row, shape.kv)), :] = 0
        model.save_pretrained(src)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(weight_scores(model, family, shape.kv)))
    run_prune(src, tmp_path / "out", scores=scores, kv_heads=1)
    pruned = load(tmp_path / "out")
    cfg = pruned.config.get_text_config()
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 1)
    assert json.loads((tmp_path / "out" / "width_plan.json").read_text())["kv_heads"] == kept_kv
    _close(logits(pruned, ids), logits(model, ids))


@pytest.mark.parametrize("variant", ["heads", "kv"])
@pytest.mark.parametrize("family", GQA_FAMILIES)
def test_b_any_choice_equals_the_source_masked_in_memory(tiny_model, tmp_path, ids, family, variant, one_torch_thread, shape,
                                                         logits, load, masked, write_plan, random_rows, heads_in_groups,
                                                         run_prune):
    src = _source(tiny_model, family)
    ffn = random_rows(shape.layers, shape.ffn, 24, seed=4)
    kv = random_rows(shape.layers, shape.kv, 1, seed=5) if variant == "kv" else None
    heads = heads_in_groups(kv or [[0, 1]] * shape.layers, 1, seed=6)
    plan = write_plan(tmp_path / "plan.json", ffn=ffn, heads=heads, kv_heads=kv)
    run_prune(src, tmp_path / "out", plan=plan)
    source, pruned = load(src), load(tmp_path / "out")
    with masked(source, family, ffn=ffn, heads=heads, kv_heads=kv):
        expected = logits(source, ids)
    _close(logits(pruned, ids), expected)
    assert not torch.allclose(logits(source, ids), expected, atol=1e-3)  # the masking mattered: the test can fail


@pytest.mark.parametrize("family", sorted(MHA))
def test_b_mha_families_prune_neurons_exactly(tiny_model, tmp_path, ids, family, one_torch_thread, shape, logits, load, masked,
                                              write_plan, random_rows, run_prune):
    src = tiny_model(family)
    ffn = random_rows(shape.layers, shape.ffn, 24, seed=7)
    run_prune(src, tmp_path / "out", plan=write_plan(tmp_path / "plan.json", ffn=ffn))
    source, pruned = load(src), load(tmp_path / "out")
    with masked(source, family, ffn=ffn):
        expected = logits(source, ids)
    _close(logits(pruned, ids), expected)
    assert not torch.allclose(logits(source, ids), expected, atol=1e-3)


def _plain_norms(pruned, source, kept: list[int], hidden_size: int):
    """``pruned`` with its hidden-size norm weights (and embedding) the source's plain slices: no rescaling."""
    src_params = dict(source.named_parameters())
    with torch.no_grad():
        for name, p in pruned.named_parameters():
            if p.dim() == 1 and p.shape[0] == len(kept) and src_params[name].shape[0] == hidden_size:
                p.copy_(src_params[name][kept])
        emb = pruned.get_input_embeddings().weight
        emb.copy_(source.get_input_embeddings().weight[:, kept])
    return pruned


@pytest.mark.parametrize("eps", [None, 1e-12])
@pytest.mark.parametrize("family", RMS_FAMILIES)
def test_c_zero_hidden_channels_prune_exactly_once_rms_norms_are_rescaled(tiny_model, tmp_path, ids, family, eps,
                                                                          one_torch_thread, shape, logits, load, masked,
                                                                          write_plan, run_prune):
    """With the config's eps the mean square + eps is taken over 20 channels instead of 32: close;
    with eps (nearly) 0, exact."""
    src = tiny_model(family) if eps is None else tiny_model(family, rms_norm_eps=eps)
    hidden = sorted(torch.randperm(shape.hidden, generator=torch.Generator().manual_seed(8))[:20].tolist())
    run_prune(src, tmp_path / "out", plan=write_plan(tmp_path / "plan.json", hidden=hidden))
    source, pruned = load(src), load(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    # the head size no longer follows from hidden / heads
    assert written["hidden_size"] == 20 and written["head_dim"] == shape.head_dim
    with masked(source, family, hidden=hidden):
        expected = logits(source, ids)
    if eps:
        _close(logits(pruned, ids), expected)
    else:  # the error scales with the eps
        tol = 1000 * json.loads((src / "config.json").read_text())["rms_norm_eps"]
        torch.testing.assert_close(logits(pruned, ids), expected, rtol=tol, atol=tol)
    plain = logits(_plain_norms(pruned, source, hidden, shape.hidden), ids)
    assert (plain - expected).abs().max() > 1e-2  # without the rescaling: measurably not


@pytest.mark.parametrize("family", sorted(MHA))
def test_c_layernorm_families_prune_hidden_approximately_and_say_so(tiny_model, tmp_path, ids, family, one_torch_thread, shape,
                                                                    head_columns, logits, load, masked, write_plan, run_prune):
    """LayerNorm subtracts the mean over its channels: zero channels still shift it, so hidden
    pruning there is approximate (heads and hidden go together: transformers derives the head size
    from them). The rescaled weights are closer than plain slices, and the manifest says why."""
    src = tiny_model(family)
    heads = [[0, 2]] * shape.layers
    hidden = head_columns([0, 2])  # hidden = heads x head size
    result = run_prune(src, tmp_path / "out", plan=write_plan(tmp_path / "plan.json", heads=heads, hidden=hidden))
    assert any("LayerNorm" in n for n in result.notes)
    manifest = json.loads((tmp_path / "out" / "downcycle.json").read_text())
    assert any("approximate" in n for n in manifest["outputs"]["config_notes"])
    source, pruned = load(src), load(tmp_path / "out")
    with masked(source, family, heads=heads, hidden=hidden):
        expected = logits(source, ids)
    got = logits(pruned, ids)
    plain = logits(_plain_norms(pruned, source, hidden, shape.hidden), ids)
    assert not torch.allclose(got, expected, atol=1e-3)
    assert (got - expected).norm() < (plain - expected).norm()


@pytest.mark.parametrize("family", sorted(MHA))
def test_c_layernorm_families_slice_every_tensor_exactly_without_their_norms(tiny_model, tmp_path, ids, family, one_torch_thread,
                                                                             shape, head_columns, logits, load, masked,
                                                                             write_plan, random_rows, run_prune):
    """The layout of GPT-2's transposed, fused c_attn and GPT-NeoX's per-head interleaved
    query_key_value: with the norms replaced by identities in both models, pruning heads and
    channels together is exact."""
    src = tiny_model(family)
    heads = random_rows(shape.layers, shape.heads, 2, seed=9)
    hidden = head_columns([1, 3])
    ffn = random_rows(shape.layers, shape.ffn, 24, seed=10)
    run_prune(src, tmp_path / "out", plan=write_plan(tmp_path / "plan.json", ffn=ffn, heads=heads, hidden=hidden))
    source, pruned = load(src), load(tmp_path / "out")
    for model in (source, pruned):
        for name, module in list(model.named_modules()):
            if isinstance(module, torch.nn.LayerNorm):
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent), attr, torch.nn.Identity())
    with masked(source, family, ffn=ffn, heads=heads, hidden=hidden):
        expected = logits(source, ids)
    torch.testing.assert_close(logits(pruned, ids), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["gemma2", "smollm3", "gpt2"])
def test_tied_embeddings_stay_tied(tiny_model, tmp_path, family, shape, head_columns, load, write_plan, run_prune):
    src = tiny_model(family)
    options = ({"heads": [[0, 1]] * shape.layers, "hidden": head_columns([0, 1])} if family in MHA
               else {"hidden": list(range(0, shape.hidden, 2))})
    run_prune(src, tmp_path / "out", plan=write_plan(tmp_path / "plan.json", **options))
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    assert not any(name.endswith(("lm_head.weight", "embed_out.weight")) for name in tensors)
    pruned = load(tmp_path / "out")
    assert pruned.get_output_embeddings().weight.data_ptr() == pruned.get_input_embeddings().weight.data_ptr()
    assert pruned.get_input_embeddings().weight.shape[1] == 16
