"""The SLEB search from kept layer inputs equals the search by full forward passes: the same removal
order and every candidate's NLL, in three families (tuple-returning and sliding-window layers
included), with padding, at every cache stride; and it runs fewer layers."""

from __future__ import annotations

import pytest
import torch

from downcycle.decoder import find_decoder_layers, skip_layers
from downcycle.analysis.hidden_stats import as_batches
from downcycle.analysis.nll import cache_stride, calibration_nll, greedy_removal


def reference_nll(model, batches) -> float:
    """Mean NLL from the model's own logits of every position, padding masked out afterwards."""
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            ids, mask = b["input_ids"], b["attention_mask"]
            logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)  # (B, S-1, V)
            valid = (mask[:, 1:] * mask[:, :-1]).bool()
            total -= float(logp.gather(2, ids[:, 1:, None]).squeeze(2)[valid].double().sum())
            count += int(valid.sum())
    return total / count


def full_forward_search(model, batches, k, protect=()):
    """The reference: every candidate scored by a full forward of the model with it (and the layers
    already chosen) skipped -- the search as SLEB's Algorithm 1 states it."""
    _, layers = find_decoder_layers(model)
    seen = []
    handle = layers[0].register_forward_hook(lambda m, a, out: seen.append(isinstance(out, tuple)))
    with torch.no_grad():
        model(input_ids=batches[0]["input_ids"][:1, :2])
    handle.remove()
    removed, steps = [], []
    for _ in range(k):
        step = {}
        for cand in range(len(layers)):
            if cand not in removed and cand not in protect:
                with skip_layers(layers, [*removed, cand], seen[0]):
                    step[cand] = reference_nll(model, batches)
        removed.append(min(step, key=lambda i: (step[i], i)))
        steps.append(step)
    return reference_nll(model, batches), removed, steps


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def calibration(vocab: int, rows: int = 6, length: int = 12):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a padded row
    mask[rows - 2, 5:] = 0
    return as_batches(ids, 4, mask)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_search_equals_full_forward_search_at_every_stride(tiny_model, one_torch_thread, family):
    model = load(tiny_model(family, num_hidden_layers=6))
    batches = calibration(model.config.vocab_size)
    base, removed, steps = full_forward_search(model, batches, 3, protect=[0])
    assert calibration_nll(model, batches) == pytest.approx(base, rel=1e-6, abs=0)
    layer_bytes = 6 * 12 * model.config.hidden_size * 4
    for budget, stride in [(10**12, 1), (2 * layer_bytes, 2), (layer_bytes, 3), (0, 6)]:
        assert cache_stride(6, layer_bytes, budget) == stride
        got = greedy_removal(model, batches, 3, protect=[0], cache_bytes=budget)
        assert got.removed == removed, (budget, got.removed, removed)
        assert got.base_nll == pytest.approx(base, rel=1e-6, abs=0)
        for mine, ref in zip(got.steps, steps):
            assert mine.keys() == ref.keys()
            for layer in ref:
                assert mine[layer] == pytest.approx(ref[layer], rel=1e-6, abs=0), (budget, layer)


def test_cache_stride_is_the_smallest_that_fits():
    for layers in (2, 7, 30):
        for fits in range(35):
            s = cache_stride(layers, 100, fits * 100)
            assert len(range(s, layers, s)) <= fits  # the kept layers fit ...
            assert s == 1 or len(range(s - 1, layers, s - 1)) > fits  # ... and a smaller stride would not
    assert cache_stride(30, 100, 29 * 100) == 1 and cache_stride(30, 100, 0) == 30


def test_candidates_run_only_the_layers_after_the_kept_state(tiny_model, one_torch_thread):
    """Layer executions, counted on each layer's attention: a full forward per candidate runs every
    remaining layer; from kept states candidate c runs only the layers after c."""
    model = load(tiny_model("llama", num_hidden_layers=6))
    _, layers = find_decoder_layers(model)
    calls = [0]
    handles = [layer.self_attn.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1)) for layer in layers]
    batches = calibration(model.config.vocab_size, rows=4)  # one batch
    try:
        full_forward_search(model, batches, 2)
        full, calls[0] = calls[0], 0
        greedy = greedy_removal(model, batches, 2)
        cached = calls[0]
    finally:
        for h in handles:
            h.remove()
    r = greedy.removed[0]
    assert full == 6 + 6 + 6 * 5 + 5 * 4  # its probe, base, then each candidate runs the other remaining layers
    # probes (what the layers return; the output layer: the model's own logits and body + head), base;
    # step 1: candidate c runs layers c+1..5; re-keep the inputs of layers r+1..5 (stops at 5's input);
    # step 2: candidate c runs the layers after c except r
    step2 = sum(len([j for j in range(c + 1, 6) if j != r]) for c in range(6) if c != r)
    assert cached == 3 * 6 + 6 + sum(5 - c for c in range(6)) + (5 - r - 1) + step2
