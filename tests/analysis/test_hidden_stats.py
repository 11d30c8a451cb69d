"""The one-pass streaming reduction equals a naive reference built from ``output_hidden_states``,
for every (l, n), with padding; it compares the pre-final-norm states; its memory is bounded by the batch."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from downcycle.decoder import find_decoder_layers
from downcycle.analysis.hidden_stats import as_batches, collect_hidden_stats
from downcycle.analysis.metrics import angular_matrix, block_influence

# Where each family keeps its final norm: the reference replaces it by an identity so that
# HF's last hidden state is the last layer's output *before* the norm, as downcycle defines x_L.
FINAL_NORM = {"llama": ("model", "norm"), "qwen2": ("model", "norm"), "gpt2": ("transformer", "ln_f")}


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _without_final_norm(model, family):
    parent, attr = FINAL_NORM[family]
    setattr(model.get_submodule(parent), attr, torch.nn.Identity())
    return model


def naive_reference(model, batches):
    """Every (l, n) from the full list of hidden states, one pair at a time, plainly."""
    num = model.config.get_text_config().num_hidden_layers
    angle = torch.zeros(num + 1, num + 1, dtype=torch.float64)
    last_angle, cos = torch.zeros_like(angle), torch.zeros_like(angle)
    tokens = sequences = 0
    for batch in batches:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        with torch.no_grad():
            states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        assert len(states) == num + 1
        last = torch.tensor([max(j for j in range(ids.shape[1]) if mask[b, j]) for b in range(ids.shape[0])])
        rows = torch.arange(ids.shape[0])
        for i in range(num + 1):
            for j in range(num + 1):
                c = torch.nn.functional.cosine_similarity(states[i].double(), states[j].double(), dim=-1)  # (B, S)
                a = torch.arccos(c.clamp(-1, 1)) / math.pi
                cos[i, j] += c[mask.bool()].sum()
                angle[i, j] += a[mask.bool()].sum()
                last_angle[i, j] += a[rows, last].sum()
        tokens += int(mask.sum())
        sequences += ids.shape[0]
    return cos / tokens, angle / tokens, last_angle / sequences


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_one_pass_equals_naive_reference_for_every_l_and_n(tiny_model, family):
    model = _load(tiny_model(family))
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 128, (6, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[4, 5:] = 0
    batches = as_batches(ids, 4, mask)
    stats = collect_hidden_stats(model, batches)
    ref_cos, ref_angle, ref_last = naive_reference(_without_final_norm(model, family), batches)
    assert stats.tokens == int(mask.sum()) and stats.sequences == 6
    torch.testing.assert_close(stats.mean("cos"), ref_cos, atol=2e-5, rtol=0)
    torch.testing.assert_close(stats.mean("angle"), ref_angle, atol=2e-5, rtol=0)
    torch.testing.assert_close(stats.mean("last_angle"), ref_last, atol=2e-5, rtol=0)
    num = stats.num_layers
    for last_token, ref in ((True, ref_last), (False, ref_angle)):
        d = angular_matrix(stats, last_token)
        for l in range(num):
            for n in range(1, num + 1):
                if l + n <= num:
                    assert d[l][n - 1] == pytest.approx(float(ref[l, l + n]), abs=2e-5), (l, n)
                else:
                    assert d[l][n - 1] is None
    bi = block_influence(stats)
    assert bi == pytest.approx([1 - float(ref_cos[i, i + 1]) for i in range(num)], abs=2e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_hf_last_hidden_state_is_after_the_final_norm(tiny_model, family):
    """Why downcycle does not use HF's last hidden state: it is normalised, the other states are not."""
    model = _load(tiny_model(family))
    _, layers = find_decoder_layers(model)
    seen = []
    handle = layers[-1].register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out))
    ids = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    handle.remove()
    parent, attr = FINAL_NORM[family]
    norm = getattr(model.get_submodule(parent), attr)
    assert not torch.allclose(hs[-1], seen[0])
    torch.testing.assert_close(hs[-1], norm(seen[0]))


def test_left_padding_and_tensor_batches(tiny_model):
    """Last-token statistics use each row's last non-padding token, wherever the padding is."""
    model = _load(tiny_model("llama"))
    ids = torch.randint(3, 128, (3, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    padded = collect_hidden_stats(model, [(ids, mask)])
    _, ref_angle, ref_last = naive_reference(_without_final_norm(_load(tiny_model("llama")), "llama"),
                                                   [{"input_ids": ids, "attention_mask": mask}])
    torch.testing.assert_close(padded.mean("last_angle"), ref_last, atol=2e-5, rtol=0)
    torch.testing.assert_close(padded.mean("angle"), ref_angle, atol=2e-5, rtol=0)
    plain = collect_hidden_stats(model, [ids[1:]])  # a bare tensor: no padding at all
    assert plain.tokens == 20 and plain.sequences == 2


def test_hooks_are_removed_and_the_model_still_works(tiny_model):
    model = _load(tiny_model("llama"))
    ids = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(ids).logits
    collect_hidden_stats(model, [ids])
    _, layers = find_decoder_layers(model)
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in layers)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before)


def _peak_rss_since_reset() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident set size (VmHWM)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_does_not_grow_with_the_number_of_tokens(tiny_model):
    """16x more calibration tokens, same batch: the peak resident memory of the pass stays put.

    Keeping every state would cost (L+1) * tokens * hidden * 4 bytes = 48 MiB for the long run;
    the streaming pass only ever holds one batch's states (~1.5 MB here).
    """
    model = _load(tiny_model("llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2, max_position_embeddings=256))
    seq, batch = 128, 8

    def peak(num_batches: int) -> int:
        ids = torch.randint(3, 128, (num_batches * batch, seq), generator=torch.Generator().manual_seed(0))
        batches = as_batches(ids, batch)
        collect_hidden_stats(model, batches[:1])  # warm up allocator and kernels
        _reset_peak_rss()
        base = _peak_rss_since_reset()
        collect_hidden_stats(model, batches)
        return _peak_rss_since_reset() - base

    short, long = peak(2), peak(32)
    all_states = (2 + 1) * 32 * batch * seq * 128 * 4
    print(f"peak RSS growth: {short / 2**20:.1f} MiB for 2 batches, {long / 2**20:.1f} MiB for 32; all states: {all_states / 2**20:.0f} MiB")
    assert long - short < all_states / 10


def test_bfloat16_model_gives_the_float32_answer_within_bf16_precision(tiny_model):
    """States of a bf16 model are accumulated in float32/float64, never in bf16."""
    path = tiny_model("qwen2")
    ids = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(4))
    full = collect_hidden_stats(_load(path), [ids])
    from transformers import AutoModelForCausalLM

    half = collect_hidden_stats(AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval(), [ids])
    assert half.cos_sum.dtype == torch.float64
    torch.testing.assert_close(half.mean("angle"), full.mean("angle"), atol=2e-2, rtol=0)
    torch.testing.assert_close(half.mean("cos"), full.mean("cos"), atol=2e-2, rtol=0)
