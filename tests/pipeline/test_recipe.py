"""Recipe validation: every kind of mistake is one line naming its place in the recipe, found before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from downcycle.cli import main
from downcycle.errors import DowncycleError
from downcycle.pipeline.recipe_file import load_recipe
from downcycle.pipeline.recipe_stages import build_stages

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _recipe(tmp_path: Path, reference: Path, **changes) -> dict:
    doc = {
        "reference": str(reference),
        "data": {"source": str(EXAMPLES / "corpus" / "kjv.jsonl.gz"), "tokens": "60K", "seq_len": 64, "val": 0.1},
        "analyze": {"samples": 4, "seq_len": 32},
        "cuts": [{"name": "first", "strategy": "first", "keep": 0.75}, {"name": "block", "strategy": "block", "keep": 3}],
        "heal": [{"name": "lora", "method": "lora", "max_steps": 2, "micro_batch": 4},
                 {"name": "distill", "cuts": ["block"], "method": "distill", "max_steps": 2, "micro_batch": 4}],
        "eval": {"tasks": "loss", "limit": 4},
        "report": {"new_tokens": 4},
    }
    for key, value in changes.items():
        doc[key] = value
    return doc


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def test_valid_recipe_builds_every_stage(tmp_path, reference):
    recipe = load_recipe(_write(tmp_path, _recipe(tmp_path, reference)))
    stages = build_stages(recipe, tmp_path / "out")
    assert [s.name for s in stages] == ["data", "analyze", "cut-first", "cut-block", "heal-first-lora", "heal-block-lora",
                                        "heal-block-distill", "eval", "compare", "report"]
    distill = next(s for s in stages if s.name == "heal-block-distill")
    assert distill.config.teacher == str(reference) and distill.after == ["data", "cut-block"]
    assert distill.config.model == str(tmp_path / "out" / "cut-block")
    first = next(s for s in stages if s.name == "cut-first")
    assert first.choice["keep"] == 3 and first.after == []  # first-k needs no scores: 0.75 of 4 layers
    assert next(s for s in stages if s.name == "cut-block").after == ["analyze"]
    assert stages[0].config.tokenizer == str(reference)  # the tokenizer defaults to the reference's


def test_compare_stage_pairs_models_with_the_reference_and_healed_models_with_their_cut(tmp_path, reference):
    recipe = load_recipe(_write(tmp_path, _recipe(tmp_path, reference)))
    compare = next(s for s in build_stages(recipe, tmp_path / "out") if s.name == "compare")
    ref = reference.name
    assert compare.config.reference == ref
    assert compare.config.pairs.split(",") == [
        f"cut-first:{ref}", f"cut-block:{ref}", f"heal-first-lora:{ref}", f"heal-block-lora:{ref}", f"heal-block-distill:{ref}",
        "heal-first-lora:cut-first", "heal-block-lora:cut-block", "heal-block-distill:cut-block"]


def test_relative_paths_are_relative_to_the_recipe(tmp_path, reference):
    (tmp_path / "sub").mkdir()
    doc = _recipe(tmp_path, reference)
    doc["data"]["source"] = "../kjv.jsonl.gz"
    (tmp_path / "kjv.jsonl.gz").write_bytes((EXAMPLES / "corpus" / "kjv.jsonl.gz").read_bytes())
    path = tmp_path / "sub" / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_recipe(path).data["source"] == [str(tmp_path / "kjv.jsonl.gz")]


MISTAKES = [
    # (what to change, the message must contain)
    (lambda d: d.update(heal=[{**d["heal"][0], "lora_rr": 8}]), "heal[0].lora_rr: unknown key (did you mean 'lora_r'?)"),
    (lambda d: d.update(data={**d["data"], "seq_len": "long"}), "data.seq_len: expected an integer, got 'long'"),
    (lambda d: d.update(heal=[{**d["heal"][0], "lr": "fast"}]), "heal[0].lr: expected a number, got 'fast'"),
    (lambda d: d.update(analyze={"plots": "yes"}), "analyze.plots: expected true or false, got 'yes'"),
    (lambda d: d.update(data={**d["data"], "source": "missing/*.jsonl"}), "data.source: missing/*.jsonl: no file matches"),
    (lambda d: d.update(data={**d["data"], "tokenizer": "./nope"}), "data.tokenizer: ./nope: no such file or directory"),
    (lambda d: d.update(reference="./no-model"), "reference: ./no-model: no such file or directory"),
    (lambda d: d.pop("cuts"), "cuts: missing"),
    (lambda d: d.update(cuts=[{"strategy": "best", "keep": 3}]), "cuts[0].strategy: unknown strategy 'best'"),
    (lambda d: d.update(cuts=[{"strategy": "block"}]), "cuts[0]: give exactly one of `layers`"),
    (lambda d: d.update(cuts=[{"strategy": "first", "keep": 2}, {"strategy": "first", "keep": 3}]), "cuts[1].name: 'first' is used twice"),
    (lambda d: d.update(heal=[{**d["heal"][1], "cuts": ["middle"]}]), "heal[0].cuts: no cut named 'middle'"),
    (lambda d: d.update(heal=[{**d["heal"][0], "out": "x"}]), "heal[0].out: set by the pipeline itself"),
    (lambda d: d.update(colour="blue"), "colour: unknown key"),
    (lambda d: d.update(eval="loss"), "eval: expected a mapping of `downcycle eval` options, got text"),
    (lambda d: d.update(heal=[{**d["heal"][0], "method": "lora", "lora_dropout": 1.5}]), "heal[0]: --lora-dropout must be in [0, 1)"),
    (lambda d: d.update(cuts=[{"layers": "0-9"}], heal=[]), "cuts[0].layers: "),
    (lambda d: d.update(cuts=[{"strategy": "block", "keep": 9}]), "cuts[0].keep: --keep '9': must keep between 1 and 4"),
    (lambda d: d.update(data={**d["data"], "tokens": "lots"}), "data: --tokens: 'lots' is not a count"),
]


@pytest.mark.parametrize("change,message", MISTAKES, ids=[m[1].split(":")[0] for m in MISTAKES])
def test_each_mistake_is_one_line_naming_its_place(tmp_path, reference, capsys, change, message):
    doc = _recipe(tmp_path, reference)
    change(doc)
    path = _write(tmp_path, doc)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"downcycle: error: {path}: ") and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # found before any work started


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = _write(tmp_path, "reference: x\ndata: [unclosed\n")
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: not valid YAML: line 3" in err or f"{path}: not valid YAML: line 2" in err


def test_missing_recipe_and_not_a_mapping(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml: no such recipe file" in capsys.readouterr().err
    path = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(DowncycleError, match="a recipe must be a mapping"):
        load_recipe(path)


def test_unknown_from_stage_lists_the_stages(tmp_path, reference, capsys):
    path = _write(tmp_path, _recipe(tmp_path, reference))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--from", "healing", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "--from 'healing': no such stage" in err and "heal-block-distill" in err


def test_sweep_depths_are_checked(tmp_path, reference, capsys):
    path = _write(tmp_path, _recipe(tmp_path, reference))
    assert main(["sweep", str(path), "--depths", "0.75,big"]) == 1
    assert "--depths: 'big'" in capsys.readouterr().err
    assert main(["sweep", str(path), "--out", str(tmp_path / "s"), "--depths", "0.75,0.5", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for name in ("cut-block-0.75", "cut-block-0.5", "heal-block-0.5-distill", "sweep"):
        assert name in printed
