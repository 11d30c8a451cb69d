"""Nothing lost, ever: an output may not be, contain or sit inside any of its command's inputs.

Every command that writes an output directory (the config fields marked ``role=OUTPUT``) is tried
with that output set to each of its inputs (``role=INPUT``), inside one, and holding one, with
``--force``: each is refused in one line naming the input, before any model loads, and every input
file is byte-identical afterwards. The last test checks that the cases cover every input field of
every such command, so a new input field gets its case (and the rule) or fails here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from downcycle import cli
from downcycle.artifacts.atomic import check_output_apart
from downcycle.errors import DowncycleError
from downcycle.recipe.fields import INPUT, OUTPUT

TEXT = '{"text": "In the beginning God created the heaven and the earth."}\n' * 40

# (command, the input's label in the message, command line; {IN}: the input, {OUT}: the output)
CASES = [
    ("cut", "source", "cut {IN} {OUT} --layers 0-1 --force"),
    ("cut", "--plan", "cut {W}/model {OUT} --plan {IN} --force"),
    ("cut", "--data", "cut {W}/model {OUT} --keep 2 --data {IN} --force"),
    ("prune", "source", "prune {IN} {OUT} --ffn 16 --scores {W}/scores.json --force"),
    ("prune", "--scores", "prune {W}/model {OUT} --ffn 16 --scores {IN} --force"),
    ("prune", "--plan", "prune {W}/model {OUT} --plan {IN} --force"),
    ("prune", "--data", "prune {W}/model {OUT} --ffn 16 --data {IN} --force"),
    ("convert", "source", "convert {IN} {OUT} --force"),
    ("train", "model", "train {IN} --data {W}/corpus --out {OUT} --force --no-progress"),
    ("train", "--data", "train {W}/model --data {IN} --out {OUT} --force --no-progress"),
    ("train", "--teacher", "train {W}/model --data {W}/corpus --out {OUT} --method distill --teacher {IN} --force --no-progress"),
    ("train", "--axolotl", "train {W}/model --data {W}/corpus --out {OUT} --axolotl {IN} --force --no-progress"),
    ("analyze", "model", "analyze {IN} --data {W}/text.jsonl --out {OUT} --force --no-progress"),
    ("analyze", "--data", "analyze {W}/model --data {IN} --out {OUT} --force --no-progress"),
    ("analyze", "--tokenizer", "analyze {W}/model --data {W}/text.jsonl --tokenizer {IN} --out {OUT} --force --no-progress"),
    ("eval", "model", "eval {IN} --data {W}/corpus --out {OUT} --force --no-progress"),
    ("eval", "--data", "eval {W}/model --data {IN} --out {OUT} --force --no-progress"),
    ("eval", "--task-data", "eval {W}/model --tasks arc_easy --task-data {IN} --out {OUT} --force --no-progress"),
    ("eval", "--harness-include", "eval {W}/model --data {W}/corpus --harness-include {IN} --out {OUT} --force --no-progress"),
    ("eval", "--reference", "eval {W}/model --data {W}/corpus --reference {IN} --out {OUT} --force --no-progress"),
    ("taskdata", "--source", "taskdata --source {IN} --out {OUT} --force"),
    ("compare", "results", "compare {IN} --out {OUT} --force"),
    ("heal", "model", "heal {IN} {OUT} --data {W}/text.jsonl --force"),
    ("heal", "--data", "heal {W}/model {OUT} --data {IN} --force"),
    ("heal", "--reference", "heal {W}/model {OUT} --data {W}/text.jsonl --reference {IN} --force"),
    ("data", "--tokenizer", "data --tokenizer {IN} --source {W}/text.jsonl --out {OUT} --force --no-progress"),
    ("data", "--source", "data --tokenizer {W}/model --source {IN} --out {OUT} --force --no-progress"),
    ("data", "--gen-prompts", "data --tokenizer {W}/model --source gen:{W}/model --gen-prompts {IN} --tokens 1K --out {OUT} --force"),
]
# the input each case's {IN} names, under the workspace
INPUT_OF = {"source": "model", "--plan": "plan.json", "--data": "text.jsonl", "--scores": "scores.json", "model": "model",
            "--teacher": "teacher", "--axolotl": "axolotl.yaml", "--tokenizer": "tokenizer", "--task-data": "tasks",
            "--harness-include": "harness", "--source": "text.jsonl", "results": "eval", "--gen-prompts": "prompts.txt",
            "--reference": "teacher"}
SPECIAL = {("train", "--data"): "corpus", ("eval", "--data"): "corpus", ("taskdata", "--source"): "olmo.whl",
           ("prune", "--plan"): "width_plan.json"}


@pytest.fixture
def workspace(real_model, real_corpus, tmp_path):
    """A private copy of every input the cases name, in one directory ``W`` (the model's weights
    are a few MB)."""
    w = tmp_path / "w"
    w.mkdir()
    shutil.copytree(real_model, w / "model")
    shutil.copytree(real_corpus, w / "corpus")
    shutil.copytree(real_model, w / "teacher")
    (w / "tokenizer").mkdir()
    for f in real_model.glob("tokenizer*"):
        shutil.copy2(f, w / "tokenizer" / f.name)
    for name in ("tasks", "harness", "eval/model"):
        (w / name).mkdir(parents=True)
    (w / "eval" / "model" / "results.json").write_text("{}")
    files = {"plan.json": '{"kept_layers": [0, 1]}', "scores.json": "{}", "width_plan.json": "{}", "text.jsonl": TEXT,
             "axolotl.yaml": "micro_batch_size: 1\n", "olmo.whl": "not a wheel", "prompts.txt": "In the beginning\n",
             "tasks/arc_easy.test.jsonl": "{}\n", "harness/task.yaml": "task: x\n"}
    for name, text in files.items():
        (w / name).write_text(text)
    return w


def _input(command: str, label: str, w: Path) -> Path:
    return w / SPECIAL.get((command, label), INPUT_OF[label])


@pytest.mark.parametrize("relation", ["is", "inside", "holds"])
@pytest.mark.parametrize("command, label, template", CASES, ids=[f"{c}-{lab.lstrip('-')}" for c, lab, _ in CASES])
def test_an_output_that_is_in_or_holds_an_input_is_refused(command, label, template, relation, workspace, capsys, monkeypatch,
                                                           refused, tree_hash):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    w, given = workspace, _input(command, label, workspace)
    out = {"is": given, "inside": given / "sub", "holds": w}[relation]
    before = tree_hash(w)
    line = refused(capsys, template.format(W=w, IN=given, OUT=out).split(), [str(out), "must not be the"])
    if relation != "holds":  # holding the whole workspace, any input may be named first
        assert f"must not be the {label} ({given})" in line, line
    assert tree_hash(w) == before
    assert not [p for p in w.parent.iterdir() if p.name.startswith(".")], "a temporary was left beside the workspace"


def test_every_input_of_every_command_that_writes_an_output_has_its_case():
    """The rule follows the fields: each ``role=INPUT`` field of a command with a ``role=OUTPUT`` field is tried above."""
    from downcycle.recipe.fields import _label

    covered = {(c, lab) for c, lab, _ in CASES}
    writers = {name for name, spec in cli.COMMANDS.items()
               if any(f.metadata.get("role") == OUTPUT for f in dataclasses.fields(spec.config))}
    assert writers == {"cut", "prune", "convert", "train", "analyze", "eval", "taskdata", "compare", "data", "heal"}
    wanted = {(name, _label(f)) for name in writers for f in dataclasses.fields(cli.COMMANDS[name].config)
              if f.metadata.get("role") == INPUT}
    assert wanted == covered, (wanted - covered, covered - wanted)


def test_run_refuses_a_stage_output_that_is_the_reference_before_any_stage(real_model, tmp_path, capsys, refused, tree_hash):
    """A recipe whose cut would be written over its reference (the reference lives where the cut
    goes): refused before the first stage, with and without --dry-run."""
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copytree(real_model, exp / "cut-a")
    (tmp_path / "text.jsonl").write_text(TEXT)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"reference: {exp / 'cut-a'}\nout: {exp}\ndata: {{source: {tmp_path / 'text.jsonl'}, seq_len: 16}}\n"
                      "cuts:\n  - {name: a, layers: '0-1'}\n")
    before = tree_hash(tmp_path)
    for extra in (["--dry-run"], []):
        refused(capsys, ["run", recipe, *extra], [str(exp / "cut-a"), "must not be the source"])
    assert tree_hash(tmp_path) == before


def test_the_rule_itself(tmp_path):
    """Symlinks are followed; hub ids, missing paths and siblings with a common prefix are not inputs
    at risk; a glob's matches and a gen: source's model directory are."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.txt").write_text("x")
    os.symlink(model, tmp_path / "link")
    refuse = [(tmp_path / "link", [("MODEL", model)]), (tmp_path / "out", [("--data", tmp_path / "link" / "..")]),
              (model / "a.txt", [("--source", str(tmp_path / "model" / "*.txt"))]), (model, [("--source", f"gen:{model}")])]
    for out, inputs in refuse:
        with pytest.raises(DowncycleError, match="must not be the"):
            check_output_apart(out, inputs)
    allow = [(tmp_path / "model2", [("MODEL", model)]), (tmp_path / "org", [("MODEL", "org/name")]),
             (tmp_path / "out", [("--data", "hf:org/name")]), (tmp_path / "out", [("--data", tmp_path / "nope")]),
             (tmp_path / "out", [("--source", str(model / "*.txt"))])]
    for out, inputs in allow:
        check_output_apart(out, inputs)
