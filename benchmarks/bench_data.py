#!/usr/bin/env python3
"""`downcycle data` against the raw fast tokenizer, side by side, on the same text and cores.

1. Throughput. The peer is the Rust tokenizer's own batch encoding (``encode_batch_fast``, the
   fastest call it has; ids materialised) of the shipped corpus, held in memory beforehand, in the
   same batch size. downcycle's figure is a whole ``build_corpus`` run end to end on the same
   files: reading and decompressing, hashing for the split, tokenizing, BOS/EOS, shuffling,
   packing and writing shards. Both count the tokens they encode; the ratio is downcycle / raw.
   Each side runs ``--repeats`` times, interleaved, and the best of each is compared.
2. Memory. Peak RSS (VmHWM) of a build in a fresh process at two corpus sizes (the shipped corpus
   given as a source ``--sizes`` times over), which should be the same.

    python benchmarks/bench_data.py                   # defaults: --repeats 3 --sizes 3,6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "examples" / "tokenizer"
CORPUS = str(ROOT / "examples" / "corpus" / "*.jsonl.gz")
BATCH = 1024


def raw_throughput(texts: list[str]) -> tuple[int, float]:
    """Tokens and seconds of the fast tokenizer's batch encoding alone (the peer)."""
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(str(TOKENIZER)).backend_tokenizer
    start, n = time.perf_counter(), 0
    for i in range(0, len(texts), BATCH):
        n += sum(len(e.ids) for e in backend.encode_batch_fast(texts[i : i + BATCH], add_special_tokens=False))
    return n, time.perf_counter() - start


def build(sources: list[str], out: Path) -> tuple[int, float]:
    """Tokens encoded (BOS/EOS included) and seconds of a whole corpus build."""
    from downcycle.corpus.build import build_corpus
    from downcycle.recipe import DataConfig

    cfg = DataConfig(tokenizer=str(TOKENIZER), source=sources, out=out, seq_len=2048, val=0.001, progress=False,
                     force=True, batch_docs=BATCH)
    start = time.perf_counter()
    build_corpus(cfg)
    seconds = time.perf_counter() - start
    meta = json.loads((out / "corpus.json").read_text())
    return sum(s["tokens"] for s in meta["splits"].values()), seconds


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries the parent's
    high-water mark over fork+exec into it, so a child would report at least its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_rss(scale: int, out: Path) -> dict:
    """Run one build of ``scale`` copies of the corpus in a fresh process; its peak RSS.

    The copies are symlinks under one directory, read as ONE source (a glob), so that only the
    corpus size changes: each source has its own read-ahead of two batches.
    """
    copies = out.parent / f"copies-{scale}"
    for k in range(scale):
        (copies / str(k)).mkdir(parents=True)
        for f in sorted(Path(CORPUS).parent.glob("*.jsonl.gz")):
            (copies / str(k) / f.name).symlink_to(f)
    source = str(copies / "*" / "*.jsonl.gz")
    here = str(Path(__file__).parent)
    code = (f"import json, sys; sys.path.insert(0, {here!r}); from bench_data import build, peak_rss_mb; "
            f"n, s = build([{source!r}], __import__('pathlib').Path({str(out)!r})); "
            "print(json.dumps({'tokens': n, 'seconds': s, 'peak_rss_mb': peak_rss_mb()}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs of each side (0: skip)")
    parser.add_argument("--sizes", default="3,6", help="the two corpus sizes for peak RSS, in copies of the shipped corpus "
                        "(both beyond the 16M-token shuffle buffer, which fills up to its cap first)")
    args = parser.parse_args()
    from downcycle.corpus.sources import iter_texts

    texts = list(iter_texts(CORPUS))
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {len(texts)} documents, {mb:.1f} MB of text; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    raw, ours = [], []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        for r in range(args.repeats):
            n_raw, s_raw = raw_throughput(texts)
            n_ours, s_ours = build([CORPUS], Path(tmp) / "c")
            raw.append(n_raw / s_raw)
            ours.append(n_ours / s_ours)
            print(f"  run {r}: raw encode_batch_fast {n_raw:,} tokens in {s_raw:.2f} s = {raw[-1]:,.0f} tok/s | "
                  f"downcycle data {n_ours:,} tokens in {s_ours:.2f} s = {ours[-1]:,.0f} tok/s")
        pairs = sorted(o / r for o, r in zip(ours, raw))
        if pairs:
            print(f"throughput: downcycle data {max(ours):,.0f} tok/s vs raw fast tokenizer {max(raw):,.0f} tok/s "
                  f"= {max(ours) / max(raw):.2f}x best vs best; per-run ratios {', '.join(f'{p:.2f}' for p in pairs)}, "
                  f"median {pairs[len(pairs) // 2]:.2f}x (goal >= 0.8x)")
        else:
            print("throughput: skipped")
        n_small, n_large = (int(x) for x in args.sizes.split(","))
        small = child_rss(n_small, Path(tmp) / "s")
        large = child_rss(n_large, Path(tmp) / "l")
    print(f"peak RSS: {small['peak_rss_mb']:.0f} MB for {small['tokens'] / 1e6:.1f}M tokens, "
          f"{large['peak_rss_mb']:.0f} MB for {large['tokens'] / 1e6:.1f}M tokens "
          f"= {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x for {large['tokens'] / small['tokens']:.1f}x the tokens")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
