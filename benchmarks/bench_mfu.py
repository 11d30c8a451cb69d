"""Model FLOPs utilisation of `downcycle train` (full fine-tuning, bf16 autocast) on a GPU.

Builds a Llama of about 0.5B parameters locally (``--preset 0.5b``: hidden 1536, 16 layers,
intermediate 4096, 12 heads / 4 KV heads, vocabulary 32,000; random weights, nothing downloaded),
trains it with downcycle's loop on seeded random tokens (``--micro-batch`` x ``--seq-len`` per
step, AdamW, bf16 autocast over float32 master weights, no evaluation or checkpoints) and reports,
over the steps after ``--warmup``:

* tokens/s, from the loop's own per-step log (its clock covers whole optimizer steps);
* model FLOPs per token as in PaLM (Chowdhery et al. 2022, appendix B): ``6 N + 12 L H Q T``, with
  ``N`` the parameters of every matrix multiplication (decoder layers and output layer; not the
  embedding lookup or norms), ``L`` layers, ``H`` heads of size ``Q``, ``T`` the sequence length;
* MFU = achieved FLOP/s / the device's dense bf16 peak (H100 SXM and H200: 989 TFLOP/s; H100
  PCIe: 756; A100: 312), or n/a for a device not in the table.

``--compare-trainer`` also runs a Hugging Face ``Trainer`` on the same model, tokens, batch and
steps (bf16, fused AdamW) in a fresh process and prints the ratio. ``--preset tiny --device cpu``
is a smoke run for machines without a GPU (no MFU). Writes ``--out`` (JSON) when given.

Run from the repository root:  python benchmarks/bench_mfu.py --compare-trainer
(on a machine where downcycle is not installed: PYTHONPATH=src python3 benchmarks/bench_mfu.py)
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

PRESETS = {
    "0.5b": {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 16, "num_attention_heads": 12,
             "num_key_value_heads": 4, "vocab_size": 32000},
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1024},
}  # fmt: skip
# dense bf16 peak FLOP/s by device name (substring, first match)
PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12))


class RandomTokens:
    """``n`` sequences of seeded uniform random token ids, as ``PackedDataset`` yields them."""

    def __init__(self, n: int, seq_len: int, vocab: int, seed: int = 0) -> None:
        import torch

        self.x = torch.randint(0, vocab, (n, seq_len), generator=torch.Generator().manual_seed(seed))
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i]}


def model_flops_per_token(cfg: dict, seq_len: int) -> float:
    """PaLM's ``6 N + 12 L H Q T`` for a Llama-style config (N: matmul parameters, head included)."""
    h, i, layers, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = h // heads
    per_layer = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * i  # q, o; k, v; gate, up, down
    n = layers * per_layer + v * h
    return 6 * n + 12 * layers * heads * head_dim * seq_len


def build(path: Path, preset: str, seq_len: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {**PRESETS[preset], "max_position_embeddings": max(seq_len, 128), "tie_word_embeddings": False}
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16).save_pretrained(path)
    return cfg


def peak_flops(device: str) -> tuple[str, float | None]:
    import torch

    if not device.startswith("cuda"):
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((p for key, p in PEAKS if key in name), None)


def run_downcycle(args: argparse.Namespace, model: Path, out: Path) -> dict:
    from downcycle.recipe import TrainConfig
    from downcycle.training.loop import Trainer
    from downcycle.training.methods import get_method

    steps = args.warmup + args.steps
    data = RandomTokens(steps * args.micro_batch, args.seq_len, PRESETS[args.preset]["vocab_size"])
    cfg = TrainConfig(model=str(model), out=out, method="full", max_steps=steps, micro_batch=args.micro_batch, lr=1e-5,
                      schedule="constant", log_every=1, progress=False, force=True, precision=args.precision, device=args.device,
                      gradient_checkpointing=args.gradient_checkpointing)
    trainer = Trainer(cfg, get_method("full"), data, None)
    trainer.setup()
    trainer.train()
    trainer.logger.close()
    records = [json.loads(line) for line in (trainer.run_dir / "train_log.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in records if r["split"] == "train"}
    first, last = train[args.warmup], train[steps]
    seconds = last["tokens"] / last["tokens_per_s"] - first["tokens"] / first["tokens_per_s"]
    return {"tokens_per_s": (last["tokens"] - first["tokens"]) / seconds, "loss": last["loss"], "notes": trainer.notes,
            "device": str(trainer.acc.device), "precision": trainer.precision}


TRAINER = """
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
from bench_mfu import PRESETS, RandomTokens
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments, default_data_collator
model_dir, out, preset, seq_len, micro, warmup, steps, bf16, gc = sys.argv[2:11]
warmup, steps, micro, seq_len = int(warmup), int(steps), int(micro), int(seq_len)
data = RandomTokens((warmup + steps) * micro, seq_len, PRESETS[preset]["vocab_size"])
class Labeled(torch.utils.data.Dataset):
    def __len__(self): return len(data)
    def __getitem__(self, i): return {"input_ids": data[i]["input_ids"], "labels": data[i]["input_ids"]}
class Clock(TrainerCallback):
    t = {}
    def on_step_end(self, a, state, control, **kw):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        self.t[state.global_step] = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
targs = TrainingArguments(output_dir=out, per_device_train_batch_size=micro, max_steps=warmup + steps, learning_rate=1e-5,
                          lr_scheduler_type="constant", bf16=bf16 == "1", gradient_checkpointing=gc == "1", logging_steps=1,
                          save_strategy="no", eval_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True)
clock = Clock()
Trainer(model=model, args=targs, train_dataset=Labeled(), data_collator=default_data_collator, callbacks=[clock]).train()
print(json.dumps({"tokens_per_s": steps * micro * seq_len / (clock.t[warmup + steps] - clock.t[warmup])}))
"""


def run_trainer(args: argparse.Namespace, model: Path, out: Path, bf16: bool) -> dict:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-c", TRAINER, str(Path(__file__).parent), str(model), str(out), args.preset, str(args.seq_len),
           str(args.micro_batch), str(args.warmup), str(args.steps), "1" if bf16 else "0", "1" if args.gradient_checkpointing else "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="0.5b")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3, help="optimizer steps left out of the timing")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--compare-trainer", action="store_true", help="also time a Hugging Face Trainer on the same work")
    p.add_argument("--workdir", type=Path, default=None, help="where the model is built (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        model = work / f"llama-{args.preset}"
        start = time.perf_counter()
        cfg = build(model, args.preset, args.seq_len)
        print(f"built {model} in {time.perf_counter() - start:.0f} s", flush=True)
        dc = run_downcycle(args, model, Path(tmp) / "dc")
        device_name, peak = peak_flops(dc["device"])
        flops = model_flops_per_token(cfg, args.seq_len)
        achieved = dc["tokens_per_s"] * flops
        result = {"device": device_name, "preset": args.preset, "config": cfg, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                  "steps": args.steps, "warmup": args.warmup, "precision": dc["precision"], "flops_per_token": flops,
                  "downcycle_tokens_per_s": dc["tokens_per_s"], "achieved_tflops": achieved / 1e12,
                  "mfu": achieved / peak if peak else None, "peak_tflops": peak / 1e12 if peak else None, "notes": dc["notes"]}
        print(f"device: {device_name}; {args.preset} Llama, {args.micro_batch} x {args.seq_len} tokens/step, {dc['precision']}, "
              f"{args.steps} timed steps after {args.warmup}; model FLOPs/token {flops / 1e9:.2f} G")
        for note in dc["notes"]:
            print(f"  note: {note}")
        mfu = f"{100 * result['mfu']:.1f}% of {peak / 1e12:.0f} TFLOP/s" if peak else "n/a (no peak known for this device)"
        print(f"downcycle: {dc['tokens_per_s']:,.0f} tokens/s, {achieved / 1e12:.1f} TFLOP/s, MFU {mfu}")
        if args.compare_trainer:
            hf = run_trainer(args, model, Path(tmp) / "hf", bf16=dc["precision"] == "bf16")
            result["trainer_tokens_per_s"] = hf["tokens_per_s"]
            print(f"HF Trainer: {hf['tokens_per_s']:,.0f} tokens/s; downcycle / Trainer {dc['tokens_per_s'] / hf['tokens_per_s']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
