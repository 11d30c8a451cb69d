"""The seed's Fig. 2 / Fig. 4 (grouped benchmark bars with standard errors) and the paired comparison:
the statistics against a hand computation, the pairs and numbers against the per-item samples files
read independently, and the control (the reference trained like the healed models) found by its manifest."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from downcycle.reporting.paired import Paired, compare_pair, paired_diff, read_items

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
KJV = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "kjv.jsonl.gz"


def test_paired_diff_known_answer():
    # d = [1, 0, 0, 1, -1]: mean 0.2; sample variance ((0.8^2)*2 + (0.2^2)*2 + 1.2^2) / 4 = 0.7; SE = sqrt(0.7 / 5)
    mean, se = paired_diff([1, 0, 1, 1, 0], [0, 0, 1, 0, 1])
    assert mean == pytest.approx(0.2) and se == pytest.approx(math.sqrt(0.7 / 5))
    assert paired_diff([0.5], [0.25]) == (0.25, None)
    with pytest.raises(ValueError):
        paired_diff([1, 0], [1])
    assert Paired("t", "acc", "a", "b", 5, 0.2, 0.09).significant  # 0.2 > 2 * 0.09
    assert not Paired("t", "acc", "a", "b", 5, 0.2, 0.1).significant  # 0.2 = 2 * 0.1: not larger
    assert not Paired("t", "acc", "a", "b", 0, None, None, "different items").significant


def _samples(root: Path, name: str, task: str, rows: list[tuple[int, int, float]]) -> Path:
    d = root / name / "samples"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{task}.jsonl").write_text("".join(json.dumps({"doc": doc, "gold": gold, "acc": acc}) + "\n" for doc, gold, acc in rows))
    return root / name


class _R:  # the part of EvalResults that compare_pair reads
    def __init__(self, task: str, subtasks: list[str] = ()):
        self.tasks = {task: type("T", (), {"subtasks": list(subtasks)})()}


def test_pairs_match_items_by_index_and_refuse_different_items(tmp_path):
    a = _samples(tmp_path, "a", "arc", [(2, 1, 1.0), (0, 0, 1.0), (1, 3, 0.0)])  # order of lines does not matter
    b = _samples(tmp_path, "b", "arc", [(0, 0, 0.0), (1, 3, 0.0), (2, 1, 0.0)])
    p = compare_pair("arc", "acc", ("a", _R("arc"), a), ("b", _R("arc"), b))
    assert (p.n, p.diff) == (3, pytest.approx(2 / 3)) and p.se == pytest.approx(math.sqrt((2 * (1 / 3) ** 2 + (2 / 3) ** 2) / 2 / 3))
    c = _samples(tmp_path, "c", "arc", [(0, 0, 0.0), (1, 2, 0.0), (2, 1, 0.0)])  # item 1 has another gold: not the same items
    assert compare_pair("arc", "acc", ("a", _R("arc"), a), ("c", _R("arc"), c)).note == "different items"
    d = _samples(tmp_path, "d", "arc", [(0, 0, 0.0), (1, 3, 0.0)])
    assert compare_pair("arc", "acc", ("a", _R("arc"), a), ("d", _R("arc"), d)).note == "different items"
    assert compare_pair("arc", "acc", ("a", _R("arc"), a), ("e", _R("arc"), tmp_path / "e")).note == "no per-item samples"
    # a group pools its subtasks' items, keyed by (subtask, index)
    for name, first, second in (("ga", 1.0, 1.0), ("gb", 0.0, 1.0)):
        _samples(tmp_path, name, "mmlu_x", [(0, 0, first)])
        _samples(tmp_path, name, "mmlu_y", [(0, 0, second), (1, 1, 0.0)])
    assert set(read_items(tmp_path / "ga" / "samples", "mmlu", "acc", ["mmlu_x", "mmlu_y"])) == {("mmlu_x", "0"), ("mmlu_y", "0"), ("mmlu_y", "1")}
    g = compare_pair("mmlu", "acc", ("ga", _R("mmlu", ["mmlu_x", "mmlu_y"]), tmp_path / "ga"), ("gb", _R("mmlu", ["mmlu_x", "mmlu_y"]), tmp_path / "gb"))
    assert (g.n, g.diff) == (3, pytest.approx(1 / 3))


@pytest.fixture(scope="module")
def bench_experiment(tmp_path_factory, real_model, real_corpus, one_torch_thread):
    """Reference (outside), a cut, a model healed from it, a control (the reference trained the same
    way), all evaluated on loss and two benchmarks (one a group) on the shipped task fixtures."""
    from downcycle.surgery.cut import cut
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import CutConfig, EvalConfig, TrainConfig
    from downcycle.training import run_train

    root = tmp_path_factory.mktemp("bench")
    ref = root / "ref"
    shutil.copytree(real_model, ref)
    exp = root / "exp"
    exp.mkdir()
    c = cut(CutConfig(source=str(ref), out=exp / "cut-first", layers="0-2"))
    heal = {"data": real_corpus, "max_steps": 2, "micro_batch": 4, "eval_max_seqs": 4, "lr": 1e-2, "progress": False}
    h = run_train(TrainConfig(model=str(c.out), out=exp / "healed-first-full", method="full", **heal))
    ctl = run_train(TrainConfig(model=str(ref), out=exp / "control-full", method="full", **heal))
    models = [ref, c.out, h.out, ctl.out]
    run_eval(EvalConfig(models=[str(m) for m in models], out=exp / "eval", tasks="loss,arc_easy,mmlu", data=str(real_corpus),
                        task_data=FIXTURES, limit=12, window=64, progress=False))
    return exp


def _acc(samples: Path, names: list[str], metric: str) -> np.ndarray:
    rows = [json.loads(line) for n in names for line in (samples / f"{n}.jsonl").read_text().splitlines()]
    return np.array([r[metric] for r in rows], dtype=float)


@pytest.mark.slow
def test_report_draws_fig2_fig4_and_the_paired_table(bench_experiment, monkeypatch):
    from downcycle.recipe import ReportConfig
    from downcycle.reporting import bars
    from downcycle.reporting.build import run_report
    from downcycle.reporting.experiment import discover

    exp = discover(bench_experiment)
    roles = {m.name: m.role for m in exp.models}
    assert roles == {"ref": "reference", "cut-first": "cut", "healed-first-full": "healed", "control-full": "control"}
    drawn: dict[str, list] = {}
    real = bars.grouped_bars
    monkeypatch.setattr(bars, "grouped_bars", lambda path, *a: drawn.setdefault(Path(path).name, real(path, *a)))
    result = run_report(ReportConfig(dir=bench_experiment, samples=False, cards=False))
    report = bench_experiment / "report"
    assert {"fig2_downcycled.png", "fig4_cut-first.png"} <= set(result.figures)
    for name in ("fig2_downcycled.png", "fig4_cut-first.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the bars are the results.json values: acc_norm for ARC-Easy, acc for MMLU (the group, not its subtasks)
    for label, task, value, err in drawn["fig4_cut-first.png"]:
        name = label.split(" ")[0]
        metric = {"arc_easy": "acc_norm", "mmlu": "acc"}[task]
        m = json.loads((bench_experiment / "eval" / name / "results.json").read_text())["tasks"][task]["metrics"][metric]
        assert (value, err) == (m["value"], m["stderr"])
    assert [(lbl.split(" ")[0], t) for lbl, t, *_ in drawn["fig2_downcycled.png"]] == \
        [("ref", "arc_easy"), ("ref", "mmlu"), ("cut-first", "arc_easy"), ("cut-first", "mmlu")]
    assert [lbl.split(" ")[0] for lbl, t, *_ in drawn["fig4_cut-first.png"] if t == "mmlu"] == ["ref", "cut-first", "healed-first-full", "control-full"]
    # the paired table: every model vs the reference, the healed model vs its cut; numbers from the samples files
    paired = json.loads((report / "downcycle.json").read_text())["outputs"]["paired"]
    pairs = [(p["model"], p["baseline"], p["task"]) for p in paired]
    assert pairs == [(m, b, t) for m, b in (("cut-first", "ref"), ("healed-first-full", "ref"), ("control-full", "ref"),
                                            ("healed-first-full", "cut-first")) for t in ("arc_easy", "mmlu")]
    subtasks = json.loads((bench_experiment / "eval" / "ref" / "results.json").read_text())["tasks"]["mmlu"]["subtasks"]
    for p in paired:
        names, metric = (["arc_easy"], "acc_norm") if p["task"] == "arc_easy" else (subtasks, "acc")
        d = _acc(bench_experiment / "eval" / p["model"] / "samples", names, metric) - \
            _acc(bench_experiment / "eval" / p["baseline"] / "samples", names, metric)
        assert p["n"] == len(d) and p["diff"] == pytest.approx(d.mean())
        assert p["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)))
        assert p["significant"] == (abs(d.mean()) > 2 * d.std(ddof=1) / np.sqrt(len(d)))
    md = (bench_experiment / "report.md").read_text()
    assert "### Paired comparison" in md and "![Fig. 2: reference vs downcycled](report/fig2_downcycled.png)" in md
    assert "| control-full | ref (control) |" in md and "Control **control-full**" in md
    assert "mmlu_anatomy" not in md and "mmlu_stem" not in md  # the group is shown, not its subjects or categories


@pytest.mark.slow
def test_compare_has_the_paired_table_against_its_reference(bench_experiment, tmp_path):
    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    result = run_compare(CompareConfig(results=[str(bench_experiment / "eval")], out=tmp_path / "cmp", reference="ref", plots=False))
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {(p["model"], p["baseline"]) for p in doc["paired"]} == {("cut-first", "ref"), ("healed-first-full", "ref"), ("control-full", "ref")}
    assert "## Paired comparison" in result.markdown
