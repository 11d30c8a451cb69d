"""How far evaluating in another dtype moves the scores: two ``downcycle eval`` output directories of
the same model, items and options, one per ``--dtype``, compared task by task.

Per multiple-choice task and metric: both values, and on how many items the item's own value
(right or wrong) changed; per task, the largest change of any choice's log-likelihood. For ``loss``:
NLL per token, perplexity and bits per byte.

    downcycle eval examples/reference --tasks loss,hellaswag,... --data CORPUS --task-data DIR --dtype float32 --out A
    downcycle eval examples/reference --tasks loss,hellaswag,... --data CORPUS --task-data DIR --dtype bfloat16 --out B
    .venv/bin/python benchmarks/eval_dtype.py A B
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _items(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    dirs = [Path(a) for a in argv]
    models = [sorted(p for p in d.iterdir() if (p / "results.json").is_file()) for d in dirs]
    for a, b in zip(*models):
        ra, rb = (json.loads((m / "results.json").read_text())["tasks"] for m in (a, b))
        print(f"{a.name}: {dirs[0]} vs {dirs[1]}\n")
        print(f"| task | metric | {dirs[0].name} | {dirs[1].name} | difference | items that changed | max abs change of a log-likelihood |")
        print("|---|---|---|---|---|---|---|")
        for task in ra:
            if task not in rb:
                continue
            ia = ib = None
            sa, sb = a / "samples" / f"{task}.jsonl", b / "samples" / f"{task}.jsonl"
            if sa.is_file() and sb.is_file():
                ia, ib = _items(sa), _items(sb)
            worst = "" if ia is None else \
                f"{max(abs(u - v) for x, y in zip(ia, ib) for u, v in zip(x['loglikelihoods'], y['loglikelihoods'])):.3f}"
            for name, m in ra[task]["metrics"].items():
                if name in ("tokens", "bytes") or name not in rb[task]["metrics"]:
                    continue
                changed = "" if ia is None or name not in ia[0] else f"{sum(x[name] != y[name] for x, y in zip(ia, ib))} / {len(ia)}"
                va, vb = m["value"], rb[task]["metrics"][name]["value"]
                print(f"| {task} | {name} | {va:.4f} | {vb:.4f} | {vb - va:+.4f} | {changed} | {worst} |")
                worst = ""
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
