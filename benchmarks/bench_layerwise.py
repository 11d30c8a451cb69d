"""A model larger than this machine's memory, analysed and evaluated layer by layer; and the cost of
running layer by layer on a model that fits, against running it whole.

1. A synthetic bf16 Llama with 7B-shaped decoder layers (hidden 4096, MLP 11008, 32 heads, vocabulary
   32000: Llama-2-7B's shapes) and ``--layers`` of them (64 by default: a 26 GB checkpoint on a
   machine of 24 GB) is written, one safetensors shard per layer, with random weights (std 0.02) and
   the shipped tokenizer. It is analysed (``downcycle analyze --layerwise``, ``--samples`` windows of
   ``--seq-len`` tokens) and evaluated on the loss task (``downcycle eval --tasks loss --layerwise``,
   ``--docs`` documents of 80 words of the shipped corpus, in windows of ``--seq-len``), each in its own process,
   whose peak RSS and wall time are measured (``/usr/bin/time -v``) and printed beside the cost model:
   peak ~= baseline (the interpreter, torch and transformers: measured with ``--layers 1``-sized work
   below) + the largest layer + embeddings, final norm and head + the state buffers (analyze: the
   ``L+1`` float32 states of every calibration token; eval: one state per window batch).
2. The same shapes with ``--fit-layers`` layers (a checkpoint that fits): ``analyze`` layer by layer
   against in memory, wall time ratio (the cost of reading each layer from the page cache and of
   keeping every state, against one forward per batch).

Run from the repository root (needs ~``26 GB`` of free disk):  .venv/bin/python benchmarks/bench_layerwise.py
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, MLP, HEADS, VOCAB = 4096, 11008, 32, 32000


def layer_tensors(i: int) -> dict[str, tuple[int, ...]]:
    p = f"model.layers.{i}."
    return {p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
            p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": (MLP, HIDDEN), p + "mlp.up_proj.weight": (MLP, HIDDEN), p + "mlp.down_proj.weight": (HIDDEN, MLP),
            p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,)}


def write_model(out: Path, layers: int) -> int:
    """The synthetic checkpoint in ``out``; returns its bytes."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0

    def shard(name: str, shapes: dict[str, tuple[int, ...]]) -> None:
        nonlocal total
        tensors = {k: (torch.ones(s) if len(s) == 1 else torch.randn(*s, generator=gen) * 0.02).to(torch.bfloat16) for k, s in shapes.items()}
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({k: name for k in tensors})

    shard("model-outer.safetensors", {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)})
    for i in range(layers):
        shard(f"model-layer-{i:03d}.safetensors", layer_tensors(i))
        if i % 8 == 7:
            print(f"  wrote {i + 1}/{layers} layers", flush=True)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": MLP,
              "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "num_hidden_layers": layers, "vocab_size": VOCAB,
              "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for f in (ROOT / "examples" / "tokenizer").iterdir():  # ids < 8192 < the vocabulary
        shutil.copy2(f, out / f.name)
    return total


def timed(argv: list[str]) -> tuple[float, int, str]:
    """Wall seconds and peak RSS (bytes) of ``downcycle argv`` in its own process."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "downcycle", *argv]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                                                                      "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"downcycle {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1]) * 1024
    return seconds, rss, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=64)
    ap.add_argument("--fit-layers", type=int, default=6)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the checkpoints (default: a temporary directory)")
    args = ap.parse_args()
    from downcycle.layerwise.memory import available_bytes

    work = Path(tempfile.mkdtemp(prefix="bench-layerwise-", dir=args.dir))
    corpus = str(ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz")
    held_out = work / "held-out.jsonl"  # --docs documents of about --seq-len tokens each, cut from the shipped text
    import gzip

    with gzip.open(corpus, "rt") as f:
        text = " ".join(json.loads(line)["text"] for line, _ in zip(f, range(50)))
    words = text.split()
    held_out.write_text("".join(json.dumps({"text": " ".join(words[i * 80:(i + 1) * 80])}) + "\n" for i in range(args.docs)))
    layer_bytes = sum(s[0] * (s[1] if len(s) > 1 else 1) * 2 for s in layer_tensors(0).values())
    outer = (2 * VOCAB * HIDDEN + HIDDEN) * 2
    try:
        print(f"machine: {available_bytes('cpu') / 2**30:.1f} GiB available")
        for name, layers in (("fits", args.fit_layers), ("large", args.layers)):
            model = work / name
            t0 = time.perf_counter()
            size = write_model(model, layers)
            print(f"{name}: {layers} layers, {size / 2**30:.2f} GiB checkpoint written in {time.perf_counter() - t0:.0f} s")
            common = ["--data", corpus, "--samples", str(args.samples), "--seq-len", str(args.seq_len), "--batch-size", str(args.samples),
                      "--keep", str(max(1, layers * 3 // 4)), "--dtype", "bfloat16", "--no-plots", "--no-progress"]
            s_lw, rss_lw, _ = timed(["analyze", str(model), *common, "--out", str(work / f"{name}-analyze"), "--layerwise"])
            tokens = args.samples * args.seq_len
            states = (layers + 1) * tokens * HIDDEN * 4 + tokens * HIDDEN * 2
            print(f"  analyze --layerwise: {s_lw:.0f} s, peak RSS {rss_lw / 2**30:.2f} GiB; cost model: largest layer {layer_bytes / 2**30:.2f}"
                  f" + embeddings and head {outer / 2**30:.2f} + states {states / 2**30:.2f} GiB = {(layer_bytes + outer + states) / 2**30:.2f} GiB"
                  f" + the process (torch, transformers)")
            if name == "fits":
                s_mem, rss_mem, _ = timed(["analyze", str(model), *common, "--out", str(work / f"{name}-analyze-mem"), "--no-layerwise"])
                print(f"  analyze in memory:   {s_mem:.0f} s, peak RSS {rss_mem / 2**30:.2f} GiB; layer by layer / in memory: "
                      f"time {s_lw / s_mem:.2f}x, peak RSS {rss_lw / rss_mem:.2f}x")
                same = (work / "fits-analyze" / "scores.json").read_text() == (work / "fits-analyze-mem" / "scores.json").read_text()
                print(f"  scores.json identical: {same}")
            s_ev, rss_ev, _ = timed(["eval", str(model), "--tasks", "loss", "--data", str(held_out),
                                     "--window", str(args.seq_len), "--dtype", "bfloat16", "--no-progress", "--out", str(work / f"{name}-eval"),
                                     "--layerwise"])
            loss = json.loads((work / f"{name}-eval" / name / "results.json").read_text())["tasks"]["loss"]["metrics"]
            print(f"  eval --tasks loss --layerwise: {s_ev:.0f} s, peak RSS {rss_ev / 2**30:.2f} GiB, {loss['tokens']['value']:.0f} tokens"
                  f" (nll {loss['nll']['value']:.3f})")
            shutil.rmtree(model)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
