"""Continuous per-item metrics and their paired comparison (gold log-likelihood, its per-character
form, Brier score, choice KL, flips), against hand computations, on hand-made samples files: no model
is loaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from downcycle.evaluation.metrics import choice_log_probs, item_metrics, ratio_stderr
from downcycle.reporting.item_metrics import MULTI_GOLD, NO_CHARS, choice_kl, read_task_items
from downcycle.reporting.paired import paired_diff

LN = math.log


def test_brier_gold_ll_and_per_character_known_answer():
    # probabilities 0.5, 0.3, 0.2 (log-likelihoods shifted by -3: the softmax does not see a constant)
    lls = [LN(0.5) - 3, LN(0.3) - 3, LN(0.2) - 3]
    m = item_metrics(lls, 1, [4, 10, 7])
    assert m["brier"] == pytest.approx(0.5 ** 2 + (0.3 - 1) ** 2 + 0.2 ** 2)  # 0.78
    assert m["gold_ll"] == lls[1] and m["gold_ll_char"] == pytest.approx((LN(0.3) - 3) / 10)
    assert item_metrics(lls, 0, None)["gold_ll_char"] is None
    assert item_metrics([0.0, -1e4], 0, [1, 1])["brier"] == pytest.approx(0.0)  # certain and right
    assert item_metrics([0.0, -1e4], 1, [1, 1])["brier"] == pytest.approx(2.0)  # certain and wrong
    assert [math.exp(x) for x in choice_log_probs([-1000.0, -1000.0 + LN(3)])] == pytest.approx([0.25, 0.75])  # no underflow


def test_choice_kl_known_answer():
    base, model = [LN(0.5), LN(0.3), LN(0.2)], [LN(0.2) - 7, LN(0.5) - 7, LN(0.3) - 7]
    want = 0.5 * LN(0.5 / 0.2) + 0.3 * LN(0.3 / 0.5) + 0.2 * LN(0.2 / 0.3)
    assert choice_kl(base, model) == pytest.approx(want)
    assert choice_kl(base, [x + 1 for x in base]) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError):
        choice_kl(base, model[:2])


def test_ratio_stderr_known_answer():
    # documents of 2 and 4 tokens with totals 1 and 5: R = 1; residuals -1, 1; SE = sqrt(2 / 1 * 2) / 6
    assert ratio_stderr([1.0, 5.0], [2, 4]) == pytest.approx(math.sqrt(4) / 6)
    assert ratio_stderr([1.0], [3]) is None


BASE_RIGHT = [1, 1, 0, 0, 1, 0]
MODEL_RIGHT = [1, 0, 1, 0, 0, 0]  # right -> wrong: items 1 and 4; wrong -> right: item 2


@pytest.fixture
def flip_files(record, write_model):
    """``flip_files(root, new=True)`` -> the base's and the model's directories of six items."""

    def write(root: Path, new: bool = True) -> tuple[Path, Path]:
        base = [record(i, i % 3, bool(r), -2.0 - 0.1 * i, new=new) for i, r in enumerate(BASE_RIGHT)]
        model = [record(i, i % 3, bool(r), -2.5 - 0.05 * i, new=new) for i, r in enumerate(MODEL_RIGHT)]
        return write_model(root, "base", {"arc_easy": base}), write_model(root, "model", {"arc_easy": model})

    return write


def test_flips_and_paired_values_on_six_items(tmp_path, flip_files, lls_with, choice_chars):
    from downcycle.reporting.item_metrics import compare_items

    b, m = flip_files(tmp_path)
    a = read_task_items(m / "samples", "arc_easy", "acc")
    z = read_task_items(b / "samples", "arc_easy", "acc")
    row = compare_items("arc_easy", "model", "base", a, z)
    assert (row.n, row.right_to_wrong, row.wrong_to_right) == (6, 2, 1) and row.flips == pytest.approx(0.5)
    assert (row.acc.value, row.acc.se) == pytest.approx(paired_diff(MODEL_RIGHT, BASE_RIGHT))
    gm = [-2.5 - 0.05 * i for i in range(6)]
    gb = [-2.0 - 0.1 * i for i in range(6)]
    assert (row.gold_ll.value, row.gold_ll.se) == pytest.approx(paired_diff(gm, gb))
    assert (row.gold_ll_char.value, row.gold_ll_char.se) == pytest.approx(
        paired_diff([g / choice_chars[i % 3] for i, g in enumerate(gm)], [g / choice_chars[i % 3] for i, g in enumerate(gb)]))
    bm = [item_metrics(lls_with(i % 3, bool(r), g), i % 3, None)["brier"] for i, (r, g) in enumerate(zip(MODEL_RIGHT, gm))]
    bb = [item_metrics(lls_with(i % 3, bool(r), g), i % 3, None)["brier"] for i, (r, g) in enumerate(zip(BASE_RIGHT, gb))]
    assert (row.brier.value, row.brier.se) == pytest.approx(paired_diff(bm, bb))
    kls = [choice_kl(lls_with(i % 3, bool(rb), g2), lls_with(i % 3, bool(rm), g1))
           for i, (rm, rb, g1, g2) in enumerate(zip(MODEL_RIGHT, BASE_RIGHT, gm, gb))]
    mean = sum(kls) / 6
    assert row.choice_kl.value == pytest.approx(mean)
    assert row.choice_kl.se == pytest.approx(math.sqrt(sum((k - mean) ** 2 for k in kls) / 5 / 6))


def test_older_samples_are_derived_from_loglikelihoods(tmp_path, flip_files):
    """Samples written before eval recorded the new fields: gold_ll and brier from the
    log-likelihoods (the same values), the per-character form missing, with the reason."""
    from downcycle.reporting.item_metrics import compare_items

    new_b, new_m = flip_files(tmp_path / "new")
    old_b, old_m = flip_files(tmp_path / "old", new=False)
    assert "gold_ll" not in json.loads((old_m / "samples" / "arc_easy.jsonl").read_text().splitlines()[0])
    new = compare_items("t", "m", "b", read_task_items(new_m / "samples", "arc_easy", "acc"), read_task_items(new_b / "samples", "arc_easy", "acc"))
    old = compare_items("t", "m", "b", read_task_items(old_m / "samples", "arc_easy", "acc"), read_task_items(old_b / "samples", "arc_easy", "acc"))
    for name in ("acc", "gold_ll", "brier", "choice_kl"):
        assert (getattr(old, name).value, getattr(old, name).se) == pytest.approx((getattr(new, name).value, getattr(new, name).se))
    assert old.gold_ll_char is None and old.note == NO_CHARS and new.note is None
    assert (old.right_to_wrong, old.wrong_to_right) == (2, 1)


def test_equal_accuracy_but_gold_ll_moves_beyond_two_standard_errors(tmp_path, record, write_model):
    """The point of the continuous metrics: the same answers right and wrong, so accuracy cannot
    move, while every gold log-likelihood rose by about 0.1 nats."""
    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    right = [i % 3 != 0 for i in range(30)]
    base = [record(i, i % 3, r, -3.0 + 0.01 * (i % 7)) for i, r in enumerate(right)]
    model = [record(i, i % 3, r, -2.9 + 0.01 * (i % 7) + 0.002 * (i % 2)) for i, r in enumerate(right)]
    write_model(tmp_path, "base", {"arc_easy": base}, 2000)
    write_model(tmp_path, "healed", {"arc_easy": model})
    run_compare(CompareConfig(results=[str(tmp_path / "base"), str(tmp_path / "healed")], out=tmp_path / "cmp", plots=False))
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    task = next(r for r in doc["item_paired"] if r["task"] == "arc_easy")
    assert task["acc"] == {"diff": 0.0, "se": 0.0, "significant": False}
    assert task["flips"] == {"right_to_wrong": 0, "wrong_to_right": 0, "fraction": 0.0}
    d = [(-2.9 + 0.002 * (i % 2)) - (-3.0) for i in range(30)]
    mean, se = paired_diff(d, [0.0] * 30)
    assert task["gold_ll"]["diff"] == pytest.approx(mean) and task["gold_ll"]["se"] == pytest.approx(se)
    assert task["gold_ll"]["significant"] and abs(mean) > 2 * se
    assert task["choice_kl"]["mean"] > 0


def test_compare_writes_per_task_and_pooled_tables(tmp_path, record, write_model):
    """Two benchmarks, a multi-gold task and a generative one; pairs given with --pairs; the pooled
    row is paired_diff over the concatenated items of the pooled tasks."""
    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    piqa_b = [record(i, i % 2, i % 3 != 1, -1.0 - 0.2 * i) for i in range(5)]
    piqa_m = [record(i, i % 2, i % 2 == 0, -1.3 - 0.1 * i) for i in range(5)]
    arc_b = [record(i, 0, i < 2, -2.0 + 0.3 * i) for i in range(4)]
    arc_m = [record(i, 0, i > 1, -2.2 + 0.1 * i) for i in range(4)]
    mc2 = [{"doc": 0, "gold": 0, "loglikelihoods": [-1.0, -2.0], "acc": 0.7}]
    gsm = [{"doc": 0, "target": "4", "exact_match": 1.0}]
    write_model(tmp_path, "ref", {"arc_easy": arc_b, "piqa": piqa_b, "truthfulqa_mc2": mc2, "gsm8k": gsm}, 2000)
    write_model(tmp_path, "cut", {"arc_easy": arc_m, "piqa": piqa_m, "truthfulqa_mc2": mc2, "gsm8k": gsm})
    result = run_compare(CompareConfig(results=[str(tmp_path / "ref"), str(tmp_path / "cut")], out=tmp_path / "cmp", plots=False,
                                       pairs="cut:ref,ref:cut", pool_exclude="piqa"))
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["item_paired"]
    assert [(r["task"], r["model"], r["baseline"]) for r in rows] == [
        (t, m, b) for m, b in (("cut", "ref"), ("ref", "cut")) for t in ("arc_easy", "piqa", "truthfulqa_mc2", "gsm8k", "pooled")]
    by = {(r["task"], r["model"]): r for r in rows}
    assert by["truthfulqa_mc2", "cut"]["note"] == MULTI_GOLD and by["truthfulqa_mc2", "cut"]["n"] == 0
    assert by["gsm8k", "cut"]["note"] == "no choice log-likelihoods"
    assert by["pooled", "cut"]["tasks"] == ["arc_easy"] and by["pooled", "cut"]["n"] == 4  # piqa excluded from the pool
    result = run_compare(CompareConfig(results=[str(tmp_path / "ref"), str(tmp_path / "cut")], out=tmp_path / "cmp2", plots=False,
                                       reference="ref"))
    rows = json.loads((tmp_path / "cmp2" / "compare.json").read_text())["item_paired"]
    pooled = next(r for r in rows if r["task"] == "pooled")
    assert (pooled["model"], pooled["baseline"], pooled["tasks"], pooled["n"]) == ("cut", "ref", ["arc_easy", "piqa"], 9)
    gold = lambda rs: [r["gold_ll"] for r in rs]
    mean, se = paired_diff(gold(arc_m) + gold(piqa_m), gold(arc_b) + gold(piqa_b))
    assert pooled["gold_ll"]["diff"] == pytest.approx(mean) and pooled["gold_ll"]["se"] == pytest.approx(se)
    acc = lambda rs: [r["acc"] for r in rs]
    mean, se = paired_diff(acc(arc_m) + acc(piqa_m), acc(arc_b) + acc(piqa_b))
    assert pooled["acc"]["diff"] == pytest.approx(mean) and pooled["acc"]["se"] == pytest.approx(se)
    flips = [(b, m) for b, m in zip(acc(arc_b) + acc(piqa_b), acc(arc_m) + acc(piqa_m)) if b != m]
    assert pooled["flips"]["right_to_wrong"] == sum(1 for b, _ in flips if b) and pooled["flips"]["fraction"] == len(flips) / 9
    # the Markdown tables carry the same numbers
    md = (tmp_path / "cmp2" / "compare.md").read_text()
    assert "## Paired item metrics" in md and "### Pooled over tasks" in md and "### Per task" in md
    line = next(x for x in md.splitlines() if x.startswith("| arc_easy, piqa | cut | ref | 9 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5].startswith(f"{pooled['gold_ll']['diff']:+.4f} ± {pooled['gold_ll']['se']:.4f}")
    assert cells[9] == f"{pooled['flips']['right_to_wrong']} / {pooled['flips']['wrong_to_right']} ({len(flips) / 9:.1%})"
    assert cells[5].endswith(" *") == pooled["gold_ll"]["significant"]
    assert result.markdown == md


def test_compare_of_older_samples_shows_a_dash_for_the_per_character_form(tmp_path, flip_files):
    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    flip_files(tmp_path, new=False)
    result = run_compare(CompareConfig(results=[str(tmp_path / "base"), str(tmp_path / "model")], out=tmp_path / "cmp", plots=False))
    line = next(x for x in result.markdown.splitlines() if x.startswith("| arc_easy | model | base | 6 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[6] == "–" and cells[9] == "2 / 1 (50.0%)" and cells[10] == NO_CHARS
    row = json.loads((tmp_path / "cmp" / "compare.json").read_text())["item_paired"][0]
    assert row["gold_ll_char"] is None and row["gold_ll"]["diff"] is not None


def test_pairs_option_is_checked(tmp_path):
    from downcycle.errors import DowncycleError
    from downcycle.reporting.item_paired import parse_pairs

    assert parse_pairs("a:b, c:a", ["a", "b", "c"]) == [("a", "b"), ("c", "a")]
    for bad, match in (("a", "MODEL:BASELINE"), ("a:z", "no model named 'z'"), (",", "no pair")):
        with pytest.raises(DowncycleError, match=match):
            parse_pairs(bad, ["a", "b"])
