"""Agreement with lm-evaluation-harness on the real models: the converted SmolLM2-135M-Instruct
(``make smollm2``; Llama) and Gemma 3 270M (``make gemma3``; a base model with sliding-window layers,
whose groups pack only inside the window) each score a seeded sample of every built-in multiple-choice task's full split
(``make taskdata``) with the same per-item log-likelihoods as lm-eval's HF backend (float32, within
``1e-4 + 2e-6 * |ll|``) and identical acc/acc_norm, item by item and in aggregate.

Runs only where the model and the task data are present (skipping with the reason otherwise); the
sampling, file preparation and comparison are benchmarks/bench_eval_real.py's, which runs the same
check on 200 items per task and times both tools.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_eval_real as bench

SAMPLE = 20  # items per task (MMLU: pooled over its subjects)
SEED = 7
BATCH = {"smollm2": 32, "gemma3": 4}  # lm-eval keeps every position's logits: 4 x 600 tokens x 262,144 x 4 bytes is 2.5 GB


MODELS = {"smollm2": bench.MODEL, "gemma3": ROOT / "models" / "gemma3-270m"}


def _missing(name: str) -> str | None:
    from downcycle.evaluation.task_data import default_task_data, find_local

    if not (MODELS[name] / "model.safetensors").is_file():
        return f"no converted real model at {MODELS[name]} (run `make {name}`)"
    data = default_task_data()
    if find_local(data, "hellaswag", "validation") is None:
        return f"no full task splits in {data} (run `make taskdata`)"
    return None


@pytest.fixture(scope="module", params=sorted(MODELS))
def setup(request, tmp_path_factory):
    reason = _missing(request.param)
    if reason:
        pytest.skip(reason)
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.task_data import default_task_data
    from downcycle.loading import load_model, load_tokenizer

    data, yamls = tmp_path_factory.mktemp("real-data"), tmp_path_factory.mktemp("real-yamls")
    preps = {t: bench.prepare(t, default_task_data(), data, yamls, SAMPLE, SEED) for t in bench.TASKS}
    path = MODELS[request.param]
    lm = HFLM(pretrained=str(path), batch_size=BATCH[request.param], device="cpu", dtype="float32")
    model, tok = load_model(path, dtype="float32"), load_tokenizer(path)
    manager = TaskManager(include_path=str(yamls), include_defaults=False)
    return preps, data, lm, manager, model, Encoder(tok, max_length(model, tok)), BATCH[request.param]


@pytest.mark.parametrize("task", bench.TASKS)
def test_real_model_agrees_with_lm_eval(task, setup):
    preps, data, lm, manager, model, encoder, batch = setup
    prep = preps[task]
    if prep is None:
        pytest.skip(f"no local jsonl files for {task} in the task data")
    theirs, h_results = bench.run_lm_eval(lm, manager, prep)
    ours, result = bench.run_downcycle(model, encoder, prep, data, batch)
    assert sum(len(v) for v in theirs.values()) == result.n == prep.items == SAMPLE
    problems, _, _ = bench.compare(prep, theirs, ours)
    assert not problems, problems[:5]
    if task == "mmlu":  # the group pools its subjects by size: the mean over all items
        accs = [s["acc"] for samples in theirs.values() for s in samples]
        assert result.metrics["acc"].value == pytest.approx(sum(accs) / len(accs), abs=1e-12)
    else:
        for metric, value in result.metrics.items():
            assert value.value == pytest.approx(h_results[f"dc_{task}"][f"{metric},none"], abs=1e-12)
            assert value.stderr == pytest.approx(h_results[f"dc_{task}"][f"{metric}_stderr,none"], rel=1e-9)
