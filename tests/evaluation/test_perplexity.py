"""Perplexity and bits per byte: equal to a direct full-sequence computation when a document fits
the window, and with a stride every token is scored exactly once with the context the window
definition gives it (checked token by token against separate forward passes)."""

from __future__ import annotations

import json
import math

import pytest
import torch

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light.")


@pytest.fixture(scope="module")
def lm(tmp_path_factory, build_eval_model):
    from downcycle.loading import load_model, load_tokenizer

    path = build_eval_model(tmp_path_factory.mktemp("ppl") / "llama")
    return path, load_model(path, dtype="float32"), load_tokenizer(path)


def _ids(tok) -> list[int]:
    return [tok.bos_token_id] + tok.encode(TEXT, add_special_tokens=False)


def _token_nll(model, context: list[int], target: int) -> float:
    import torch

    with torch.no_grad():
        return -float(model(torch.tensor([context])).logits[0, -1].double().log_softmax(-1)[target])


def test_windows_cover_every_target_once():
    from downcycle.evaluation.perplexity import windows

    for m, window, stride in [(10, 4, 4), (10, 4, 1), (10, 6, 3), (3, 8, 8), (50, 16, 5)]:
        chunks = windows(m, window, stride)
        targets = [j for _, s, e in chunks for j in range(s, e)]
        assert targets == list(range(1, m))
        assert all(e - 1 - lo <= window and lo <= s - 1 for lo, s, e in chunks)
    assert windows(10, 4, 2)[2] == (2, 5, 7)  # targets x5, x6 fed x2..x5: 4 tokens of input
    with pytest.raises(ValueError):
        windows(10, 4, 5)


def test_fitting_document_equals_full_sequence(lm):
    import torch

    from downcycle.evaluation.perplexity import document_nll

    _, model, tok = lm
    ids = _ids(tok)
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)  # (T, V)
    direct = -float(sum(logp[j - 1, ids[j]] for j in range(1, len(ids))))
    assert document_nll(model, ids, window=len(ids), stride=len(ids)) == pytest.approx(direct, rel=1e-5)
    # a larger window changes nothing, and neither does any stride once the document fits
    assert document_nll(model, ids, window=2048, stride=2048) == pytest.approx(direct, rel=1e-5)


@pytest.mark.parametrize("window,stride", [(8, 8), (8, 3), (12, 1)])
def test_stride_gives_each_token_its_window_context(lm, window, stride):
    from downcycle.evaluation.perplexity import document_nll, windows

    _, model, tok = lm
    ids = _ids(tok)[:30]
    expected = 0.0
    for lo, s, e in windows(len(ids), window, stride):
        for j in range(s, e):  # token j sees x[lo:j]: at most `window` tokens, at least window - stride
            expected += _token_nll(model, ids[lo:j], ids[j])
    assert document_nll(model, ids, window, stride) == pytest.approx(expected, rel=1e-5)


def test_overlapping_windows_differ_from_disjoint_ones(lm):
    """Disjoint windows (stride == window) restart context; overlapping ones keep it: the totals differ,
    and with stride 1 every token but the first few has a full window of context."""
    from downcycle.evaluation.perplexity import document_nll

    _, model, tok = lm
    ids = _ids(tok)[:40]
    disjoint, overlapping = document_nll(model, ids, 8, 8), document_nll(model, ids, 8, 1)
    assert disjoint != pytest.approx(overlapping, rel=1e-6)


def test_loss_task_end_to_end_bits_per_byte(lm, tmp_path):
    from downcycle.evaluation.perplexity import document_nll
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import EvalConfig

    path, model, tok = lm
    docs = [TEXT, "Call me Ishmael. Some years ago, never mind how long precisely."]
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = run_eval(EvalConfig(models=[str(path)], out=tmp_path / "eval", tasks="loss", data=str(data), window=16, stride=8,
                              progress=False))
    metrics = out.models[path.name].tasks["loss"].metrics
    nll = sum(document_nll(model, [tok.bos_token_id] + tok.encode(d, add_special_tokens=False), 16, 8) for d in docs)
    tokens = sum(len(tok.encode(d, add_special_tokens=False)) for d in docs)
    nbytes = sum(len(d.encode()) for d in docs)
    assert metrics["tokens"].value == tokens and metrics["bytes"].value == nbytes
    assert metrics["nll"].value == pytest.approx(nll / tokens, rel=1e-6)
    assert metrics["perplexity"].value == pytest.approx(math.exp(nll / tokens), rel=1e-6)
    assert metrics["bits_per_byte"].value == pytest.approx(nll / (math.log(2) * nbytes), rel=1e-6)


def test_loss_on_a_corpus_val_split(lm, tmp_path):
    """A `downcycle data` corpus: each packed val sequence is scored on its own (first token as context)."""
    import torch

    from downcycle.corpus.build import build_corpus
    from downcycle.corpus.loader import PackedDataset
    from downcycle.evaluation.loss import evaluate_loss
    from downcycle.recipe import DataConfig

    path, model, tok = lm
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": f"{TEXT} Document number {i}."}) + "\n" for i in range(12)))
    corpus = build_corpus(DataConfig(tokenizer=str(path), source=[str(src)], out=tmp_path / "corpus", seq_len=32, val=0.3,
                                     progress=False))
    result = evaluate_loss(model, tok, str(corpus), text_field="text", window=2048, stride=2048, limit=None, progress=False,
                           version="1")
    ds = PackedDataset(corpus, split="val")
    nll, tokens = 0.0, 0
    for i in range(len(ds)):
        ids = ds[i]["input_ids"]
        with torch.no_grad():
            logp = model(ids[None]).logits[0].double().log_softmax(-1)
        nll -= float(logp[torch.arange(len(ids) - 1), ids[1:]].sum())
        tokens += len(ids) - 1
    assert result.n == len(ds) > 0 and result.metrics["tokens"].value == tokens
    assert result.metrics["nll"].value == pytest.approx(nll / tokens, rel=1e-5)


def one_window_per_pass(model, ids: list[int], window: int, stride: int) -> float:
    """The reference: each window its own forward pass, the model's own logits of its scored
    positions through log_softmax (the implementation before windows were batched)."""
    import torch

    from downcycle.evaluation.perplexity import windows

    x = torch.tensor(ids)
    total = 0.0
    with torch.no_grad():
        for lo, s, e in windows(len(ids), window, stride):
            logits = model(input_ids=x[lo:e - 1][None]).logits[0, s - 1 - lo:].float()  # (e - s, V)
            total -= float(logits.log_softmax(-1).gather(1, x[s:e, None]).double().sum())
    return total


def _documents(vocab: int, count: int = 14, seed: int = 0) -> list[list[int]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    lengths = [2, 3, 70, 17, 1 + 40, 9, 64, 5, 33, 2, 48, 21, 100, 12][:count]
    return [[1] + torch.randint(3, vocab, (n - 1,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])  # gemma2: softcapped logits, the model's own head
@pytest.mark.parametrize("window,stride", [(16, 5), (24, 24), (128, 128)])
def test_batched_windows_equal_one_window_per_pass(tiny_model, one_torch_thread, family, window, stride):
    """Documents of many lengths, windows of several documents per forward pass (right padded, several
    batches and pools): the total equals the sum of one-window-per-pass totals."""
    from transformers import AutoModelForCausalLM

    from downcycle.evaluation import perplexity
    from downcycle.output_layer import checked_split

    model = AutoModelForCausalLM.from_pretrained(tiny_model(family), dtype="float32").eval()
    docs = _documents(model.config.vocab_size)
    want = sum(one_window_per_pass(model, d, window, stride) for d in docs)
    scored = []
    got = perplexity.total_nll(model, docs, window, stride, batch_tokens=60, on_scored=scored.append)
    assert got == pytest.approx(want, rel=1e-6)
    assert sum(scored) == sum(len(d) - 1 for d in docs) and len(scored) > 3  # several batches
    assert (checked_split(model, torch.tensor(docs[2])) is None) == (family == "gemma2")  # which path was tested
    for d in docs[:4]:
        assert perplexity.document_nll(model, d, window, stride) == pytest.approx(one_window_per_pass(model, d, window, stride), rel=1e-6)


def test_pools_and_batch_sizes_do_not_change_the_total(tiny_model, one_torch_thread, monkeypatch):
    from transformers import AutoModelForCausalLM

    from downcycle.evaluation import perplexity

    model = AutoModelForCausalLM.from_pretrained(tiny_model("llama"), dtype="float32").eval()
    docs = _documents(model.config.vocab_size)
    want = sum(one_window_per_pass(model, d, 32, 8) for d in docs)
    monkeypatch.setattr(perplexity, "POOL_BATCHES", 1)  # a pool fills after every few documents
    for batch_tokens in (1, 40, 10**6):  # one row per pass, a few, everything at once
        assert perplexity.total_nll(model, docs, 32, 8, batch_tokens=batch_tokens) == pytest.approx(want, rel=1e-6)


def test_a_head_the_config_does_not_show_is_caught_by_the_probe(tiny_model, one_torch_thread):
    """A model whose logits are not its body through its output layer (here: halved in forward) is
    scored through its own logits, and still exactly."""
    from transformers import LlamaForCausalLM

    from downcycle.evaluation import perplexity
    from downcycle.output_layer import checked_split, split_head

    class Halved(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 0.5
            return out

    model = Halved.from_pretrained(tiny_model("llama"), dtype="float32").eval()
    docs = _documents(model.config.vocab_size)
    assert not isinstance(split_head(model), str)  # the structural check cannot see it ...
    assert checked_split(model, torch.tensor(docs[2])) is None  # ... the probe does
    got = perplexity.total_nll(model, docs, 16, 16, batch_tokens=64)
    assert got == pytest.approx(sum(one_window_per_pass(model, d, 16, 16) for d in docs), rel=1e-6)


def test_loss_task_equals_one_window_per_pass_on_text_and_corpus(lm, tmp_path):
    """Every figure of the task (NLL, perplexity, bits per byte, tokens, bytes) equals the one
    computed window by window, on raw documents longer than the window and on a corpus val split."""
    from downcycle.corpus.build import build_corpus
    from downcycle.corpus.loader import PackedDataset
    from downcycle.evaluation.loss import evaluate_loss
    from downcycle.recipe import DataConfig

    path, model, tok = lm
    texts = [TEXT * (1 + i % 3) + f" Document {i}." for i in range(9)]
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    docs = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) for t in texts]
    corpus = build_corpus(DataConfig(tokenizer=str(path), source=[str(src)], out=tmp_path / "corpus", seq_len=48, val=0.5,
                                     progress=False))
    rows = [PackedDataset(corpus, split="val")[i]["input_ids"].tolist() for i in range(len(PackedDataset(corpus, split="val")))]
    cases = [(str(src), docs, [len(t.encode()) for t in texts], 40, 12),
             (str(corpus), rows, [len(tok.decode(r[1:]).encode()) for r in rows], 2048, 2048)]
    for source, seqs, nbytes, window, stride in cases:
        result = evaluate_loss(model, tok, source, text_field="text", window=window, stride=stride, limit=None, progress=False,
                               version="1")
        w = min(window, max(len(s) for s in seqs))
        nll = sum(one_window_per_pass(model, s, w, min(stride, w)) for s in seqs)
        tokens, total_bytes = sum(len(s) - 1 for s in seqs), sum(nbytes)
        m = {k: v.value for k, v in result.metrics.items()}
        assert (m["tokens"], m["bytes"], result.n) == (tokens, total_bytes, len(seqs))
        assert m["nll"] == pytest.approx(nll / tokens, rel=1e-6)
        assert m["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-6)
        assert m["bits_per_byte"] == pytest.approx(nll / (math.log(2) * total_bytes), rel=1e-6)
