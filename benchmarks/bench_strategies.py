"""Which layers to drop: every selection strategy's validation loss at one depth, before any healing,
and how well the block distance predicts the real loss increase (issue 3, on the shipped reference).

For the model (default: the shipped reference, examples/reference/) and the validation split of its
own pretraining corpus (rebuilt with the settings it was trained with; its documents were held out):

1. one analysis (`downcycle analyze`'s library path: angular distances, Block Influence, the SLEB
   greedy NLL search) on calibration text, as the demo recipe runs it;
2. for each strategy (`downcycle ls strategies`), the layers it keeps at ``--keep`` (default 0.75)
   and the mean next-token NLL on the validation split with the other layers removed;
3. for every contiguous block of n = L - keep layers, its angular distance d(l, l+n) (last token)
   and the real NLL increase when it is removed; Spearman's rank correlation between the two.

Layers are removed in memory (each dropped layer returns its input: ``decoder.skip_layers``),
which tests/surgery/test_cut_equivalence.py shows computes the same logits as the cut checkpoint.

Run from the repository root:  .venv/bin/python benchmarks/bench_strategies.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def val_batches(corpus: Path, batch_size: int):
    from downcycle.training.batches import open_corpus

    _, val = open_corpus(corpus)
    ids = torch.stack([val[i]["input_ids"] for i in range(len(val))]).long()
    return [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)], int(ids.numel())


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (ties get their average rank)."""
    def ranks(v: list[float]) -> torch.Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        order = torch.argsort(t)
        r = torch.empty_like(t)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for value in set(v):  # average ranks over ties
            mask = t == value
            r[mask] = r[mask].mean()
        return r

    a, b = ranks(x), ranks(y)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "examples" / "reference"))
    p.add_argument("--corpus", help="a `downcycle data` corpus directory (default: the reference's pretraining corpus, rebuilt)")
    p.add_argument("--calibration", default=str(ROOT / "examples" / "corpus" / "brown.jsonl.gz"))
    p.add_argument("--keep", default="0.75")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()

    from downcycle.analysis.analyze import choose_layers
    from downcycle.decoder import find_decoder_layers, skip_layers
    from downcycle.analysis.nll import calibration_nll
    from downcycle.analysis.run import analyze_to_plan
    from downcycle.analysis.strategies import STRATEGIES, resolve_keep
    from downcycle.loading import resolve_source
    from downcycle.recipe import AnalyzeConfig, DataConfig

    corpus = Path(args.corpus) if args.corpus else None
    if corpus is None:
        from downcycle.corpus.build import build_corpus

        corpus = Path(tempfile.mkdtemp()) / "corpus"
        build_corpus(DataConfig(tokenizer=args.model, source=[str(ROOT / "examples" / "corpus" / "*.jsonl.gz")], out=corpus,
                                seq_len=args.seq_len, val=0.01, seed=0, progress=False))
    batches, tokens = val_batches(corpus, args.batch_size)
    t0 = time.perf_counter()
    config = AnalyzeConfig(model=args.model, data=args.calibration, out=Path(tempfile.mkdtemp()) / "a", keep=args.keep, strategy="nll",
                           samples=args.samples, seq_len=args.seq_len, progress=False, plots=False)
    src = resolve_source(args.model)
    analysis, _ = analyze_to_plan(config, src)
    analysis_s = time.perf_counter() - t0
    from downcycle.loading import load_model

    model = load_model(src, dtype="float32", device="cpu")
    _, layers = find_decoder_layers(model)
    num = len(layers)
    keep = resolve_keep(args.keep, num)
    n = num - keep

    def nll_without(dropped: list[int]) -> float:
        with skip_layers(layers, dropped):
            return calibration_nll(model, batches)

    base = nll_without([])
    rows = []
    for name in STRATEGIES:
        kept = choose_layers(analysis, name, keep)
        dropped = [i for i in range(num) if i not in kept]
        rows.append({"strategy": name, "dropped": dropped, "nll": nll_without(dropped)})
    blocks = []
    for l in range(num - n + 1):
        d = analysis.scores["angular-last"][l][n - 1]
        blocks.append({"start": l, "d": d, "nll": nll_without(list(range(l, l + n)))})
    rho = spearman([b["d"] for b in blocks], [b["nll"] - base for b in blocks])

    print(f"model {args.model}: {num} layers, keep {keep} (drop {n}); validation split of {corpus}: {tokens:,} tokens; "
          f"analysis on {args.samples} x {args.seq_len} calibration tokens of {Path(args.calibration).name} ({analysis_s:.0f} s)")
    print(f"\nreference (all {num} layers): validation NLL {base:.4f} nats/token (perplexity {torch.tensor(base).exp():.1f})\n")
    print("| strategy | dropped layers | val NLL | increase over reference | perplexity |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["nll"]):
        print(f"| {r['strategy']} | {', '.join(map(str, r['dropped']))} | {r['nll']:.4f} | {r['nll'] - base:+.4f} | "
              f"{torch.tensor(r['nll']).exp():.1f} |")
    print(f"\nevery contiguous block of {n} layers: angular distance d(l, l+{n}) (last token) vs the real NLL increase\n")
    print("| block | d(l, l+n) | val NLL increase |")
    print("|---|---|---|")
    for b in blocks:
        print(f"| {b['start']}-{b['start'] + n - 1} | {b['d']:.4f} | {b['nll'] - base:+.4f} |")
    print(f"\nSpearman rank correlation (block distance vs loss increase) over {len(blocks)} blocks: {rho:+.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": base, "strategies": rows, "blocks": blocks, "spearman": rho}, indent=2))


if __name__ == "__main__":
    main()
