"""Agreement with EleutherAI's lm-evaluation-harness: on a tiny locally built model and the committed
real items, downcycle scores the very same token sequences (per-item log-likelihoods within 1e-4)
and reports identical acc / acc_norm and standard errors.

Both run in float64 (see DTYPE). The harness runs offline through its own HF backend (``HFLM``) on its own task configs, each
included from the installed package and pointed at the committed jsonl files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"  # the committed task items

lm_eval = pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow

# downcycle task -> (harness YAML relative to lm_eval/tasks, {split: fixture stem}, extra YAML lines)
HARNESS_TASKS = {
    "hellaswag": ("hellaswag/hellaswag.yaml", {"validation": "hellaswag.validation"}, []),
    "arc_easy": ("arc/arc_easy.yaml", {"validation": "arc_easy.validation"}, ["test_split: null"]),
    "arc_challenge": ("arc/arc_challenge.yaml", {"validation": "arc_challenge.validation"}, ["test_split: null"]),
    "winogrande": ("winogrande/default.yaml", {"validation": "winogrande.validation"}, []),
    "piqa": ("piqa/piqa.yaml", {"validation": "piqa.validation"}, []),
    "openbookqa": ("openbookqa/openbookqa.yaml", {"validation": "openbookqa.validation"}, ["test_split: null"]),
    "boolq": ("super_glue/boolq/default.yaml", {"validation": "boolq.validation"}, []),
    "sciq": ("sciq/sciq.yaml", {"validation": "sciq.validation"}, ["test_split: null"]),
    "social_iqa": ("siqa/siqa.yaml", {"validation": "social_iqa.validation"}, []),
    "commonsense_qa": ("commonsense_qa/default.yaml", {"validation": "commonsense_qa.validation"}, []),
    "copa": ("super_glue/copa/default.yaml", {"validation": "copa.validation"}, []),
    "truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", {"validation": "truthfulqa_mc.validation"}, []),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", {"validation": "truthfulqa_mc.validation"}, []),
    "mmlu_anatomy": ("mmlu/default/mmlu_anatomy.yaml", {"test": "mmlu_anatomy.test", "dev": "mmlu_anatomy.dev"}, ["num_fewshot: 5"]),
    "mmlu_abstract_algebra": ("mmlu/default/mmlu_abstract_algebra.yaml",
                              {"test": "mmlu_abstract_algebra.test", "dev": "mmlu_abstract_algebra.dev"}, ["num_fewshot: 5"]),
}
LIMITS = {"hellaswag": 200, "arc_easy": 200, "winogrande": 200, "piqa": 200, "boolq": 20, "openbookqa": 30, "arc_challenge": 30,
          "sciq": 200, "social_iqa": 200, "commonsense_qa": 200}  # copa: all 100 committed items
# MMLU: every committed item (235 questions of two subjects, 5-shot)
BATCH = 32
# float64 on both sides: the tiny random model gives continuations of 100+ tokens log-likelihoods
# beyond -1000, where one float32 ulp is 1.2e-4, so float32 sums could only be compared to within an
# ulp; in float64 any difference left would come from different token sequences, which is what is tested.
# (tests/evaluation/test_scoring.py checks the float32 packed path against the unpacked one.)
DTYPE = "float64"


def _harness_yaml(directory: Path, task: str) -> None:
    base, files, extra = HARNESS_TASKS[task]
    root = Path(lm_eval.__file__).parent / "tasks"
    lines = [f"include: {root / base}", f"task: dc_{task}", "dataset_path: json", "dataset_name: null",
             "training_split: null", "dataset_kwargs:", "  data_files:"]
    lines += [f"    {split}: {FIXTURES / (stem + '.jsonl')}" for split, stem in files.items()]
    (directory / f"dc_{task}.yaml").write_text("\n".join(lines + extra) + "\n")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, build_eval_model):
    return build_eval_model(tmp_path_factory.mktemp("agree") / "llama-bpe")


@pytest.fixture(scope="module")
def harness_yamls(tmp_path_factory):
    yamls = tmp_path_factory.mktemp("harness-tasks")
    for task in HARNESS_TASKS:
        _harness_yaml(yamls, task)
    return yamls


@pytest.fixture(scope="module")
def harness(model_dir, harness_yamls):
    """The harness's per-item responses and aggregate results, per downcycle task name."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    yamls = harness_yamls
    lm = HFLM(pretrained=str(model_dir), batch_size=BATCH, device="cpu", dtype=DTYPE)
    manager = TaskManager(include_path=str(yamls), include_defaults=False)
    out = {}
    for task in HARNESS_TASKS:  # one call per task: per-task limits
        r = simple_evaluate(model=lm, tasks=[f"dc_{task}"], task_manager=manager, limit=LIMITS.get(task),
                            log_samples=True)
        out[task] = (r["results"][f"dc_{task}"], sorted(r["samples"][f"dc_{task}"], key=lambda s: s["doc_id"]))
    return out


@pytest.fixture(scope="module")
def ours(model_dir, tmp_path_factory):
    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.multiple_choice import McOptions, evaluate_mc
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.tasks import TASKS
    from downcycle.loading import load_model, load_tokenizer

    model = load_model(model_dir, dtype=DTYPE)
    tok = load_tokenizer(model_dir)
    encoder = Encoder(tok, max_length(model, tok))
    out = {}
    for task in HARNESS_TASKS:
        opts = McOptions(task_data=FIXTURES, limit=LIMITS.get(task), batch_size=BATCH, progress=False)
        result, samples, _ = evaluate_mc(model, encoder, TASKS[task], opts)
        out[task] = (result, samples)
    return out


@pytest.mark.parametrize("task", list(HARNESS_TASKS))
def test_same_loglikelihoods_and_metrics(task, harness, ours):
    (h_results, h_samples), (result, samples) = harness[task], ours[task]
    assert len(samples) == len(h_samples) == result.n
    if task in ("hellaswag", "arc_easy", "winogrande", "piqa", "sciq", "social_iqa", "commonsense_qa"):
        assert result.n >= 200
    if task == "copa":
        assert result.n == 100
    worst = 0.0
    for h, s in zip(h_samples, samples):
        h_lls = [resp[0] for resp in h["filtered_resps"]]
        assert len(h_lls) == len(s["loglikelihoods"])
        worst = max(worst, max(abs(a - b) for a, b in zip(h_lls, s["loglikelihoods"])))
        assert [bool(r[1]) for r in h["filtered_resps"]] == s["is_greedy"]
        for metric in TASK_METRICS(task):
            # acc/acc_norm are 0/1 and must be identical; MC2's probability mass may differ in the last bit
            assert h[metric] == pytest.approx(s[metric], abs=1e-12), (task, h["doc_id"], metric)
    assert worst < 1e-4, f"{task}: largest |log-likelihood difference| {worst:.2e}"
    for metric in TASK_METRICS(task):
        assert result.metrics[metric].value == pytest.approx(h_results[f"{metric},none"], abs=1e-12)
        assert result.metrics[metric].stderr == pytest.approx(h_results[f"{metric}_stderr,none"], rel=1e-9)


def TASK_METRICS(task: str) -> tuple[str, ...]:
    from downcycle.evaluation.tasks import TASKS

    return TASKS[task].metrics


def test_mmlu_group_pools_subjects_by_size(ours):
    from downcycle.evaluation.metrics import mean_stat, pool_stats

    subjects = [ours[t] for t in ("mmlu_anatomy", "mmlu_abstract_algebra")]
    pooled = pool_stats([mean_stat([s["acc"] for s in samples]) for _, samples in subjects])
    everything = mean_stat([s["acc"] for _, samples in subjects for s in samples])
    assert pooled.n == 235
    assert pooled.value == pytest.approx(everything.value, abs=1e-12)
    assert pooled.stderr == pytest.approx(everything.stderr, rel=0.02)  # the pooled formula approximates the total stderr


def test_mmlu_categories_are_the_harness_tags():
    import yaml

    from downcycle.evaluation.tasks import TASKS
    from downcycle.evaluation.tasks.mmlu import CATEGORIES, SUBJECTS

    root = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    tags = {s: yaml.safe_load((root / f"mmlu_{s}.yaml").read_text())["tag"] for s in SUBJECTS}
    assert {s: f"mmlu_{c}_tasks" for c, subjects in CATEGORIES.items() for s in subjects} == tags
    top = yaml.safe_load((root / "_mmlu.yaml").read_text())
    assert list(TASKS["mmlu"].groups) == top["task"] and sorted(TASKS["mmlu"].subtasks) == sorted(f"mmlu_{s}" for s in SUBJECTS)


def test_mmlu_groups_aggregate_as_the_harness(model_dir, harness):
    """``mmlu`` and its category ``mmlu_stem`` (both committed subjects are STEM) equal the harness's
    size-weighted aggregation (its own functions) of the harness's per-subject results."""
    from lm_eval.api.metrics import aggregate_subtask_metrics, pooled_sample_stderr

    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.multiple_choice import McOptions, evaluate_group
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.tasks import TASKS
    from downcycle.loading import load_model, load_tokenizer

    model, tok = load_model(model_dir, dtype=DTYPE), load_tokenizer(model_dir)
    result, subresults, _ = evaluate_group(model, Encoder(tok, max_length(model, tok)), TASKS["mmlu"],
                                           McOptions(task_data=FIXTURES, batch_size=BATCH, progress=False))
    subjects = ["mmlu_abstract_algebra", "mmlu_anatomy"]
    h = [harness[s][0] for s in subjects]
    sizes = [len(harness[s][1]) for s in subjects]
    value = aggregate_subtask_metrics([r["acc,none"] for r in h], sizes, True)
    stderr = pooled_sample_stderr([r["acc_stderr,none"] for r in h], sizes)
    assert set(subresults) == {*subjects, "mmlu_stem"} and result.subtasks == subjects
    for ours_group in (result, subresults["mmlu_stem"]):
        assert ours_group.n == sum(sizes) == 235
        assert ours_group.metrics["acc"].value == pytest.approx(value, abs=1e-12)
        assert ours_group.metrics["acc"].stderr == pytest.approx(stderr, rel=1e-9)


def test_harness_bridge_runs_lm_eval_tasks_on_our_model(model_dir, harness_yamls, ours):
    """``--harness``: lm-eval's own task through downcycle's model loading gives the built-in result."""
    from downcycle.evaluation.harness import run_harness_tasks
    from downcycle.loading import load_model, load_tokenizer

    model = load_model(model_dir, dtype=DTYPE)
    out = run_harness_tasks(model, load_tokenizer(model_dir), ["dc_piqa"], limit=20, shots=None, batch_size=BATCH,
                            device="cpu", include_path=harness_yamls)
    result = out["harness:dc_piqa"]
    first20 = ours["piqa"][1][:20]
    assert result.n == 20
    assert result.metrics["acc"].value == pytest.approx(sum(s["acc"] for s in first20) / 20)
    assert result.metrics["acc_norm"].value == pytest.approx(sum(s["acc_norm"] for s in first20) / 20)
