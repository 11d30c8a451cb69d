"""``downcycle eval`` across processes: the device and backend each process takes, the batches each
scores, their gathering (an error in one process raised in all), and ``torchrun --nproc_per_node 2``
writing the same results.json and samples as one process, bit for bit apart from the wall time."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from downcycle.errors import DowncycleError
from downcycle.evaluation.distributed import ONE_PROCESS, Processes, joined, process_device

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
CORPUS = ROOT / "examples" / "corpus" / "kjv.jsonl.gz"


def test_process_device():
    assert process_device("cpu", 0, 2, gpus=4) == ("gloo", None)
    assert process_device("auto", 1, 2, gpus=0) == ("gloo", None)
    assert process_device("auto", 1, 2, gpus=2) == ("nccl", 1)  # each process on cuda:LOCAL_RANK
    assert process_device("cuda", 3, 8, gpus=4) == ("nccl", 3)
    for device, local, gpus, message in [("cuda", 0, 0, "CUDA is not available"), ("cuda", 2, 2, "start at most 2 per machine"),
                                         ("auto", 4, 1, "start at most 1"), ("cuda:1", 0, 2, "give --device cuda"),
                                         ("mps", 0, 0, "give --device cuda")]:
        with pytest.raises(DowncycleError, match=message):
            process_device(device, local, 2, gpus)


def test_batches_are_shared_out_once():
    for world in (1, 2, 3):
        owners = [[r for r in range(world) if Processes(r, world).mine(k)] for k in range(10)]
        assert owners == [[k % world] for k in range(10)]
    assert ONE_PROCESS.merge(lambda: {1: "a"}) == {1: "a"} and ONE_PROCESS.share(5) == 5 and ONE_PROCESS.main


def test_joined_on_a_gpu_machine_takes_the_local_gpu(monkeypatch):
    """Without a GPU here: the calls ``joined`` makes on a machine with two, in the process of local rank 1."""
    import torch
    import torch.distributed as dist

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    with joined("auto") as processes:
        assert processes == Processes(1, 2) and not processes.main
    assert calls == [("set_device", 1), ("init", "nccl"), ("destroy",)]
    monkeypatch.delenv("WORLD_SIZE")
    with joined("auto") as processes:
        assert processes is ONE_PROCESS


class Simulated:
    """The ``world`` processes of one group, simulated in this one: a merge runs the computation once
    as each process (scoring that process's batches only) and returns the union of their shares."""

    def __init__(self, world: int) -> None:
        self.rank, self.world, self.shares = 0, world, []

    def mine(self, k: int) -> bool:
        return Processes(self.rank, self.world).mine(k)

    def merge(self, compute):
        shares = []
        for rank in range(self.world):
            self.rank = rank
            shares.append(compute())
        self.rank = 0
        self.shares.append(shares)
        assert sum(map(len, shares)) == len({k for share in shares for k in share})  # no item twice
        return {k: v for share in shares for k, v in share.items()}


@pytest.fixture(scope="module")
def eval_models(tmp_path_factory, build_eval_model):
    root = tmp_path_factory.mktemp("distributed")
    return build_eval_model(root / "a", seed=0), build_eval_model(root / "b", seed=1)


def test_shared_out_scores_equal_one_process(eval_models, one_torch_thread, monkeypatch):
    """Each process scores every third batch; the merged multiple-choice samples and the loss task's
    sums (several pools and batches, KL to a reference) equal one process's bit for bit."""
    from downcycle.evaluation import perplexity
    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.multiple_choice import McOptions, evaluate_mc
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.tasks import TASKS
    from downcycle.loading import load_model, load_tokenizer

    model, reference = (load_model(p, dtype="float32") for p in eval_models)
    tok = load_tokenizer(eval_models[0])
    encoder = Encoder(tok, max_length(model, tok))
    for task in ("arc_easy", "mmlu_anatomy", "winogrande"):  # mmlu: a task-wide prefix cached; winogrande: contexts differ
        def mc(processes, task=task):
            opts = McOptions(FIXTURES, limit=12, batch_size=5, progress=False, processes=processes)
            return evaluate_mc(model, encoder, TASKS[task], opts)[1]

        processes = Simulated(3)
        assert mc(processes) == mc(ONE_PROCESS) and all(all(shares) for shares in processes.shares)

    monkeypatch.setattr(perplexity, "POOL_BATCHES", 2)  # a new pool every few documents
    docs = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) for t in _texts(8)]
    processes = Simulated(3)
    scored = perplexity.score_documents(model, docs, 48, 20, batch_tokens=200, reference=reference, processes=processes)
    assert scored == perplexity.score_documents(model, docs, 48, 20, batch_tokens=200, reference=reference)
    [shares] = processes.shares
    assert all(shares) and len({p for share in shares for p, _ in share}) > 2  # every process scored, over several pools


def test_what_is_not_shared_out_is_refused(eval_models, tmp_path, monkeypatch):
    from downcycle.evaluation import run
    from downcycle.recipe import EvalConfig

    @contextlib.contextmanager
    def two(device):
        yield Processes(0, 2)

    monkeypatch.setattr(run, "joined", two)
    for options, message in [({"harness": "arc_easy"}, "--harness: .* not run across 2 processes"),
                             ({"layerwise": True, "tasks": "loss", "data": str(CORPUS)}, "--layerwise: not run across 2")]:
        with pytest.raises(DowncycleError, match=message):
            run.run_eval(EvalConfig(models=[str(eval_models[1])], out=tmp_path / "out", **{"tasks": "arc_easy", **options}))
    assert not (tmp_path / "out").exists()


def _texts(n: int) -> list[str]:
    with gzip.open(CORPUS, "rt") as f:
        return [json.loads(next(f))["text"] for _ in range(n)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, check=False)


def test_an_error_in_one_process_is_raised_in_all(tmp_path):
    """Process 1 fails inside a merge: process 0 raises it as one line and does not wait for ever;
    both go on to share and merge again."""
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from downcycle.evaluation.distributed import joined\n"
        "with joined('cpu') as p:\n"
        "    def compute():\n"
        "        if p.rank == 1:\n"
        "            raise ValueError('boom')\n"
        "        return {p.rank: 1}\n"
        "    try:\n"
        "        p.merge(compute)\n"
        "    except Exception as e:\n"
        "        caught = f'{type(e).__name__}: {e}'\n"
        "    merged = sorted(p.merge(lambda: {p.rank: p.rank}).items())\n"
        "    Path(sys.argv[1], f'{p.rank}.txt').write_text(f'{caught}\\nshared {p.share(p.rank + 7)}, merged {merged}')\n")
    done = _torchrun([str(script), str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "0.txt").read_text() == "DowncycleError: process 1 of 2 failed: ValueError: boom\nshared 7, merged [(0, 0), (1, 1)]"
    assert (tmp_path / "1.txt").read_text() == "ValueError: boom\nshared 7, merged [(0, 0), (1, 1)]"


@pytest.mark.slow
def test_torchrun_writes_what_one_process_writes(eval_models, tmp_path, one_torch_thread):
    """``torchrun --nproc_per_node 2 -m downcycle eval`` on CPU (gloo): loss with a reference (several
    batches), multiple choice (a group, partial scoring) and gsm8k (two batches of generations) give
    the same results.json, apart from the wall time, and the same samples files, byte for byte, as
    one process; only process 0 prints."""
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import EvalConfig

    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(6)))
    options = {"tasks": "loss,arc_easy,mmlu,winogrande,gsm8k", "data": str(data), "task_data": str(FIXTURES), "limit": 6,
               "window": 128, "stride": 64, "batch_size": 3, "reference": str(eval_models[0])}
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    done = _torchrun(["-m", "downcycle", "eval", str(eval_models[1]), *args, "--no-progress", "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("b: loss perplexity=") == 1  # the summary, from process 0 alone
    run_eval(EvalConfig(models=[str(eval_models[1])], out=tmp_path / "one", progress=False, **options))

    def results(out: Path) -> dict:
        doc = json.loads((out / "b" / "results.json").read_text())
        assert doc.pop("seconds") > 0 and doc.pop("created") and doc["config"].pop("out") == str(out)
        return doc

    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    assert two == one and two["tasks"]["loss"]["metrics"]["kl_ref"]["value"] > 0
    files = sorted(p.name for p in (tmp_path / "one" / "b" / "samples").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two" / "b" / "samples").iterdir()) and len(files) == 5
    for name in files:
        assert (tmp_path / "two" / "b" / "samples" / name).read_bytes() == (tmp_path / "one" / "b" / "samples" / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held_out.jsonl", "one", "two"]  # nothing left beside them
