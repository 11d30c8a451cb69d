"""Exact resume: a run killed with SIGKILL mid-way and resumed ends with the same weights, bit for
bit, as an uninterrupted run; a diverging run stops and keeps its last good checkpoint."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from downcycle.training import run_train
from downcycle.training.checkpointing import list_checkpoints
from downcycle.training.loop import TrainingDiverged

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _run(script, model, out, kwargs, corpus, delay=0.0):
    return subprocess.Popen([sys.executable, "-c", script, str(model), str(out), json.dumps(kwargs), str(delay), str(corpus)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(real_model, real_corpus, tmp_path, weights, train_script):
    src = real_model
    # LoRA with dropout: random masks every step, so equality needs model (adapter), optimizer,
    # scheduler, RNG state and data position all restored. Full fine-tuning saves the same state.
    kwargs = {"method": "lora", "max_steps": 12, "save_every": 3, "eval_every": 4, "warmup_steps": 2, "lora_dropout": 0.2,
              "grad_accum": 2, "micro_batch": 2, "lr": 5e-3, "eval_max_seqs": 32}
    reference = _run(train_script, src, tmp_path / "ref", kwargs, real_corpus)
    killed = _run(train_script, src, tmp_path / "out", kwargs, real_corpus, delay=0.03)
    run_dir = tmp_path / "out.run"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint exists and the run has gone past it
        ckpts = list_checkpoints(run_dir / "checkpoints")
        log = run_dir / "train_log.jsonl"
        if ckpts and ckpts[-1][0] >= 6 and log.is_file() and any(json.loads(x)["step"] >= 8 for x in log.read_text().splitlines() if x.strip()):
            break
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "out").exists() and list_checkpoints(run_dir / "checkpoints")
    resumed = _run(train_script, src, tmp_path / "out", {**kwargs, "resume": True}, real_corpus)
    for proc in (reference, resumed):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    assert any("resumed from" in n for n in json.loads(stdout.splitlines()[-1])["notes"])
    ref, got = weights(tmp_path / "ref"), weights(tmp_path / "out")
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    strip = lambda recs: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in recs]
    assert strip(_log(tmp_path / "out")) == strip(_log(tmp_path / "ref"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tiny_model, tmp_path, monkeypatch, datasets,
                                                                                train_config, weights):
    from downcycle.training import methods

    original, calls = methods.Method.loss, []

    def nan_from_the_sixth_step(self, model, batch):  # one micro-batch per step
        calls.append(1)
        out = original(self, model, batch)
        if len(calls) >= 6:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(methods.Method, "loss", nan_from_the_sixth_step)
    torch.set_num_threads(1)
    with pytest.raises(TrainingDiverged) as err:
        run_train(train_config(tiny_model("llama"), tmp_path / "out", max_steps=10, save_every=2), datasets=datasets())
    msg = str(err.value)
    assert "step 6" in msg and "not finite" in msg and "(step 4)" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()
    ckpts = list_checkpoints(tmp_path / "out.run" / "checkpoints")
    assert [s for s, _ in ckpts] == [2, 4]
    assert all(torch.isfinite(t).all() for t in weights(ckpts[-1][1]).values())
    records = _log(tmp_path / "out.run")  # the log ends with the last finite step
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["loss"]) for r in records)


def test_resume_with_other_options_is_refused_naming_them(tiny_model, tmp_path, monkeypatch, datasets, train_config):
    from downcycle.errors import DowncycleError
    from downcycle.training import run as run_module

    torch.set_num_threads(1)
    src, out = tiny_model("llama"), tmp_path / "out"
    crash = RuntimeError("crash before writing OUT")

    def crashing_write(*args, **kwargs):
        raise crash

    monkeypatch.setattr(run_module, "_write_output", crashing_write)
    with pytest.raises(RuntimeError):
        run_train(train_config(src, out, max_steps=4, save_every=2), datasets=datasets())
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(tmp_path / "out.run" / "checkpoints")] == [2]
    with pytest.raises(DowncycleError, match=r"cannot resume with a different config \(lr: 0.003 -> 0.001\)"):
        run_train(train_config(src, out, max_steps=4, save_every=2, lr=1e-3, resume=True), datasets=datasets())
    result = run_train(train_config(src, out, max_steps=4, save_every=2, resume=True), datasets=datasets())
    assert result.steps == 4 and any("resumed from" in n and "step 2 of 4" in n for n in result.notes)
