"""Evaluation on the real reference model: downcycle vs lm-evaluation-harness's HF backend,
agreement and speed on the same seeded sample of the full validation sets.

Model: ``models/smollm2-135m-instruct`` (``make smollm2``: SmolLM2-135M-Instruct, its Q4_1 GGUF
dequantized to float32). Items: ``--sample`` (default 200) per built-in multiple-choice task, drawn
from the full split in the task-data directory (``make taskdata``) by downcycle's
``sample_indices(n, sample, seed)``; MMLU draws ``--sample`` items from its 57 test splits pooled
(5-shot from each subject's dev split). The drawn rows are written as jsonl subsets into a temporary
directory, and both tools read those files (lm-eval through its own task YAMLs, included from the
installed package and pointed at them), so both score the very same documents.

For every task it checks agreement (every per-item log-likelihood within ``1e-4 + 2e-6 * |ll|``,
acc/acc_norm identical item by item) and times both tools in one process, taking turns task by
task, with ``--threads`` torch threads each and the same batch size: lm-eval's ``simple_evaluate``
vs downcycle's ``evaluate_mc`` / ``evaluate_group`` (each reads its files, builds its prompts,
tokenises, scores and computes the metrics). Beside each measured ratio it prints the speed-up the
arithmetic allows (FLOPs lm-eval spends over FLOPs downcycle must spend; see ``flops``).
``--e2e TASK`` also times whole CLI runs (``python -m downcycle eval`` vs ``python -m lm_eval``,
fresh processes, ``OMP_NUM_THREADS=--threads``) on that task and on one item of it (start-up).
Exit status 1 when any task disagrees.

Run from the repository root:  .venv/bin/python benchmarks/bench_eval_real.py [--tasks arc_easy,mmlu] [--e2e arc_easy]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODEL = ROOT / "models" / "smollm2-135m-instruct"
# downcycle task -> (lm-eval task YAML under lm_eval/tasks, extra YAML lines)
HARNESS = {
    "hellaswag": ("hellaswag/hellaswag.yaml", []),
    "arc_easy": ("arc/arc_easy.yaml", ["test_split: null"]),
    "arc_challenge": ("arc/arc_challenge.yaml", ["test_split: null"]),
    "piqa": ("piqa/piqa.yaml", []),
    "winogrande": ("winogrande/default.yaml", []),
    "openbookqa": ("openbookqa/openbookqa.yaml", ["test_split: null"]),
    "boolq": ("super_glue/boolq/default.yaml", []),
    "sciq": ("sciq/sciq.yaml", ["test_split: null"]),
    "social_iqa": ("siqa/siqa.yaml", []),
    "commonsense_qa": ("commonsense_qa/default.yaml", []),
    "copa": ("super_glue/copa/default.yaml", []),
    "truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", []),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", []),
}
TASKS = [t for t in HARNESS if not t.startswith("truthfulqa")] + ["mmlu"]


def tolerance(ll: float) -> float:
    return 1e-4 + 2e-6 * abs(ll)


@dataclass
class Prepared:
    """One task's sampled documents as files both tools read."""

    task: str
    leaves: list[str]  # downcycle leaf task names (the MMLU subjects drawn; else [task])
    items: int
    yamls: list[str] = field(default_factory=list)  # lm-eval task names (dc_<leaf>)


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _harness_yaml(yamls: Path, leaf: str, base: str, extra: list[str], files: dict[str, Path]) -> str:
    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    lines = [
        f"include: {root / base}",
        f"task: dc_{leaf}",
        "dataset_path: json",
        "dataset_name: null",
        "training_split: null",
        "dataset_kwargs:",
        "  data_files:",
    ]
    lines += [f"    {split}: {path}" for split, path in files.items()]
    (yamls / f"dc_{leaf}.yaml").write_text("\n".join(lines + extra) + "\n")
    return f"dc_{leaf}"


def prepare(task: str, source: Path, data: Path, yamls: Path, sample: int, seed: int) -> Prepared | None:
    """Write ``task``'s seeded sample (and few-shot split) into ``data`` and lm-eval YAMLs into
    ``yamls``; None when ``source`` lacks the task's files."""
    from downcycle.evaluation.task_data import find_local, sample_indices
    from downcycle.evaluation.tasks import TASKS as REGISTRY
    from downcycle.evaluation.tasks.mmlu import SUBJECTS

    if task == "mmlu":
        pooled = []
        for s in SUBJECTS:
            path = find_local(source, f"mmlu_{s}", "test")
            if path is None or path.suffix != ".jsonl" or find_local(source, f"mmlu_{s}", "dev") is None:
                return None
            pooled += [(s, row) for row in _rows(path)]
        chosen = [pooled[i] for i in sample_indices(len(pooled), sample, seed)]
        prep = Prepared(task, [], len(chosen))
        for s in SUBJECTS:
            rows = [row for subject, row in chosen if subject == s]
            if not rows:
                continue
            files = {"test": data / f"mmlu_{s}.test.jsonl", "dev": data / f"mmlu_{s}.dev.jsonl"}
            _write(files["test"], rows)
            files["dev"].write_bytes((source / f"mmlu_{s}.dev.jsonl").read_bytes())
            prep.leaves.append(f"mmlu_{s}")
            prep.yamls.append(_harness_yaml(yamls, f"mmlu_{s}", f"mmlu/default/mmlu_{s}.yaml", ["num_fewshot: 5"], files))
        return prep
    spec = REGISTRY[task]
    path = find_local(source, spec.stem, spec.split)
    if path is None or path.suffix != ".jsonl":
        return None
    rows = _rows(path)
    rows = [rows[i] for i in sample_indices(len(rows), sample, seed)]
    target = data / f"{spec.stem}.{spec.split}.jsonl"
    _write(target, rows)
    base, extra = HARNESS[task]
    return Prepared(task, [task], len(rows), [_harness_yaml(yamls, task, base, extra, {"validation": target})])


def run_lm_eval(lm, manager, prep: Prepared) -> tuple[dict[str, list[dict]], dict]:
    """lm-eval's per-item samples (per leaf, by doc_id) and its results."""
    from lm_eval import simple_evaluate

    r = simple_evaluate(model=lm, tasks=prep.yamls, task_manager=manager, log_samples=True)
    return ({leaf: sorted(r["samples"][f"dc_{leaf}"], key=lambda s: s["doc_id"]) for leaf in prep.leaves}, r["results"])


def run_downcycle(model, encoder, prep: Prepared, data: Path, batch: int) -> tuple[dict[str, list[dict]], object]:
    from downcycle.evaluation.multiple_choice import McOptions, evaluate_group, evaluate_mc
    from downcycle.evaluation.tasks import TASKS as REGISTRY

    opts = McOptions(task_data=data, batch_size=batch, progress=False)
    if prep.task == "mmlu":
        result, _, samples = evaluate_group(model, encoder, REGISTRY["mmlu"], opts)
        return samples, result
    result, samples, _ = evaluate_mc(model, encoder, REGISTRY[prep.task], opts)
    return {prep.task: samples}, result


def compare(prep: Prepared, theirs: dict[str, list[dict]], ours: dict[str, list[dict]]) -> tuple[list[str], float, float]:
    """(disagreements, largest |d|, largest |d| / tolerance) over every item of the task."""
    from downcycle.evaluation.tasks import TASKS as REGISTRY

    problems, worst, worst_ratio = [], 0.0, 0.0
    for leaf in prep.leaves:
        h, s = theirs[leaf], ours.get(leaf, [])
        if len(h) != len(s):
            problems.append(f"{leaf}: {len(h)} lm-eval items vs {len(s)} downcycle items")
            continue
        for a, b in zip(h, s):
            h_lls = [r[0] for r in a["filtered_resps"]]
            if len(h_lls) != len(b["loglikelihoods"]):
                problems.append(f"{leaf} item {a['doc_id']}: {len(h_lls)} vs {len(b['loglikelihoods'])} choices")
                continue
            for x, y in zip(h_lls, b["loglikelihoods"]):
                d = abs(x - y)
                worst, worst_ratio = max(worst, d), max(worst_ratio, d / tolerance(x))
                if d > tolerance(x):
                    problems.append(f"{leaf} item {a['doc_id']}: log-likelihood {y!r} vs lm-eval {x!r}")
            for m in REGISTRY[leaf].metrics:
                if float(a[m]) != float(b[m]):
                    problems.append(f"{leaf} item {a['doc_id']}: {m} {b[m]} vs lm-eval {a[m]}")
    return problems, worst, worst_ratio


def flops(model, encoder, prep: Prepared, data: Path) -> tuple[float, float, float, float]:
    """(lm-eval's FLOPs, the FLOPs the arithmetic allows, downcycle's arithmetic, lm-eval's FLOPs
    without its cache of identical inputs) for the task.

    Per input token: 2 x the body's weights (every parameter but the embedding/output matrix), plus
    attention over the positions it sees (4 x layers x query width x keys); per position through the
    output layer: 2 x hidden x vocabulary. lm-eval runs every request's input ``(context +
    continuation)[:-1]`` (truncated as both truncate) whole, body and output layer at every position,
    and runs identical inputs once (its ``group_by="contexts"`` cache: MMLU's and BoolQ's one-token
    answers). "Allowed": each question's distinct contexts once and each choice's continuation through
    the body, only scored positions through the output layer. downcycle's arithmetic further shares the
    token prefix common to a question's contexts (Winogrande: up to the blank) and a prefix common to
    every question of a task (MMLU's few-shot examples) once.
    """
    from downcycle.evaluation.multiple_choice import McOptions, fewshot_docs
    from downcycle.evaluation.scoring import _task_prefix_length
    from downcycle.evaluation.task_data import docs_and_fewshot_pool
    from downcycle.evaluation.tasks import TASKS as REGISTRY

    cfg = model.config
    head = 2 * cfg.hidden_size * cfg.vocab_size
    embed = model.get_input_embeddings().weight.numel()
    body = 2 * (sum(p.numel() for p in model.parameters()) - embed * (1 if cfg.tie_word_embeddings else 2))
    att = (
        4 * cfg.num_hidden_layers * cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    )

    def tokens(start: int, n: int) -> float:  # body + attention of n tokens at positions start..start+n-1
        return n * body + att * (n * start + n * (n + 1) / 2)

    theirs = allowed = ours = naive = 0.0
    for leaf in prep.leaves:
        spec = REGISTRY[leaf]
        sel = docs_and_fewshot_pool(spec, data, None, None)
        same = spec.fewshot_split == spec.split
        reqs = [
            spec.request(d, fewshot_docs(spec, sel.shots, sel.pool, i, same, McOptions.seed))
            for i, d in zip(sel.indices, sel.docs)
        ]
        seen = set()
        for req in reqs:
            contexts = {}
            for c, x in zip(req.contexts, req.continuations):
                ctx, cont = encoder.pair(c, x)
                seq = (ctx + cont)[-(encoder.max_length + 1) :]
                ctx_len = len(seq) - len(cont)
                naive += tokens(0, len(seq) - 1) + (len(seq) - 1) * head
                if tuple(seq[:-1]) not in seen:
                    seen.add(tuple(seq[:-1]))
                    theirs += tokens(0, len(seq) - 1) + (len(seq) - 1) * head
                contexts[tuple(seq[:ctx_len])] = ctx_len
                allowed += tokens(ctx_len, len(cont) - 1) + len(cont) * head
            allowed += sum(tokens(0, n) for n in contexts.values())
        groups = encoder.groups(reqs)
        C = _task_prefix_length(groups)
        ours += tokens(0, C)
        for g in groups:
            P = len(g.prefix)
            ours += tokens(C, P - C) + sum(tokens(P, len(t) - 1) + n * head for t, n in zip(g.tails, g.n_targets))
    return theirs, allowed, ours, naive


def _timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def e2e(task: str, model_dir: Path, source: Path, work: Path, sample: int, seed: int, batch: int, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    py = sys.executable
    for n in (sample, 1):
        data, yamls = work / f"e2e-data-{n}", work / f"e2e-yamls-{n}"
        data.mkdir(), yamls.mkdir()
        prep = prepare(task, source, data, yamls, n, seed)
        cmds = {
            "downcycle": [
                py,
                "-m",
                "downcycle",
                "eval",
                str(model_dir),
                "--tasks",
                task,
                "--task-data",
                str(data),
                "--batch-size",
                str(batch),
                "--out",
                str(work / f"dc-out-{n}"),
                "--force",
                "--no-progress",
            ],
            "lm-eval": [
                py,
                "-m",
                "lm_eval",
                "--model",
                "hf",
                "--model_args",
                f"pretrained={model_dir},dtype=float32",
                "--tasks",
                ",".join(prep.yamls),
                "--include_path",
                str(yamls),
                "--batch_size",
                str(batch),
                "--device",
                "cpu",
            ],
        }
        walls = {}
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            walls[name] = time.perf_counter() - t0
        print(
            f"end to end, {task} {prep.items} item(s): lm-eval {walls['lm-eval']:6.1f} s, downcycle {walls['downcycle']:6.1f} s "
            f"wall (start-up included): x{walls['lm-eval'] / walls['downcycle']:.2f}; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--task-data", type=Path, default=None, help="full splits (default: downcycle's default task-data directory)")
    ap.add_argument("--tasks", default=",".join(TASKS + ["truthfulqa_mc1", "truthfulqa_mc2"]))
    ap.add_argument("--sample", type=int, default=200, help="items per task (MMLU: pooled over its subjects)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--e2e", default="", help="a task to time whole CLI runs on (empty: none)")
    ap.add_argument("--json", type=Path, help="write the per-task rows here")
    args = ap.parse_args()
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from downcycle.evaluation.encoding import Encoder
    from downcycle.evaluation.run import max_length
    from downcycle.evaluation.task_data import resolve_task_data
    from downcycle.loading import load_model, load_tokenizer

    source = resolve_task_data(args.task_data)
    if source is None or not args.model.is_dir():
        print(f"needs the model ({args.model}: `make smollm2`) and the task data (`make taskdata`)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(
        f"model {args.model}; items from {source}, {args.sample} per task, seed {args.seed}; batch {args.batch_size}; "
        f"{args.threads} torch threads of {os.cpu_count()} CPUs; load before {os.getloadavg()}",
        flush=True,
    )
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        data, yamls = Path(tmp) / "data", Path(tmp) / "yamls"
        data.mkdir(), yamls.mkdir()
        preps = {}
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            preps[task] = prepare(task, source, data, yamls, args.sample, args.seed)
            if preps[task] is None:
                print(f"{task:14s} skipped: no local jsonl files for it in {source}", flush=True)
        lm = HFLM(pretrained=str(args.model), batch_size=args.batch_size, device="cpu", dtype="float32")
        manager = TaskManager(include_path=str(yamls), include_defaults=False)
        model, tok = load_model(args.model, dtype="float32"), load_tokenizer(args.model)
        encoder = Encoder(tok, max_length(model, tok))
        for task, prep in preps.items():
            if prep is None:
                continue
            (theirs, _), t_wall, t_cpu = _timed(run_lm_eval, lm, manager, prep)
            (ours, result), o_wall, o_cpu = _timed(run_downcycle, model, encoder, prep, data, args.batch_size)
            problems, worst, worst_ratio = compare(prep, theirs, ours)
            failed |= bool(problems)
            f_theirs, f_allowed, f_ours, f_naive = flops(model, Encoder(tok, encoder.max_length), prep, data)
            row = {
                "task": task,
                "items": prep.items,
                "agree": not problems,
                "max_abs_diff": worst,
                "max_diff_over_tol": worst_ratio,
                "lm_eval_s": t_wall,
                "downcycle_s": o_wall,
                "lm_eval_items_s": prep.items / t_wall,
                "downcycle_items_s": prep.items / o_wall,
                "speedup": t_wall / o_wall,
                "cpu_speedup": t_cpu / o_cpu,
                "allowed": f_theirs / f_allowed,
                "downcycle_arithmetic": f_theirs / f_ours,
                "allowed_without_lm_eval_cache": f_naive / f_allowed,
                "flops": [f_theirs, f_allowed, f_ours, f_naive],
                "metrics": {m: [v.value, v.stderr] for m, v in result.metrics.items()},
            }
            rows.append(row)
            scores = ", ".join(f"{m} {v:.4f}±{e or 0:.4f}" for m, (v, e) in row["metrics"].items())
            print(
                f"{task:14s} {prep.items:4d} items  lm-eval {row['lm_eval_items_s']:6.2f} items/s  downcycle "
                f"{row['downcycle_items_s']:6.2f} items/s  x{row['speedup']:.2f} (cpu x{row['cpu_speedup']:.2f})  allowed "
                f"x{row['allowed']:.2f} ({row['speedup'] / row['allowed']:.0%}; x{row['allowed_without_lm_eval_cache']:.2f} without lm-eval's "
                f"cache), downcycle's arithmetic x{row['downcycle_arithmetic']:.2f}  "
                f"{'agree' if not problems else 'DISAGREE'} (max |d| {worst:.1e}, {worst_ratio:.2f} of tolerance)  {scores}",
                flush=True,
            )
            for p in problems[:10]:
                print("   ", p)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
        if rows:
            t, o = sum(r["lm_eval_s"] for r in rows), sum(r["downcycle_s"] for r in rows)
            f = [sum(r["flops"][i] for r in rows) for i in range(4)]
            print(
                f"all {len(rows)} tasks: lm-eval {t:.0f} s, downcycle {o:.0f} s: x{t / o:.2f}, allowed x{f[0] / f[1]:.2f} "
                f"({t / o / (f[0] / f[1]):.0%}), downcycle's arithmetic x{f[0] / f[2]:.2f}; load after {os.getloadavg()}",
                flush=True,
            )
        del lm, model
        if args.e2e:
            e2e(args.e2e, args.model, source, Path(tmp), args.sample, args.seed, args.batch_size, args.threads)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
