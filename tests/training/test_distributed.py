"""Two CPU processes (torchrun + Accelerator(cpu=True) -> MULTI_CPU over gloo) give the loss curve and
weights of one process with the same global batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(real_model, real_corpus, tmp_path, weights, train_script):
    src = real_model
    script = tmp_path / "train_script.py"
    script.write_text(train_script)
    common = {"max_steps": 6, "eval_every": 3, "warmup_steps": 1, "eval_max_seqs": 32}
    # --standalone: a local rendezvous on a free port (the same as `torchrun --standalone`)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run([*launcher, str(script), str(src), str(tmp_path / "two"), json.dumps({**common, "micro_batch": 2}), "0", str(real_corpus)],
                         env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "one"), json.dumps({**common, "micro_batch": 4}), "0", str(real_corpus)],
                         env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert one.returncode == 0, one.stderr[-3000:]
    # both processes print a summary (their lines may interleave): one main, one not
    assert sorted(re.findall(r'"main": (true|false)', two.stdout)) == ["false", "true"]
    manifest = json.loads((tmp_path / "two" / "downcycle.json").read_text())
    assert manifest["outputs"]["processes"] == 2 and manifest["outputs"]["distributed"].endswith("MULTI_CPU")
    log1, log2 = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [(r["step"], r["split"], r["tokens"]) for r in log1] == [(r["step"], r["split"], r["tokens"]) for r in log2]
    for a, b in zip(log1, log2):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-5), (a, b)
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-4, atol=1e-5)
