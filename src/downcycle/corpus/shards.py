"""The on-disk corpus format: ``corpus.json`` plus shards of raw little-endian token ids.

A corpus directory holds, per split (``train``, ``val``)::

    {split}-00000.bin        n * seq_len token ids (uint16 or uint32, little-endian, no header),
                             memory-mappable as an (n, seq_len) array
    {split}-00000.docs.npy   int64 offsets (within the shard) where a document starts (optional)
    corpus.json              what it holds (see :func:`corpus_meta`), read by every consumer
    downcycle.json           the manifest (config, inputs, versions)

A document that runs past the end of a shard continues at the start of the next one; its start is
recorded only in the shard where it begins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DowncycleError
from ..jsonfile import read_json

CORPUS_NAME = "corpus.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val")

__all__ = ["CORPUS_NAME", "SPLITS", "docs_name", "open_shard", "read_corpus_meta", "shard_doc_starts", "shard_name"]


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.bin"


def docs_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.docs.npy"


def read_corpus_meta(corpus_dir: str | Path) -> dict[str, Any]:
    """The ``corpus.json`` of a corpus directory, checked for the keys consumers rely on.

    Raises:
        DowncycleError: not a corpus directory, unreadable or incomplete ``corpus.json``.
    """
    path = Path(corpus_dir) / CORPUS_NAME
    meta = read_json(path, f"is {corpus_dir} a corpus written by `downcycle data`?")
    for key in ("seq_len", "token_dtype", "splits"):
        if key not in meta:
            raise DowncycleError(f"{path}: missing key {key!r}")
    if meta["token_dtype"] not in ("uint16", "uint32"):
        raise DowncycleError(f"{path}: token_dtype {meta['token_dtype']!r} is not uint16 or uint32")
    return meta


def numpy_dtype(meta: dict[str, Any]) -> np.dtype:
    return np.dtype("<u2" if meta["token_dtype"] == "uint16" else "<u4")


def open_shard(corpus_dir: str | Path, meta: dict[str, Any], shard: dict[str, Any]) -> np.memmap:
    """Memory-map one shard as an ``(n, seq_len)`` array, checking its size against ``corpus.json``.

    Raises:
        DowncycleError: a missing or truncated shard.
    """
    path = Path(corpus_dir) / shard["file"]
    seq_len, dtype = int(meta["seq_len"]), numpy_dtype(meta)
    expected = int(shard["sequences"]) * seq_len * dtype.itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DowncycleError(f"{path}: shard listed in corpus.json is missing") from None
    if size != expected:
        raise DowncycleError(f"{path}: {size} bytes, corpus.json says {expected} ({shard['sequences']} sequences of {seq_len})")
    if expected == 0:
        return np.zeros((0, seq_len), dtype=dtype)  # type: ignore[return-value]
    return np.memmap(path, dtype=dtype, mode="r", shape=(int(shard["sequences"]), seq_len))


def shard_doc_starts(corpus_dir: str | Path, shard: dict[str, Any]) -> np.ndarray | None:
    """The int64 token offsets within the shard where documents start, or None if not recorded."""
    name = shard.get("docs")
    if not name:
        return None
    return np.load(Path(corpus_dir) / name)


def position_ids(starts: np.ndarray, begin: int, length: int) -> np.ndarray:
    """Position ids of tokens ``[begin, begin + length)`` of a shard, restarting at every document
    start in ``starts`` and at ``begin`` (a sequence never sees the one before it).

    Returns:
        int64 array of shape ``(length,)``.
    """
    lo, hi = np.searchsorted(starts, [begin, begin + length])
    inner = starts[lo:hi] - begin  # document starts inside this window
    seg_start = np.zeros(length, dtype=np.int64)
    if inner.size:
        marks = np.zeros(length, dtype=np.int64)
        marks[inner] = inner
        seg_start = np.maximum.accumulate(marks)
    return np.arange(length, dtype=np.int64) - seg_start


def write_corpus_meta(directory: Path, meta: dict[str, Any]) -> Path:
    path = Path(directory) / CORPUS_NAME
    path.write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2) + "\n")
    return path
