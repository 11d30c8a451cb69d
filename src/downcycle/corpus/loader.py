"""Reading a corpus for training and evaluation: a map-style torch Dataset over memory-mapped shards.

Nothing is loaded up front: each shard is memory-mapped (lazily, per process, so the dataset pickles
cheaply into DataLoader workers) and ``ds[i]`` copies one ``seq_len`` row. For distributed training,
:func:`rank_indices` (or :class:`RankSampler`) gives each of ``world_size`` processes a disjoint set
of sequences; together they cover every sequence exactly once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DowncycleError
from .shards import SPLITS, open_shard, position_ids, read_corpus_meta, shard_doc_starts

__all__ = ["PackedDataset", "RankSampler", "rank_indices"]


class PackedDataset(Dataset):
    """The packed sequences of one split of a corpus written by ``downcycle data``.

    Args:
        corpus_dir: the corpus directory (with ``corpus.json``).
        split: ``"train"`` or ``"val"``.
        document_positions: also return ``position_ids`` that restart at every document start
            (needs boundaries recorded at build time), for attention kept within a document.

    ``ds[i]`` is ``{"input_ids": LongTensor (seq_len,)}`` (plus ``"position_ids"``, same shape).
    Attributes: ``seq_len``, ``num_tokens`` (``len(ds) * seq_len``), ``meta`` (corpus.json).
    """

    def __init__(self, corpus_dir: str | Path, split: str = "train", *, document_positions: bool = False) -> None:
        self.corpus_dir = Path(corpus_dir)
        self.meta: dict[str, Any] = read_corpus_meta(self.corpus_dir)
        if split not in self.meta["splits"]:
            raise DowncycleError(f"{self.corpus_dir}: no split {split!r} (splits: {', '.join(self.meta['splits']) or 'none'})")
        self.split = split
        self.seq_len = int(self.meta["seq_len"])
        self.shards: list[dict[str, Any]] = list(self.meta["splits"][split]["shards"])
        self.document_positions = document_positions
        if document_positions and any(not s.get("docs") for s in self.shards):
            raise DowncycleError(f"{self.corpus_dir}: document boundaries were not recorded (rebuild with --boundaries)")
        counts = [int(s["sequences"]) for s in self.shards]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first global index of each shard
        self.num_sequences = int(self._offsets[-1])
        self.num_tokens = self.num_sequences * self.seq_len
        self._maps: dict[int, np.ndarray] = {}
        self._starts: dict[int, np.ndarray | None] = {}
        for shard in self.shards:  # fail now, not in a worker, on a missing or truncated shard
            open_shard(self.corpus_dir, self.meta, shard)

    def __len__(self) -> int:
        return self.num_sequences

    def _locate(self, index: int) -> tuple[int, int]:
        if index < 0:
            index += self.num_sequences
        if not 0 <= index < self.num_sequences:
            raise IndexError(f"sequence {index} out of range for {self.num_sequences}")
        shard = bisect_right(self._offsets, index) - 1
        return shard, index - int(self._offsets[shard])

    def _map(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            self._maps[shard] = open_shard(self.corpus_dir, self.meta, self.shards[shard])
        return self._maps[shard]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard, row = self._locate(int(index))
        ids = torch.from_numpy(self._map(shard)[row].astype(np.int64))  # (seq_len,)
        item = {"input_ids": ids}
        if self.document_positions:
            if shard not in self._starts:
                self._starts[shard] = shard_doc_starts(self.corpus_dir, self.shards[shard])
            starts = self._starts[shard]
            assert starts is not None
            item["position_ids"] = torch.from_numpy(position_ids(starts, row * self.seq_len, self.seq_len))
        return item

    def __getstate__(self) -> dict[str, Any]:  # memmaps are reopened in each worker process
        state = self.__dict__.copy()
        state["_maps"], state["_starts"] = {}, {}
        return state

    def __repr__(self) -> str:
        return f"PackedDataset({str(self.corpus_dir)!r}, split={self.split!r}, sequences={len(self)}, seq_len={self.seq_len})"


def rank_indices(num_sequences: int, rank: int, world_size: int, *, shuffle: bool = False, seed: int = 0,
                 epoch: int = 0, even: bool = False) -> np.ndarray:
    """The sequence indices process ``rank`` of ``world_size`` reads: disjoint across ranks, covering all.

    Args:
        shuffle: permute all indices with ``(seed, epoch)`` first (the same permutation on every rank).
        even: drop the last ``num_sequences % world_size`` (after the permutation) so every rank gets
            the same count, as lock-step distributed training needs; then they cover all but those.

    Returns:
        int64 array of indices, strided ``rank::world_size`` over the (permuted) order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise DowncycleError(f"rank {rank} is not in [0, world_size={world_size})")
    order = np.arange(num_sequences, dtype=np.int64)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(order)
    if even:
        order = order[: num_sequences - num_sequences % world_size]
    return order[rank::world_size]


class RankSampler(Sampler[int]):
    """A torch Sampler over :func:`rank_indices`; call ``set_epoch`` each epoch to reshuffle."""

    def __init__(self, dataset: PackedDataset | int, rank: int = 0, world_size: int = 1, *, shuffle: bool = True,
                 seed: int = 0, even: bool = True) -> None:
        self.n = dataset if isinstance(dataset, int) else len(dataset)
        self.rank, self.world_size, self.shuffle, self.seed, self.even = rank, world_size, shuffle, seed, even
        self.epoch = 0
        rank_indices(self.n, rank, world_size)  # validate now

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        return rank_indices(self.n, self.rank, self.world_size, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch, even=self.even)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())


def available_splits(corpus_dir: str | Path) -> list[str]:
    meta = read_corpus_meta(corpus_dir)
    return [s for s in SPLITS if s in meta["splits"]]
