"""The loss task's ``kl_ref``: KL(reference‖model) per token on the same held-out tokens, windows and
context as the NLL, against a hand computation with torch (each window its own forward pass, full
log-softmax of both models); zero for a model against itself; the NLL unchanged by it."""

from __future__ import annotations

import json

import pytest
import torch

from downcycle.evaluation.perplexity import score_documents, windows


def one_window_kl(model, reference, ids: list[int], window: int, stride: int) -> float:
    """Summed KL(reference‖model) over the document's scored tokens, window by window."""
    x = torch.tensor(ids)
    total = 0.0
    with torch.no_grad():
        for lo, s, e in windows(len(ids), window, stride):
            fed = x[lo:e - 1][None]
            log_q = model(input_ids=fed).logits[0, s - 1 - lo:].double().log_softmax(-1)  # (e - s, V)
            log_p = reference(input_ids=fed).logits[0, s - 1 - lo:].double().log_softmax(-1)
            total += float((log_p.exp() * (log_p - log_q)).sum())
    return total


def _documents(vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    return [[1] + torch.randint(3, vocab, (n - 1,), generator=gen).tolist() for n in (2, 9, 70, 33, 17, 48)]


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2: softcapped logits, the models' own logits, not the split head
@pytest.mark.parametrize("window,stride", [(16, 5), (128, 128)])
def test_kl_equals_a_hand_computation_and_leaves_the_nll_alone(tiny_model, one_torch_thread, monkeypatch, family, window, stride):
    from transformers import AutoModelForCausalLM

    from downcycle import output_layer

    model = AutoModelForCausalLM.from_pretrained(tiny_model(family), dtype="float32").eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model(family, seed=7), dtype="float32").eval()
    docs = _documents(model.config.vocab_size)
    monkeypatch.setattr(output_layer, "LOGIT_BYTES", 4 * 4 * model.config.vocab_size * 3)  # KL three rows at a time
    plain = score_documents(model, docs, window, stride, batch_tokens=60)
    scored = score_documents(model, docs, window, stride, batch_tokens=60, reference=reference)
    assert plain.kl is None and scored.nll == plain.nll  # the same NLL, bit for bit
    want = [one_window_kl(model, reference, d, window, stride) for d in docs]
    assert scored.kl == pytest.approx(want, rel=1e-5, abs=1e-6)
    tokens = sum(len(d) - 1 for d in docs)
    assert sum(scored.kl) / tokens == pytest.approx(sum(want) / tokens, abs=1e-5) and sum(want) > 0
    itself = score_documents(model, docs, window, stride, batch_tokens=60, reference=model)
    assert itself.nll == plain.nll and max(abs(k) for k in itself.kl) < 1e-6


@pytest.fixture(scope="module")
def models(tmp_path_factory, build_eval_model):
    root = tmp_path_factory.mktemp("kl")
    return build_eval_model(root / "ref", seed=0), build_eval_model(root / "cut", seed=3, num_hidden_layers=1)


TEXTS = ["It was the best of times, it was the worst of times, it was the age of wisdom.",
         "Call me Ishmael. Some years ago, never mind how long precisely, having little money in my purse.",
         "In the beginning God created the heaven and the earth."]


def test_eval_reports_kl_ref_and_the_reference_gets_zero(models, tmp_path):
    from downcycle.evaluation.metrics import ratio_stderr
    from downcycle.evaluation.run import run_eval
    from downcycle.loading import load_model, load_tokenizer
    from downcycle.recipe import CompareConfig, EvalConfig
    from downcycle.reporting.compare import run_compare

    ref, cut = models
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    common = {"models": [str(ref), str(cut)], "tasks": "loss", "data": str(data), "window": 16, "stride": 8, "progress": False}
    with_ref = run_eval(EvalConfig(out=tmp_path / "a", reference=str(ref), **common))
    without = run_eval(EvalConfig(out=tmp_path / "b", **common))
    r, c = (with_ref.models[n].tasks["loss"].metrics for n in ("ref", "cut"))
    assert (r["kl_ref"].value, r["kl_ref"].stderr) == (0.0, 0.0)
    assert "kl_ref" not in without.models["cut"].tasks["loss"].metrics
    for name in ("ref", "cut"):  # the NLL is the same with and without --reference
        assert with_ref.models[name].tasks["loss"].metrics["nll"] == without.models[name].tasks["loss"].metrics["nll"]
    tok = load_tokenizer(ref)
    docs = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) for t in TEXTS]
    m, p = load_model(cut, dtype="float32"), load_model(ref, dtype="float32")
    per_doc = [one_window_kl(m, p, d, 16, 8) for d in docs]
    counts = [len(d) - 1 for d in docs]
    assert c["kl_ref"].value == pytest.approx(sum(per_doc) / sum(counts), abs=1e-5)
    assert c["kl_ref"].stderr == pytest.approx(ratio_stderr(per_doc, counts), rel=1e-4)
    result = run_compare(CompareConfig(results=[str(tmp_path / "a")], out=tmp_path / "cmp", reference="ref", plots=False))
    assert "loss/kl_ref" in json.loads((tmp_path / "cmp" / "compare.json").read_text())["columns"]
    assert f"{c['kl_ref'].value:.4f} (+{c['kl_ref'].value:.4f})" in result.markdown


def test_reference_is_checked_before_any_model_is_loaded(models, tmp_path, build_eval_model):
    from downcycle.errors import DowncycleError
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import EvalConfig

    ref, cut = models
    data = tmp_path / "val.jsonl"
    data.write_text(json.dumps({"text": TEXTS[0]}) + "\n")
    other = build_eval_model(tmp_path / "other", bos=False)  # a tokenizer trained on the fixtures: another vocabulary
    with pytest.raises(DowncycleError, match="tokenizer differs"):
        run_eval(EvalConfig(models=[str(cut)], out=tmp_path / "x", tasks="loss", data=str(data), reference=str(other), progress=False))
    with pytest.raises(DowncycleError, match="only the loss task"):
        run_eval(EvalConfig(models=[str(cut)], out=tmp_path / "y", tasks="piqa", reference=str(ref), progress=False))
    with pytest.raises(DowncycleError):
        run_eval(EvalConfig(models=[str(cut)], out=tmp_path / "z", tasks="loss", data=str(data), reference=str(tmp_path / "nope"),
                            progress=False))
