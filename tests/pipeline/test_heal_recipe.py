"""Activation-level healing as heal entries of a recipe: `method: linear` / `method: layer` run `downcycle
heal` on each cut, calibrated on the recipe's corpus; `start: NAME` starts a training run from an earlier
heal's output; the report knows them as healed models of their cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from downcycle import cli
from downcycle.pipeline.recipe_file import load_recipe
from downcycle.pipeline.recipe_stages import build_stages
from downcycle.pipeline.run import run_recipe
from downcycle.recipe import RunConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def recipe_doc(reference):
    ref = reference
    return {
        "reference": str(ref),
        "out": "experiment",
        "data": {"source": str(EXAMPLES / "corpus" / "kjv.jsonl.gz"), "tokens": "40K", "seq_len": 32, "val": 0.1},
        "analyze": {"samples": 4, "seq_len": 32, "plots": False},
        "cuts": [{"name": "first", "strategy": "first", "keep": 2}, {"name": "first1", "strategy": "first", "keep": 1, "evaluate": False}],
        "heal": [{"name": "linear", "method": "linear", "samples": 8, "batch_size": 4},
                 {"name": "layer", "cuts": ["first", "first1"], "method": "layer", "samples": 8, "batch_size": 4, "epochs": 2,
                  "kl_fraction": 0.5},
                 {"name": "linear-lora", "start": "linear", "method": "lora", "max_steps": 2, "micro_batch": 2, "eval_max_seqs": 2}],
        "eval": {"tasks": "loss", "limit": 3},
        "report": {"new_tokens": 3, "prompt": ["In the beginning"]},
    }


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_heal_entries_become_heal_stages(recipe_doc, tmp_path):
    recipe = load_recipe(write(tmp_path, recipe_doc))
    stages = {s.name: s for s in build_stages(recipe, tmp_path / "out")}
    assert stages["heal-first-linear"].kind == "heal" and stages["heal-first-layer"].kind == "heal"
    assert stages["heal-first-linear"].config.data == str(tmp_path / "out" / "data")  # calibrated on the recipe's corpus
    lora = stages["heal-first-linear-lora"]
    assert lora.command == "train" and Path(lora.config.model) == tmp_path / "out" / "heal-first-linear"
    assert lora.after == ["data", "heal-first-linear"] and lora.info["from"] == "cut-first"
    evaluated = [Path(m).name for m in stages["eval"].config.models]
    assert "cut-first1" not in evaluated and "cut-first" in evaluated and "heal-first1-layer" in evaluated  # evaluate: false


@pytest.mark.parametrize("change, needle", [
    ({"heal": [{"name": "x", "method": "linear", "cuts": ["reference"]}]}, "has none"),
    ({"heal": [{"name": "x", "method": "linear", "epochs": "many"}]}, "heal[0].epochs"),
    ({"heal": [{"name": "x", "method": "linear", "lora_r": 4}]}, "lora_r"),
    ({"heal": [{"name": "x", "method": "lora", "start": "nothing"}]}, "no earlier heal entry named 'nothing'"),
    ({"cuts": [{"name": "a", "keep": 2, "evaluate": "no"}]}, "cuts[0].evaluate"),
])
def test_heal_entry_mistakes_are_one_line(recipe_doc, tmp_path, capsys, change, needle):
    path = write(tmp_path, {**recipe_doc, **change})
    assert cli.main(["run", str(path), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.slow
def test_recipe_with_linear_layer_and_lora_on_linear_runs_and_reports(recipe_doc, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "exp"
    result = run_recipe(RunConfig(recipe=write(tmp_path, recipe_doc), out=out, progress=False))
    assert {"heal-first-linear", "heal-first-layer", "heal-first-linear-lora"} <= set(result.ran)
    assert json.loads((out / "heal-first-layer" / "config.json").read_text())["num_hidden_layers"] == 3
    assert json.loads((out / "heal-first1-layer" / "config.json").read_text())["num_hidden_layers"] == 2
    assert not (out / "eval" / "cut-first1").exists()
    man = json.loads((out / "heal-first-linear" / "downcycle.json").read_text())
    assert man["stage"] == "heal" and man["outputs"]["calibration"]["tokens"] == 8 * 32
    for name in ("cut-first", "heal-first-linear", "heal-first-layer", "heal-first-linear-lora"):
        assert (out / "eval" / name / "results.json").is_file(), name
    report = (out / "report.md").read_text()
    assert "heal-first-linear" in report and "heal-first-layer" in report
    again = run_recipe(RunConfig(recipe=write(tmp_path, recipe_doc), out=out, progress=False))
    assert again.ran == []
