"""Healing's calibration pass run layer by layer against the same heal with the reference loaded whole:
wall time, peak RSS and whether the healed checkpoints are identical.

Two references, each cut and healed in its own processes (``/usr/bin/time -v``):

1. ``--model`` (default ``models/smollm2-135m-instruct`` when ``make smollm2`` has fetched it, else the
   shipped ``examples/reference``): the speed users feel on a model that fits. ``linear`` on the cut
   that drops the middle quarter of the layers, ``layer`` (``--epochs``) on the cut that keeps the
   first three quarters less one (its tail gap replaced by one layer).
2. A synthetic bf16 Llama of ``--synthetic-layers`` Llama-2-7B-shaped layers (``bench_layerwise.py``'s
   checkpoint; healing runs in float32, so the whole reference takes twice its bf16 size), ``linear``
   on the cut without its middle third: the memory layer by layer saves, beside the cost model (the
   largest layer + embeddings and head + the captured states + the d x d float64 sums of the fit).

Printed per run: seconds and peak RSS both ways, their ratios, and whether every tensor of the two
outputs is equal.

Run from the repository root:  .venv/bin/python benchmarks/bench_heal_layerwise.py [--samples N] [--seq-len N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_layerwise import HIDDEN, MLP, VOCAB, layer_tensors, timed, write_model


def same_tensors(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    def tensors(d: Path) -> dict:
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    ta, tb = tensors(a), tensors(b)
    return sorted(ta) == sorted(tb) and all(ta[k].equal(tb[k]) for k in ta)


def compare(label: str, cut_dir: Path, work: Path, heal_args: list[str]) -> None:
    """Heal ``cut_dir`` in memory and layer by layer; print a table row."""
    runs = {}
    for how in ("no-layerwise", "layerwise"):
        runs[how] = timed(["heal", str(cut_dir), str(work / f"{label}-{how}"), *heal_args, "--no-progress", f"--{how}"])[:2]
    (s_mem, rss_mem), (s_lw, rss_lw) = runs["no-layerwise"], runs["layerwise"]
    same = same_tensors(work / f"{label}-no-layerwise", work / f"{label}-layerwise")
    print(f"| {label} | {s_mem:.1f} s | {s_lw:.1f} s | {s_lw / s_mem:.2f}x | {rss_mem / 2**30:.2f} GiB | {rss_lw / 2**30:.2f} GiB | "
          f"{rss_lw / rss_mem:.2f}x | {same} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    real = ROOT / "models" / "smollm2-135m-instruct"
    ap.add_argument("--model", type=Path, default=real if (real / "config.json").is_file() else ROOT / "examples" / "reference")
    ap.add_argument("--synthetic-layers", type=int, default=6, help="0: skip the synthetic model")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the checkpoints (default: a temporary directory)")
    args = ap.parse_args()
    from downcycle.loading import read_config

    work = Path(tempfile.mkdtemp(prefix="bench-heal-layerwise-", dir=args.dir))
    data = ["--data", str(ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz"), "--samples", str(args.samples),
            "--seq-len", str(args.seq_len)]
    try:
        print("| reference, method | in memory | layer by layer | time | peak RSS in memory | layer by layer | RSS | same tensors |")
        print("|---|---|---|---|---|---|---|---|")
        cfg = read_config(args.model)
        n = int(cfg.get("num_hidden_layers") or cfg["text_config"]["num_hidden_layers"])
        q = n // 4
        timed(["cut", str(args.model), str(work / "mid"), "--drop", f"{n // 2 - q // 2}-{n // 2 + q - q // 2 - 1}", "--no-progress"])
        compare(f"{args.model.name}, linear (drop middle {q})", work / "mid", work, ["--method", "linear", *data])
        timed(["cut", str(args.model), str(work / "head"), "--layers", f"0-{3 * q - 2}", "--no-progress"])
        compare(f"{args.model.name}, layer x{args.epochs} epoch (first {3 * q - 1} + 1)", work / "head", work,
                ["--method", "layer", "--epochs", str(args.epochs), "--precision", "fp32", *data])
        if args.synthetic_layers:
            layers = args.synthetic_layers
            synthetic = work / "synthetic"
            size = write_model(synthetic, layers)
            third = layers // 3
            timed(["cut", str(synthetic), str(work / "syn-cut"), "--drop", f"{third}-{2 * third - 1}", "--no-progress"])
            compare(f"synthetic {layers} x 7B-shaped layers ({size / 2**30:.2f} GiB bf16), linear", work / "syn-cut", work,
                    ["--method", "linear", *data])
            layer = sum(s[0] * (s[1] if len(s) > 1 else 1) for s in layer_tensors(0).values()) * 4
            outer = (2 * VOCAB * HIDDEN + HIDDEN) * 4
            tokens = args.samples * args.seq_len
            states = 3 * tokens * HIDDEN * 4  # one gap: the MLP output before it, the states entering and leaving it
            sums = 2 * HIDDEN * HIDDEN * 8
            print(f"\ncost model, layer by layer (float32): largest layer {layer / 2**30:.2f} + embeddings and head {outer / 2**30:.2f}"
                  f" + captured states {states / 2**30:.2f} + XᵀX, XᵀY {sums / 2**30:.2f} = "
                  f"{(layer + outer + states + sums) / 2**30:.2f} GiB + the process; in memory the reference alone is "
                  f"{(layers * layer + outer) / 2**30:.2f} GiB (MLP {MLP})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
