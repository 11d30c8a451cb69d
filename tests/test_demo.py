"""The embedded default, end to end, shortened: every stage runs and writes its manifest."""

from __future__ import annotations

import json

import pytest

from downcycle.demo import run_demo
from downcycle.recipe import DemoConfig


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    compare = run_demo(DemoConfig(out=out, tokens="150K", pretrain_steps=12, heal_steps=3))
    for stage in ("corpus", "reference", "analysis", "cut-first", "cut-block", "healed-first-lora", "healed-block-lora",
                  "healed-block-distill", "eval", "compare"):
        assert (out / stage / "downcycle.json").is_file(), stage
    table = json.loads((compare / "compare.json").read_text())
    assert table["reference"] == "reference" and (compare / "loss.png").is_file()
    assert {row["model"] for row in table["rows"]} == {"reference", "cut-first", "cut-block", "healed-first-lora",
                                                       "healed-block-lora", "healed-block-distill"}
    cut_row = next(row for row in table["rows"] if row["model"] == "cut-block")
    assert 0.6 < cut_row["parameters_vs_reference"] < 1.0
    printed = capsys.readouterr().out
    assert "| reference" in printed and "healed-block-distill" in printed
    plan = json.loads((out / "analysis" / "plan.json").read_text())
    assert len(plan["kept_layers"]) == 6 and plan["source_layers"] == 8
