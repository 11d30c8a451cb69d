"""Peak memory and time of one training step with the full LM loss against the chunked one.

A training step of a causal LM holds its logits ``(B, T, V)`` in float32, their log-softmax and the
gradient of both: at Llama-3's vocabulary (128,256) and the seed's 8,192 tokens that is ~4.2 GB per
sequence for each of them. ``downcycle train --lm-loss chunked`` (``auto`` picks it when the logits
of a micro-batch would exceed 1 GiB) runs the output layer and the cross-entropy a few hundred
positions at a time and never holds them whole.

This script builds a small Llama with a large vocabulary (``--vocab``, default 32,000, hidden 256,
2 layers) and times one forward + backward pass of ``--batch`` x ``--seq-len`` tokens with each
loss, each in a fresh process (``ru_maxrss`` is the process's peak resident memory, model and
activations included), after one warm-up step in the same process. The floating-point work of the
two is the same; the loss values and gradients agree (tests/training/test_chunked_loss.py).

Run from the repository root:  .venv/bin/python benchmarks/bench_lm_loss.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    from downcycle.recipe import TrainConfig
    from downcycle.training.methods import get_method

    mode = args.mode
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32).train()
    method = get_method("full")
    cfg = TrainConfig(model=str(args.model), lm_loss=mode, micro_batch=args.batch)
    note = method.configure_lm_loss(model, cfg, args.seq_len)
    assert (note is not None) == (mode == "chunked"), note
    ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0))
    times, losses = [], []
    for _ in range(1 + args.steps):  # the first step warms up
        start = time.perf_counter()
        out = method.loss(model, {"input_ids": ids})
        (out.total / out.tokens).backward()
        times.append(time.perf_counter() - start)
        losses.append(out.total.item() / out.tokens)
        model.zero_grad(set_to_none=True)
    return {"mode": args.mode, "seconds": min(times[1:]), "loss": losses[-1],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up; the fastest is reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "lm-loss")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(_worker(args)))
        return 0
    from downcycle.tiny import build_tiny

    model = args.workdir / f"llama-v{args.vocab}"
    if not model.exists():
        build_tiny("llama", model, vocab_size=args.vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                   num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=max(args.seq_len, 128))
    logits_gb = args.batch * (args.seq_len - 1) * args.vocab * 4 / 1e9
    print(f"llama hidden 256, 2 layers, vocabulary {args.vocab:,}; {args.batch} x {args.seq_len} tokens; "
          f"float32 logits of the step: {logits_gb:.2f} GB; {args.threads} thread(s)")
    rows = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}
    modes = ("full", "chunked")
    for mode in modes:
        cmd = [sys.executable, __file__, "--mode", mode, "--model", str(model), "--vocab", str(args.vocab), "--seq-len", str(args.seq_len),
               "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    print("\n| LM loss | peak RSS MB | step s | loss |\n|---|---:|---:|---:|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['peak_mb']:,.0f} | {r['seconds']:.2f} | {r['loss']:.6f} |")
    full = rows["full"]
    print()
    for mode in modes[1:]:
        chunked = rows[mode]
        print(f"{mode} / full: peak memory {chunked['peak_mb'] / full['peak_mb']:.2f}x "
              f"({full['peak_mb'] - chunked['peak_mb']:,.0f} MB less), step time {chunked['seconds'] / full['seconds']:.2f}x, "
              f"loss difference {abs(chunked['loss'] - full['loss']):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
