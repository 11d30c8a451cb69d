"""Bad input to `downcycle prune`: a one-line error naming the option, file or value, a non-zero exit,
no output left; and the width plan chosen from scores (top-k, ties, KV groups)."""

from __future__ import annotations

import json
import re

import pytest

from downcycle.errors import DowncycleError
from downcycle.surgery.width_plan import SCORES_KIND, WidthPlan, check_plan, select_width


def _scores(layers=2, f=6, h=4, kv=2, d=5, **override):
    doc = {"kind": SCORES_KIND, "num_layers": layers, "intermediate_size": f, "num_attention_heads": h, "num_key_value_heads": kv,
           "hidden_size": d, "ffn": [[float(i % 3) for i in range(f)] for _ in range(layers)],
           "heads": [[1.0, 3.0, 2.0, 0.5][:h] for _ in range(layers)], "kv_heads": [[1.0, 5.0][:kv] for _ in range(layers)],
           "hidden": [0.0, 2.0, 2.0, 1.0, 3.0][:d]}
    return {**doc, **override}


def test_select_width_takes_the_top_k_ties_to_the_lower_index():
    plan = select_width(_scores(), ffn=3, heads=None, kv_heads=None, hidden=3)
    assert plan.ffn == [[1, 2, 5]] * 2  # scores 0,1,2,0,1,2: the two 2s, then the first 1
    assert plan.hidden == [1, 2, 4]  # 3.0, then the two 2.0s
    assert plan.heads is None and plan.kv_heads is None


def test_select_width_ranks_query_heads_within_their_kv_group():
    # heads 1.0, 3.0 | 2.0, 0.5: globally the top two are heads 1 and 2; per group: head 1 and head 2
    assert select_width(_scores(), ffn=None, heads=2, kv_heads=None, hidden=None).heads == [[1, 2]] * 2
    globally_skewed = _scores(heads=[[2.0, 3.0, 1.0, 0.5]] * 2)  # the global top two are both in group 0
    assert select_width(globally_skewed, ffn=None, heads=2, kv_heads=None, hidden=None).heads == [[1, 2]] * 2
    kv = select_width(_scores(), ffn=None, heads=2, kv_heads=1, hidden=None)
    assert kv.kv_heads == [[1]] * 2 and kv.heads == [[2, 3]] * 2  # the more important group keeps both its heads
    mha = select_width(_scores(h=4, kv=4, heads=[[1.0, 3.0, 2.0, 0.5]] * 2), ffn=None, heads=2, kv_heads=None, hidden=None)
    assert mha.heads == mha.kv_heads == [[1, 2]] * 2  # one KV head per query head: pruned together


@pytest.mark.parametrize("sizes, needle", [
    ({"heads": 3}, "--heads 3: must be a multiple of the 2 kept KV heads"),
    ({"heads": 1}, "--heads 1: must be a multiple"),
    ({"ffn": 7}, "--ffn 7: must be between 1 and the model's 6"),
    ({"hidden": 6}, "--hidden 6"),
    ({"kv_heads": 3}, "--kv-heads 3"),
])  # fmt: skip
def test_select_width_refuses_bad_sizes(sizes, needle):
    args = {"ffn": None, "heads": None, "kv_heads": None, "hidden": None, **sizes}
    with pytest.raises(DowncycleError, match=re.escape(needle)):
        select_width(_scores(), **args)


def test_check_plan_refuses_inconsistent_plans():
    sizes = {"ffn": 6, "heads": 4, "kv_heads": 2, "hidden": 5}
    for plan, needle in [
        (WidthPlan(ffn=[[0, 1]]), "one list per source layer"),
        (WidthPlan(ffn=[[0, 1], [0]]), "keeps 2 in layer 0 but 1 in layer 1"),
        (WidthPlan(ffn=[[1, 0], [0, 1]]), "sorted and distinct"),
        (WidthPlan(ffn=[[0, 6], [0, 1]]), "index 6 is out of range 0-5"),
        (WidthPlan(heads=[[0, 1], [0, 2]]), "not the same number in each of the kept KV groups"),
        (WidthPlan(heads=[[0, 2], [2, 3]], kv_heads=[[0], [1]]), "not the same number"),
    ]:
        with pytest.raises(DowncycleError, match=needle):
            check_plan(plan, sizes, 2)


@pytest.fixture
def src(tiny_model):
    return tiny_model("llama")


@pytest.fixture
def plan_file(tmp_path, write_plan):
    """``plan_file(**fields)`` -> ``tmp_path/plan.json``, a width plan holding ``fields``."""
    return lambda **fields: write_plan(tmp_path / "plan.json", **fields)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_unknown_family_is_refused(capsys, tiny_model, tmp_path, family, plan_file, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "prune", tiny_model(family), tmp_path / "out", "--plan", plan_file(hidden=[0, 1]))
    assert_clean_failure(code, err, tmp_path / "out", f"cannot prune the width of a '{family}' model", "mixture-of-experts")


def test_heads_not_a_multiple_of_kv_heads(capsys, src, tmp_path, shape, run_cli, assert_clean_failure):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(_scores(shape.layers, shape.ffn, shape.heads, shape.kv, shape.hidden,
                                         ffn=[[1.0] * shape.ffn] * shape.layers, hidden=[1.0] * shape.hidden)))
    code, err = run_cli(capsys, "prune", src, tmp_path / "out", "--scores", scores, "--heads", "3")
    assert_clean_failure(code, err, tmp_path / "out", "--heads 3", "multiple of the 2 kept KV heads")
    code, err = run_cli(capsys, "prune", src, tmp_path / "out", "--scores", scores, "--ffn", "100")
    assert_clean_failure(code, err, tmp_path / "out", "--ffn 100", "64 (intermediate_size)")


def test_scores_of_another_model(capsys, src, tmp_path, run_cli, assert_clean_failure):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(_scores()))
    code, err = run_cli(capsys, "prune", src, tmp_path / "out", "--scores", scores, "--ffn", "3")
    assert_clean_failure(code, err, tmp_path / "out", str(scores), "num_layers=2", "the source has 6")


@pytest.mark.parametrize("argv, needle", [
    ([], "exactly one of --scores, --plan or --data"),
    (["--plan", "p.json", "--scores", "s.json"], "(got --scores, --plan)"),
    (["--scores", "s.json"], "at least one of --ffn, --heads, --kv-heads, --hidden"),
    (["--scores", "s.json", "--ffn", "0"], "--ffn 0: must be at least 1"),
    (["--plan", "p.json", "--layers", "0", "--drop", "1"], "--layers or --drop, not both"),
])  # fmt: skip
def test_option_errors(capsys, src, tmp_path, argv, needle, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "prune", src, tmp_path / "out", *argv)
    assert_clean_failure(code, err, tmp_path / "out", needle)


def test_plan_errors(capsys, src, tmp_path, shape, random_rows, plan_file, run_cli, assert_clean_failure):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "prune", src, out, "--plan", tmp_path / "missing.json")
    assert_clean_failure(code, err, out, "missing.json: not found")
    code, err = run_cli(capsys, "prune", src, out, "--plan", plan_file(ffn=random_rows(3, shape.ffn, 8, seed=0)))
    assert_clean_failure(code, err, out, "plan.json: 'ffn' must hold one list per source layer (6), not 3")
    code, err = run_cli(capsys, "prune", src, out, "--plan", plan_file(ffn=random_rows(shape.layers, shape.ffn, 8, seed=0)),
                    "--ffn", "9")
    assert_clean_failure(code, err, out, "--ffn 9", "keeps 8")
    code, err = run_cli(capsys, "prune", src, out, "--plan", plan_file(hidden=[0, 1], extra=1))
    assert_clean_failure(code, err, out, "unknown field 'extra'")


def test_mha_heads_without_hidden_is_refused(capsys, tiny_model, tmp_path, shape, plan_file, run_cli, assert_clean_failure):
    code, err = run_cli(capsys, "prune", tiny_model("gpt2"), tmp_path / "out", "--plan", plan_file(heads=[[0, 1]] * shape.layers))
    assert_clean_failure(code, err, tmp_path / "out", "--heads 2 with --hidden 32", "n_embd / n_head", "--hidden = --heads x 8")


def test_existing_output_is_refused_and_left_intact(capsys, src, tmp_path, plan_file, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "prune", src, out, "--plan", plan_file(hidden=[0, 1]))
    assert code == 1 and "already exists" in err and "--force" in err and "\n" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_tensor_without_a_rule_is_refused(capsys, tiny_model, tmp_path, plan_file, run_cli, assert_clean_failure):
    """A tensor the width table does not know (here: an extra one) is refused, never copied blindly."""
    import shutil

    from safetensors.numpy import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(tiny_model("llama"), src)
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.0.mlp.extra_scale"] = tensors["model.norm.weight"].copy()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    code, err = run_cli(capsys, "prune", src, tmp_path / "out", "--plan", plan_file(hidden=[0, 1]))
    assert_clean_failure(code, err, tmp_path / "out", "model.layers.0.mlp.extra_scale", "no llama width rule")


def test_a_config_transformers_would_not_load_is_refused(capsys, tiny_model, tmp_path, shape, plan_file, run_cli, assert_clean_failure):
    """Gemma 3's config insists on hidden_size being a multiple of the heads, though its head_dim is
    stated: 3 of 4 heads (one KV head) is refused before anything is written (found on the real
    Gemma 3 270M, whose 640 channels take 1, 2 or 4 heads), and 2 of 4 is written and loads."""
    from downcycle.loading import load_model

    src = tiny_model("gemma3_text", num_key_value_heads=1)
    code, err = run_cli(capsys, "prune", src, tmp_path / "out", "--plan", plan_file(heads=[[0, 1, 3]] * shape.layers))
    assert_clean_failure(code, err, tmp_path / "out", "--heads 3", "transformers would not load", "hidden size (32)")
    code, err = run_cli(capsys, "prune", src, tmp_path / "two", "--plan", plan_file(heads=[[0, 3]] * shape.layers))
    assert code == 0, err
    assert load_model(tmp_path / "two").config.num_attention_heads == 2
