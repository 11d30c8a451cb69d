"""Several depth cuts of one reference evaluated layer by layer together (their shared prefixes of
layers run once, as a tree) against the same models evaluated one after another, layer by layer.

The reference (``--model``: by default the shipped ``examples/reference``, 12 Llama layers of width
192; ``models/smollm2-135m-instruct`` or any local checkpoint works the same) is cut with
``downcycle cut`` to each of ``--cuts`` (by default three cuts of a depth-``L`` model: the first
75% of its layers, the first 50%, and the model without its third quarter), and the reference and
the cuts are evaluated on ``--tasks`` (default ``loss,arc_easy``: ``--limit`` documents of the
shipped corpus and items of the committed task file) twice, in this process: all together with
``--layerwise`` (one tree per task), then each alone with ``--layerwise``. Printed: the wall time of
each, their ratio, the layer runs per batch each does (the tree's distinct prefixes against the
sum of the models' depths: the ratio the layer work alone would give), and whether every model's results.json tasks
and samples are identical both ways.

Run from the repository root:  .venv/bin/python benchmarks/bench_shared_prefix.py [--model DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_cuts(layers: int) -> list[str]:
    """The first 75% of the layers, the first 50%, the model without its third quarter."""
    half, three = layers // 2, (3 * layers) // 4
    return [f"0-{three - 1}", f"0-{half - 1}", f"0-{half - 1},{three}-{layers - 1}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "examples" / "reference")
    ap.add_argument("--cuts", default=None, help="';'-separated layer specs (default: see the docstring)")
    ap.add_argument("--tasks", default="loss,arc_easy")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--data", default=str(ROOT / "examples" / "corpus" / "kjv.jsonl.gz"))
    ap.add_argument("--task-data", type=Path, default=ROOT / "tests" / "fixtures" / "eval")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the cuts and results (default: a temporary directory)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from downcycle.evaluation.run import run_eval
    from downcycle.loading import read_config
    from downcycle.recipe import CutConfig, EvalConfig
    from downcycle.surgery.cut import cut
    from downcycle.surgery.layerspec import parse_layers

    if args.threads:
        torch.set_num_threads(args.threads)
    layers = int(read_config(args.model).get("num_hidden_layers") or read_config(args.model)["text_config"]["num_hidden_layers"])
    specs = args.cuts.split(";") if args.cuts else default_cuts(layers)
    kept = [list(range(layers))] + [parse_layers(spec, layers) for spec in specs]
    tree_runs = len({tuple(p[:j]) for p in kept for j in range(1, len(p) + 1)})  # each distinct prefix runs once
    alone_runs = sum(map(len, kept))
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        work = args.dir or Path(tmp)
        models = [args.model.resolve()]
        for k, spec in enumerate(specs):
            out = work / f"cut{k}"
            if not out.is_dir():
                cut(CutConfig(source=str(args.model), out=out, layers=spec, progress=False))
            models.append(out)
        common = dict(tasks=args.tasks, data=args.data, task_data=args.task_data, limit=args.limit, window=args.window,
                      layerwise=True, progress=False, force=True)
        start = time.perf_counter()
        run_eval(EvalConfig(models=[str(m) for m in models], out=work / "together", **common))
        together = time.perf_counter() - start
        start = time.perf_counter()
        for k, m in enumerate(models):
            run_eval(EvalConfig(models=[str(m)], out=work / f"alone{k}", **common))
        alone = time.perf_counter() - start
        same = True
        for k, m in enumerate(models):
            a, b = (work / d / m.name for d in ("together", f"alone{k}"))
            same &= json.loads((a / "results.json").read_text())["tasks"] == json.loads((b / "results.json").read_text())["tasks"]
            same &= all((a / "samples" / f.name).read_bytes() == f.read_bytes() for f in (b / "samples").glob("*.jsonl"))
    print(f"model: {args.model} ({layers} layers), cuts: {', '.join(specs)}; tasks {args.tasks}, limit {args.limit}; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    print("| how | wall s | layer runs per batch |")
    print("|---|---:|---:|")
    print(f"| {len(models)} models together (shared prefixes) | {together:.2f} | {tree_runs} |")
    print(f"| {len(models)} models one after another | {alone:.2f} | {alone_runs} |")
    print(f"| ratio together / separate | {together / alone:.2f}x | {tree_runs / alone_runs:.2f}x |")
    print(f"results.json tasks and samples identical: {same}")


if __name__ == "__main__":
    main()
