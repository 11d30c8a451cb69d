"""Side-by-side benchmark of ``downcycle prune``: wall time and peak RSS against the copy floor.

It builds (once, cached in ``--workdir``) the synthetic Llama-style checkpoint of ``bench_cut.py``
(32 layers, bf16, 512 MB shards, random finite values, written behind hand-written safetensors
headers so no model is held in memory), ``--size`` GB of it, and a random ``scores.json`` for it.
Then, for each width setting below, each tool in a fresh subprocess on a warm page cache (as
``bench_cut.py`` measures: ``sync``, inputs dropped from the cache and read back, tools taking
turns after an untimed round, the median of ``--repeats`` runs, peak RSS of the process tree):

* ``downcycle prune``: ``python -m downcycle prune SRC OUT --scores S ...`` as a user runs it;
* ``floor (cp -r)``: ``cp -r`` of a reference prune's output: the very bytes and files the prune
  writes, copied whole file to whole file by coreutils (one in-kernel copy per file);
* ``floor (N x cp)``: the same files over N concurrent ``cp`` processes, N the shards the prune
  writes at once;
* ``downcycle cut (all layers)``: ``downcycle cut SRC OUT --layers 0-31``, the whole checkpoint
  copied by byte ranges, for scale (it writes more bytes than the prune).

Width settings: ``mixed`` (half the MLP neurons, half the query heads, 3/4 of the hidden channels:
every kind of slice: byte ranges, row gathers, column gathers, rescaled norms) and ``ffn`` (half the
MLP neurons only: row gathers for gate/up, column gathers for down, the rest copied). The output is
checked: every tensor's shape, and a row- and a column-sliced tensor equal to numpy's slices of the
source.

Run from the repository root:  .venv/bin/python benchmarks/bench_prune.py --size 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cut import LAYERS, ensure_checkpoint, free_memory_gb, llama_config, measure, parallel_cp, read_headers


def write_scores(path: Path, cfg: dict) -> None:
    """A random but fixed width-importance document for ``cfg`` (the contract of ``analyze --width``)."""
    rng = np.random.default_rng(0)
    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    heads = rng.random((LAYERS, h))
    doc = {"kind": "width-importance", "aggregation": "random (benchmark)", "model_type": "llama", "num_layers": LAYERS,
           "hidden_size": cfg["hidden_size"], "intermediate_size": cfg["intermediate_size"], "num_attention_heads": h,
           "num_key_value_heads": kv, "samples": 0, "seq_len": 0,
           "ffn": rng.random((LAYERS, cfg["intermediate_size"])).round(6).tolist(), "heads": heads.round(6).tolist(),
           "kv_heads": np.sqrt((heads.reshape(LAYERS, kv, h // kv) ** 2).sum(-1)).round(6).tolist(),
           "hidden": rng.random(cfg["hidden_size"]).round(6).tolist()}
    path.write_text(json.dumps(doc))


def settings(cfg: dict) -> dict[str, list[str]]:
    half_ffn = cfg["intermediate_size"] // 2
    return {"mixed": ["--ffn", str(half_ffn), "--heads", str(cfg["num_attention_heads"] // 2), "--hidden", str(cfg["hidden_size"] * 3 // 4)],
            "ffn": ["--ffn", str(half_ffn)]}  # fmt: skip


def _tensor(path: Path, name: str) -> np.ndarray:
    """One bf16 tensor of a directory's shards, as uint16, through a memory map."""
    f, start, _ = read_headers(path)[name]
    info = json.loads(_header(f))[name]
    return np.memmap(f, dtype="<u2", mode="r", offset=start, shape=tuple(info["shape"]))


def _header(f: Path) -> bytes:
    with f.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return fh.read(n)


def verify(src: Path, out: Path) -> int:
    """Every output tensor's shape follows the config; layer 3's k_proj (rows) and down_proj (columns and
    rows) equal numpy's slices of the source by the written plan. Returns the tensor bytes written."""
    cfg, plan = json.loads((out / "config.json").read_text()), json.loads((out / "width_plan.json").read_text())
    got = read_headers(out)
    assert len(got) == len(read_headers(src)), "tensor count differs"
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    assert _tensor(out, "model.layers.3.mlp.down_proj.weight").shape == (h, f)
    hidden = plan["hidden"] or list(range(h))
    ffn = plan["ffn"][3]
    want = np.asarray(_tensor(src, "model.layers.3.mlp.down_proj.weight"))[hidden][:, ffn]
    assert (np.asarray(_tensor(out, "model.layers.3.mlp.down_proj.weight")) == want).all(), "down_proj differs"
    kv, hd = plan["kv_heads"], cfg["head_dim"]
    rows = [g * hd + j for g in (kv[3] if kv else range(cfg["num_key_value_heads"])) for j in range(hd)]
    want = np.asarray(_tensor(src, "model.layers.3.self_attn.k_proj.weight"))[rows][:, hidden]
    assert (np.asarray(_tensor(out, "model.layers.3.self_attn.k_proj.weight")) == want).all(), "k_proj differs"
    return sum(v[2] for v in got.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=float, default=4.0, help="source checkpoint size in GB (default: 4)")
    p.add_argument("--workdir", type=Path, default=None, help="cache for the checkpoint and outputs (default: a temporary directory)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per tool; the median is reported (default: 3)")
    args = p.parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-prune-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    import compileall

    import downcycle
    from downcycle.surgery.cut import copy_threads

    compileall.compile_dir(str(Path(downcycle.__file__).parent), quiet=1)  # as a regular install is
    cfg = llama_config(args.size)
    src = ensure_checkpoint(workdir, args.size)
    src_bytes = sum(q.stat().st_size for q in src.glob("*.safetensors"))
    scores = workdir / "scores.json"
    write_scores(scores, cfg)
    load, free = os.getloadavg()[0], free_memory_gb()
    out, log = workdir / "out", workdir / "last.log"
    rows = []
    for name, options in settings(cfg).items():
        ref = workdir / f"ref-{name}"
        shutil.rmtree(ref, ignore_errors=True)
        dc = [sys.executable, "-m", "downcycle", "prune", str(src), str(out), "--scores", str(scores), *options]
        subprocess.run([*dc[:5], str(ref), *dc[6:]], check=True, stdout=subprocess.DEVNULL)
        written = verify(src, ref)
        streams = min(copy_threads(), len(list(ref.glob("*.safetensors"))))
        tools = {"downcycle prune": (dc, [src, scores]), "floor (cp -r)": (["cp", "-r", str(ref), str(out)], [ref]),
                 f"floor ({streams} x cp)": (parallel_cp(ref, out, streams), [ref]),
                 "downcycle cut (all layers)": ([*dc[:3], "cut", str(src), str(out), "--layers", f"0-{LAYERS - 1}"], [src])}
        results = measure(tools, out, args.repeats, log)
        rows += [{"setting": name, "written_gb": written / 1e9, "tool": t, **r} for t, r in results.items()]
        shutil.rmtree(ref, ignore_errors=True)
    print(f"source {src}: {src_bytes / 1e9:.2f} GB, hidden {cfg['hidden_size']}, MLP {cfg['intermediate_size']}, "
          f"{cfg['num_attention_heads']} query / {cfg['num_key_value_heads']} KV heads, {LAYERS} layers; "
          f"{os.cpu_count()} CPUs; repeats {args.repeats}; 1-min load {load:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"free memory {free:.1f} GB before, {free_memory_gb():.1f} GB after")
    print("\n| setting | tensors written | tool | wall s (median) | wall s (each run) | CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['setting']} | | {r['tool']} | unavailable ({r['error']}) | | | |")
            continue
        each = ", ".join(f"{w:.2f}" for w in r["walls"])
        print(f"| {r['setting']} | {r['written_gb']:.2f} GB | {r['tool']} | {r['wall_s']:.2f} | {each} | {r['cpu_s']:.2f} | {r['rss_mb']:.0f} |")
    print()
    for name in settings(cfg):
        by = {r["tool"]: r for r in rows if r["setting"] == name and "error" not in r}
        dc = by.get("downcycle prune")
        if dc is None:
            continue
        for floor in (t for t in by if t.startswith(("floor", "downcycle cut"))):
            print(f"{name}: downcycle prune / {floor}: wall {dc['wall_s'] / by[floor]['wall_s']:.2f}x, "
                  f"CPU {dc['cpu_s'] / max(by[floor]['cpu_s'], 1e-9):.2f}x, peak RSS {dc['rss_mb']:.0f} vs {by[floor]['rss_mb']:.0f} MB")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
