"""Side-by-side benchmark of multiple-choice scoring: downcycle vs lm-evaluation-harness's HF backend.

Same model, same items, same batch size (continuations per forward pass), same device (CPU), float32.
The model is a small Llama built locally (``--hidden``, ``--layers``, the shipped examples/tokenizer
vocabulary, random weights: speed does not depend on the weights) and the items are the committed
fixtures in tests/fixtures/eval/ (HellaSwag, ARC-Easy, ARC-Challenge, Winogrande, PIQA, MMLU 5-shot).

Two measurements per task:

* scoring throughput (items/s): the harness's ``HFLM.loglikelihood`` on the task's requests vs
  downcycle's encoder + shared-context scorer on the same strings (tokenisation included on both
  sides; the agreement test proves both score the same token sequences). Tools take turns, after
  one untimed warm-up; the median of ``--repeats`` is reported, with CPU time.
* end to end (``--e2e``): wall time of ``python -m downcycle eval`` vs ``python -m lm_eval`` on the
  same items, each a fresh process with default threads, start-up, model loading and task indexing
  included.

The scoring comparison runs with ``--threads`` torch threads (default 1, the same for both tools).

Run from the repository root:  .venv/bin/python benchmarks/bench_eval.py [--e2e]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TASKS = ["hellaswag", "arc_easy", "arc_challenge", "winogrande", "piqa", "mmlu_anatomy"]


def build_model(directory: Path, hidden: int, layers: int) -> Path:
    from eval_support import build_eval_model

    return build_eval_model(directory, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                            num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64))


def requests_for(task: str, limit: int):
    from downcycle.evaluation.multiple_choice import fewshot_docs
    from downcycle.evaluation.task_data import load_docs
    from downcycle.evaluation.tasks import TASKS as REGISTRY
    from eval_support import FIXTURES

    spec = REGISTRY[task]
    docs = load_docs(spec, spec.split, FIXTURES)[:limit]
    pool = load_docs(spec, spec.fewshot_split, FIXTURES) if spec.default_shots else []
    return [spec.request(d, fewshot_docs(spec, spec.default_shots, pool, i, False, 0)) for i, d in enumerate(docs)]


def time_cpu(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_scoring(model_dir: Path, limit: int, batch: int, repeats: int, threads: int) -> list[dict]:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.run import load_tokenizer, max_length
    from downcycle.evaluation.scoring import score_groups
    from downcycle.loading import load_model

    torch.set_num_threads(threads)
    lm = HFLM(pretrained=str(model_dir), batch_size=batch, device="cpu", dtype="float32")
    model = load_model(model_dir, dtype="float32")
    tok = load_tokenizer(model_dir)
    rows = []
    for task in TASKS:
        reqs = requests_for(task, limit)
        instances = [Instance("loglikelihood", {}, (x, y), idx=c) for r in reqs for c, (x, y) in
                     enumerate(zip(r.contexts, r.continuations))]

        def harness(instances=instances):
            lm.loglikelihood(instances, disable_tqdm=True)

        def ours(reqs=reqs):
            enc = Encoder(tok, max_length(model, tok))  # fresh cache each run: encoding is timed too
            score_groups(model, enc.groups(reqs), batch_size=batch, progress=False)

        harness(), ours()  # warm-up
        times = {"lm-eval": [], "downcycle": []}
        for _ in range(repeats):
            times["lm-eval"].append(time_cpu(harness))
            times["downcycle"].append(time_cpu(ours))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        rows.append({"task": task, "items": len(reqs), "choices": len(instances),
                     "lm_eval_items_s": len(reqs) / med["lm-eval"][0], "downcycle_items_s": len(reqs) / med["downcycle"][0],
                     "speedup": med["lm-eval"][0] / med["downcycle"][0], "cpu_speedup": med["lm-eval"][1] / med["downcycle"][1]})
        r = rows[-1]
        print(f"{task:14s} {r['items']:4d} items  lm-eval {r['lm_eval_items_s']:7.1f} items/s  downcycle "
              f"{r['downcycle_items_s']:7.1f} items/s  speedup x{r['speedup']:.2f} (cpu x{r['cpu_speedup']:.2f})", flush=True)
    return rows


def bench_e2e(model_dir: Path, limit: int, batch: int, work: Path) -> None:
    import lm_eval

    from eval_support import FIXTURES

    yamls = work / "yamls"
    yamls.mkdir(exist_ok=True)
    root = Path(lm_eval.__file__).parent / "tasks"
    (yamls / "dc_hellaswag.yaml").write_text(
        f"include: {root / 'hellaswag/hellaswag.yaml'}\ntask: dc_hellaswag\ndataset_path: json\ndataset_name: null\n"
        f"training_split: null\ndataset_kwargs:\n  data_files:\n    validation: {FIXTURES / 'hellaswag.validation.jsonl'}\n")
    py = sys.executable
    cmds = {
        "downcycle": [py, "-m", "downcycle", "eval", str(model_dir), "--tasks", "hellaswag", "--task-data", str(FIXTURES),
                      "--limit", str(limit), "--batch-size", str(batch), "--out", str(work / "dc-out"), "--force", "--no-progress"],
        "lm-eval": [py, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
                    "--tasks", "dc_hellaswag", "--include_path", str(yamls), "--limit", str(limit), "--batch_size", str(batch),
                    "--device", "cpu"],
    }
    walls = {}
    for name, cmd in cmds.items():
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=os.environ)
        walls[name] = time.perf_counter() - t0
        print(f"end to end, hellaswag {limit} items, {name:9s}: {walls[name]:6.1f} s wall (start-up included)", flush=True)
    print(f"end to end speedup: x{walls['lm-eval'] / walls['downcycle']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--limit", type=int, default=100, help="items per task")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the scoring comparison (1: least disturbed by "
                    "other load; with several threads on a busy machine, idle OpenMP threads spin and inflate CPU time)")
    ap.add_argument("--e2e", action="store_true", help="also time whole `downcycle eval` vs `lm_eval` runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "bench-llama", args.hidden, args.layers)
        print(f"model: llama hidden {args.hidden}, {args.layers} layers, examples/tokenizer vocab; batch {args.batch_size}; "
              f"{args.threads} torch thread(s) of {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)
        bench_scoring(model_dir, args.limit, args.batch_size, args.repeats, args.threads)
        if args.e2e:
            bench_e2e(model_dir, args.limit, args.batch_size, Path(tmp))


if __name__ == "__main__":
    main()
