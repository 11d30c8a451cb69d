"""`downcycle run`: the stages chain through their directories; a re-run does no work; deleting one
stage's output re-runs exactly that stage and those that read it; an interrupted healing run resumes;
`--from` forces a stage and everything after it; `sweep` ends in a size-versus-quality table."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from downcycle.cli import main
from downcycle.pipeline.recipe_file import load_recipe
from downcycle.pipeline.run import run_recipe, run_sweep
from downcycle.recipe import RunConfig, SweepConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALL = ["data", "analyze", "cut-first", "cut-block", "heal-first-lora", "heal-block-lora", "heal-block-distill", "eval",
       "compare", "report"]


@pytest.fixture(scope="module")
def recipe_path(reference, tmp_path_factory):
    ref = reference
    root = tmp_path_factory.mktemp("recipe")
    doc = {
        "reference": str(ref),
        "out": "experiment",
        "data": {"source": str(EXAMPLES / "corpus" / "kjv.jsonl.gz"), "tokens": "40K", "seq_len": 64, "val": 0.1},
        "analyze": {"samples": 4, "seq_len": 32, "plots": False},
        "cuts": [{"name": "first", "strategy": "first", "keep": 3}, {"name": "block", "strategy": "block", "keep": 3}],
        "heal": [{"name": "lora", "method": "lora", "max_steps": 4, "save_every": 2, "micro_batch": 2, "eval_max_seqs": 2},
                 {"name": "distill", "cuts": ["block"], "method": "distill", "max_steps": 2, "micro_batch": 2, "eval_max_seqs": 2}],
        "eval": {"tasks": "loss", "limit": 3},
        "report": {"new_tokens": 3, "prompt": ["In the beginning"]},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _digests(out: Path) -> dict[str, str]:
    return {s: hashlib.sha256((out / s / "downcycle.json").read_bytes()).hexdigest() for s in ALL if s != "report"}


@pytest.mark.slow
def test_run_skip_rerun_after_delete_and_from(recipe_path, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "exp"
    first = run_recipe(RunConfig(recipe=recipe_path, out=out, progress=False))
    assert first.ran == ALL and first.skipped == []
    for stage in ALL[:-1]:
        assert (out / stage / "downcycle.json").is_file(), stage
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    block_plan = json.loads((out / "plans" / "cut-block.json").read_text())
    analysis_scores = json.loads((out / "analyze" / "scores.json").read_text())
    n = 1  # 4 layers, keep 3: the block strategy drops the one layer l (l + 1 <= 3) with the smallest d(l, l+1)
    best = min(range(3), key=lambda l: (analysis_scores["angular-last"][l][n - 1], l))
    assert block_plan["kept_layers"] == [i for i in range(4) if i != best]
    cut_manifest = json.loads((out / "cut-block" / "downcycle.json").read_text())
    assert cut_manifest["outputs"]["kept_layers"] == block_plan["kept_layers"]
    before = _digests(out)

    again = run_recipe(RunConfig(recipe=recipe_path, out=out, progress=False))
    assert again.ran == [] and again.skipped == ALL and _digests(out) == before

    shutil.rmtree(out / "cut-block")
    third = run_recipe(RunConfig(recipe=recipe_path, out=out, progress=False))
    assert third.ran == ["cut-block", "heal-block-lora", "heal-block-distill", "eval", "compare", "report"]
    after = _digests(out)
    for untouched in ("data", "analyze", "cut-first", "heal-first-lora"):
        assert after[untouched] == before[untouched], untouched

    fourth = run_recipe(RunConfig(recipe=recipe_path, out=out, from_stage="eval", progress=False))
    assert fourth.ran == ["eval", "compare", "report"]
    capsys.readouterr()
    assert main(["run", str(recipe_path), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("done: skip") == len(ALL)


@pytest.mark.slow
def test_interrupted_healing_resumes_from_its_checkpoint(recipe_path, tmp_path, monkeypatch, capsys):
    from downcycle.training import run as train_run

    torch.set_num_threads(1)
    out = tmp_path / "exp"
    original, calls = train_run._write_output, []

    def interrupted_once(*args, **kwargs):  # the first healing run dies after its last checkpoint, before writing OUT
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_run, "_write_output", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(RunConfig(recipe=recipe_path, out=out, progress=False))
    assert not (out / "heal-first-lora").exists() and (out / "heal-first-lora.run" / "checkpoints").is_dir()
    capsys.readouterr()
    result = run_recipe(RunConfig(recipe=recipe_path, out=out, progress=False), echo=print)
    printed = capsys.readouterr().out
    assert result.skipped == ["data", "analyze", "cut-first", "cut-block"] and result.ran[0] == "heal-first-lora"
    assert "resumed from" in printed and "(step 2 of 4)" in printed, printed  # its last checkpoint


@pytest.mark.slow
def test_sweep_writes_a_size_quality_table(recipe_path, tmp_path):
    torch.set_num_threads(1)
    doc = yaml.safe_load(recipe_path.read_text())
    doc["heal"] = [doc["heal"][0] | {"cuts": ["block"], "max_steps": 2}]
    doc["cuts"] = [doc["cuts"][1]]
    doc["report"] = None
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_sweep(SweepConfig(recipe=path, depths="3,2", out=tmp_path / "s", progress=False))
    assert "sweep" in result.ran and "report" not in result.ran
    table = json.loads((tmp_path / "s" / "sweep" / "sweep.json").read_text())
    by = {r["model"]: r for r in table["rows"]}
    assert set(by) == {"reference", "cut-block-3", "cut-block-2", "heal-block-3-lora", "heal-block-2-lora"}
    assert by["cut-block-2"]["layers"] == 2 and by["cut-block-2"]["parameters"] < by["cut-block-3"]["parameters"] < by["reference"]["parameters"]
    assert by["heal-block-2-lora"]["parameters"] == by["cut-block-2"]["parameters"]
    evaluated = json.loads((tmp_path / "s" / "eval" / "cut-block-2" / "results.json").read_text())
    assert by["cut-block-2"]["loss/nll"] == evaluated["tasks"]["loss"]["metrics"]["nll"]["value"]
    assert (tmp_path / "s" / "sweep" / "size_quality.png").stat().st_size > 10_000
    assert load_recipe(path).report is None
