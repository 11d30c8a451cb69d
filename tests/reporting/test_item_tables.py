"""The report's pooled item-metric table (every model against the reference, the healed model against
its cut) on a hand-made experiment: stage manifests, an eval stage's results.json and samples files,
no model loaded. Its numbers are checked against paired_diff over the concatenated items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from downcycle.reporting.paired import paired_diff

TASKS = ("arc_easy", "piqa")


def _manifest(directory: Path, stage: str, config: dict, inputs: dict, outputs: dict | None = None) -> None:
    from downcycle.artifacts.manifest import write_manifest

    directory.mkdir(parents=True, exist_ok=True)
    write_manifest(directory, stage, config, inputs, outputs)


def _items(record, seed: int) -> dict[str, list[dict]]:
    """Per task, items whose correctness and gold log-likelihood depend on ``seed``."""
    return {task: [record(i, i % 3, (i * (seed + 2) + t) % 3 != 0, -1.5 - 0.1 * ((i * (seed + 1)) % 5) - 0.2 * seed)
                   for i in range(6 + t)] for t, task in enumerate(TASKS)}


@pytest.fixture(scope="module")
def item_experiment(tmp_path_factory, record, write_model):
    root = tmp_path_factory.mktemp("items")
    ref, exp = root / "ref", root / "exp"
    ref.mkdir()
    cut, healed = exp / "cut-a", exp / "healed-a"
    _manifest(cut, "cut", {"layers": "0"}, {"source_path": str(ref)}, {"kept_layers": [0]})
    _manifest(healed, "train", {"method": "full"}, {"model": {"path": str(cut)}}, {"tokens": 100})
    items = {"ref": _items(record, 0), "cut-a": _items(record, 1), "healed-a": _items(record, 2)}
    for name, path in (("ref", ref), ("cut-a", cut), ("healed-a", healed)):
        write_model(exp / "eval", name, items[name], path=path)
    _manifest(exp / "eval", "eval", {}, {}, {n: f"{n}/results.json" for n in items})
    return exp, items


def test_report_shows_the_pooled_item_table(item_experiment):
    from downcycle.recipe import ReportConfig
    from downcycle.reporting.build import run_report
    from downcycle.reporting.markdown import ITEMS_HEADING

    exp, items = item_experiment
    run_report(ReportConfig(dir=exp, samples=False, cards=False))
    rows = json.loads((exp / "report" / "downcycle.json").read_text())["outputs"]["item_paired"]
    pooled = [r for r in rows if r["task"] == "pooled"]
    assert [(r["model"], r["baseline"]) for r in pooled] == [("cut-a", "ref"), ("healed-a", "ref"), ("healed-a", "cut-a")]
    md = (exp / "report.md").read_text()
    section = md[md.index(f"### {ITEMS_HEADING}"):]
    page = (exp / "report.html").read_text()
    for r in pooled:
        a = [x for t in TASKS for x in items[r["model"]][t]]
        b = [x for t in TASKS for x in items[r["baseline"]][t]]
        assert r["tasks"] == list(TASKS) and r["n"] == len(a) == 13
        for name in ("acc", "gold_ll", "gold_ll_char", "brier"):
            diff, se = paired_diff([x[name] for x in a], [x[name] for x in b])
            assert (r[name]["diff"], r[name]["se"]) == pytest.approx((diff, se))
        r2w = sum(1 for x, y in zip(a, b) if y["acc"] and not x["acc"])
        w2r = sum(1 for x, y in zip(a, b) if x["acc"] and not y["acc"])
        assert (r["flips"]["right_to_wrong"], r["flips"]["wrong_to_right"]) == (r2w, w2r)
        cells = f"| arc_easy, piqa | {r['model']} | {r['baseline']} | 13 | {r['acc']['diff']:+.4f} ± {r['acc']['se']:.4f}"
        assert cells in section
        flips = f"{r2w} / {w2r} ({(r2w + w2r) / 13:.1%})"
        assert flips in section.split(cells)[1].splitlines()[0]
        gold = f"{r['gold_ll']['diff']:+.4f} ± {r['gold_ll']['se']:.4f}" + (" *" if r["gold_ll"]["significant"] else "")
        assert gold in section and f"<td>{gold}</td>" in page
    assert "### Per task" not in md  # per task only in compare.md
