"""The embedded default, end to end on the shipped reference model, shortened: every stage runs and
writes its manifest, the report is written, and a second run does no work."""

from __future__ import annotations

import json

import pytest
import torch

from downcycle.cli import execute
from downcycle.compound.demo import RECIPE
from downcycle.pipeline.recipe_file import load_recipe
from downcycle.recipe import DemoConfig

STAGES = ("data", "analyze", "cut-first", "cut-block", "heal-first-lora", "heal-block-lora", "heal-first-distill",
          "heal-block-distill", "eval", "compare")


def test_the_embedded_recipe_is_valid_and_uses_the_shipped_reference():
    recipe = load_recipe(RECIPE)
    assert recipe.reference.endswith("examples/reference")
    assert [c.strategy for c in recipe.cuts] == ["first", "block"] and all(c.keep == "0.75" for c in recipe.cuts)
    assert {h.options["method"] for h in recipe.heal} == {"lora", "distill"}
    config = json.loads((RECIPE.parent.parent / "reference" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 12 and config["vocab_size"] == 8192


@pytest.mark.slow
def test_demo_runs_every_stage_then_skips_them(tmp_path, capsys):
    torch.set_num_threads(2)
    out = tmp_path / "demo"
    report = execute("demo", DemoConfig(out=out, heal_steps=2, eval_limit=8, progress=False)).report
    for stage in STAGES:
        assert (out / stage / "downcycle.json").is_file(), stage
    assert report == out / "report.html" and report.is_file() and (out / "report.md").is_file()
    plans = {name: json.loads((out / "plans" / f"cut-{name}.json").read_text()) for name in ("first", "block")}
    assert plans["first"]["kept_layers"] == list(range(9)) and len(plans["block"]["kept_layers"]) == 9
    table = json.loads((out / "compare" / "compare.json").read_text())
    assert {row["model"] for row in table["rows"]} == {"reference", *STAGES[2:8]}
    printed = capsys.readouterr().out
    assert "gap recovered" in printed and f"report: {out / 'report.html'}" in printed
    again = execute("demo", DemoConfig(out=out, heal_steps=2, eval_limit=8, progress=False)).report
    assert again == report and "11 were already done" in capsys.readouterr().out
