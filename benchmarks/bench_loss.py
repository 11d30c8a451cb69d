"""Side-by-side benchmark of the ``loss`` evaluation task's scoring on CPU.

A random Llama of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads, 3 key/value heads,
intermediate 1536, vocabulary 49,152, tied embeddings; speed does not depend on the weights) is
built in memory, float32, and scores about ``--tokens`` held-out tokens two ways:

* ``one-per-pass``: each window its own forward pass, the model's own logits of the scored
  positions through log_softmax -- how downcycle scored before (written here against the public
  :func:`downcycle.evaluation.perplexity.windows`);
* ``batched``: :func:`downcycle.evaluation.perplexity.total_nll`, windows of many documents sorted by
  length and batched, the output layer only at the scored positions, a chunk of rows at a time.

Two inputs: ``corpus``, rows of ``--seq-len`` tokens (a ``downcycle data`` val split; one window
per row), and ``text``, documents of seeded log-normal lengths (median ~200 tokens, up to
``--window``), windows of ``--window`` tokens advancing by ``--stride``. The totals must agree to 1e-6
(relative); the ratio is by process CPU time, medians of ``--repeats`` taking turns. ``--bf16`` adds
``batched-bf16``: the batched path on a bfloat16 copy of the model (``eval --dtype bfloat16``), its CPU
time and how far its total NLL moves.

Run from the repository root:  .venv/bin/python benchmarks/bench_loss.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from downcycle.evaluation.perplexity import total_nll, windows


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, vocab_size=args.vocab,
                         tie_word_embeddings=True, max_position_embeddings=max(2048, args.window), initializer_range=0.02)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def one_per_pass(model, docs, window, stride) -> float:
    total = 0.0
    with torch.inference_mode():
        for ids in docs:
            x = torch.tensor(ids)
            for lo, s, e in windows(len(ids), window, stride):
                keep = torch.arange(s - 1 - lo, e - 1 - lo)  # positions predicting x[s:e]
                logits = model(input_ids=x[lo:e - 1][None], logits_to_keep=keep).logits[0].float()  # (e - s, V)
                total -= float(logits.log_softmax(-1).gather(1, x[s:e, None]).double().sum())
    return total


def batched(model, docs, window, stride) -> float:
    return total_nll(model, docs, window, stride)


def inputs(args):
    gen = torch.Generator().manual_seed(0)
    rows = [[1] + torch.randint(3, args.vocab, (args.seq_len - 1,), generator=gen).tolist()
            for _ in range(max(1, args.tokens // args.seq_len))]
    docs, n = [], 0
    while n < args.tokens:
        length = int(min(args.window, max(2, torch.empty(1).log_normal_(5.3, 1.0, generator=gen).item())))
        docs.append([1] + torch.randint(3, args.vocab, (length - 1,), generator=gen).tolist())
        n += length - 1
    return {"corpus": (rows, args.seq_len, args.seq_len), "text": (docs, args.window, args.stride)}


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
    p.add_argument("--tokens", type=int, default=32768, help="scored tokens per input (about)")
    p.add_argument("--seq-len", type=int, default=256, help="corpus rows (the real recipe's)")
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--stride", type=int, default=2048)
    p.add_argument("--inputs", default="corpus,text")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="also time the batched path in bfloat16")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = build_model(args)
    cases = {k: v for k, v in inputs(args).items() if k in args.inputs.split(",")}
    print(f"model: Llama, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, "
          f"{sum(q.numel() for q in model.parameters()) / 1e6:.1f}M params, float32, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    variants = {"one-per-pass": one_per_pass, "batched": batched}
    models = dict.fromkeys(variants, model)
    if args.bf16:
        import copy

        variants["batched-bf16"], models["batched-bf16"] = batched, copy.deepcopy(model).to(torch.bfloat16)
    for name, fn in variants.items():  # warm-up
        fn(models[name], [list(range(1, 65))], 64, 64)
    ok = True
    summary = []
    for case, (docs, window, stride) in cases.items():
        tokens = sum(len(d) - 1 for d in docs)
        print(f"{case}: {len(docs)} documents, {tokens} scored tokens, window {window}, stride {stride}", flush=True)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
        totals = {}
        for r in range(args.repeats):
            for name, fn in variants.items():
                wall, cpu, totals[name] = timed(fn, models[name], docs, window, stride)
                times[name].append((wall, cpu))
                print(f"  round {r + 1}: {name:<13} {wall:7.1f} s wall {cpu:7.1f} s cpu  {tokens / cpu:6.0f} tok/cpu-s", flush=True)
        rel = abs(totals["batched"] - totals["one-per-pass"]) / abs(totals["one-per-pass"])
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        ratio = [med["one-per-pass"][i] / med["batched"][i] for i in (0, 1)]
        summary.append(f"{case:<7} one-per-pass {med['one-per-pass'][1]:7.1f} s cpu, batched {med['batched'][1]:7.1f} s cpu: "
                       f"{ratio[1]:.2f}x cpu ({ratio[0]:.2f}x wall); total NLL relative difference {rel:.1e}")
        if "batched-bf16" in med:
            moved = (totals["batched-bf16"] - totals["batched"]) / tokens
            summary.append(f"        batched-bf16 {med['batched-bf16'][1]:7.1f} s cpu: {med['batched'][1] / med['batched-bf16'][1]:.2f}x "
                           f"less cpu than batched float32; NLL per token moved by {moved:+.2e} nats")
        ok &= rel < 1e-6
    print("\n" + "\n".join(summary))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
