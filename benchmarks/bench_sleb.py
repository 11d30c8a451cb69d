"""Side-by-side benchmark of the SLEB search (``downcycle analyze --strategy nll``) on CPU.

A random Llama of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads, 3 key/value heads,
intermediate 1536, vocabulary 49,152, tied embeddings; speed does not depend on the weights) is
built in memory, float32, and the same calibration windows (``--samples`` x ``--seq-len``, batches
of ``--batch-size``) go through ``--removals`` greedy removals two ways:

* ``full``: every candidate scored by a full forward of the model with it (and the layers already
  chosen) skipped, the output layer over every position -- the search as SLEB's Algorithm 1 states
  it, and as downcycle ran it before (written here against downcycle's public API);
* ``cached``: :func:`downcycle.analysis.nll.greedy_removal`, which keeps the states entering every
  layer and runs a candidate at layer c from layer c on, the output layer a chunk of rows at a time.

Both must choose the same layers, with every candidate's NLL equal (the largest relative difference
is printed). Goal (issue 19): ``full / cached >= 2`` by process CPU time. Each variant runs
``--repeats`` times, taking turns, after an untimed warm-up; medians are reported.

Run from the repository root:  .venv/bin/python benchmarks/bench_sleb.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from downcycle.decoder import find_decoder_layers, skip_layers
from downcycle.analysis.hidden_stats import as_batches
from downcycle.analysis.nll import greedy_removal


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, vocab_size=args.vocab,
                         tie_word_embeddings=True, max_position_embeddings=max(2048, args.seq_len), initializer_range=0.02)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def full_nll(model, batches) -> float:
    """Mean next-token NLL from the model's own logits of every position (no padding here)."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for b in batches:
            ids = b["input_ids"]
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1]  # (B, S-1, V)
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                    reduction="none")
            total += float(nll.sum(dtype=torch.float64))
            count += nll.numel()
    return total / count


def full_search(model, batches, k):
    """(removed, steps): one full forward per candidate per removal."""
    _, layers = find_decoder_layers(model)
    removed, steps = [], []
    for _ in range(k):
        step = {}
        for cand in range(len(layers)):
            if cand not in removed:
                with skip_layers(layers, [*removed, cand]):
                    step[cand] = full_nll(model, batches)
        removed.append(min(step, key=lambda i: (step[i], i)))
        steps.append(step)
    return removed, steps


def cached_search(model, batches, k):
    result = greedy_removal(model, batches, k)
    return result.removed, result.steps


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (analyze's default)")
    p.add_argument("--removals", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = build_model(args)
    ids = torch.randint(3, args.vocab, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(0))
    batches = as_batches(ids, args.batch_size)
    print(f"model: Llama, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, "
          f"{sum(q.numel() for q in model.parameters()) / 1e6:.1f}M params, float32, {args.threads} threads; "
          f"calibration {args.samples} x {args.seq_len} tokens, batch {args.batch_size}; {args.removals} removals; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    variants = {"full": full_search, "cached": cached_search}
    for fn in variants.values():  # warm-up: one removal on one window
        fn(model, as_batches(ids[:1, :16], 1), 1)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    results = {}
    for r in range(args.repeats):
        for name, fn in variants.items():
            wall, cpu, results[name] = timed(fn, model, batches, args.removals)
            times[name].append((wall, cpu))
            print(f"  round {r + 1}: {name:<7} {wall:8.1f} s wall {cpu:8.1f} s cpu  removed {results[name][0]}", flush=True)

    (removed_f, steps_f), (removed_c, steps_c) = results["full"], results["cached"]
    worst = max(abs(sc[i] - sf[i]) / abs(sf[i]) for sf, sc in zip(steps_f, steps_c) for i in sf)
    same = removed_f == removed_c and all(sf.keys() == sc.keys() for sf, sc in zip(steps_f, steps_c))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    print(f"\n{'variant':<9}{'wall s':>9}{'cpu s':>9}")
    for k, (w, c) in med.items():
        print(f"{k:<9}{w:>9.1f}{c:>9.1f}")
    ratio = [med["full"][i] / med["cached"][i] for i in (0, 1)]
    print(f"\nfull / cached: {ratio[0]:.2f}x wall, {ratio[1]:.2f}x cpu   (goal >= 2x)")
    print(f"same removals: {same} ({removed_c}); largest relative NLL difference over every candidate: {worst:.1e}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0 if same and worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
