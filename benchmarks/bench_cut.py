"""Side-by-side benchmark of ``downcycle cut``: wall time and peak RSS against the copy floor and mergekit.

For each size (``--sizes``, GB) it builds, once, a synthetic Llama-style checkpoint (32 layers, bf16,
sharded safetensors with an index, a LlamaConfig ``config.json``) under ``--workdir``, streaming
random finite bf16 bytes behind hand-written safetensors headers so that no model is ever held in
memory. It then cuts it to 24 layers (``--layers 0-23``) and measures, each in a fresh subprocess:

* ``downcycle``: ``python -m downcycle cut SRC OUT --layers 0-23``, as a user runs it (defaults,
  Python start-up and imports included);
* ``floor``: ``cp -r`` of a reference cut's output directory: the very bytes and files the cut writes
  (kept tensors + new headers + small JSON files), copied by coreutils' ``cp`` with one in-kernel
  ``copy_file_range`` per whole file, from offset 0 to offset 0 (page-aligned on both sides);
* ``floor (N x cp)``: the same files split over N concurrent ``cp`` processes (largest first), N being
  the number of files downcycle copies at once: the floor for a tool that copies files concurrently;
* ``mergekit``: ``mergekit-yaml`` passthrough of the same slice (layer_range [0, 24]), run from its
  own venv (``WORKDIR/mergekit-venv``, created on first use with the CPU build of torch).

Every timing runs on a warm page cache, after ``sync`` so that write-back of an earlier run is not
charged to it; the output is deleted between repeats. The inputs are cached the same way for every
tool: dropped from the page cache (``POSIX_FADV_DONTNEED``) and read back with ``cat > /dev/null``.
How a file's pages came into the cache matters: a just-written copy (the floor's input) copied
~20% faster per byte than the same bytes cached by an earlier read (measured 0.26 vs 0.31 s/GB). After one untimed round the tools take turns, and the median of ``--repeats`` runs
is reported, with CPU time (user + system), which other load on the machine disturbs less. Peak RSS is the ``ru_maxrss`` of
the measured process tree, read by a wrapper process that runs only that command. The cut's output
is checked: 24 layers, the expected bytes, and sampled tensor bytes equal to the source's.

Run from the repository root:  .venv/bin/python benchmarks/bench_cut.py --sizes 1,4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

LAYERS, KEEP = 32, 24
VOCAB = 32000
SOURCE_SHARD_BYTES = 512 * 2**20  # the source's largest shard, as save_pretrained(max_shard_size=...)
_BUF = 16 * 2**20
FORMAT = 2  # bump when the synthetic checkpoints change, so cached ones are rebuilt
# Runs argv[2:] with its output to the log file argv[1]; prints {"wall_s", "cpu_s", "maxrss_kb", "rc"}.
# A wrapper of its own per run, because RUSAGE_CHILDREN's maxrss is a maximum over all waited-for children.
WRAPPER = (
    "import json,resource,subprocess,sys,time\n"
    "log=open(sys.argv[1],'w'); t=time.perf_counter()\n"
    "rc=subprocess.run(sys.argv[2:],stdout=log,stderr=subprocess.STDOUT).returncode\n"
    "dt=time.perf_counter()-t; u=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'wall_s':dt,'cpu_s':u.ru_utime+u.ru_stime,'maxrss_kb':u.ru_maxrss,'rc':rc}))\n"
)


# --- the synthetic checkpoint ----------------------------------------------------------------------

def llama_config(size_gb: float) -> dict:
    """A LlamaConfig whose bf16 weights take about ``size_gb`` GB: hidden from the size, then the
    MLP width (a multiple of 256) that makes up the rest."""
    hidden = 1024 * max(1, round(math.sqrt(size_gb)))
    kv = hidden // 4  # 4 query heads per KV head (GQA), head_dim 64
    params_per_layer = (size_gb * 1e9 / 2 - 2 * VOCAB * hidden - hidden) / LAYERS
    inter = max(256, round((params_per_layer - 2 * hidden * hidden - 2 * kv * hidden - 2 * hidden) / (3 * hidden) / 256) * 256)
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": LAYERS,
        "num_attention_heads": hidden // 64, "num_key_value_heads": kv // 64, "head_dim": 64,
        "vocab_size": VOCAB, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02, "use_cache": True,
    }  # fmt: skip


def llama_tensors(cfg: dict) -> list[tuple[str, list[int]]]:
    """Every tensor name and shape, in state-dict order (the order save_pretrained shards in)."""
    h, i, kv, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * cfg["head_dim"], cfg["vocab_size"]
    out = [("model.embed_tokens.weight", [v, h])]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "self_attn.q_proj.weight", [h, h]), (p + "self_attn.k_proj.weight", [kv, h]),
                (p + "self_attn.v_proj.weight", [kv, h]), (p + "self_attn.o_proj.weight", [h, h]),
                (p + "mlp.gate_proj.weight", [i, h]), (p + "mlp.up_proj.weight", [i, h]),
                (p + "mlp.down_proj.weight", [h, i]), (p + "input_layernorm.weight", [h]),
                (p + "post_attention_layernorm.weight", [h])]  # fmt: skip
    return [*out, ("model.norm.weight", [h]), ("lm_head.weight", [v, h])]


def random_bf16(nbytes: int) -> bytes:
    """Finite bf16 values ~ N(0, 0.02): the top halves of float32s."""
    f32 = (np.random.default_rng(0).standard_normal(nbytes // 2, dtype=np.float32) * 0.02).view(np.uint32)
    return (f32 >> 16).astype("<u2").tobytes()


def write_shard(path: Path, tensors: list[tuple[str, list[int]]], buf: bytes) -> None:
    """One safetensors file: u64 header length, JSON header space-padded to 8 bytes, then the data
    laid out in name order, as the safetensors library does. Each tensor starts with a stamp of its
    name (finite bf16 values), so that a tensor copied from the wrong place is caught."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in sorted(tensors):
        nbytes = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    view, pos = memoryview(buf), 0
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in sorted(tensors):
            f.write(struct.pack("<II", zlib.crc32(name.encode()) & 0x3F3F3F3F, 0))
            left = 2 * math.prod(shape) - 8
            while left:
                n = min(left, len(buf) - pos)
                f.write(view[pos : pos + n])
                pos, left = (pos + n) % len(buf), left - n


def ensure_checkpoint(workdir: Path, size_gb: float) -> Path:
    """The cached synthetic checkpoint for ``size_gb``, built on first use."""
    cfg = llama_config(size_gb)
    path = workdir / f"llama-{size_gb:g}gb"
    marker, stamp = path / ".complete", {"config": cfg, "format": FORMAT}
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return path
    shutil.rmtree(path, ignore_errors=True)
    tmp = workdir / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[list[tuple[str, list[int]]]] = [[]]
    size = 0
    for name, shape in llama_tensors(cfg):  # split in state-dict order, like save_pretrained
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > SOURCE_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    print(f"building {path} ({len(shards)} shards) ...", flush=True)
    buf, weight_map, total = random_bf16(_BUF), {}, 0
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        write_shard(tmp / fname, shard, buf)
        weight_map.update((name, fname) for name, _ in shard)
        total += sum(2 * math.prod(s) for _, s in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (tmp / ".complete").write_text(json.dumps(stamp))
    os.rename(tmp, path)
    return path


# --- measuring ---------------------------------------------------------------------------------------

def read_headers(directory: Path) -> dict[str, tuple[Path, int, int]]:
    """tensor name -> (file, absolute start, nbytes) for every *.safetensors file in ``directory``."""
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                b, e = info["data_offsets"]
                out[name] = (f, 8 + n + b, e - b)
    return out


def warm(*dirs: Path) -> None:
    """Flush dirty pages, drop every input file from the page cache and read it back, so that each
    timed run finds its inputs cached the same way, whichever tool ran before."""
    files = [p for d in dirs for p in sorted(d.rglob("*")) if p.is_file()]
    subprocess.run(["sync"], check=True)
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)


def run_once(cmd: list[str], out: Path, inputs: list[Path], log: Path) -> dict:
    """One fresh run of ``cmd`` on a warm cache, ``out`` removed first: its wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    warm(*inputs)
    res = subprocess.run([sys.executable, "-c", WRAPPER, str(log), *cmd], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout)
    shutil.rmtree(out, ignore_errors=True)
    if r["rc"] != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{Path(cmd[0]).name} exited {r['rc']}: {tail[0]}")
    return r


def measure(tools: dict[str, tuple[list[str], list[Path]]], out: Path, repeats: int, log: Path) -> dict[str, dict]:
    """Median wall time and max peak RSS of each tool over ``repeats`` runs.

    The tools take turns (a, b, c, a, b, c, ...) after one untimed round, so that drift in the
    machine (first touches of fresh guest memory, write-back, a noisy neighbour) is shared fairly
    instead of landing on whichever tool runs first. A tool that fails gets its error instead.
    """
    runs: dict[str, list[dict]] = {name: [] for name in tools}
    errors: dict[str, str] = {}
    for rep in range(repeats + 1):
        for name, (cmd, inputs) in tools.items():
            if name in errors:
                continue
            try:
                r = run_once(cmd, out, inputs, log)
            except (RuntimeError, subprocess.CalledProcessError, json.JSONDecodeError) as e:
                errors[name] = str(e)
                continue
            if rep:
                runs[name].append(r)
    return {name: {"error": errors[name]} if name in errors else {
        "wall_s": statistics.median(r["wall_s"] for r in rs), "walls": [r["wall_s"] for r in rs],
        "cpu_s": statistics.median(r["cpu_s"] for r in rs), "rss_mb": max(r["maxrss_kb"] for r in rs) / 1024}
        for name, rs in runs.items()}


def verify_cut(src: Path, out: Path) -> int:
    """Check the cut: 24 layers named 0..23, the expected bytes, sampled bytes equal to the source's."""
    source, got = read_headers(src), read_headers(out)
    want = {n: v for n, v in source.items() if not n.startswith("model.layers.") or int(n.split(".")[2]) < KEEP}
    assert set(got) == set(want), f"tensor names differ: {sorted(set(got) ^ set(want))[:4]}"
    layers = {int(n.split(".")[2]) for n in got if n.startswith("model.layers.")}
    assert layers == set(range(KEEP)), layers
    expected = sum(v[2] for v in want.values())
    assert sum(v[2] for v in got.values()) == expected
    index = out / "model.safetensors.index.json"
    if index.is_file():
        assert json.loads(index.read_text())["metadata"]["total_size"] == expected
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == KEEP
    for name, (f, start, nbytes) in got.items():
        sf, sstart, _ = want[name]
        for off in (0, nbytes - 64):
            with f.open("rb") as a, sf.open("rb") as b:
                a.seek(start + off), b.seek(sstart + off)
                assert a.read(64) == b.read(64), f"{name}: bytes differ from the source at {off}"
    return expected


def ensure_mergekit(workdir: Path) -> Path:
    """``mergekit-yaml`` from a venv of its own, installed on first use; raises with the reason."""
    venv = workdir / "mergekit-venv"
    exe = venv / "bin" / "mergekit-yaml"
    if exe.is_file():
        return exe
    log = workdir / "mergekit-install.log"
    print(f"installing mergekit into {venv} (log: {log}) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch first, pinned: a bare requirement (mergekit's) would pull the multi-GB CUDA build.
    steps = [[base, "-m", "venv", str(venv)], [*pip, "torch==2.13.0"], [*pip, "mergekit"]]
    with log.open("w") as fh:
        for step in steps:
            if subprocess.run(step, check=False, stdout=fh, stderr=subprocess.STDOUT, timeout=1800).returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise RuntimeError(f"`{' '.join(step[-2:])}` failed, see {log}")
    return exe


def bench_size(size_gb: float, workdir: Path, repeats: int, mergekit: Path | str) -> list[dict]:
    src = ensure_checkpoint(workdir, size_gb)
    src_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    ref, out = workdir / f"ref-{size_gb:g}gb", workdir / f"out-{size_gb:g}gb"
    log = workdir / f"last-{size_gb:g}gb.log"
    dc = [sys.executable, "-m", "downcycle", "cut", str(src), str(out), "--layers", f"0-{KEEP - 1}"]
    shutil.rmtree(ref, ignore_errors=True)
    subprocess.run([*dc[:5], str(ref), *dc[6:]], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kept = verify_cut(src, ref)
    written = sum(p.stat().st_size for p in ref.iterdir())
    from downcycle.surgery.cut import copy_threads

    streams = copy_threads()  # as many cp processes as files downcycle copies at once by default
    tools = {"downcycle": (dc, [src]), "floor (cp -r)": (["cp", "-r", str(ref), str(out)], [ref]),
             f"floor ({streams} x cp)": (parallel_cp(ref, out, streams), [ref])}
    if not isinstance(mergekit, str):
        cfg = workdir / f"mergekit-{size_gb:g}gb.yaml"
        cfg.write_text(f"merge_method: passthrough\ndtype: bfloat16\nslices:\n  - sources:\n"
                       f"      - model: {src}\n        layer_range: [0, {KEEP}]\n")
        tools["mergekit"] = ([str(mergekit), str(cfg), str(out), "--no-copy-tokenizer", "--no-cuda", "--quiet"], [src])
    results = measure(tools, out, repeats, log)
    if isinstance(mergekit, str):
        results["mergekit"] = {"error": mergekit}
    base = {"size": f"{src_bytes / 1e9:.2f} GB", "kept_gb": kept / 1e9}
    rows = [{**base, "tool": name, **r} for name, r in results.items()]
    shutil.rmtree(out, ignore_errors=True)
    print(f"  {src}: {src_bytes / 1e9:.2f} GB; the cut keeps {kept / 1e9:.3f} GB of tensors and writes "
          f"{written / 1e9:.3f} GB; its output was verified", flush=True)
    return rows


def parallel_cp(ref: Path, out: Path, streams: int) -> list[str]:
    """A shell command copying ``ref``'s files into ``out`` with ``streams`` concurrent ``cp``s, the
    files dealt out largest first to the least loaded."""
    files = sorted((p for p in ref.iterdir() if p.is_file()), key=lambda p: -p.stat().st_size)
    groups: list[list[Path]] = [[] for _ in range(min(streams, len(files)))]
    loads = [0] * len(groups)
    for f in files:
        i = loads.index(min(loads))
        groups[i].append(f)
        loads[i] += f.stat().st_size
    jobs = [" ".join(f"'{p}'" for p in g) + f" '{out}/' & p{i}=$!" for i, g in enumerate(groups)]
    waits = " && ".join(f"wait $p{i}" for i in range(len(groups)))
    return ["sh", "-c", f"mkdir '{out}' && {{ " + "; ".join(f"cp {j}" for j in jobs) + f"; {waits}; }}"]


def free_memory_gb() -> float:
    """MemFree of /proc/meminfo in GB (nan where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemFree:")) * 1024 / 1e9
    except (OSError, StopIteration, ValueError):
        return float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(rows: list[dict]) -> None:
    print("\n| source | tool | wall s (median) | wall s (each run) | CPU s (median) | GB/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['size']} | {r['tool']} | unavailable ({r['error']}) | | | | |")
            continue
        runs = ", ".join(f"{w:.2f}" for w in r["walls"])
        print(f"| {r['size']} | {r['tool']} | {r['wall_s']:.2f} | {runs} | {r['cpu_s']:.2f} "
              f"| {r['kept_gb'] / r['wall_s']:.2f} | {r['rss_mb']:.0f} |")
    print()
    for size in dict.fromkeys(r["size"] for r in rows):
        by = {r["tool"]: r for r in rows if r["size"] == size}
        dc, mk = by["downcycle"], by["mergekit"]
        for name in (t for t in by if t.startswith("floor")):
            floor = by[name]
            ratio = dc["wall_s"] / floor["wall_s"]
            print(f"{size}: downcycle / {name} wall {ratio:.2f}x, goal <= 1.2x: {verdict(ratio <= 1.2)} "
                  f"(best run {min(dc['walls']) / min(floor['walls']):.2f}x, CPU {dc['cpu_s'] / floor['cpu_s']:.2f}x)")
        print(f"{size}: downcycle peak RSS {dc['rss_mb']:.0f} MB, goal <= 256 MB: {verdict(dc['rss_mb'] <= 256)}")
        if "error" in mk:
            print(f"{size}: mergekit: unavailable ({mk['error']})")
        else:
            speedup = mk["wall_s"] / dc["wall_s"]
            print(f"{size}: mergekit/downcycle wall {speedup:.1f}x, goal >= 3x: {verdict(speedup >= 3)} "
                  f"(mergekit peak RSS {mk['rss_mb']:.0f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,4", help="source checkpoint sizes in GB, comma-separated (default: 1,4)")
    p.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "out",
                   help="cache for checkpoints, outputs and the mergekit venv (default: benchmarks/out)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per tool; the median is reported (default: 5)")
    p.add_argument("--skip-mergekit", action="store_true", help="do not install or run mergekit")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir.resolve()
    mergekit: Path | str = "skipped (--skip-mergekit)"
    if not args.skip_mergekit:
        try:
            mergekit = ensure_mergekit(workdir)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            mergekit = str(e)
    # Byte-compile downcycle as `pip install` does for a regular install: with PYTHONDONTWRITEBYTECODE
    # set (as on this machine) an editable install would otherwise recompile every module on every run.
    import compileall

    import downcycle

    compileall.compile_dir(str(Path(downcycle.__file__).parent), quiet=1)
    load, free = os.getloadavg()[0], free_memory_gb()
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        rows += bench_size(size, workdir, args.repeats, mergekit)
    print(f"machine: {os.cpu_count()} CPUs; workdir {workdir}; repeats {args.repeats}; warm page cache; "
          f"1-min load average {load:.1f} before, {os.getloadavg()[0]:.1f} after (other work skews timings); "
          f"free memory {free:.1f} GB before, {free_memory_gb():.1f} GB after (below the output's size, "
          f"writes reclaim page cache as they go)")
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
