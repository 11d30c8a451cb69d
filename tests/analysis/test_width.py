"""Width importance (Minitron): known answers on tiny random models of every family -- dead neurons,
dead KV groups and dead residual channels rank last --, the aggregation against a hand computation,
the hooks gone afterwards (the files `downcycle analyze --width` writes: test_width_files.py)."""

from __future__ import annotations

import math

import pytest

from downcycle.analysis.width import SquaredMeans, check_width_family, kv_group_scores, width_importance
from downcycle.errors import DowncycleError

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2", "smollm3")
FAMILIES = (*LLAMA_LIKE, "phi3", "gpt2", "gpt_neox")
# Written out here, independently of the width layouts in downcycle.architecture:
# family -> (attention output projection, MLP down projection, MLP input projections) inside a layer.
MODULES = {
    **dict.fromkeys(LLAMA_LIKE, ("self_attn.o_proj", "mlp.down_proj", ("mlp.gate_proj", "mlp.up_proj"))),
    "phi3": ("self_attn.o_proj", "mlp.down_proj", ("mlp.gate_up_proj",)),
    "gpt2": ("attn.c_proj", "mlp.c_proj", ("mlp.c_fc",)),
    "gpt_neox": ("attention.dense", "mlp.dense_4h_to_h", ("mlp.dense_h_to_4h",)),
}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(family: str, **overrides):
    import torch
    import transformers

    from downcycle.tiny import FAMILIES as TINY
    from downcycle.tiny import tiny_config

    torch.manual_seed(0)
    two = {"num_hidden_layers": 2}
    if family == "gemma3_text":  # its tiny config lists 6 layer types
        two["layer_types"] = ["sliding_attention", "full_attention"]
    return getattr(transformers, TINY[family][1])(tiny_config(family, **{**two, **overrides})).eval()


def batches(n: int = 4, seq: int = 12, size: int = 2):
    import torch

    ids = torch.randint(3, 128, (n, seq), generator=torch.Generator().manual_seed(1))
    return [ids[i : i + size] for i in range(0, n, size)]


def layers_of(model):
    from downcycle.decoder import find_decoder_layers

    return find_decoder_layers(model)[1]


def zero_outputs(module, index) -> None:
    """Zero output features ``index`` of a Linear ``(out, in)`` or a GPT-2 Conv1D ``(in, out)``, bias too."""
    import torch

    with torch.no_grad():
        if type(module).__name__ == "Conv1D":
            module.weight[:, index] = 0
        else:
            module.weight[index] = 0
        if getattr(module, "bias", None) is not None:
            module.bias[index] = 0


def head_dim(model) -> int:
    cfg = model.config
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def zero_values(model, family: str, layer, group: int) -> None:
    """Zero the value rows of KV group ``group`` (GPT-2 / NeoX: of head ``group``) in ``layer``."""
    cfg, hd = model.config, head_dim(model)
    h, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    if family in LLAMA_LIKE:
        zero_outputs(layer.self_attn.v_proj, slice(group * hd, (group + 1) * hd))
    elif family == "phi3":  # fused rows: q (h * hd), k (kv * hd), v (kv * hd)
        start = (h + kv + group) * hd
        zero_outputs(layer.self_attn.qkv_proj, slice(start, start + hd))
    elif family == "gpt2":  # c_attn splits q | k | v, each d wide
        start = 2 * cfg.hidden_size + group * hd
        zero_outputs(layer.attn.c_attn, slice(start, start + hd))
    else:  # gpt_neox: per head, q | k | v interleaved
        start = group * 3 * hd + 2 * hd
        zero_outputs(layer.attention.query_key_value, slice(start, start + hd))


def zero_neurons(family: str, layer, neurons: list[int], which: int, width: int) -> None:
    """Make MLP ``neurons`` output exactly 0: their gate (``which`` 0) or up (1) rows; GPT-2 / NeoX: fc-in rows and bias."""
    inputs = MODULES[family][2]
    if family == "phi3":  # gate_up_proj: gate rows 0..f-1, then up rows
        zero_outputs(layer.get_submodule(inputs[0]), [n + which * width for n in neurons])
    else:
        zero_outputs(layer.get_submodule(inputs[which % len(inputs)]), neurons)


def ranked_last(values: list[float], dead: set[int]) -> bool:
    """The ``dead`` units score exactly 0 and every other unit more."""
    return all(values[i] == 0.0 for i in dead) and all(v > 0.0 for i, v in enumerate(values) if i not in dead)


@pytest.mark.parametrize("family", FAMILIES)
def test_dead_neurons_and_dead_kv_groups_rank_last(family):
    overrides = {"num_attention_heads": 8, "num_key_value_heads": 2} if family == "llama" else {}
    model = tiny(family, **overrides)
    layers = layers_of(model)
    f = 64
    dead_neurons = [{3, 10, 41}, {0, 63}]
    zero_neurons(family, layers[0], [3, 10], 0, f)
    zero_neurons(family, layers[0], [41], 1, f)
    zero_neurons(family, layers[1], [0, 63], 1, f)
    h = model.config.num_attention_heads
    kv = getattr(model.config, "num_key_value_heads", None) or h
    dead_groups = [1, 0]  # a different group per layer: the head indexing must follow transformers' order
    for layer, group in zip(layers, dead_groups):
        zero_values(model, family, layer, group)

    scores = width_importance(model, batches())
    assert scores["num_attention_heads"] == h and scores["num_key_value_heads"] == kv and scores["intermediate_size"] == f
    assert scores["samples"] == 4 and scores["seq_len"] == 12 and scores["num_layers"] == 2
    for l in range(2):
        assert ranked_last(scores["ffn"][l], dead_neurons[l]), (l, scores["ffn"][l])
        per_group = h // kv
        g = dead_groups[l]
        assert ranked_last(scores["heads"][l], set(range(g * per_group, (g + 1) * per_group))), (l, scores["heads"][l])
        assert ranked_last(scores["kv_heads"][l], {g})
    assert all(v > 0 for v in scores["hidden"])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_channel_zero_throughout_the_residual_stream_ranks_last(family):
    import torch

    model = tiny(family)
    c = 5
    with torch.no_grad():
        model.get_input_embeddings().weight[:, c] = 0
        if family == "gpt2":
            model.transformer.wpe.weight[:, c] = 0
        for layer in layers_of(model):  # nothing writes channel c into the residual stream
            zero_outputs(layer.get_submodule(MODULES[family][0]), [c])
            zero_outputs(layer.get_submodule(MODULES[family][1]), [c])
        for module in model.modules():  # a LayerNorm's mean subtraction would put it back: its weight and bias too
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[c] = 0
                module.bias[c] = 0
    scores = width_importance(model, batches())
    assert len(scores["hidden"]) == model.config.hidden_size
    assert ranked_last(scores["hidden"], {c}), scores["hidden"]


def test_squared_means_is_the_mean_over_the_sequence_then_l2_over_the_batch():
    import torch

    sums = SquaredMeans()
    sums.add(torch.tensor([[[1.0], [3.0]], [[6.0], [0.0]]]))  # (B=2, T=2, C=1): sequence means 2 and 3
    assert sums.l2().tolist() == pytest.approx([math.sqrt(2.0**2 + 3.0**2)])
    sums.add(torch.tensor([[[4.0], [4.0]]]))  # a second batch adds its row: sqrt(4 + 9 + 16)
    assert sums.l2().tolist() == pytest.approx([math.sqrt(29.0)])
    assert kv_group_scores([3.0, 4.0, 0.0, 1.0], 2) == pytest.approx([5.0, 1.0])


def test_the_scores_equal_a_hand_computation_from_the_captured_activations():
    """Capture what enters down_proj / o_proj and leaves every norm with hooks of our own, and
    compute mean |x| over the sequence, L2 over the batch (heads: per-token L2 over head_dim first)."""
    import torch

    model = tiny("llama", num_attention_heads=8, num_key_value_heads=2)
    captured: dict[str, list] = {}

    def keep(name, output=False):
        def hook(module, args, *out):
            captured.setdefault(name, []).append((out[0] if output else args[0]).detach().clone())
        return hook

    handles = []
    for name, module in model.named_modules():
        if name.endswith(("mlp.down_proj", "self_attn.o_proj")):
            handles.append(module.register_forward_pre_hook(keep(name)))
        if name.endswith(("input_layernorm", "post_attention_layernorm")) or name == "model.norm":
            handles.append(module.register_forward_hook(keep(name, output=True)))
    data = batches(n=6, seq=10, size=3)
    with torch.no_grad():
        for ids in data:
            model(input_ids=ids)
    for h in handles:
        h.remove()

    def by_hand(tensors, per_token=lambda x: x.abs()):
        rows = [per_token(x[b].double()).mean(dim=0) for x in tensors for b in range(x.shape[0])]  # one per window
        return torch.stack(rows).pow(2).sum(dim=0).sqrt()

    scores = width_importance(model, data)
    for l in range(2):
        assert scores["ffn"][l] == pytest.approx(by_hand(captured[f"model.layers.{l}.mlp.down_proj"]).tolist(), rel=1e-5)
        heads = by_hand(captured[f"model.layers.{l}.self_attn.o_proj"], lambda x: x.view(x.shape[0], 8, 4).norm(dim=-1))
        assert scores["heads"][l] == pytest.approx(heads.tolist(), rel=1e-5)
        assert scores["kv_heads"][l] == pytest.approx([heads[:4].norm().item(), heads[4:].norm().item()], rel=1e-5)
    norms = [n for n in captured if "norm" in n]
    assert len(norms) == 5
    assert scores["hidden"] == pytest.approx(sum(by_hand(captured[n]) for n in norms).tolist(), rel=1e-5)
    # the batching does not change it: the squares are summed per window
    whole = width_importance(model, [torch.cat(data)])
    for l in range(2):
        assert whole["ffn"][l] == pytest.approx(scores["ffn"][l], rel=1e-5)


def test_the_hooks_are_gone_afterwards_and_the_outputs_unchanged():
    import torch

    model = tiny("gpt2")
    ids = batches()[0]
    hooks = lambda: [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    before_hooks = hooks()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    width_importance(model, batches())
    assert hooks() == before_hooks
    with pytest.raises(DowncycleError, match="full-length"):  # refused mid-pass: the hooks go all the same
        width_importance(model, [{"input_ids": ids, "attention_mask": torch.tensor([[1] * 12, [1] * 11 + [0]])}])
    assert hooks() == before_hooks
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)


def test_a_family_it_does_not_know_is_refused():
    with pytest.raises(DowncycleError, match="'mixtral'"):
        width_importance(tiny("mixtral"), batches())
    with pytest.raises(DowncycleError, match="'mixtral'"):
        check_width_family({"model_type": "mixtral", "num_hidden_layers": 2})
    check_width_family({"model_type": "llava", "text_config": {"model_type": "llama", "num_hidden_layers": 2}})
