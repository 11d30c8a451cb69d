"""`eval --layerwise` beyond the loss task: the log-likelihood tasks give the in-memory run's per-item
log-likelihoods (1e-5 in float32; bit for bit where no task-wide prefix cache is involved), the same
acc/acc_norm and greedy flags, in memory and with every state spilled; depth cuts of one reference
evaluated together (the reference's layers run once as a tree) write what separate evaluations write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from downcycle.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"  # the committed task items
TASKS = ("arc_easy", "winogrande", "mmlu_anatomy")  # packed choices; partial contexts; five shots and a task-wide prefix
FAMILIES = {"llama": {}, "gemma3_text": {}, "gpt2": {}, "llama-tied": {"tie_word_embeddings": True}}


@pytest.fixture(scope="module")
def eval_model(tmp_path_factory, build_eval_model):
    cache = {}

    def build(name):
        if name not in cache:
            family = name.removesuffix("-tied")
            cache[name] = build_eval_model(tmp_path_factory.mktemp("lw-eval") / name, family=family, bos=family != "gpt2",
                                           num_hidden_layers=6, **FAMILIES[name])
        return cache[name]

    return build


def _samples(directory: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (directory / "samples" / f"{task}.jsonl").read_text().splitlines()]


def _common(tasks: str) -> list[str]:
    return ["--tasks", tasks, "--task-data", str(FIXTURES), "--limit", "6", "--batch-size", "5", "--no-progress"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_loglikelihood_tasks_layer_by_layer_equal_in_memory(eval_model, tmp_path, name):
    path = eval_model(name)
    for how in ("no-layerwise", "layerwise"):
        assert main(["eval", str(path), *_common(",".join(TASKS)), "--out", str(tmp_path / how), f"--{how}"]) == 0
    for task in TASKS:
        whole, layered = (_samples(tmp_path / how / path.name, task) for how in ("no-layerwise", "layerwise"))
        assert len(whole) == len(layered) == 6
        for a, b in zip(whole, layered):
            assert b["loglikelihoods"] == pytest.approx(a["loglikelihoods"], abs=1e-5, rel=0), (name, task, a["doc"])
            if task != "mmlu_anatomy":  # the same tensors through the same modules; MMLU's task-wide prefix cache runs in memory only
                assert b["loglikelihoods"] == a["loglikelihoods"], (name, task, a["doc"])
            assert [b.get(m) for m in ("acc", "acc_norm", "is_greedy")] == [a.get(m) for m in ("acc", "acc_norm", "is_greedy")]
    whole, layered = (json.loads((tmp_path / how / path.name / "results.json").read_text())["tasks"] for how in ("no-layerwise", "layerwise"))
    for task in TASKS:
        for metric in ("acc", "acc_norm"):
            assert (layered[task]["metrics"].get(metric) or {}).get("value") == (whole[task]["metrics"].get(metric) or {}).get("value")


def test_spilled_states_score_the_same(eval_model):
    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.layerwise_target import LayerwiseTarget
    from downcycle.evaluation.multiple_choice import McOptions, evaluate_mc
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.tasks import TASKS as REGISTRY
    from downcycle.layerwise import open_layerwise
    from downcycle.loading import load_tokenizer

    path = eval_model("llama")
    tok = load_tokenizer(path)
    opts = McOptions(task_data=FIXTURES, limit=6, batch_size=5, progress=False)
    out = []
    for budget in (None, 0):
        target = LayerwiseTarget(open_layerwise(path, dtype="float32"), budget=budget)
        out.append(evaluate_mc(target, Encoder(tok, max_length(target.model, tok)), REGISTRY["arc_easy"], opts)[1])
        assert (target.last_run.spilled_bytes > 0) == (budget == 0)
    assert out[0] == out[1]


def test_generative_tasks_are_refused_in_one_line(eval_model, tmp_path, capsys):
    assert main(["eval", str(eval_model("llama")), *_common("arc_easy,gsm8k"), "--out", str(tmp_path / "g"), "--layerwise"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gsm8k" in err[0] and "Traceback" not in err[0]


CUTS = {"first3": "0-2", "first5": "0-4", "no-first": "1-5", "skip": "0,2,4,5"}


@pytest.mark.parametrize("name", ["llama", "gemma3_text"])
def test_cuts_evaluated_together_equal_separate_evals(eval_model, tmp_path, monkeypatch, name):
    """The reference and four cuts of it (one keeps layers 0-2, one drops layer 0, one skips layers):
    results.json and every sample as separate layer-by-layer evaluations write them, with the
    reference's layers run once per task as a tree."""
    from downcycle.layerwise.skeleton import LayerwiseModel
    from downcycle.recipe import CutConfig
    from downcycle.surgery.cut import cut

    ref = eval_model(name)
    models = [ref] + [cut(CutConfig(source=str(ref), out=tmp_path / c, layers=spec, progress=False)).out for c, spec in CUTS.items()]
    root = Path(__file__).resolve().parents[2]
    data = ["--data", str(root / "examples" / "corpus" / "kjv.jsonl.gz"), "--window", "48", "--stride", "32"]
    tasks = "loss,arc_easy,winogrande"
    loads = []
    materialise = LayerwiseModel.materialise
    monkeypatch.setattr(LayerwiseModel, "materialise", lambda self, i: loads.append(i) or materialise(self, i))
    assert main(["eval", *map(str, models), *_common(tasks), *data, "--out", str(tmp_path / "together"), "--layerwise"]) == 0
    together = len(loads)
    for m in models:
        assert main(["eval", str(m), *_common(tasks), *data, "--out", str(tmp_path / f"alone-{m.name}"), "--layerwise"]) == 0
    kept = [list(range(6)), [0, 1, 2], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [0, 2, 4, 5]]
    tree = {(j, p[j - 1]) for p in kept for j in range(1, len(p) + 1)}  # (depth, layer): loaded once per task
    assert together == 3 * len(tree) == 3 * 13 and len(loads) - together == 3 * sum(map(len, kept)) == 3 * 23
    for m in models:
        a, b = (json.loads((tmp_path / d / m.name / "results.json").read_text()) for d in ("together", f"alone-{m.name}"))
        assert a["tasks"] == b["tasks"] and a["model"] == b["model"], m.name
        for task in ("arc_easy", "winogrande"):
            assert _samples(tmp_path / "together" / m.name, task) == _samples(tmp_path / f"alone-{m.name}" / m.name, task)


def test_cut_families_need_the_reference_unchanged(eval_model, tmp_path):
    import shutil

    from downcycle.evaluation.shared_cuts import cut_families, cut_source
    from downcycle.recipe import CutConfig
    from downcycle.surgery.cut import cut

    ref = tmp_path / "ref"
    shutil.copytree(eval_model("llama"), ref)
    a, b = (cut(CutConfig(source=str(ref), out=tmp_path / c, layers=CUTS[c], progress=False)).out for c in ("first3", "skip"))
    assert cut_source(a) == (ref.resolve(), [0, 1, 2])
    families = cut_families([a, b], lambda p: True, lambda p: None)
    assert families[a.resolve()] is families[b.resolve()] and families[a.resolve()].members == {a.resolve(): [0, 1, 2], b.resolve(): [0, 2, 4, 5]}
    assert cut_families([a], lambda p: True, lambda p: None) == {}  # one cut alone shares nothing
    assert cut_families([a, b], lambda p: False, lambda p: None) == {}  # in memory: no sharing
    assert cut_source(ref) is None  # not a cut
    (ref / "config.json").write_text((ref / "config.json").read_text() + " ")
    assert cut_source(a) is None and cut_families([a, b], lambda p: True, lambda p: None) == {}
