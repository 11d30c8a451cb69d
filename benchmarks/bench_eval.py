"""Side-by-side benchmark of evaluation: downcycle vs lm-evaluation-harness's HF backend.

Same model, same items, same batch size (continuations per forward pass), same device (CPU), float32.
The model is a small Llama built locally (``--hidden``, ``--layers``, the shipped examples/tokenizer
vocabulary, random weights: speed does not depend on the weights) and the items are the committed
fixtures in tests/fixtures/eval/ (HellaSwag, ARC-Easy, ARC-Challenge, Winogrande, PIQA, MMLU 5-shot,
GSM8K 5-shot); ``--tasks`` picks some.

Measurements:

* scoring throughput (items/s): the harness's ``HFLM.loglikelihood`` on the task's requests vs
  downcycle's encoder + shared-context scorer on the same strings (tokenisation included on both
  sides; the agreement test proves both score the same token sequences). Tools take turns, after
  one untimed warm-up; the median of ``--repeats`` is reported, with CPU time.
* generation throughput (items/s, gsm8k): the harness's ``HFLM.generate_until`` on the task's
  requests (5-shot prompts, its generation kwargs: greedy, ``until`` its stop sequences, 256 new
  tokens at most) vs downcycle's encoding + ``greedy_generate`` on the same prompts, both batched
  ``--batch-size`` prompts at a time; ``--gen-limit`` items. The warm-up run's texts are compared
  (how many of the generations are identical is printed).
* end to end (``--e2e``): wall time of ``python -m downcycle eval`` vs ``python -m lm_eval`` on the
  same items, each a fresh process with default threads, start-up, model loading and task indexing
  included.

The in-process comparisons (scoring and generation) run with ``--threads`` torch threads (default 1, the same
for both tools).

Run from the repository root:  .venv/bin/python benchmarks/bench_eval.py [--tasks gsm8k,hellaswag] [--e2e]
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
GENERATIVE = ["gsm8k"]


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


def load_both(model_dir: Path, batch: int, threads: int):
    """(lm-eval's HFLM, downcycle's model, tokenizer), the same weights, float32 on CPU."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from downcycle.loading import load_model, load_tokenizer

    torch.set_num_threads(threads)
    lm = HFLM(pretrained=str(model_dir), batch_size=batch, device="cpu", dtype="float32")
    return lm, load_model(model_dir, dtype="float32"), load_tokenizer(model_dir)


def take_turns(harness, ours, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, CPU s) of each tool over ``repeats`` rounds, taking turns."""
    times = {"lm-eval": [], "downcycle": []}
    for _ in range(repeats):
        times["lm-eval"].append(time_cpu(harness))
        times["downcycle"].append(time_cpu(ours))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}


def bench_scoring(loaded, tasks: list[str], limit: int, batch: int, repeats: int) -> list[dict]:
    from lm_eval.api.instance import Instance

    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.scoring import score_groups

    lm, model, tok = loaded
    rows = []
    for task in tasks:
        reqs = requests_for(task, limit)
        instances = [Instance("loglikelihood", {}, (x, y), idx=c) for r in reqs for c, (x, y) in
                     enumerate(zip(r.contexts, r.continuations))]

        def harness(instances=instances):
            lm.loglikelihood(instances, disable_tqdm=True)

        def ours(reqs=reqs):
            enc = Encoder(tok, max_length(model, tok))  # fresh cache each run: encoding is timed too
            score_groups(model, enc.groups(reqs), batch_size=batch, progress=False)

        harness(), ours()  # warm-up
        med = take_turns(harness, ours, repeats)
        rows.append({"task": task, "items": len(reqs), "choices": len(instances),
                     "lm_eval_items_s": len(reqs) / med["lm-eval"][0], "downcycle_items_s": len(reqs) / med["downcycle"][0],
                     "speedup": med["lm-eval"][0] / med["downcycle"][0], "cpu_speedup": med["lm-eval"][1] / med["downcycle"][1]})
        r = rows[-1]
        print(f"{task:14s} {r['items']:4d} items  lm-eval {r['lm_eval_items_s']:7.1f} items/s  downcycle "
              f"{r['downcycle_items_s']:7.1f} items/s  speedup x{r['speedup']:.2f} (cpu x{r['cpu_speedup']:.2f})", flush=True)
    return rows


def bench_generation(loaded, tasks: list[str], limit: int, batch: int, repeats: int) -> list[dict]:
    """Generative tasks: ``HFLM.generate_until`` vs downcycle's prompt encoding + ``greedy_generate``."""
    from lm_eval.api.instance import Instance

    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.generate_until import build_contexts
    from downcycle.evaluation.multiple_choice import McOptions
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.tasks import TASKS as REGISTRY
    from downcycle.generation.greedy import greedy_generate
    from eval_support import FIXTURES

    lm, model, tok = loaded
    rows = []
    for task in tasks:
        spec = REGISTRY[task]
        _, contexts, _ = build_contexts(spec, McOptions(task_data=FIXTURES, limit=limit, progress=False))
        # the harness's task YAML's generation_kwargs; max_gen_toks is left to HFLM's default (256)
        kwargs = {"until": list(spec.until), "do_sample": False, "temperature": 0.0}
        assert lm.max_gen_toks == spec.max_gen_toks
        instances = [Instance("generate_until", {}, (c, dict(kwargs)), idx=i) for i, c in enumerate(contexts)]

        def harness(instances=instances):
            return lm.generate_until(instances, disable_tqdm=True)

        def ours(contexts=contexts, spec=spec):  # what evaluate_generative does, scoring aside
            enc = Encoder(tok, max_length(model, tok))
            room = enc.max_length - spec.max_gen_toks
            return greedy_generate(model, tok, [enc.encode(c)[-room:] for c in contexts], until=spec.until,
                                   max_new_tokens=spec.max_gen_toks, batch_size=batch)

        theirs, gens = harness(), ours()  # warm-up, and the outputs compared
        same = sum(g.text == t for g, t in zip(gens, theirs))
        new_tokens = sum(len(g.tokens) for g in gens)
        stops = {r: sum(g.stop == r for g in gens) for r in ("stop", "eos", "length")}
        med = take_turns(harness, ours, repeats)
        rows.append({"task": task, "items": len(contexts), "identical": same, "new_tokens": new_tokens,
                     "lm_eval_items_s": len(contexts) / med["lm-eval"][0], "downcycle_items_s": len(contexts) / med["downcycle"][0],
                     "speedup": med["lm-eval"][0] / med["downcycle"][0], "cpu_speedup": med["lm-eval"][1] / med["downcycle"][1]})
        r = rows[-1]
        print(f"{task:14s} {r['items']:4d} items  lm-eval {r['lm_eval_items_s']:7.2f} items/s  downcycle "
              f"{r['downcycle_items_s']:7.2f} items/s  speedup x{r['speedup']:.2f} (cpu x{r['cpu_speedup']:.2f}); "
              f"identical generations {same}/{len(contexts)}; {new_tokens} new tokens (ends: {stops})", flush=True)
        for i, (g, t) in enumerate(zip(gens, theirs)):
            if g.text != t:
                k = next((j for j, (a, b) in enumerate(zip(g.text, t)) if a != b), min(len(g.text), len(t)))
                print(f"  item {i} differs at character {k}: downcycle {g.text[k:k + 40]!r} vs lm-eval {t[k:k + 40]!r}")
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
    ap.add_argument("--tasks", default=",".join(TASKS + GENERATIVE),
                    help=f"comma-separated, of {', '.join(TASKS + GENERATIVE)} (default: all)")
    ap.add_argument("--limit", type=int, default=100, help="items per multiple-choice task")
    ap.add_argument("--gen-limit", type=int, default=20, help="items per generative task (5-shot GSM8K, up to 256 "
                    "new tokens each; the fixture has 50)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the in-process comparisons (1: least disturbed by "
                    "other load; with several threads on a busy machine, idle OpenMP threads spin and inflate CPU time)")
    ap.add_argument("--e2e", action="store_true", help="also time whole `downcycle eval` vs `lm_eval` runs")
    args = ap.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS + GENERATIVE]
    if unknown:
        ap.error(f"unknown task(s) {', '.join(unknown)} (known: {', '.join(TASKS + GENERATIVE)})")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "bench-llama", args.hidden, args.layers)
        print(f"model: llama hidden {args.hidden}, {args.layers} layers, examples/tokenizer vocab; batch {args.batch_size}; "
              f"{args.threads} torch thread(s) of {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)
        loaded = load_both(model_dir, args.batch_size, args.threads)
        bench_scoring(loaded, [t for t in tasks if t in TASKS], args.limit, args.batch_size, args.repeats)
        bench_generation(loaded, [t for t in tasks if t in GENERATIVE], args.gen_limit, args.batch_size, args.repeats)
        if args.e2e:
            bench_e2e(model_dir, args.limit, args.batch_size, Path(tmp))


if __name__ == "__main__":
    main()
