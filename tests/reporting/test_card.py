"""Model cards: front matter and body from the manifests, licence inherited from the source's card,
nothing the manifests do not say; written by `cut`, `train` and `downcycle card`."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from downcycle.errors import DowncycleError
from downcycle.artifacts.card import front_matter_license
from downcycle.recipe import CutConfig
from downcycle.reporting.card import card_text, write_card
from downcycle.surgery.cut import cut
from downcycle.surgery.plan import Plan


def _split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    _, meta, body = card.split("---\n", 2)
    return yaml.safe_load(meta), body


def test_cut_card_from_layers_inherits_the_licence(tiny_model, tmp_path, reference_readme):
    src = tmp_path / "my-model"
    shutil.copytree(tiny_model("llama"), src)
    (src / "README.md").write_text(reference_readme)
    cut(CutConfig(source=str(src), out=tmp_path / "out", layers="0-2,4"))
    meta, body = _split((tmp_path / "out" / "README.md").read_text())
    assert meta == {"base_model": "my-model", "library_name": "transformers", "license": "apache-2.0",
                    "tags": ["downcycle", "layer-pruning"]}
    assert body.startswith("\n# out\n")  # the output's name, not the temporary directory's
    assert "kept 4 of 6 decoder layers (source layers 0-2,4)" in body and "Dropped layers: [3, 5]" in body
    assert "`--layers 0-2,4`" in body
    assert "strategy" not in body and "Trained" not in body and "Evaluation" not in body  # nothing the manifest does not say


def test_cut_card_from_a_plan_names_strategy_and_score(tiny_model, tmp_path):
    src = tiny_model("qwen2")  # no README: no licence to inherit
    plan = tmp_path / "plan.json"
    Plan([0, 1, 2, 5], source_layers=6, strategy="block", details={"metric": "angular-last", "score_of_choice": {"d(3,5)": 0.125}}).save(plan)
    out = cut(CutConfig(source=str(src), out=tmp_path / "out", plan=plan)).out
    meta, body = _split((out / "README.md").read_text())
    assert "license" not in meta and "datasets" not in meta
    assert "strategy `block`, metric `angular-last`" in body and '`{"d(3,5)": 0.125}`' in body and "kept 4 of 6" in body


def test_healed_card_walks_back_to_the_cut_and_its_source(experiment):
    card = (experiment / "sweep" / "a-healed" / "README.md").read_text()  # written by `train` (maybe refreshed by a report)
    meta, body = _split(card)
    manifest = json.loads((experiment / "sweep" / "a-healed" / "downcycle.json").read_text())
    assert meta["base_model"] == "ref" and meta["license"] == "apache-2.0"  # the reference's card, through the cut
    assert meta["tags"] == ["downcycle", "layer-pruning", "lora"] and "datasets" not in meta  # local files are no hub ids
    assert "kept 3 of 6 decoder layers" in body and "`--layers 0-2`" in body
    assert f"on {manifest['outputs']['tokens']:,} tokens ({manifest['outputs']['steps']} optimizer steps" in body
    assert "`lora_r=4`" in body and "`lr=0.001`" in body and "kjv.jsonl.gz" in body
    assert body.index("**Cut**") < body.index("**Trained**")  # in the order it was made


def test_card_from_manifests_only_hub_source_and_datasets(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "downcycle.json").write_text(json.dumps({"stage": "data", "inputs": {"sources": ["hf:org/fineweb@train", "local.jsonl"]}}))
    model = tmp_path / "student"
    model.mkdir()
    (model / "downcycle.json").write_text(json.dumps({
        "stage": "train", "config": {"method": "distill", "lr": 1e-4, "teacher": "org/teacher", "distill_alpha": 0.5},
        "inputs": {"model": {"source": "meta-llama/Meta-Llama-3-8B", "path": str(tmp_path / "gone")}, "data": {"path": str(corpus)}},
        "outputs": {"tokens": 1000, "steps": 10, "global_batch_sequences": 4, "seq_len": 25}}))
    meta, body = _split(card_text(model))
    assert meta == {"base_model": "meta-llama/Meta-Llama-3-8B", "datasets": ["org/fineweb"], "library_name": "transformers",
                    "tags": ["downcycle", "distillation"]}  # not cut here: no layer-pruning tag, no licence claimed
    assert "`teacher=org/teacher`" in body and "`distill_alpha=0.5`" in body and "1,000 tokens (10 optimizer steps" in body
    assert "Cut" not in body


def test_front_matter_licence(tmp_path):
    readme = tmp_path / "README.md"
    for text, want in (("---\nlicense: llama3\n---\n# x", "llama3"), ("# no front matter\nlicense: mit", None),
                       ("---\ntags: [a]\n---\n", None), ("---\n: [bad yaml\n---\n", None)):
        readme.write_text(text)
        assert front_matter_license(readme) == want, text
    assert front_matter_license(tmp_path / "missing.md") is None


def test_card_command_with_results_and_errors(experiment, tmp_path, capsys):
    from downcycle.cli import main

    model, results = experiment / "sweep" / "b", experiment / "scores" / "b" / "results.json"
    assert main(["card", str(model), "--results", str(results)]) == 0
    nll = json.loads(results.read_text())["tasks"]["loss"]["metrics"]["nll"]["value"]
    card = (model / "README.md").read_text()
    assert f"| loss | nll | {nll:.4f} |" in card and "strategy `block`" in card
    assert main(["card", str(tmp_path)]) == 1
    assert "no downcycle.json of a cut, prune, heal or train stage" in capsys.readouterr().err
    with pytest.raises(DowncycleError):
        write_card(experiment / "scores")  # an eval directory is not a model
