"""Corpora for training and evaluation: sources, tokenization, packing, shards and the loader.

``build_corpus`` and ``PackedDataset`` are imported lazily, so ``import downcycle.data.sources``
stays light and the CLI never imports numpy or torch before it must.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PackedDataset", "RankSampler", "build_corpus", "iter_texts", "rank_indices", "read_corpus_meta"]

_LAZY = {
    "build_corpus": "downcycle.data.corpus",
    "iter_texts": "downcycle.data.sources",
    "PackedDataset": "downcycle.data.loader",
    "RankSampler": "downcycle.data.loader",
    "rank_indices": "downcycle.data.loader",
    "read_corpus_meta": "downcycle.data.shards",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'downcycle.data' has no attribute {name!r}")
