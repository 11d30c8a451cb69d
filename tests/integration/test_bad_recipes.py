"""A recipe's typo is refused before its first stage runs, with and without --dry-run.

Every name a recipe gives (tasks, training methods, distillation losses, optimizers, strategies,
metrics, corpora) is resolved against its registry as the recipe is read; a run that would have
built the corpus, analysed and cut first, and only then reported the typo, now writes nothing.
Each refusal is one line naming the recipe, the key and the value; the recipe and the reference
are byte-identical afterwards and no experiment directory appears.
"""

from __future__ import annotations

import pytest

TEXT = '{"text": "In the beginning God created the heaven and the earth. And the earth was without form."}\n' * 40
HEAL = "heal:\n  - {name: h, method: full, max_steps: 1"

# (id, recipe lines after reference/out/data, the key, the bad value)
CASES = [
    ("eval-task", "cuts:\n  - {name: a, keep: 2}\neval: {tasks: 'loss,helaswag'}\n", "eval.tasks", "'helaswag'"),
    ("heal-method", "cuts:\n  - {name: a, keep: 2}\n" + HEAL.replace("full", "ful") + "}\n", "heal[0].method", "'ful'"),
    ("distill-loss", "cuts:\n  - {name: a, keep: 2}\n" + HEAL.replace("full", "distill") + ", distill_loss: kl}\n",
     "heal[0].distill_loss", "'kl'"),
    ("optimizer", "cuts:\n  - {name: a, keep: 2}\n" + HEAL + ", optimizer: sgd}\n", "heal[0].optimizer", "'sgd'"),
    ("cut-metric", "cuts:\n  - {name: a, keep: 2, strategy: bi, metric: angle}\n", "cuts[0].metric", "angle"),
    ("cut-metric-kind", "cuts:\n  - {name: a, keep: 2, strategy: block, metric: bi}\n", "cuts[0].metric", "bi"),
    ("cut-strategy", "cuts:\n  - {name: a, keep: 2, strategy: blok}\n", "cuts[0].strategy", "'blok'"),
    ("heal-corpus", "cuts:\n  - {name: a, keep: 2}\n" + HEAL + ", corpus: chat}\n", "heal[0].corpus", "'chat'"),
    ("heal-cut", "cuts:\n  - {name: a, keep: 2}\n" + HEAL + ", cuts: [b]}\n", "heal[0].cuts", "'b'"),
]


@pytest.fixture
def recipe(real_model, tmp_path):
    """``recipe(lines)`` -> the path of a recipe with the tiny model as reference and a small text."""
    (tmp_path / "text.jsonl").write_text(TEXT)

    def make(lines: str):
        path = tmp_path / "r.yaml"
        path.write_text(f"reference: {real_model}\nout: {tmp_path / 'exp'}\n"
                        f"data: {{source: {tmp_path / 'text.jsonl'}, seq_len: 16, tokens: 1K}}\n" + lines)
        return path

    return make


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case, lines, key, value", CASES, ids=[c[0] for c in CASES])
def test_a_recipe_name_is_resolved_before_the_first_stage(case, lines, key, value, dry_run, recipe, real_model, tmp_path, capsys,
                                                          refused, tree_hash):
    path = recipe(lines)
    before = (tree_hash(tmp_path), tree_hash(real_model))
    refused(capsys, ["run", path] + (["--dry-run"] if dry_run else []), [str(path), key, value])
    assert not (tmp_path / "exp").exists()
    assert (tree_hash(tmp_path), tree_hash(real_model)) == before


def test_an_unknown_task_lists_each_known_task_once(recipe, capsys, refused):
    line = refused(capsys, ["run", recipe(CASES[0][1]), "--dry-run"], ["unknown task 'helaswag'", "known: loss, hellaswag"])
    known = line.split("known: ", 1)[1].rstrip(")").split(", ")
    assert len(known) == len(set(known)), known


def test_a_sweep_depth_out_of_range_names_depths_not_keep(recipe, tmp_path, capsys, refused):
    """`sweep --depths 99` on a 6-layer reference: the option the user typed, not the recipe's `--keep`."""
    path = recipe("cuts:\n  - {name: a, keep: 2}\n")
    line = refused(capsys, ["sweep", path, "--depths", "0.5,99", "--dry-run"], ["--depths '99'", "between 1 and 6"])
    assert "--keep" not in line and "cuts[0]" not in line
    assert not (tmp_path / "exp-sweep").exists()


def test_good_names_still_pass_a_dry_run(recipe, capsys):
    from downcycle import cli

    lines = ("cuts:\n  - {name: a, keep: 2, strategy: bi, metric: angular-mean}\n" + HEAL.replace("full", "distill")
             + ", distill_loss: reverse_kl, optimizer: adamw}\neval: {tasks: 'loss,hellaswag,mmlu_anatomy'}\n")
    assert cli.main(["run", str(recipe(lines)), "--dry-run"]) == 0, capsys.readouterr().err
