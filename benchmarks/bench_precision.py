"""Training speed on the CPU in fp32 and in bf16 autocast, LoRA and distillation, on SmolLM2-135M's shape.

Two models are built locally with random weights (``LlamaConfig``: hidden 576, intermediate 1536, 9
heads / 3 KV heads, vocabulary 49,152, tied embeddings, as SmolLM2-135M): a 24-layer student (a cut)
and the 30-layer teacher. Speed does not depend on the weights or the tokens, so the batches are
random token ids. Each run is ``downcycle train``'s own loop (``Trainer``) in a fresh process with
``torch.set_num_threads(--threads)``: ``lora`` (r=16, all linear layers) trains the student's
adapters; ``distill`` trains every student weight against the teacher (forward KL at T=2, alpha 0.5),
the teacher in ``--teacher-dtype`` (bf16 runs: bfloat16); ``full`` (optional) is distillation's
student step without the teacher. AdamW, micro-batch ``--micro-batch`` x ``--seq-len``, no evaluation.

The clock is the loop's own (``train_seconds``), from the end of the first step (warm-up: oneDNN
builds its kernels) to the last, so tokens/s is the steady state; tokens per CPU second (the
process's CPU time over the same steps) is printed too: with one thread it is the work done and
other load disturbs it less. The modes take turns for ``--repeats`` rounds and the median of each is
printed (the machine is shared; the load average is printed with every run), with the ratios
bf16 / fp32, distill / LoRA and distill / full.

Run from the repository root:  .venv/bin/python benchmarks/bench_precision.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPE = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
         "tie_word_embeddings": True, "max_position_embeddings": 2048, "rope_theta": 100000.0, "rms_norm_eps": 1e-5}
MODES = ("lora-fp32", "lora-bf16", "distill-fp32", "distill-bf16")  # also: full-fp32, full-bf16 (distill's student step alone)


def _build(workdir: Path, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = workdir / f"smollm2-shape-l{layers}"
    if not (path / "model.safetensors").is_file():
        torch.manual_seed(layers)
        LlamaForCausalLM(LlamaConfig(num_hidden_layers=layers, **SHAPE)).save_pretrained(path, safe_serialization=True)
    return path


class RandomIds:
    """``n`` sequences of ``seq_len`` random token ids, in the form of ``PackedDataset``."""

    def __init__(self, n: int, seq_len: int, vocab: int) -> None:
        import torch

        self.x = torch.randint(0, vocab, (n, seq_len), generator=torch.Generator().manual_seed(0))
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i]}


def _worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from downcycle.recipe import TrainConfig
    from downcycle.training.loop import Trainer
    from downcycle.training.methods import get_method

    method, precision = args.mode.split("-")
    extra = {"teacher": str(args.teacher), "teacher_dtype": "bfloat16" if precision == "bf16" else "float32"} if method == "distill" else {}
    cfg = TrainConfig(model=str(args.student), out=Path(args.out), method=method, precision=precision, max_steps=args.steps + 1,
                      micro_batch=args.micro_batch, lr=1e-4, log_every=1, progress=False, force=True, lora_dropout=0.0,
                      lm_loss=args.lm_loss, **extra)
    trainer = Trainer(cfg, get_method(method), RandomIds((args.steps + 1) * args.micro_batch, args.seq_len, SHAPE["vocab_size"]), None)
    trainer.setup()
    trainer.total_steps = 1
    trainer.train()  # the warm-up step
    seconds, tokens = trainer.train_seconds, trainer.tokens
    trainer.total_steps = args.steps + 1
    cpu = time.process_time()
    trainer.train()
    cpu = time.process_time() - cpu
    trainer.logger.close()
    assert trainer.precision == precision, (trainer.precision, precision)
    tokens = trainer.tokens - tokens
    return {"mode": args.mode, "tokens_per_s": tokens / (trainer.train_seconds - seconds), "tokens_per_cpu_s": tokens / cpu,
            "loss": trainer.last_train_loss, "notes": trainer.notes}


def _loss_only(args: argparse.Namespace) -> None:
    """The output layers and distillation loss of one micro-batch alone (forward and backward, bf16
    autocast): whole logits against the chunked loss at several chunk sizes; the best of 3 each."""
    import torch
    import torch.nn.functional as F

    from downcycle.training.losses.distill_chunked import chunked_distill_sums
    from downcycle.training.losses.kl import forward_kl

    torch.set_num_threads(args.threads)
    n, hidden, vocab = args.micro_batch * (args.seq_len - 1), SHAPE["hidden_size"], SHAPE["vocab_size"]
    g = torch.Generator().manual_seed(0)
    h0 = torch.randn(n, hidden, generator=g)
    weight = torch.nn.Parameter(torch.randn(vocab, hidden, generator=g) * 0.02)
    t_hidden, t_weight = torch.randn(n, hidden, generator=g).bfloat16(), (torch.randn(vocab, hidden, generator=g) * 0.02).bfloat16()
    targets = torch.randint(0, vocab, (n,), generator=g)

    def whole() -> None:
        h = h0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = F.linear(h, weight)  # (n, V), as DistillMethod's unchunked path
            with torch.inference_mode():
                t_logits = F.linear(t_hidden, t_weight)
            total = 0.5 * F.cross_entropy(logits.float(), targets, reduction="sum") + 0.5 * forward_kl(logits, t_logits, 2.0)
        total.backward()

    def chunked(rows: int) -> None:
        h = h0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            total, _, _ = chunked_distill_sums(h, weight, None, lambda i, j: F.linear(t_hidden[i:j], t_weight).float(), targets,
                                               forward_kl, 2.0, 0.5, rows)
        total.backward()

    print(f"output layers + distillation loss of {n} positions, vocabulary {vocab}, {args.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.2f}")
    for name, fn in [("whole logits", whole)] + [(f"{mib} MiB chunks ({rows} rows)", lambda rows=rows: chunked(rows))
                                                   for mib in (64, 30, 16) for rows in [mib * 2**20 // (4 * vocab)]]:
        fn()
        best = min(_timed(fn) for _ in range(3))
        print(f"  {name:24s} {best[0]:.2f} CPU s, {best[1]:.2f} s", flush=True)


def _timed(fn: object) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default=",".join(MODES), help=f"runs to compare (default: {','.join(MODES)})")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps per run, after one warm-up step (default: 3)")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per step (default: 4)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default: 256)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run (default: 2)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the median of each mode is printed (default: 3)")
    p.add_argument("--loss-only", action="store_true", help="time only the output layers and the distillation loss, "
                   "whole logits against chunk sizes (one process)")
    p.add_argument("--lm-loss", default="auto", help="--lm-loss of every run (distill: auto chunks, full does not; default: auto)")
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "precision")
    # internal: one timed run
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--student", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--teacher", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(_worker(args)))
        return 0
    if args.loss_only:
        _loss_only(args)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    student, teacher = _build(args.workdir, 24), _build(args.workdir, 30)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": str(args.threads)}
    import torch

    print(f"SmolLM2-135M shape, student 24 layers, teacher 30; {args.micro_batch} x {args.seq_len} tokens/step, "
          f"{args.steps} timed steps, {args.threads} thread(s); CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in args.modes.split(",")}
    for _ in range(args.repeats):
        for mode, done_runs in runs.items():
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                cmd = [sys.executable, __file__, "--mode", mode, "--student", str(student), "--teacher", str(teacher),
                       "--out", str(Path(tmp) / "out"), "--steps", str(args.steps), "--micro-batch", str(args.micro_batch),
                       "--seq-len", str(args.seq_len), "--threads", str(args.threads), "--lm-loss", args.lm_loss]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            run = json.loads(done.stdout.strip().splitlines()[-1])
            done_runs.append(run)
            print(f"  {mode:13s} {run['tokens_per_s']:7.1f} tok/s, {run['tokens_per_cpu_s']:6.1f} per CPU second "
                  f"(loss {run['loss']:.3f}; load {os.getloadavg()[0]:.2f}) {'; '.join(run['notes'])}", flush=True)
    for key, what in (("tokens_per_s", "tokens/s"), ("tokens_per_cpu_s", "tokens per CPU second")):
        med = {m: statistics.median(r[key] for r in v) for m, v in runs.items()}
        print(f"median {what}: " + ", ".join(f"{m} {v:.1f}" for m, v in med.items()))
        ratios = [(f"{m}: bf16 / fp32", f"{m}-bf16", f"{m}-fp32") for m in ("lora", "full", "distill")]
        ratios += [(f"{p}: distill / {m}", f"distill-{p}", f"{m}-{p}") for p in ("fp32", "bf16") for m in ("lora", "full")]
        print("  " + ", ".join(f"{name} {med[a] / med[b]:.2f}x" for name, a, b in ratios if a in med and b in med))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
