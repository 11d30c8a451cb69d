"""Helpers for the data tests: the shipped tokenizer and corpus, a reference encoding, and shard
readers that rely only on the documented format (not on downcycle's loader)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "examples" / "tokenizer"
CORPUS = ROOT / "examples" / "corpus"
MOBY = CORPUS / "moby_dick.jsonl.gz"


def reference_encode(texts: list[str]) -> list[list[int]]:
    """What a document must become: the transformers tokenizer's own ids with BOS, plus EOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    return [tok(t, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for t in texts]


def read_split(corpus: Path, split: str) -> tuple[np.ndarray, list[int]]:
    """All tokens of a split (shards concatenated) and the global offsets where documents start."""
    meta = json.loads((corpus / "corpus.json").read_text())
    dtype = np.dtype("<u2" if meta["token_dtype"] == "uint16" else "<u4")
    parts, starts, offset = [], [], 0
    for shard in meta["splits"][split]["shards"]:
        arr = np.fromfile(corpus / shard["file"], dtype=dtype)
        if shard.get("docs"):
            starts += [offset + int(s) for s in np.load(corpus / shard["docs"])]
        parts.append(arr)
        offset += len(arr)
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype)
    return tokens, starts


def segments(tokens: np.ndarray, starts: list[int]) -> list[list[int]]:
    """The split's token stream cut at the recorded document starts."""
    bounds = starts + [len(tokens)]
    return [tokens[a:b].tolist() for a, b in pairwise(bounds)]


def corpus_bytes(corpus: Path) -> dict[str, bytes]:
    """Every shard and boundary file's bytes, by name."""
    return {p.name: p.read_bytes() for p in sorted(corpus.iterdir()) if p.suffix in (".bin", ".npy")}
