"""Interrupted stages leave a resumable state or nothing, and a rerun ends as an uninterrupted run:
`downcycle data` killed with SIGKILL mid-way gives the same shard bytes, `downcycle eval` the same
results.json figures (its finished tasks reused, not recomputed). Leftovers of killed processes are
removed by the next run; progress in a log is plain lines."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from downcycle import cli

TESTS = str(Path(__file__).parent)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKENIZER = EXAMPLES / "tokenizer"
MOBY = EXAMPLES / "corpus" / "moby_dick.jsonl.gz"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}

# A stage in a fresh interpreter, slowed where the test needs time to kill it:
# python -c SCRIPT TESTS_DIR KIND JSON_CONFIG
SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
kind, kwargs = sys.argv[2], json.loads(sys.argv[3])
if kind == "data":
    from downcycle.corpus import build as corpus
    from downcycle.recipe import DataConfig
    encode = corpus.encode_documents
    corpus.encode_documents = lambda *a: (time.sleep(0.05), encode(*a))[1]  # a few seconds in all
    corpus.build_corpus(DataConfig(**kwargs))
else:
    from downcycle.evaluation import run
    from downcycle.recipe import EvalConfig
    evaluate_mc = run.evaluate_mc
    def stalled(model, encoder, spec, opts):  # the second task never finishes: the kill comes first
        if spec.name == "boolq":
            time.sleep(600)
        return evaluate_mc(model, encoder, spec, opts)
    run.evaluate_mc = stalled
    run.run_eval(EvalConfig(**kwargs))
"""


def _start(kind: str, kwargs: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, TESTS, kind, json.dumps(kwargs, default=str)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the stage never reached the point to kill it at"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _data_kwargs(out: Path) -> dict:
    return {"tokenizer": str(TOKENIZER), "source": [str(MOBY)], "out": str(out), "seq_len": 128, "shard_size": "20KB",
            "shuffle_tokens": "50K", "val": 0.05, "progress": False, "batch_docs": 4, "tokens": "200K"}


@pytest.mark.slow
def test_data_killed_with_sigkill_then_rerun_writes_the_same_bytes(tmp_path, monkeypatch, corpus_bytes):
    from downcycle.corpus import build as corpus
    from downcycle.corpus.build import build_corpus, partial_dir
    from downcycle.recipe import DataConfig

    encoded = {"docs": 0}
    encode = corpus.encode_documents

    def counting(backend, info, texts, dtype):
        encoded["docs"] += len(texts)
        return encode(backend, info, texts, dtype)

    monkeypatch.setattr(corpus, "encode_documents", counting)
    reference = build_corpus(DataConfig(**_data_kwargs(tmp_path / "ref")))
    uninterrupted, encoded["docs"] = encoded["docs"], 0
    out = tmp_path / "out"
    state = partial_dir(out) / "state.json"
    killed = _start("data", _data_kwargs(out))
    _kill_when(killed, lambda: state.is_file() and len(json.loads(state.read_text())["packers"]["train"]["shards"]) >= 3)
    assert not out.exists() and state.is_file()  # a resumable state, and no output
    build_corpus(DataConfig(**_data_kwargs(out)))
    assert corpus_bytes(out) == corpus_bytes(reference)
    assert json.loads((out / "corpus.json").read_text()) == json.loads((reference / "corpus.json").read_text())
    assert 0 < encoded["docs"] < uninterrupted  # resumed: the documents of the kept shards were not tokenized again
    assert not partial_dir(out).exists() and not list(tmp_path.glob(".out.*"))


@pytest.fixture(scope="module")
def eval_model(tmp_path_factory, build_eval_model):
    return build_eval_model(tmp_path_factory.mktemp("eval-model") / "model")


def _eval_kwargs(model: Path, corpus: Path, out: Path) -> dict:
    return {"models": [str(model)], "out": str(out), "tasks": "arc_easy,boolq,loss", "task_data": str(FIXTURES), "limit": 6,
            "data": str(corpus), "window": 64, "progress": False}


def _figures(out: Path) -> dict:
    doc = json.loads((out / "model" / "results.json").read_text())
    samples = {p.name: p.read_bytes() for p in sorted((out / "model" / "samples").iterdir())}
    return {"tasks": doc["tasks"], "parameters": doc["model"]["parameters"], "samples": samples}


def _refuse_arc_easy(monkeypatch):
    """The rerun must take arc_easy from the interrupted run, not score it again."""
    from downcycle.evaluation import run

    evaluate_mc = run.evaluate_mc

    def no_arc_easy(model, encoder, spec, opts):
        assert spec.name != "arc_easy", "a finished task was evaluated again"
        return evaluate_mc(model, encoder, spec, opts)

    monkeypatch.setattr(run, "evaluate_mc", no_arc_easy)


@pytest.mark.slow
def test_eval_killed_with_sigkill_then_rerun_gives_the_same_figures(eval_model, real_corpus, tmp_path, monkeypatch,
                                                                    one_torch_thread):
    from downcycle.evaluation.resume import partial_dir
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import EvalConfig

    run_eval(EvalConfig(**_eval_kwargs(eval_model, real_corpus, tmp_path / "ref")))
    out = tmp_path / "out"
    finished = partial_dir(out) / "model" / "tasks" / "arc_easy.json"
    killed = _start("eval", _eval_kwargs(eval_model, real_corpus, out))
    _kill_when(killed, finished.is_file)
    assert not out.exists()
    _refuse_arc_easy(monkeypatch)
    run_eval(EvalConfig(**_eval_kwargs(eval_model, real_corpus, out)))
    assert _figures(out) == _figures(tmp_path / "ref")
    assert not partial_dir(out).exists() and not list(tmp_path.glob(".out.*"))


def test_eval_interrupted_by_ctrl_c_resumes_with_the_same_figures(eval_model, real_corpus, tmp_path, monkeypatch, capsys,
                                                                  one_torch_thread):
    from downcycle.evaluation import run
    from downcycle.evaluation.resume import partial_dir
    from downcycle.recipe import EvalConfig

    kwargs = _eval_kwargs(eval_model, real_corpus, tmp_path / "ref")
    run.run_eval(EvalConfig(**kwargs))
    out = tmp_path / "out"
    argv = ["eval", str(eval_model), "--out", str(out), "--tasks", kwargs["tasks"], "--task-data", str(FIXTURES), "--limit", "6",
            "--data", str(real_corpus), "--window", "64", "--no-progress"]
    evaluate_mc = run.evaluate_mc

    def ctrl_c_in_boolq(model, encoder, spec, opts):
        if spec.name == "boolq":
            raise KeyboardInterrupt
        return evaluate_mc(model, encoder, spec, opts)

    monkeypatch.setattr(run, "evaluate_mc", ctrl_c_in_boolq)
    assert cli.main(argv) == 130 and "interrupted" in capsys.readouterr().err
    assert not out.exists() and (partial_dir(out) / "model" / "tasks" / "arc_easy.json").is_file()
    monkeypatch.setattr(run, "evaluate_mc", evaluate_mc)
    _refuse_arc_easy(monkeypatch)
    assert cli.main(argv) == 0
    assert _figures(out) == _figures(tmp_path / "ref")
    assert not partial_dir(out).exists()
    # other options: what was kept is discarded, not mixed in
    monkeypatch.setattr(run, "evaluate_mc", ctrl_c_in_boolq)
    assert cli.main([*argv[:3], str(tmp_path / "out2"), *argv[4:]]) == 130
    monkeypatch.setattr(run, "evaluate_mc", evaluate_mc)
    other = EvalConfig(**{**kwargs, "out": str(tmp_path / "out2"), "limit": 4})
    run.run_eval(other)
    assert json.loads((tmp_path / "out2" / "model" / "results.json").read_text())["tasks"]["arc_easy"]["n"] == 4


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_process_are_removed_by_the_next_run(tmp_path):
    from downcycle.artifacts.atomic import atomic_output_dir, write_atomic

    dead, alive = _dead_pid(), os.getpid()
    for name in (f".out.tmp-{dead}-0000", f".out.old-{dead}-0000", f".out.tmp-{alive}-1111"):
        (tmp_path / name).mkdir()
    (tmp_path / f".report.html.tmp-{dead}-2222").write_text("half")
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("a")
    write_atomic(tmp_path / "report.html", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.tmp-{alive}-1111", "out", "report.html"]  # a live run's is kept
    assert (tmp_path / "report.html").read_text() == "whole"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_off_a_terminal(monkeypatch):
    from downcycle import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    log, terminal = io.StringIO(), _Terminal()
    for stream in (log, terminal):
        bar = progress.progress_bar(total=50, desc="train", unit="step", file=stream, mininterval=0, leave=False)
        for _ in range(50):
            bar.update(1)
            bar.set_postfix(loss="1.0", refresh=False)
        bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) >= 2
    assert lines[-1].startswith("train: 100% 50/50") and "loss=1.0" in lines[-1]  # the final count stays in the log
    assert "\r" in terminal.getvalue()  # a terminal keeps its redrawn bar
    monkeypatch.setattr(progress, "LINE_INTERVAL", 3600.0)
    quiet = io.StringIO()
    bar = progress.progress_bar(total=1000, desc="x", file=quiet)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert len(quiet.getvalue().splitlines()) <= 2  # at most a line per interval, and the last


def test_a_model_load_writes_no_carriage_returns_to_a_log_but_keeps_its_bar_on_a_terminal(tiny_model, stderr_of):
    """transformers' "Loading weights" bar (and a tokenizer's load) off a terminal: nothing redrawn in
    the log; on a terminal the bar is shown as transformers draws it."""
    code = ("import sys; from downcycle.loading import load_model, load_tokenizer; "
            "load_tokenizer(sys.argv[2]); load_model(sys.argv[1], dtype='float32')")
    args = ["-c", code, str(tiny_model("llama")), str(TOKENIZER)]
    status, log = stderr_of(args, terminal=False)
    assert status == 0, log
    assert "\r" not in log
    status, screen = stderr_of(args, terminal=True)
    assert status == 0, screen
    assert "\rLoading weights" in screen  # redrawn in place (a terminal's line ends are \r\n whatever is written)
