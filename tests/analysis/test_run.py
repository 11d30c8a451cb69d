"""``downcycle analyze`` end to end: a saved model, the shipped tokenizer and corpus, the files it
writes, a plan that ``cut --plan`` consumes, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from downcycle.analysis.analyze import analyze_model, choose_layers
from downcycle.corpus.calibration import load_calibration, pack_windows
from downcycle.analysis.hidden_stats import as_batches
from downcycle.analysis.run import run_analyze
from downcycle.cli import main
from downcycle.errors import DowncycleError
from downcycle.recipe import AnalyzeConfig, CutConfig
from downcycle.surgery.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "examples" / "tokenizer"
CORPUS = ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz"
pytestmark = pytest.mark.skipif(not (TOKENIZER / "tokenizer.json").is_file() or not CORPUS.is_file(),
                                reason="the shipped tokenizer and corpus (examples/) are missing")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny 6-layer Llama with the shipped tokenizer's vocabulary and files."""
    from downcycle.tiny import build_tiny

    path = build_tiny("llama", tmp_path_factory.mktemp("analyze") / "model", vocab_size=8192, max_position_embeddings=64)
    for f in TOKENIZER.iterdir():
        shutil.copy(f, path / f.name)
    return path


def config(model_dir, out, **kw):
    base = {"model": str(model_dir), "data": str(CORPUS), "out": out, "samples": 6, "seq_len": 24, "batch_size": 4, "progress": False}
    return AnalyzeConfig(**{**base, **kw})


def flat(values):
    """Nested score lists as one flat list, ``None`` (no such block) as NaN, for pytest.approx."""
    if isinstance(values, list):
        return [x for v in values for x in flat(v)]
    return [float("nan") if values is None else values]


def test_pack_windows():
    ids, docs = pack_windows([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], seq_len=4, samples=2, separator=0)
    assert ids.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6]] and docs == 3
    ids, _ = pack_windows([[1, 2, 3]], seq_len=4, samples=2, separator=0)
    assert ids.shape == (0, 4)


@pytest.mark.slow
def test_analyze_writes_plan_scores_plots_and_the_plan_cuts(model_dir, tmp_path):
    result = run_analyze(config(model_dir, tmp_path / "an", keep="4", strategy="block"))
    out = tmp_path / "an"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["plan.json", "scores.json", "angular_distance.png", "angular_distance_mean.png", "block_influence.png", "downcycle.json"])
    assert all((out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in result.files if f.endswith(".png"))
    plan = load_plan(out / "plan.json")
    scores = json.loads((out / "scores.json").read_text())
    assert plan.source_layers == 6 and plan.strategy == "block" and len(plan.kept_layers) == 4
    calib = plan.details["calibration"]
    assert calib["samples"] == 6 and calib["seq_len"] == 24 and calib["tokens"] == 144 and calib["source"] == str(CORPUS)
    assert scores["tokens"] == 144 and scores["sequences"] == 6

    # the files say what the in-memory API computes on the same calibration windows
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = load_calibration(str(CORPUS), AutoTokenizer.from_pretrained(model_dir), samples=6, seq_len=24).input_ids
    analysis = analyze_model(model, as_batches(ids, 4))
    assert plan.kept_layers == choose_layers(analysis, "block", 4)
    for name in ("angular-last", "angular-mean", "bi"):
        assert flat(scores[name]) == pytest.approx(flat(analysis.scores[name]), abs=1e-9, nan_ok=True)
    dropped = plan.details["dropped_layers"]
    assert dropped == [i for i in range(6) if i not in plan.kept_layers]
    assert plan.details["score_of_choice"] == {f"d({dropped[0]},{dropped[0] + 2})": pytest.approx(scores["angular-last"][dropped[0]][1])}
    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["stage"] == "analyze" and manifest["outputs"]["kept_layers"] == plan.kept_layers
    from downcycle.artifacts.hashes import config_hash
    from downcycle.recipe import output_dict

    same_elsewhere = config(model_dir, tmp_path / "elsewhere", keep="4", strategy="block", force=True)
    assert manifest["config_hash"] == config_hash(output_dict(same_elsewhere))  # the output path does not count

    # downcycle cut consumes the plan
    from downcycle.surgery.cut import cut

    cut_result = cut(CutConfig(source=str(model_dir), out=tmp_path / "cut", plan=out / "plan.json"))
    assert cut_result.kept_layers == plan.kept_layers
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["num_hidden_layers"] == 4


@pytest.mark.slow
def test_analyze_cli_with_nll_strategy(model_dir, tmp_path, capsys):
    out = tmp_path / "nll"
    argv = ["analyze", str(model_dir), "--data", str(CORPUS), "--out", str(out), "--keep", "0.67", "--strategy", "nll",
            "--samples", "4", "--seq-len", "16", "--nll-samples", "2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "strategy nll keeps 4 of 6 layers" in printed and "--plan" in printed
    plan = load_plan(out / "plan.json")
    scores = json.loads((out / "scores.json").read_text())
    assert plan.details["dropped_layers"] == sorted(scores["nll"]["removed"]) and len(scores["nll"]["steps"]) == 2
    assert len(scores["nll"]["steps"][0]) == 6 and len(scores["nll"]["steps"][1]) == 5
    assert plan.details["calibration"]["nll_samples"] == 2
    assert (out / "nll.png").is_file()
    # an existing output is refused, then replaced with --force
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*argv[:-1], "--strategy", "first", "--force", "--no-plots"]) == 0
    assert load_plan(out / "plan.json").kept_layers == [0, 1, 2, 3]
    assert not (out / "nll.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--keep", "7"], "--keep '7': must keep between 1 and 6"),
    (["--strategy", "best"], "unknown strategy 'best'"),
    (["--strategy", "block", "--metric", "bi"], "strategy 'block' needs a pair metric"),
    (["--data", "no/such/file.txt"], "no/such/file.txt"),
    (["--seq-len", "100000"], "too little text"),
])
def test_analyze_user_mistakes_are_one_line(model_dir, tmp_path, capsys, extra, message):
    argv = ["analyze", str(model_dir), "--data", str(CORPUS), "--out", str(tmp_path / "o"), "--samples", "2", "--seq-len", "8",
            "--no-progress", *extra]
    if "--seq-len" in extra:  # a source too short for one window: a tiny text file
        (tmp_path / "short.txt").write_text("call me ishmael")
        argv[3] = str(tmp_path / "short.txt")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("downcycle: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tiny_model, tmp_path, capsys):
    small_vocab = tiny_model("llama")  # 128 embeddings; the shipped tokenizer has 8192 tokens
    argv = ["analyze", str(small_vocab), "--data", str(CORPUS), "--out", str(tmp_path / "o"), "--tokenizer", str(TOKENIZER),
            "--samples", "2", "--seq-len", "8", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "but the model has only 128 embeddings" in err and err.count("\n") == 1
    assert main(argv[:6] + argv[8:]) == 1  # no tokenizer in the model directory at all
    assert "no usable tokenizer" in capsys.readouterr().err


def test_config_requires_data_and_out(tmp_path):
    with pytest.raises(DowncycleError, match="--data"):
        AnalyzeConfig(model="m", out=tmp_path)
    with pytest.raises(DowncycleError, match="--out"):
        AnalyzeConfig(model="m", data="x.txt")
    with pytest.raises(DowncycleError, match="--batch-size"):
        AnalyzeConfig(model="m", data="x.txt", out=tmp_path, batch_size=0)


@pytest.mark.slow
def test_cut_keep_analyzes_then_cuts_in_one_go(model_dir, tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["cut", str(model_dir), str(out), "--keep", "4", "--strategy", "bi", "--data", str(CORPUS), "--no-progress"]) == 0
    assert "4 of 6 layers" in capsys.readouterr().out
    plan = load_plan(out / "analysis" / "plan.json")
    scores = json.loads((out / "analysis" / "scores.json").read_text())
    assert plan.strategy == "bi" and (out / "analysis" / "block_influence.png").is_file()
    lowest = sorted(range(6), key=lambda i: scores["bi"][i])[:2]
    assert plan.kept_layers == [i for i in range(6) if i not in lowest]
    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["outputs"]["kept_layers"] == plan.kept_layers
    assert manifest["config"]["keep"] == "4" and manifest["config"]["data"] == str(CORPUS)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # the analysis directory does not get in the way


def test_cut_keep_needs_data(tmp_path, capsys):
    assert main(["cut", "src", str(tmp_path / "o"), "--keep", "4"]) == 1
    assert "--keep needs --data" in capsys.readouterr().err
    assert main(["cut", "src", str(tmp_path / "o"), "--keep", "4", "--layers", "0-3", "--data", "x"]) == 1
    assert "exactly one of --layers, --drop or --plan (or --keep with --data) (got --layers, --keep)" in capsys.readouterr().err
