"""Known answers: layers made into identities are found by every metric and dropped by every
score-based strategy, in two families; the seed's ``first`` does not find them."""

from __future__ import annotations

import pytest
import torch

from downcycle.analysis.analyze import analyze_model, choose_layers
from downcycle.decoder import find_decoder_layers
from downcycle.analysis.hidden_stats import as_batches


def identity_model(path, identities: list[int]):
    """The model at ``path`` with layers ``identities`` turned into identities: their attention output
    and MLP down projections are zero, so each adds exactly 0 to the residual stream."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    _, layers = find_decoder_layers(model)
    for i in identities:
        zeroed = [p for name, p in layers[i].named_parameters() if name.startswith(("self_attn.o_proj", "mlp.down_proj"))]
        assert len(zeroed) >= 2, f"layer {i}: no output projections found"
        with torch.no_grad():
            for p in zeroed:
                p.zero_()
    return model


def model_samples(model, rows: int, length: int, seed: int = 0):
    """Text the model itself generates (sampled at temperature 1): the full model is then the best
    predictor of it, so removing any layer that does something raises the NLL, in expectation.
    (On uniformly random tokens a random layer's removal may just as well lower it.)"""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (rows, 1), generator=gen)
    with torch.no_grad():
        for _ in range(length - 1):
            probs = model(input_ids=ids).logits[:, -1].float().softmax(-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("family, identities, keep", [("llama", [3, 4], 4), ("qwen2", [2], 5)])
def test_identity_layers_are_found_and_dropped(tiny_model, family, identities, keep):
    model = identity_model(tiny_model(family), identities)
    ids = model_samples(model, rows=16, length=24)
    analysis = analyze_model(model, as_batches(ids, 8), nll_removals=len(identities))
    num, first, n = analysis.num_layers, identities[0], len(identities)

    for metric in ("angular-last", "angular-mean"):
        d = analysis.scores[metric]
        assert d[first][n - 1] < 1e-6, (metric, d[first][n - 1])  # d(first, first + n) ~ 0
        others = [d[l][n - 1] for l in range(num - n + 1) if l != first]
        assert min(others) > 0.01, (metric, others)
    bi = analysis.scores["bi"]
    assert max(bi[i] for i in identities) < 1e-6
    assert min(bi[i] for i in range(num) if i not in identities) > 0.01

    greedy = analysis.greedy
    assert sorted(greedy.removed) == identities
    for layer in identities:  # removing an identity changes nothing at all
        assert greedy.steps[0][layer] == pytest.approx(greedy.base_nll, abs=1e-5)
    assert min(v for i, v in greedy.steps[0].items() if i not in identities) > greedy.base_nll + 1e-3

    expected = [i for i in range(num) if i not in identities]
    for strategy in ("block", "bi", "nll"):
        assert choose_layers(analysis, strategy, keep) == expected, strategy
    assert choose_layers(analysis, "block", keep, metric="angular-mean") == expected
    assert choose_layers(analysis, "bi", keep, metric="angular-last") == expected
    assert choose_layers(analysis, "first", keep) != expected
    assert choose_layers(analysis, "first", keep) == list(range(keep))

    # one plan builder: the plan the pipeline derives from scores.json (written and read back) is the
    # plan analyze makes from the analysis in memory, for every strategy and metric, details included
    import json

    from downcycle.analysis.choice import make_plan, plan_from_scores

    stored = json.loads(json.dumps(analysis.to_json()))
    for strategy, metric in (("block", None), ("bi", None), ("nll", None), ("block", "angular-mean"), ("bi", "angular-last"), ("first", None)):
        direct = make_plan(num, strategy, keep, metric, analysis.metric_values)
        derived = plan_from_scores(stored, strategy, keep, metric)
        assert derived.kept_layers == direct.kept_layers and derived.details == direct.details, (strategy, metric)
        assert derived.kept_layers == (expected if strategy != "first" else list(range(keep)))
