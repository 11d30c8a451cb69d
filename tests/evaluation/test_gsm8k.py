"""GSM8K, the generative task, against lm-evaluation-harness's own ``gsm8k`` task run offline on the
committed items: the same 5-shot prompts (few-shot draws included), the same extracted answers and
exact-match values for tricky generations, generation equal to ``transformers``' greedy
``generate`` and to the harness's HF backend, and ``downcycle eval --tasks gsm8k`` end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"  # the committed task items

N_DOCS = 50  # every committed test item


def _gold(doc: dict) -> str:
    return doc["answer"].split("#### ")[-1]


# Tricky generations, as functions of the reference number g (a string): what each filter extracts
# and how exact match normalises it.
TRICKY = [
    lambda g: f" So the answer is {g}.\n#### {g}",
    lambda g: f" #### {g[:1]},{g[1:]}" if len(g) > 1 else f" #### ,{g}",  # thousands-style commas
    lambda g: f" The total is ${g}.",  # no '####': strict fails, flexible finds $g.
    lambda g: f" #### ${g}",  # a dollar sign after '####': strict does not match
    lambda g: f" #### {g}.",  # trailing period
    lambda g: f" #### -{g}",  # negative
    lambda g: f" It is {g} or {int(g.replace(',', '')) + 1}",  # flexible takes the last number
    lambda g: f" #### {g}\n\nQuestion: What is 7 + 5?\nAnswer: 12",
    lambda g: "",
    lambda g: f" {g}",
    lambda g: f" #### {g}.00",
    lambda g: f" ####{g}",  # no space after '####'
    lambda g: f" #### 1{g}",
    lambda g: f" ANSWER: {g}\n\n",
    lambda g: " It costs $$ and , or .",
    lambda g: f" #### -{g}.\n#### {g}",  # strict takes the first
    lambda g: f" The answer is -{g}.",
]


def _tricky(docs: list[dict]) -> list[str]:
    return [TRICKY[i % len(TRICKY)](_gold(d)) for i, d in enumerate(docs)]


@pytest.fixture(scope="module")
def docs():
    return [json.loads(line) for line in (FIXTURES / "gsm8k.test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory, docs):
    """lm-eval's ``gsm8k`` (its YAML, pointed at the committed files) evaluated through its own
    pipeline on a stand-in model that records the requests and answers the tricky generations."""
    lm_eval = pytest.importorskip("lm_eval")
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    yamls = tmp_path_factory.mktemp("gsm8k-yaml")
    base = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    (yamls / "dc_gsm8k.yaml").write_text("\n".join([
        f"include: {base}", "task: dc_gsm8k", "dataset_path: json", "dataset_name: null", "dataset_kwargs:",
        "  data_files:", f"    test: {FIXTURES / 'gsm8k.test.jsonl'}", f"    train: {FIXTURES / 'gsm8k.train.jsonl'}"]) + "\n")
    answers = {d["question"]: g for d, g in zip(docs, _tricky(docs))}

    class Recorder(LM):
        def __init__(self):
            super().__init__()
            self.requests: list = []

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            out = []
            for r in requests:
                context, kwargs = r.args
                self.requests.append((r.doc_id, context, kwargs))
                out.append(answers[r.doc["question"]])
            return out

    lm = Recorder()
    r = simple_evaluate(model=lm, tasks=["dc_gsm8k"], task_manager=TaskManager(include_path=str(yamls), include_defaults=False),
                        log_samples=True)
    return r, sorted(lm.requests, key=lambda x: x[0])


def test_prompts_equal_the_harness(harness_run, docs):
    from downcycle.evaluation.generate_until import build_contexts
    from downcycle.evaluation.multiple_choice import McOptions
    from downcycle.evaluation.tasks import TASKS

    results, requests = harness_run
    spec = TASKS["gsm8k"]
    ours_docs, contexts, k = build_contexts(spec, McOptions(task_data=FIXTURES, progress=False))
    assert k == 5 == results["n-shot"]["dc_gsm8k"] and len(contexts) == len(requests) == N_DOCS
    assert ours_docs == docs
    for (doc_id, context, kwargs), ours in zip(requests, contexts):
        assert ours == context, f"doc {doc_id}"
        assert kwargs["until"] == list(spec.until) and "max_gen_toks" not in kwargs
    # 5-shot from a 5-item pool: every prompt holds all five examples, in the order the seeded
    # sampler drew them, which changes from document to document
    assert all(c.count("\nAnswer: ") == 5 and c.count("#### ") == 5 for c in contexts)
    assert len({c.split("\n\n")[0] for c in contexts}) > 1
    first = requests[0][1]
    assert first.endswith("\n\nQuestion: " + docs[0]["question"] + "\nAnswer:")


def test_generation_budget_is_the_harness_default():
    from lm_eval.models.huggingface import HFLM

    from downcycle.evaluation.tasks import TASKS

    assert TASKS["gsm8k"].max_gen_toks == HFLM.max_gen_toks.fget(None) == 256


def test_extraction_and_exact_match_equal_the_harness(harness_run, docs):
    from downcycle.evaluation.tasks import TASKS

    results, _ = harness_run
    spec = TASKS["gsm8k"]
    samples = results["samples"]["dc_gsm8k"]
    by_filter: dict[str, dict[int, dict]] = {}
    for s in samples:
        by_filter.setdefault(s["filter"], {})[s["doc_id"]] = s
    assert set(by_filter) == set(spec.filters)
    generations = _tricky(docs)
    for i, (doc, gen) in enumerate(zip(docs, generations)):
        extracted, values = spec.score(gen, doc)
        for name in spec.filters:
            h = by_filter[name][i]
            assert extracted[name] == h["filtered_resps"][0], (i, name, gen)
            assert values[f"exact_match[{name}]"] == h["exact_match"], (i, name, gen)
    agg = results["results"]["dc_gsm8k"]
    from downcycle.evaluation.metrics import mean_stat

    for name in spec.filters:
        stat = mean_stat([spec.score(g, d)[1][f"exact_match[{name}]"] for g, d in zip(generations, docs)])
        assert stat.value == pytest.approx(agg[f"exact_match,{name}"], abs=1e-12)
        assert stat.stderr == pytest.approx(agg[f"exact_match_stderr,{name}"], rel=1e-9)
        assert 0 < stat.value < 1  # the table has both hits and misses under each filter


def test_known_extractions():
    from downcycle.evaluation.tasks import TASKS

    spec = TASKS["gsm8k"]
    strict, flexible = spec.filters["strict-match"], spec.filters["flexible-extract"]
    doc = {"answer": "Some steps.\n#### 1000"}
    assert strict(" #### 1,000.") == "1,000." and spec.score(" #### 1,000.", doc)[1]["exact_match[strict-match]"] == 1.0
    assert strict(" the answer is 1000") == "[invalid]"
    assert flexible(" It costs $1,000 or 7 dollars") == "7"
    assert flexible(" It costs $1,000.") == "$1,000." and spec.score(" It costs $1,000.", doc)[1]["exact_match[flexible-extract]"] == 1.0
    assert flexible(" #### -3") == "-3" and flexible("no digits") == "[invalid]"
    assert spec.metric(" 1000", "1000") == 0.0  # no whitespace stripping, as in the harness


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, build_eval_model):
    return build_eval_model(tmp_path_factory.mktemp("gsm8k") / "llama")


@pytest.fixture(scope="module")
def loaded(model_dir):
    from downcycle.loading import load_model, load_tokenizer

    return load_model(model_dir, dtype="float64"), load_tokenizer(model_dir)


def _reference(model, tok, prompt: list[int], n: int, eos: int | None) -> list[int]:
    """transformers' greedy generate on one unpadded prompt: the new tokens, EOS excluded."""
    import torch

    kwargs = {"eos_token_id": eos} if eos is not None else {"eos_token_id": None}
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id or 0, **kwargs)[0, len(prompt):].tolist()
    return out[:out.index(eos)] if eos is not None and eos in out else out


@pytest.mark.slow
def test_generation_equals_transformers_generate_with_stops(loaded, docs):
    from downcycle.generation.greedy import cut_at_stops, greedy_generate

    model, tok = loaded
    n = 24
    prompts = [tok.encode(f"Question: {d['question']}\nAnswer:") for d in docs[:6]]
    free = [_reference(model, tok, p, n, None) for p in prompts]
    texts = [tok.decode(t, skip_special_tokens=True) for t in free]
    # stop sequences taken from two rows' own continuations (so they end early, at different steps),
    # and an EOS id that a third row generates before any stop sequence
    stops = (texts[0][len(texts[0]) // 3:][:4], texts[1][len(texts[1]) // 2:][:4])
    j = next(j for j in range(3, n) if free[2][j] not in free[2][:j]
             and not any(s in tok.decode(free[2][:j], skip_special_tokens=True) for s in stops))
    eos = free[2][j]
    ours = greedy_generate(model, tok, prompts, until=stops, max_new_tokens=n, eos_ids={eos}, batch_size=4)
    reasons = set()
    for p, g in zip(prompts, ours):
        ref = _reference(model, tok, p, n, eos)
        ref_text = tok.decode(ref, skip_special_tokens=True)
        assert g.tokens == ref[:len(g.tokens)]  # the same greedy tokens, up to where ours stopped
        assert g.text == cut_at_stops(ref_text, stops)
        if g.stop == "length":
            assert g.tokens == ref and len(ref) == n
        if g.stop == "eos":
            assert g.tokens == ref and len(ref) < n
        reasons.add(g.stop)
    assert reasons >= {"stop", "eos"}
    assert ours[0].stop == "stop" and len(ours[0].tokens) < n


@pytest.mark.slow
def test_generation_equals_the_harness_hf_backend(model_dir, loaded):
    """lm-eval's HFLM.generate_until on real 5-shot GSM8K prompts gives the very same texts."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.generate_until import build_contexts
    from downcycle.evaluation.multiple_choice import McOptions
    from downcycle.evaluation.tasks import TASKS
    from downcycle.generation.greedy import greedy_generate

    model, tok = loaded
    spec = TASKS["gsm8k"]
    _, contexts, _ = build_contexts(spec, McOptions(task_data=FIXTURES, limit=5, progress=False))
    n = 32
    hf = HFLM(pretrained=model, tokenizer=tok, batch_size=5, device="cpu")
    kwargs = {"until": list(spec.until), "do_sample": False, "temperature": 0.0, "max_gen_toks": n}
    theirs = hf.generate_until([Instance("generate_until", {}, (c, dict(kwargs)), i) for i, c in enumerate(contexts)],
                               disable_tqdm=True)
    encoder = Encoder(tok, 2048)
    ours = greedy_generate(model, tok, [encoder.encode(c) for c in contexts], until=spec.until, max_new_tokens=n, batch_size=5)
    assert [g.text for g in ours] == theirs
    assert all(theirs) and len({len(encoder.encode(c)) for c in contexts}) == 5  # left padding exercised


@pytest.mark.slow
def test_eval_cli_writes_exact_match_for_both_filters(model_dir, tmp_path, capsys):
    from downcycle.cli import main
    from downcycle.evaluation.results import read_results

    out = tmp_path / "eval"
    assert main(["eval", str(model_dir), "--out", str(out), "--tasks", "gsm8k", "--limit", "5",
                 "--task-data", str(FIXTURES), "--no-progress"]) == 0
    assert "gsm8k exact_match[strict-match]=" in capsys.readouterr().out
    res = read_results(out / model_dir.name)
    task = res.tasks["gsm8k"]
    assert task.kind == "generative" and task.n == 5 and task.n_shot == 5 and task.version == "3.0"
    assert set(task.metrics) == {"exact_match[strict-match]", "exact_match[flexible-extract]"}
    samples = [json.loads(x) for x in (out / model_dir.name / "samples" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(samples) == 5
    for name in ("strict-match", "flexible-extract"):
        m = task.metrics[f"exact_match[{name}]"]
        assert m.value == pytest.approx(sum(s[f"exact_match[{name}]"] for s in samples) / 5) and m.stderr is not None
    for s in samples:
        assert s["stop"] in ("stop", "eos", "length") and 0 < s["new_tokens"] <= 256
        assert s["target"].endswith("#### " + s["target"].split("#### ")[-1])
    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    cmp = run_compare(CompareConfig(results=[str(out)], out=tmp_path / "cmp", reference=model_dir.name))
    assert "gsm8k/exact_match[strict-match]" in json.loads((cmp.out / "compare.json").read_text())["columns"]
    assert any("gsm8k" in f and f.endswith(".png") for f in cmp.files)
