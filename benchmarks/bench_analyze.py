"""Side-by-side benchmark of ``downcycle analyze``'s one-pass reduction on CPU.

A random Llama (``--layers`` 16, ``--hidden`` 512 by default) is built in memory and the same
calibration tokens (``--samples`` windows of ``--seq-len``, batches of ``--batch-size``) go through:

* ``forward``: a plain forward pass of the causal LM (logits included), the cost of merely running
  the model over the calibration set -- and ``decoder``, the same without the LM head;
* ``downcycle``: :func:`downcycle.analysis.hidden_stats.collect_hidden_stats` plus the metrics: the
  angular distance of every (l, n), last token and all tokens, and Block Influence of every layer;
* ``per-n``: the PruneMe-style analysis (``compute_block_distances`` in that project's scripts, written
  here from its description): one forward pass with ``output_hidden_states=True`` per block size n,
  each computing d(l, l+n) on the last token for every l -- L passes for all block sizes.

Goals (issue 3): ``downcycle / forward <= 1.15`` and ``per-n / downcycle >= L / 2``. The variants take
turns, after one untimed warm-up round; the median of ``--repeats`` is reported, as wall time and as
process CPU time (less disturbed by other load on a shared machine). The per-n baseline's distances
are checked against downcycle's (they must agree: same definition, same tokens).

Run from the repository root:  .venv/bin/python benchmarks/bench_analyze.py
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch

from downcycle.analysis.hidden_stats import as_batches, collect_hidden_stats
from downcycle.analysis.metrics import METRICS
from downcycle.tiny import tiny_config


def build_model(layers: int, hidden: int, vocab: int, seq_len: int):
    from transformers import LlamaForCausalLM

    config = tiny_config("llama", num_hidden_layers=layers, hidden_size=hidden, intermediate_size=int(hidden * 2.6875),
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, vocab_size=vocab,
                         max_position_embeddings=seq_len, initializer_range=0.02)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def plain_forward(model, batches) -> None:
    with torch.inference_mode():
        for b in batches:
            model(**b, use_cache=False)


def decoder_forward(model, batches) -> None:
    with torch.inference_mode():
        for b in batches:
            model.model(**b, use_cache=False)


def one_pass(model, batches):
    stats = collect_hidden_stats(model, batches)
    return {name: m.compute(stats) for name, m in METRICS.items() if m.compute is not None}


def per_n(model, batches):
    """PruneMe-style: for each block size n, a full forward pass with every hidden state, then
    d(l, l+n) = arccos(cos)/pi on each sequence's last token for every l, averaged over sequences.
    Uses downcycle's state definition (last state before the final norm) so the values compare."""
    num = model.config.num_hidden_layers
    norm, model.model.norm = model.model.norm, torch.nn.Identity()
    try:
        out = [[None] * num for _ in range(num)]
        for n in range(1, num + 1):
            sums, count = [0.0] * (num - n + 1), 0
            with torch.inference_mode():
                for b in batches:
                    states = model(**b, use_cache=False, output_hidden_states=True).hidden_states
                    last = [h[:, -1].double() for h in states]  # (B, d) per state
                    for l in range(num - n + 1):
                        cos = torch.nn.functional.cosine_similarity(last[l], last[l + n], dim=-1).clamp(-1, 1)
                        sums[l] += float((torch.arccos(cos) / math.pi).sum())
                    count += b["input_ids"].shape[0]
            for l in range(num - n + 1):
                out[l][n - 1] = sums[l] / count
        return out
    finally:
        model.model.norm = norm


def reduction_only(num_layers: int, hidden: int, tokens: int, batch_tokens: int) -> None:
    """The reduction downcycle adds per batch, alone: float64 Gram matrices of (L+1) states per token,
    cosines, arccos, running sums -- on random states (its cost does not depend on their values)."""
    from downcycle.analysis.hidden_stats import HiddenStats, _chunk_tokens, token_cosines

    stats = HiddenStats.zeros(num_layers)
    states = torch.randn(batch_tokens, num_layers + 1, hidden)
    step = _chunk_tokens(num_layers + 1, hidden)
    is_last = torch.zeros(batch_tokens, dtype=torch.bool)
    for _ in range(tokens // batch_tokens):
        for start in range(0, batch_tokens, step):
            stats.add(token_cosines(states[start : start + step]), is_last[start : start + step])


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--per-n-repeats", type=int, default=1, help="repeats of the (slow) per-n baseline")
    args = p.parse_args(argv)

    model = build_model(args.layers, args.hidden, args.vocab, args.seq_len)
    ids = torch.randint(3, args.vocab, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(0))
    batches = as_batches(ids, args.batch_size)
    print(f"model: Llama, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, float32, {torch.get_num_threads()} threads; "
          f"calibration: {args.samples} x {args.seq_len} tokens, batch {args.batch_size}; load average {os.getloadavg()[0]:.2f}",
          flush=True)

    runs = {"forward": plain_forward, "decoder": decoder_forward, "downcycle": one_pass}
    for fn in runs.values():  # warm-up round
        fn(model, batches[:1])
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in [*runs, "per-n"]}
    scores = None
    for r in range(args.repeats):
        for name, fn in runs.items():
            wall, cpu, result = timed(fn, model, batches)
            times[name].append((wall, cpu))
            print(f"  round {r + 1}: {name:<10} {wall:7.2f} s wall {cpu:7.2f} s cpu", flush=True)
            scores = result if name == "downcycle" else scores
        if r < args.per_n_repeats:
            wall, cpu, baseline = timed(per_n, model, batches)
            times["per-n"].append((wall, cpu))
            print(f"  round {r + 1}: {'per-n':<10} {wall:7.2f} s wall {cpu:7.2f} s cpu", flush=True)

    reduce_wall, reduce_cpu, _ = timed(reduction_only, args.layers, args.hidden, args.samples * args.seq_len,
                                       args.batch_size * args.seq_len)

    # the baseline and downcycle must compute the same numbers
    ours = scores["angular-last"]
    worst = max(abs(ours[l][n] - baseline[l][n]) for l in range(args.layers) for n in range(args.layers) if ours[l][n] is not None)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    print(f"\n{'variant':<11}{'wall s':>9}{'cpu s':>9}   what")
    what = {"forward": "plain forward pass (causal LM, logits)", "decoder": "forward of the decoder only (no LM head)",
            "downcycle": "one pass: d(l, n) for all l, n (last token + all tokens) and BI",
            "per-n": f"PruneMe-style: {args.layers} passes with output_hidden_states, one per n"}
    for k, (w, c) in med.items():
        print(f"{k:<11}{w:>9.2f}{c:>9.2f}   {what[k]}")
    ratio_fwd = [med["downcycle"][i] / med["forward"][i] for i in (0, 1)]
    ratio_dec = [med["downcycle"][i] / med["decoder"][i] for i in (0, 1)]
    speedup = [med["per-n"][i] / med["downcycle"][i] for i in (0, 1)]
    print(f"\ndowncycle / forward : {ratio_fwd[0]:.3f} wall, {ratio_fwd[1]:.3f} cpu   (goal <= 1.15)")
    print(f"downcycle / decoder : {ratio_dec[0]:.3f} wall, {ratio_dec[1]:.3f} cpu   (for reference: no LM head in either)")
    print(f"per-n / downcycle   : {speedup[0]:.1f}x wall, {speedup[1]:.1f}x cpu   (goal >= {args.layers / 2:g}x = block sizes / 2)")
    print(f"max |d_per-n - d_downcycle| over every (l, n): {worst:.2e}")
    print(f"the reduction alone (Gram, cosines, arccos, sums over the same tokens): {reduce_wall:.3f} s wall, "
          f"{reduce_cpu:.3f} s cpu = {reduce_cpu / med['forward'][1]:.1%} of a forward pass's cpu time")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    ok = ratio_fwd[1] <= 1.15 and speedup[1] >= args.layers / 2 and worst < 1e-4
    print("goals met" if ok else "GOALS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
