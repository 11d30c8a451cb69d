"""Fixtures of the corpus (`downcycle data`) tests: a reference encoding by the shipped tokenizer, and
shard readers that rely only on the documented format (not on downcycle's loader)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

TOKENIZER = Path(__file__).resolve().parents[2] / "examples" / "tokenizer"


@pytest.fixture(scope="session")
def reference_encode():
    """``reference_encode(texts)`` -> what each document must become: the transformers tokenizer's own
    ids with BOS, plus EOS."""

    def encode(texts: list[str]) -> list[list[int]]:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
        return [tok(t, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for t in texts]

    return encode


@pytest.fixture(scope="session")
def read_split():
    """``read_split(corpus, split)`` -> all tokens of a split (shards concatenated) and the global
    offsets where documents start."""

    def read(corpus: Path, split: str) -> tuple[np.ndarray, list[int]]:
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

    return read


@pytest.fixture(scope="session")
def segments():
    """``segments(tokens, starts)`` -> the split's token stream cut at the recorded document starts."""

    def cut(tokens: np.ndarray, starts: list[int]) -> list[list[int]]:
        bounds = starts + [len(tokens)]
        return [tokens[a:b].tolist() for a, b in pairwise(bounds)]

    return cut
