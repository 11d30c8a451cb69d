"""``downcycle eval`` and ``downcycle compare`` end to end on tiny models: outputs, schema, manifest,
errors, and the real CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"  # the committed task items


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, build_eval_model):
    root = tmp_path_factory.mktemp("evalrun")
    return build_eval_model(root / "reference", seed=0), build_eval_model(root / "cut", seed=1, num_hidden_layers=1)


@pytest.fixture(scope="module")
def evaluated(two_models, tmp_path_factory):
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import EvalConfig

    root = tmp_path_factory.mktemp("evalout")
    data = root / "val.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["The quick brown fox jumps over the lazy dog.",
                                                                     "It was a bright cold day in April."]))
    cfg = EvalConfig(models=[str(p) for p in two_models], out=root / "eval", tasks="loss,arc_easy,mmlu,winogrande",
                     data=str(data), task_data=FIXTURES, limit=10, batch_size=8, progress=False)
    return run_eval(cfg)


def test_eval_writes_results_samples_and_manifest(evaluated):
    from downcycle.artifacts.manifest import read_manifest
    from downcycle.evaluation.results import read_results

    out = evaluated.out
    manifest = read_manifest(out)
    assert manifest["stage"] == "eval" and set(manifest["outputs"]) == {"reference", "cut"}
    res = read_results(out / "reference")
    assert res.model.parameters > 0 and "config.json" in res.model.hashes
    assert set(res.tasks) >= {"loss", "arc_easy", "mmlu", "winogrande", "mmlu_anatomy", "mmlu_abstract_algebra"}
    mmlu = res.tasks["mmlu"]
    assert mmlu.kind == "group" and mmlu.n_shot == 5 and mmlu.n == 20
    assert mmlu.subtasks == ["mmlu_abstract_algebra", "mmlu_anatomy"]
    arc = res.tasks["arc_easy"]
    assert arc.n == 10 and arc.limit == 10 and arc.version == "1.0" and arc.metrics["acc"].stderr is not None
    samples = [json.loads(line) for line in (out / "reference" / "samples" / "arc_easy.jsonl").read_text().splitlines()]
    assert len(samples) == 10
    assert arc.metrics["acc"].value == pytest.approx(sum(s["acc"] for s in samples) / 10)
    pooled = [json.loads(x)["acc"] for t in ("mmlu_anatomy", "mmlu_abstract_algebra")
              for x in (out / "reference" / "samples" / f"{t}.jsonl").read_text().splitlines()]
    assert mmlu.metrics["acc"].value == pytest.approx(sum(pooled) / 20)


def test_eval_writes_the_continuous_item_metrics(evaluated):
    """Every single-answer item's sample carries its choices' lengths (those acc_norm divides by), the
    gold log-likelihood, its per-character form and the Brier score, as computed here by hand."""
    import numpy as np

    from downcycle.evaluation.task_data import load_docs
    from downcycle.evaluation.tasks import TASKS

    for model in ("reference", "cut"):
        for task in ("arc_easy", "winogrande", "mmlu_anatomy"):
            spec = TASKS[task]
            docs = load_docs(spec, spec.split, FIXTURES)
            lines = (evaluated.out / model / "samples" / f"{task}.jsonl").read_text().splitlines()
            assert len(lines) == 10
            for line in lines:
                s = json.loads(line)
                choices, gold = spec.request(docs[s["doc"]], []).choices, s["gold"]
                chars = np.array([len(c) for c in choices], dtype=float)
                assert s["choice_chars"] == [len(c) for c in choices]
                lls = np.array(s["loglikelihoods"], dtype=np.float64)
                p = np.exp(lls - lls.max()) / np.exp(lls - lls.max()).sum()
                assert s["gold_ll"] == lls[gold] and s["gold_ll_char"] == pytest.approx(lls[gold] / chars[gold], rel=1e-12)
                assert s["brier"] == pytest.approx(float(((p - np.eye(len(lls))[gold]) ** 2).sum()), rel=1e-9, abs=1e-12)
                if "acc_norm" in s:  # the same lengths decide acc_norm
                    assert s["acc_norm"] == float(np.argmax(lls / chars) == gold)


def test_compare_item_metrics_equal_a_computation_from_the_samples(evaluated, tmp_path):
    """compare.json's item rows (cut vs reference), per task and pooled, recomputed with numpy from the
    samples files alone."""
    import numpy as np

    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    run_compare(CompareConfig(results=[str(evaluated.out)], out=tmp_path / "cmp", reference="reference", plots=False))
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["item_paired"]
    assert [(r["task"], r["model"], r["baseline"]) for r in rows] == [(t, "cut", "reference") for t in ("arc_easy", "mmlu", "winogrande", "pooled")]
    parts = {"arc_easy": (["arc_easy"], "acc_norm"), "mmlu": (["mmlu_abstract_algebra", "mmlu_anatomy"], "acc"), "winogrande": (["winogrande"], "acc")}

    def items(model: str, tasks: list[str]) -> list[dict]:
        """Each item of ``tasks``, in pooled order: its correctness, gold log-likelihoods, Brier score and choice distribution."""
        out = []
        for t in tasks:
            names, metric = parts[t]
            for n in names:
                for line in (evaluated.out / model / "samples" / f"{n}.jsonl").read_text().splitlines():
                    r = json.loads(line)
                    lls, g = np.array(r["loglikelihoods"], dtype=np.float64), r["gold"]
                    p = np.exp(lls - lls.max()) / np.exp(lls - lls.max()).sum()
                    out.append({"acc": r[metric], "gold_ll": lls[g], "gold_ll_char": lls[g] / r["choice_chars"][g],
                                "brier": float(((p - np.eye(len(p))[g]) ** 2).sum()), "p": p})
        return out

    for row in rows:
        tasks = row["tasks"]
        assert tasks == (["arc_easy", "mmlu", "winogrande"] if row["task"] == "pooled" else [row["task"]])
        m, b = items("cut", tasks), items("reference", tasks)
        assert row["n"] == len(m) == len(b)
        for name in ("acc", "gold_ll", "gold_ll_char", "brier"):
            d = np.array([x[name] for x in m]) - np.array([y[name] for y in b])
            se = d.std(ddof=1) / np.sqrt(len(d))
            assert row[name]["diff"] == pytest.approx(d.mean(), abs=1e-12) and row[name]["se"] == pytest.approx(se, abs=1e-12)
            assert row[name]["significant"] == bool(abs(d.mean()) > 2 * se)
        kl = np.array([float((y["p"] * np.log(y["p"] / x["p"])).sum()) for x, y in zip(m, b)])
        assert row["choice_kl"]["mean"] == pytest.approx(kl.mean(), rel=1e-9)
        assert row["choice_kl"]["se"] == pytest.approx(kl.std(ddof=1) / np.sqrt(len(kl)), rel=1e-9)
        assert row["flips"]["right_to_wrong"] == sum(1 for x, y in zip(m, b) if y["acc"] and not x["acc"])
        assert row["flips"]["wrong_to_right"] == sum(1 for x, y in zip(m, b) if x["acc"] and not y["acc"])
        assert row["flips"]["fraction"] == sum(x["acc"] != y["acc"] for x, y in zip(m, b)) / len(m)


def test_eval_refuses_existing_output(two_models, evaluated):
    from downcycle.errors import DowncycleError
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import EvalConfig

    with pytest.raises(DowncycleError, match="already exists"):
        run_eval(EvalConfig(models=[str(two_models[0])], out=evaluated.out, tasks="arc_easy"))


def test_compare_tables_and_plots(evaluated, tmp_path):
    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    result = run_compare(CompareConfig(results=[str(evaluated.out)], out=tmp_path / "cmp", reference="reference"))
    out = result.out
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["model"] for r in rows] == ["cut", "reference"]
    ref, cut = rows[1], rows[0]
    assert float(ref["arc_easy/acc delta"]) == 0.0
    assert float(cut["arc_easy/acc delta"]) == pytest.approx(float(cut["arc_easy/acc"]) - float(ref["arc_easy/acc"]))
    assert float(cut["parameters"]) < float(ref["parameters"])
    table = json.loads((out / "compare.json").read_text())
    assert table["reference"] == "reference" and "loss/bits_per_byte" in table["columns"]
    assert "| reference (reference) |" in result.markdown
    for task in ("loss", "arc_easy", "mmlu", "winogrande"):
        assert (out / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_unknown_reference(evaluated, tmp_path):
    from downcycle.errors import DowncycleError
    from downcycle.recipe import CompareConfig
    from downcycle.reporting.compare import run_compare

    with pytest.raises(DowncycleError, match="--reference 'nope'"):
        run_compare(CompareConfig(results=[str(evaluated.out)], out=tmp_path / "c", reference="nope"))


def test_cli_eval_and_compare(two_models, tmp_path, capsys):
    from downcycle.cli import main

    out = tmp_path / "cli-eval"
    assert main(["eval", str(two_models[0]), str(two_models[1]), "--out", str(out), "--tasks", "piqa", "--limit", "4",
                 "--task-data", str(FIXTURES), "--no-progress"]) == 0
    assert "piqa acc=" in capsys.readouterr().out
    assert main(["compare", str(out / "reference" / "results.json"), str(out / "cut"), "--out", str(tmp_path / "cmp"),
                 "--no-plots"]) == 0
    assert (tmp_path / "cmp" / "compare.md").is_file()
    assert main(["eval", str(two_models[0]), "--out", str(tmp_path / "x"), "--tasks", "helaswag"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("downcycle: error: unknown task 'helaswag'") and err.count("\n") == 1
    assert main(["eval", str(two_models[0]), "--out", str(tmp_path / "y"), "--tasks", "loss"]) == 1
    assert "needs --data" in capsys.readouterr().err
