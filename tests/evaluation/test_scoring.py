"""Shared-context scoring equals the direct computation (one full forward per context+continuation),
for packed families, absolute-position families and sliding-window models; and the encoder splits
context and continuation exactly as the harness does."""

from __future__ import annotations

import pytest

CONTEXTS = ["Question: Which gas do plants take in?\nAnswer:", "The cat sat on the", "A man is sitting on a roof. He",
            "In 1492 Columbus sailed the ocean"]
CHOICES = [" carbon dioxide", " oxygen", " nitrogen and a great deal of argon", " blue"]


@pytest.fixture(scope="module", params=["llama", "gpt2", "mistral"])
def setup(request, tmp_path_factory, build_eval_model):
    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.run import max_length
    from downcycle.loading import load_model, load_tokenizer

    # gpt2: absolute positions and a tokenizer without BOS; mistral: sliding window of 5 (unpacked path)
    path = build_eval_model(tmp_path_factory.mktemp("score") / request.param, family=request.param,
                            bos=request.param != "gpt2")
    model = load_model(path, dtype="float32")
    tok = load_tokenizer(path)
    return model, tok, Encoder(tok, max_length(model, tok))


def _direct(model, ctx: list[int], cont: list[int]) -> float:
    import torch

    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model(ids).logits[0].double().log_softmax(-1)  # (T, V)
    return float(sum(logp[len(ctx) - 1 + j, t] for j, t in enumerate(cont)))


def _requests():
    from downcycle.evaluation.tasks import Request

    reqs = [Request([c] * len(CHOICES), list(CHOICES), list(CHOICES), 0) for c in CONTEXTS]
    # partial-style: different contexts, one continuation; and a context ending in a space
    reqs.append(Request(["Sarah was better than Maria so Sarah", "Sarah was better than Maria so Maria"],
                        [" got the easier cases."] * 2, ["a", "b"], 1))
    reqs.append(Request(["Answer: "] * 2, ["yes", "no"], ["yes", "no"], 0))
    reqs.append(Request(["Q: 2+2?\nA:"] * 4, [" A", " B", " C", " D"], list("ABCD"), 0))  # one-token answers: no mask
    return reqs


@pytest.mark.parametrize("shared", [True, False])
def test_scores_equal_direct_computation(setup, shared):
    from downcycle.evaluation.scoring import score_groups

    model, _, encoder = setup
    reqs = _requests()
    scores = score_groups(model, encoder.groups(reqs, shared=shared), batch_size=3, progress=False, shared=shared)
    for d, req in enumerate(reqs):
        for c, (x, y) in enumerate(zip(req.contexts, req.continuations)):
            ctx, cont = encoder.pair(x, y)
            assert scores[(d, c)][0] == pytest.approx(_direct(model, ctx, cont), abs=1e-4), (d, c)


def test_packing_window(setup):
    from downcycle.evaluation.scoring import packing_window

    model = setup[0]
    assert packing_window(model) == (5 if model.config.model_type == "mistral" else None)


@pytest.mark.parametrize("family", ["mistral", "gemma3_text"])
def test_sliding_window_models_pack_the_groups_inside_their_window(family, tmp_path, build_eval_model, monkeypatch):
    """Groups whose sequences fit the window (inputs of W - 1 and W tokens) are packed after their
    shared prefix and score as the model's own forward with its windowed masks; one token more (W + 1,
    W + 3) and the group is scored a choice per row, since a window then cuts what a packed row would
    see. A task-wide prefix in a cache is used only when every group fits."""
    import random

    import torch

    from downcycle.evaluation import scoring
    from downcycle.evaluation.encoding import EncodedGroup
    from downcycle.loading import load_model

    layers = {"layer_types": ["sliding_attention", "full_attention", "sliding_attention"]} if family == "gemma3_text" else {}
    model = load_model(build_eval_model(tmp_path / family, family=family, num_hidden_layers=3, **layers), dtype="float32")
    W = scoring.packing_window(model)
    assert W == model.config.sliding_window and W >= 4
    rng = random.Random(0)

    def tokens(n):
        return [rng.randrange(3, model.config.vocab_size) for _ in range(n)]

    def group(d, inputs, prefix=None):  # two choices; the longer one has `inputs` input tokens
        prefix = prefix or tokens(2)
        tails = [tokens(inputs - len(prefix) + 1), tokens(2)]
        return EncodedGroup(prefix, tails, [2, 1], [(d, 0), (d, 1)])

    rows = []
    real_forward = scoring._forward_batch
    monkeypatch.setattr(scoring, "_forward_batch", lambda m, batch, shared=(0, None): rows.extend(batch) or real_forward(m, batch, shared))
    for lengths in ([W - 1, W], [W - 1, W, W + 1, W + 3]):
        groups = [group(d, n) for d, n in enumerate(lengths)]
        rows.clear()
        scores = scoring.score_groups(model, groups, batch_size=4, progress=False)
        packed = {g.slots[0][0] for g in rows if len(g.tails) > 1}
        assert packed == {d for d, n in enumerate(lengths) if n <= W}, (lengths, packed)
        for g in groups:
            for tail, n, slot in zip(g.tails, g.n_targets, g.slots):
                ids = torch.tensor([g.prefix + tail])
                with torch.no_grad():
                    logp = model(ids).logits[0].double().log_softmax(-1)
                want = sum(float(logp[len(ids[0]) - 1 - n + j, t]) for j, t in enumerate(tail[len(tail) - n:]))
                assert scores[slot][0] == pytest.approx(want, abs=1e-4), (family, lengths, slot)


def test_greedy_flag(setup):
    import torch

    from downcycle.evaluation.encoding import EncodedGroup
    from downcycle.evaluation.scoring import score_groups

    model, _, encoder = setup
    ctx = encoder.encode("The cat sat on the")
    greedy, ids = [], list(ctx)
    with torch.no_grad():
        for _ in range(3):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            greedy.append(nxt)
            ids.append(nxt)
    other = [greedy[0], (greedy[1] + 1) % model.config.vocab_size]
    out = score_groups(model, [EncodedGroup(ctx, [greedy, other], [3, 2], [(0, 0), (0, 1)])], progress=False)
    assert out[(0, 0)][1] is True and out[(0, 1)][1] is False


def test_encoder_moves_trailing_space_and_splits_whole_encoding(setup):
    _, tok, encoder = setup
    ctx, cont = encoder.pair("Answer: ", "yes")
    assert ctx == encoder.encode("Answer:")
    whole = encoder.encode("Answer: yes")
    assert ctx + cont == whole[: len(ctx)] + whole[len(ctx):] and cont == whole[len(ctx):]
    if tok.bos_token_id is not None and encoder.encode("x")[0] == tok.bos_token_id:
        assert ctx[0] == tok.bos_token_id and cont[0] != tok.bos_token_id


def test_encoder_empty_context_uses_prefix_token(setup):
    _, tok, encoder = setup
    ctx, cont = encoder.pair("", " hello")
    assert ctx == [encoder.prefix_token_id]
    assert cont == tok.encode(" hello", add_special_tokens=False)


def test_encoder_left_truncates_like_the_harness(setup):
    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.tasks import Request

    _, tok, _ = setup
    small = Encoder(tok, max_length=8)
    long_ctx = "one two three four five six seven eight nine ten eleven twelve"
    full_ctx, cont = small.pair(long_ctx, " thirteen")
    [group] = small.groups([Request([long_ctx], [" thirteen"], ["x"], 0)])
    assert group.tails == [cont] and group.n_targets == [len(cont)]
    assert group.prefix + cont == (full_ctx + cont)[-9:]


def test_groups_share_the_common_prefix(setup):
    from downcycle.evaluation.tasks import Request

    _, _, encoder = setup
    a, b = "Sarah was better than Maria so Sarah", "Sarah was better than Maria so Maria"
    [group] = encoder.groups([Request([a, b], [" won."] * 2, ["a", "b"], 0)])
    for tail, (x, y) in zip(group.tails, [(a, " won."), (b, " won.")]):
        ctx, cont = encoder.pair(x, y)
        assert group.prefix + tail == ctx + cont and len(group.prefix) < len(ctx)
    assert len(encoder.groups([Request([a, b], [" won."] * 2, ["a", "b"], 0)], shared=False)) == 2


@pytest.mark.parametrize("choices", [[" A", " B", " C", " D"], [" carbon dioxide", " oxygen", " a great deal of argon"]])
def test_task_wide_prefix_is_cached_exactly(setup, choices):
    """Few-shot tasks share a long prefix across questions (MMLU's subject line and five examples):
    it runs once, its keys/values serve every batch, and the scores stay those of full sequences."""
    from downcycle.evaluation.scoring import _task_prefix_length, score_groups
    from downcycle.evaluation.tasks import Request

    model, _, encoder = setup
    preamble = ("The following are multiple choice questions (with answers) about science.\n\n"
                "Which is a gas?\nA. rock\nB. air\nC. wood\nD. iron\nAnswer: B\n\n") * 2
    reqs = [Request([preamble + q] * len(choices), choices, choices, 0) for q in CONTEXTS]
    groups = encoder.groups(reqs)
    assert _task_prefix_length(groups) >= 32
    scores = score_groups(model, groups, batch_size=5, progress=False)
    for d, req in enumerate(reqs):
        for c, (x, y) in enumerate(zip(req.contexts, req.continuations)):
            ctx, cont = encoder.pair(x, y)
            assert scores[(d, c)][0] == pytest.approx(_direct(model, ctx, cont), abs=1e-4), (d, c)
