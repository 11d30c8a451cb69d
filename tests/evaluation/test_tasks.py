"""Task specs build the harness's prompts (known strings), metrics follow its definitions, and task
data loads from jsonl, parquet and save_to_disk directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"  # the committed task items


def _first(stem: str) -> dict:
    return json.loads((FIXTURES / f"{stem}.jsonl").read_text().splitlines()[0])


def test_registry_lists_every_task():
    from downcycle.evaluation.tasks import SUBJECTS, TASKS

    for name in ("loss", "hellaswag", "arc_easy", "arc_challenge", "mmlu", "winogrande", "piqa", "boolq", "openbookqa"):
        assert name in TASKS and TASKS[name].description
    assert len(SUBJECTS) == 57 and TASKS["mmlu"].subtasks == tuple(f"mmlu_{s}" for s in SUBJECTS)


def test_hellaswag_preprocessing():
    from downcycle.evaluation.tasks import TASKS, hellaswag_preprocess

    assert hellaswag_preprocess(" Put it away [title] Wash it. [step] Dry  it.") == "Put it away. Wash it. Dry it."
    doc = TASKS["hellaswag"].process(_first("hellaswag.validation"))
    req = TASKS["hellaswag"].request(doc, [])
    assert req.contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert req.continuations[3] == " starts pulling up roofing on a roof." and req.gold == 3


def test_mmlu_five_shot_prompt():
    from downcycle.evaluation.task_data import load_docs
    from downcycle.evaluation.tasks import TASKS

    spec = TASKS["mmlu_anatomy"]
    dev = load_docs(spec, "dev", FIXTURES)
    req = spec.request(load_docs(spec, "test", FIXTURES)[0], dev[:5])
    ctx = req.contexts[0]
    assert ctx.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n"
                          "What is the embryological origin of the hyoid bone?\nA. The first pharyngeal arch\n")
    assert ctx.count("\nAnswer:") == 6 and "\nAnswer: D\n\n" in ctx and ctx.endswith("\nAnswer:")
    assert req.continuations == [" A", " B", " C", " D"] and req.gold == 0


def test_winogrande_partial_scoring():
    from downcycle.evaluation.tasks import TASKS

    req = TASKS["winogrande"].request(_first("winogrande.validation"), [])
    assert req.contexts == ["Sarah was a much better surgeon than Maria so Sarah",
                            "Sarah was a much better surgeon than Maria so Maria"]
    assert req.continuations == [" always got the easier cases."] * 2 and req.gold == 1


def test_arc_and_piqa_prompts():
    from downcycle.evaluation.tasks import TASKS

    arc = TASKS["arc_easy"].request(_first("arc_easy.validation"), [])
    assert arc.contexts[0] == "Question: Which technology was developed most recently?\nAnswer:"
    assert arc.continuations[0] == " cellular telephone" and arc.gold == 0
    piqa = TASKS["piqa"].request(_first("piqa.validation"), [])
    assert piqa.contexts[0].startswith("Question: How do I ready a guinea pig cage") and len(piqa.choices) == 2


def test_doc_metrics_and_ties():
    from downcycle.evaluation.metrics import doc_metrics

    # acc picks -1.0 (choice 0); per character, choice 1 (-2/10) beats choice 0 (-1/2)
    assert doc_metrics([-1.0, -2.0], ["ab", "abcdefghij"], 1) == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    # ties go to the first choice, like numpy.argmax
    assert doc_metrics([-1.0, -1.0], ["a", "b"], 1)["acc"] == 0.0
    # acc_bytes counts UTF-8 bytes: "é" is 1 character, 2 bytes
    m = doc_metrics([-3.0, -2.5], ["éé", "ab"], 0)
    assert m["acc_norm"] == 0.0 and m["acc_bytes"] == 1.0


def test_mean_and_pooled_stderr():
    from downcycle.evaluation.metrics import mean_stat, pool_stats

    s = mean_stat([1.0, 0.0, 1.0, 1.0])
    assert s.value == 0.75 and s.stderr == pytest.approx(0.25)
    a, b = mean_stat([1.0, 0.0] * 5), mean_stat([1.0, 1.0, 0.0])
    pooled = pool_stats([a, b])
    assert pooled.n == 13 and pooled.value == pytest.approx((5 + 2) / 13)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "save_to_disk"])
def test_task_data_formats(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from downcycle.evaluation.task_data import load_docs
    from downcycle.evaluation.tasks import TASKS

    rows = [json.loads(line) for line in (FIXTURES / "piqa.validation.jsonl").read_text().splitlines()[:5]]
    if fmt == "jsonl":
        (tmp_path / "piqa.validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "piqa.validation.parquet")
    else:
        (tmp_path / "piqa.validation").mkdir()
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(tmp_path / "piqa.validation" / "data-00000-of-00001.arrow"), "wb") as f, \
                pa.ipc.new_stream(f, table.schema) as w:
            w.write_table(table)
    assert load_docs(TASKS["piqa"], "validation", tmp_path) == rows


def test_missing_local_data_is_one_line_error(tmp_path, monkeypatch):
    from downcycle.errors import DowncycleError
    from downcycle.evaluation.task_data import load_docs
    from downcycle.evaluation.tasks import TASKS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DowncycleError, match="no piqa.validation"):
        load_docs(TASKS["piqa"], "validation", tmp_path)
    (tmp_path / "piqa.validation.jsonl").write_text('{"goal": 1}\nnot json\n')
    with pytest.raises(DowncycleError, match=r"piqa.validation.jsonl:2: not valid JSON"):
        load_docs(TASKS["piqa"], "validation", tmp_path)


def test_unknown_task_is_refused():
    from downcycle.errors import DowncycleError
    from downcycle.evaluation.tasks import get_task

    with pytest.raises(DowncycleError, match="unknown task 'helaswag'"):
        get_task("helaswag")
