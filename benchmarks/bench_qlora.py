"""QLoRA against LoRA on this machine: tokens/s and peak memory of ``downcycle train``, fp32 and bf16.

Two models: the shipped reference (``examples/reference``, a 12-layer Llama of 7.9M parameters)
cut to its first 9 layers (the seed's first-75% cut), and a model of SmolLM2-135M's shape built
locally with random weights (hidden 576, 30 layers, 9 heads, 3 KV heads, intermediate 1536, vocab
49,152, tied embeddings; 135M parameters). Both train on the shipped corpus (tokenized by
``examples/tokenizer`` into ``--seq-len`` sequences with `downcycle data`) with the seed's adapter:
LoRA r=128, alpha=128, dropout 0.05 on all linear layers (``--lora-r`` to change), AdamW, cosine.

Each run is a fresh process (``torch.set_num_threads(--threads)``) that sets up a ``Trainer``
(loading, 4-bit quantisation for QLoRA, LoRA wrapping) and trains ``--steps`` optimizer steps.
Printed per run: tokens/s of the training loop (wall and CPU time); the bytes of the model's
parameters and buffers (4-bit: packed weights + quantisation state); the resident memory after
setup; the peaks during loading and training of anonymous memory (heap and tensors: what must fit
in RAM) and of file-backed memory (transformers maps the safetensors file and uses its pages as the
weights where it can; the kernel can drop such clean pages), sampled every 10 ms; the peak RSS
(``ru_maxrss``, both kinds) after training and after writing the merged checkpoint (QLoRA's
export reloads the base in float32). Then the ratios
QLoRA / LoRA and bf16 / fp32. ``--optimizers`` also times one AdamW step over the LoRA parameters
of the SmolLM2-shaped model with torch's fused AdamW and with bitsandbytes' 32-bit and paged
32-bit AdamW, and reports how far their updates differ (the basis of the paged_adamw_32bit fallback).
``--eval-repacking`` times no-grad eval-mode forwards of the 4-bit SmolLM2-shaped model with
bitsandbytes' CPU bf16 repacking (its default on AVX512-BF16 CPUs) and without (what downcycle uses).

Run from the repository root:  .venv/bin/python benchmarks/bench_qlora.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_SHAPE = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                 "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True, "head_dim": 64,
                 "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 100000.0}


def _memory() -> dict[str, int]:
    """This process's resident memory in bytes: anonymous (heap, tensors) and file-backed (mapped
    files: transformers maps the safetensors file and uses its pages as the weights where it can;
    such clean pages are reclaimable by the kernel)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) * 1024
    return out


class _PeakMemory:
    """Samples :func:`_memory` every 10 ms on a thread and keeps the peaks (ru_maxrss has only the total)."""

    def __init__(self) -> None:
        import threading

        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for key, value in _memory().items():
                self.peak[key] = max(self.peak.get(key, 0), value)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peak


def _worker(args: argparse.Namespace) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    from downcycle.corpus.loader import PackedDataset
    from downcycle.recipe import TrainConfig
    from downcycle.training.export import save_trained
    from downcycle.training.loop import Trainer
    from downcycle.training.methods import get_method

    train = PackedDataset(args.corpus, "train")
    cfg = TrainConfig(model=str(args.model), data=args.corpus, out=Path(args.out), method=args.method, precision=args.precision,
                      max_steps=args.steps, micro_batch=args.micro_batch, lr=1e-4, schedule="cosine", log_every=10**6,
                      progress=False, force=True, lora_r=args.lora_r, lora_alpha=float(args.lora_r), lora_dropout=0.05,
                      lora_targets="all-linear", gradient_checkpointing=args.gradient_checkpointing)
    sampler = _PeakMemory()
    trainer = Trainer(cfg, get_method(args.method), train, None)
    trainer.setup()
    setup = _memory()
    model = trainer.acc.unwrap_model(trainer.model)
    weight_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    weight_bytes += sum(v.numel() * v.element_size() for k, v in model.state_dict().items()
                        if k.endswith(("absmax", "quant_map", "bitsandbytes__nf4")))  # 4-bit quantisation state
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    trainer.logger.close()
    peak_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampled = sampler.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_trained(model, trainer.acc.get_state_dict(trainer.model), True, Path(args.model), out, False)
    peak_total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = args.steps * args.micro_batch * train.seq_len
    return {"tokens_per_s": tokens / seconds, "tokens_per_cpu_s": tokens / cpu, "base_params": trainer.total_params - trainer.trainable,
            "rss_setup": setup["VmRSS"], "anon_setup": setup["RssAnon"], "peak_anon": sampled["RssAnon"],
            "peak_file": sampled["RssFile"], "peak_train": peak_train, "peak_total": peak_total,
            "weight_bytes": weight_bytes, "loss": trainer.last_train_loss, "trainable": trainer.trainable, "notes": trainer.notes}


def _build(workdir: Path, seq_len: int) -> tuple[dict[str, Path], Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from downcycle.surgery.cut import cut
    from downcycle.corpus.build import build_corpus
    from downcycle.recipe import CutConfig, DataConfig

    models = {"the shipped reference cut to its first 9 of 12 layers": workdir / "reference-cut",
              "a model of SmolLM2-135M's shape, random weights": workdir / "smollm2-shape"}
    paths = list(models.values())
    if not paths[0].exists():
        cut(CutConfig(source=str(ROOT / "examples" / "reference"), out=paths[0], layers="0-8", progress=False))
    if not paths[1].exists():
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).save_pretrained(paths[1], safe_serialization=True)
    corpus = workdir / f"corpus-{seq_len}"
    if not corpus.exists():
        build_corpus(DataConfig(tokenizer=str(ROOT / "examples" / "tokenizer"), source=[str(ROOT / "examples" / "corpus" / "kjv.jsonl.gz")],
                                out=corpus, tokens="300K", seq_len=seq_len, val=0.0, progress=False))
    return models, corpus


def _optimizers(lora_r: int, threads: int) -> None:
    """One AdamW step over the LoRA A/B matrices of the SmolLM2-shaped model: time and agreement."""
    import warnings

    import bitsandbytes as bnb
    import torch

    torch.set_num_threads(threads)
    h, i, kv = SMOLLM2_SHAPE["hidden_size"], SMOLLM2_SHAPE["intermediate_size"], 3 * 64
    pairs = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)] * SMOLLM2_SHAPE["num_hidden_layers"]  # (in, out)
    shapes = [s for fan_in, fan_out in pairs for s in ((lora_r, fan_in), (fan_out, lora_r))]
    g = torch.Generator().manual_seed(0)
    start_values = [torch.randn(*s, generator=g) * 0.02 for s in shapes]
    grads = [torch.randn(*s, generator=g) * 1e-3 for s in shapes]
    makers = {"torch AdamW (fused)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0, fused=True),
              "bitsandbytes AdamW32bit": lambda ps: bnb.optim.AdamW32bit(ps, lr=1e-3, weight_decay=0.0),
              "bitsandbytes PagedAdamW32bit": lambda ps: bnb.optim.PagedAdamW32bit(ps, lr=1e-3, weight_decay=0.0)}
    results = {}
    for name, make in makers.items():
        params = [torch.nn.Parameter(v.clone()) for v in start_values]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bitsandbytes: "Paged optimizers are not supported on CPU"
            opt = make(params)
            opt.step()  # state allocation
            times = []
            for _ in range(5):
                t = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - t)
        results[name] = (min(times), params)
    numel = sum(v.numel() for v in start_values)
    ref_time, ref = results["torch AdamW (fused)"]
    print(f"\nOne AdamW step over {numel / 1e6:.1f}M LoRA parameters (r={lora_r}, SmolLM2 shape), {threads} thread(s), best of 5:")
    print("| optimizer | ms/step | vs torch fused | max abs difference of the weights after 6 steps |")
    print("|---|---:|---:|---:|")
    for name, (seconds, params) in results.items():
        diff = max((a - b).abs().max().item() for a, b in zip(params, ref))
        print(f"| {name} | {seconds * 1000:.1f} | {seconds / ref_time:.2f}x | {diff:.1e} |")


def _eval_repacking(model_path: Path, corpus: Path, micro_batch: int, threads: int) -> None:
    """No-grad eval-mode forward of the 4-bit model with bitsandbytes' CPU bf16 repacking (its default
    on AVX512-BF16 CPUs) and without it (downcycle's setting): tokens/s and logit difference."""
    import torch

    from downcycle.corpus.loader import PackedDataset
    from downcycle.loading import load_model
    from downcycle.training.methods.qlora import keep_training_numerics, quiet_bitsandbytes

    torch.set_num_threads(threads)
    data = PackedDataset(corpus, "train")
    ids = torch.stack([torch.as_tensor(data[i]["input_ids"]).long() for i in range(micro_batch)])
    results = {}
    for label, repack in (("bitsandbytes' bf16 repacking (its default here)", True), ("no repacking (downcycle)", False)):
        with quiet_bitsandbytes():
            model = load_model(model_path, dtype="float32", device="cpu", load_in_4bit=True).eval()
        if not repack:
            keep_training_numerics(model)
        with torch.no_grad():
            model(ids[:1, :8])  # the first call repacks
            times = []
            for _ in range(3):
                t = time.perf_counter()
                logits = model(ids).logits
                times.append(time.perf_counter() - t)
        results[label] = (ids.numel() / min(times), logits)
    (a, la), (b, lb) = results.values()
    print(f"\nEval-mode forward of the 4-bit model ({micro_batch} x {ids.shape[1]} tokens, {threads} thread(s), best of 3):")
    for label, (tps, _) in results.items():
        print(f"- {label}: {tps:,.0f} tokens/s")
    print(f"- repacked / not: {a / b:.2f}x; max |logit difference| {(la - lb).abs().max().item():.3g}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (default: 6)")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per step (default: 4)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default: 256)")
    p.add_argument("--lora-r", type=int, default=128, help="LoRA rank, alpha = r (default: 128, the seed's)")
    p.add_argument("--precisions", default="fp32,bf16", help="compute precisions to run (default: fp32,bf16)")
    p.add_argument("--models", default="0,1", help="which models: 0 the reference cut, 1 the SmolLM2 shape (default: 0,1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass (the seed's setting)")
    p.add_argument("--optimizers", action="store_true", help="also time AdamW implementations (see the docstring)")
    p.add_argument("--eval-repacking", action="store_true",
                   help="also time eval-mode forwards of the 4-bit SmolLM2-shaped model with and without bitsandbytes' CPU bf16 repacking")
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "qlora")
    # internal: one run
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.method:
        print(json.dumps(_worker(args)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    models, corpus = _build(args.workdir, args.seq_len)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": str(args.threads)}
    mib = 1024 ** 2
    print(f"LoRA r={args.lora_r} alpha={args.lora_r} all-linear; {args.micro_batch} x {args.seq_len} tokens/step, {args.steps} steps, "
          f"{args.threads} thread(s), gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    for index in (int(x) for x in args.models.split(",")):
        label, model = list(models.items())[index]
        runs: dict[tuple[str, str], dict] = {}
        print(f"\n{label}\n")
        print("| method | precision | tokens/s | tokens per CPU s | weights in memory | RSS after setup (anonymous) | "
              "peak anonymous, training | peak file-backed, training | peak RSS, training | peak RSS, with export |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for precision in args.precisions.split(","):
            for method in ("lora", "qlora"):
                with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                    cmd = [sys.executable, __file__, "--method", method, "--precision", precision, "--model", str(model),
                           "--corpus", str(corpus), "--out", str(Path(tmp) / "out"), "--steps", str(args.steps),
                           "--micro-batch", str(args.micro_batch), "--threads", str(args.threads), "--lora-r", str(args.lora_r)]
                    cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
                    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                r = runs[method, precision] = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {method} | {precision} | {r['tokens_per_s']:,.0f} | {r['tokens_per_cpu_s']:,.0f} | {r['weight_bytes'] / mib:,.0f} MiB | "
                      f"{r['rss_setup'] / mib:,.0f} MiB ({r['anon_setup'] / mib:,.0f} MiB) | {r['peak_anon'] / mib:,.0f} MiB | "
                      f"{r['peak_file'] / mib:,.0f} MiB | {r['peak_train'] / mib:,.0f} MiB | {r['peak_total'] / mib:,.0f} MiB |")
        first = next(iter(runs.values()))
        print(f"\n{first['base_params'] / 1e6:.1f}M base parameters (LoRA run), {first['trainable'] / 1e6:.1f}M trainable")
        for precision in args.precisions.split(","):
            q, lo = runs["qlora", precision], runs["lora", precision]
            print(f"{precision}: QLoRA / LoRA: tokens/s {q['tokens_per_s'] / lo['tokens_per_s']:.2f}x "
                  f"(per CPU s {q['tokens_per_cpu_s'] / lo['tokens_per_cpu_s']:.2f}x), weights {q['weight_bytes'] / lo['weight_bytes']:.2f}x, "
                  f"peak anonymous memory {q['peak_anon'] / lo['peak_anon']:.2f}x, peak RSS {q['peak_train'] / lo['peak_train']:.2f}x")
        if {"fp32", "bf16"} <= set(args.precisions.split(",")):
            for method in ("lora", "qlora"):
                b, f = runs[method, "bf16"], runs[method, "fp32"]
                print(f"{method}: bf16 / fp32 tokens/s {b['tokens_per_s'] / f['tokens_per_s']:.2f}x "
                      f"(per CPU s {b['tokens_per_cpu_s'] / f['tokens_per_cpu_s']:.2f}x), "
                      f"peak anonymous memory {b['peak_anon'] / f['peak_anon']:.2f}x")
    if args.optimizers:
        _optimizers(args.lora_r, args.threads)
    if args.eval_repacking:
        _eval_repacking(list(models.values())[1], corpus, args.micro_batch, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
