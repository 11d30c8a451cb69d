"""Fixtures of the reporting tests: a small but complete experiment built from the library functions
(session-scoped), and hand-made per-item samples files and results.json, as `downcycle eval` writes
them, for the paired item metrics (compare and report) without loading a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

KJV = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "kjv.jsonl.gz"
REFERENCE_README = "---\nlicense: apache-2.0\nlanguage: en\n---\n# the reference's own card\n"
CHARS = (5, 9, 3)  # the choices' lengths in characters


@pytest.fixture(scope="session")
def reference_readme() -> str:
    """The model card of the experiment's reference (it declares a licence)."""
    return REFERENCE_README


@pytest.fixture(scope="session")
def experiment(tmp_path_factory, real_model, real_corpus):
    """An experiment built once per session, in well under a minute, under names unlike the demo's
    (discovery goes by manifests, not names): a tiny reference outside the experiment directory
    (``real_model`` copied to ``ref/`` beside it, with a card declaring a licence), an analysis, two
    cuts, two healing runs on ``real_corpus`` and an evaluation. Returns the experiment directory."""
    from downcycle.analysis.run import run_analyze
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import AnalyzeConfig, CutConfig, EvalConfig, TrainConfig
    from downcycle.surgery.cut import cut
    from downcycle.training import run_train

    root, corpus = tmp_path_factory.mktemp("report"), real_corpus
    ref = root / "ref"
    shutil.copytree(real_model, ref)
    (ref / "README.md").write_text(REFERENCE_README)
    exp = root / "exp"
    (exp / "sweep").mkdir(parents=True)
    analysis = run_analyze(AnalyzeConfig(model=str(ref), data=str(KJV), out=exp / "layers", keep="3", strategy="block", samples=4,
                                         seq_len=32, progress=False))
    cut_a = cut(CutConfig(source=str(ref), out=exp / "sweep" / "a", layers="0-2"))
    cut_b = cut(CutConfig(source=str(ref), out=exp / "sweep" / "b", plan=analysis.out / "plan.json"))
    heal = {"data": corpus, "max_steps": 2, "micro_batch": 4, "eval_max_seqs": 8, "lr": 1e-3, "progress": False}
    h1 = run_train(TrainConfig(model=str(cut_a.out), out=exp / "sweep" / "a-healed", method="lora", lora_r=4, **heal))
    h2 = run_train(TrainConfig(model=str(cut_b.out), out=exp / "sweep" / "b-healed", method="full", **heal))
    models = [ref, cut_a.out, cut_b.out, h1.out, h2.out]
    run_eval(EvalConfig(models=[str(m) for m in models], out=exp / "scores", tasks="loss", data=str(corpus), limit=8, window=64,
                        progress=False))
    return exp


@pytest.fixture(scope="session")
def choice_chars() -> tuple[int, ...]:
    """The choices' lengths in characters of every :func:`record` item."""
    return CHARS


@pytest.fixture(scope="session")
def lls_with():
    """``lls_with(gold, correct, gold_ll, n=3)`` -> log-likelihoods with the gold choice at ``gold_ll``,
    the best choice when ``correct``."""

    def lls(gold: int, correct: bool, gold_ll: float, n: int = 3) -> list[float]:
        others = gold_ll - 1.0 if correct else gold_ll + 0.5
        return [gold_ll if c == gold else others - 0.1 * c for c in range(n)]

    return lls


@pytest.fixture(scope="session")
def record(lls_with):
    """``record(doc, gold, correct, gold_ll, new=True)`` -> one sample line; ``new``: with the fields
    eval writes now, else as older samples (log-likelihoods only)."""
    from downcycle.evaluation.metrics import item_metrics

    def line(doc: int, gold: int, correct: bool, gold_ll: float, new: bool = True) -> dict:
        lls = lls_with(gold, correct, gold_ll)
        rec = {"doc": doc, "gold": gold, "loglikelihoods": lls, "is_greedy": [False] * 3, "acc": float(correct)}
        if new:
            rec.update(choice_chars=list(CHARS), **item_metrics(lls, gold, list(CHARS)))
        return rec

    return line


@pytest.fixture(scope="session")
def write_model():
    """``write_model(root, name, tasks, params=1000, path=None)`` -> ``root/name``, holding results.json
    and ``samples/<task>.jsonl`` of a model (at ``path``, if given) from ``{task: sample lines}``."""
    from downcycle.evaluation.results import EvalResults, MetricValue, ModelInfo, TaskResult

    def write(root: Path, name: str, tasks: dict[str, list[dict]], params: int = 1000, path: Path | None = None) -> Path:
        d = root / name
        (d / "samples").mkdir(parents=True)
        results = {}
        for task, rows in tasks.items():
            (d / "samples" / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            metric = "exact_match" if task == "gsm8k" else "acc"
            results[task] = TaskResult("1", "multiple_choice", 0, None, len(rows),
                                       {metric: MetricValue(sum(r[metric] for r in rows) / len(rows), 0.1)})
        EvalResults(ModelInfo(name, str(path or d), params, {}), results, {}, {}, None, 0.0).write(d)
        return d

    return write
