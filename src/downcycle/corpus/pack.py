"""Packing documents into fixed-length sequences, written straight to shard files.

Documents (``[BOS] ids [EOS]``) are concatenated without padding and cut into ``seq_len`` rows; a
document that does not fit continues in the next row (and the next shard). Tokens go to the open
shard file as they arrive, so memory holds no more than one document. A split stops *exactly* at
its budget (a whole number of sequences): the document that crosses it is cut there, and its tail
is dropped. Without a budget, the trailing partial sequence is dropped at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .shards import docs_name, shard_name

__all__ = ["Packer", "SplitCounts"]


@dataclass
class SplitCounts:
    """Tokens and documents that landed in a split, per source (sums, divided never)."""

    tokens: list[int]
    documents: list[int]
    truncated_documents: int = 0  # documents cut by the budget (at most one) or by the final drop

    @classmethod
    def zeros(cls, n_sources: int) -> SplitCounts:
        return cls([0] * n_sources, [0] * n_sources)


@dataclass
class Packer:
    """Appends documents of one split to ``{split}-NNNNN.bin`` shards in ``directory``.

    Args:
        budget: tokens this split holds when full (a multiple of ``seq_len``), or None for no limit.
        seqs_per_shard: sequences per shard file (the last one may hold fewer).
    """

    directory: Path
    split: str
    seq_len: int
    dtype: np.dtype
    seqs_per_shard: int
    budget: int | None
    n_sources: int
    boundaries: bool = True
    shards: list[dict[str, Any]] = field(default_factory=list)  # finished shards, as listed in corpus.json
    shard_tokens: int = 0  # tokens in the open shard
    written: int = 0  # tokens in all shards
    doc_starts: list[int] = field(default_factory=list)  # offsets in the open shard where documents start
    counts: SplitCounts | None = None
    _file: BinaryIO | None = None
    _tail_docs: list[tuple[int, int, int]] = field(default_factory=list)  # (source, global start, length)

    def __post_init__(self) -> None:
        self.counts = self.counts or SplitCounts.zeros(self.n_sources)
        assert self.budget is None or self.budget % self.seq_len == 0, "budget must be whole sequences"

    @property
    def shard_capacity(self) -> int:
        return self.seqs_per_shard * self.seq_len

    @property
    def full(self) -> bool:
        return self.budget is not None and self.written >= self.budget

    def _path(self, index: int) -> Path:
        return self.directory / shard_name(self.split, index)

    def _open(self) -> BinaryIO:
        if self._file is None:
            path = self._path(len(self.shards))
            self._file = open(path, "r+b" if path.exists() else "wb")  # noqa: SIM115 -- stays open across add() calls
            self._file.seek(self.shard_tokens * self.dtype.itemsize)
            self._file.truncate()  # on resume, drop what was written after the checkpoint
        return self._file

    def add(self, tokens: np.ndarray, source: int) -> bool:
        """Append one document; returns True once the split is full.

        Args:
            tokens: shape ``(n,)``, of ``self.dtype``.
            source: index of the source it came from, for the per-source counts.
        """
        if self.full:
            return True
        assert self.counts is not None
        if self.budget is not None and self.written + len(tokens) > self.budget:
            tokens = tokens[: self.budget - self.written]
            self.counts.truncated_documents += 1
        self.counts.tokens[source] += len(tokens)
        self.counts.documents[source] += 1
        self.doc_starts.append(self.shard_tokens)
        if self.budget is None:  # documents in the last, partial sequence: what finish() may drop
            boundary = self.written - self.written % self.seq_len
            self._tail_docs = [d for d in self._tail_docs if d[1] + d[2] > boundary] + [(source, self.written, len(tokens))]
        pos = 0
        while pos < len(tokens):
            take = min(len(tokens) - pos, self.shard_capacity - self.shard_tokens)
            self._open().write(tokens[pos : pos + take].tobytes())
            self.shard_tokens += take
            self.written += take
            pos += take
            if self.shard_tokens == self.shard_capacity:
                self._close_shard()
        return self.full

    def _close_shard(self) -> None:
        """Finish the open shard (a whole number of sequences) and record it."""
        assert self.shard_tokens % self.seq_len == 0
        index = len(self.shards)
        if self._file is not None:
            self._file.close()
            self._file = None
        entry: dict[str, Any] = {"file": shard_name(self.split, index), "sequences": self.shard_tokens // self.seq_len}
        if self.boundaries:
            np.save(self.directory / docs_name(self.split, index), np.asarray(self.doc_starts, dtype=np.int64))
            entry["docs"] = docs_name(self.split, index)
        self.shards.append(entry)
        self.shard_tokens, self.doc_starts = 0, []

    def finish(self) -> None:
        """Close the last shard; drop a trailing partial sequence (only possible without a budget)."""
        assert self.counts is not None
        tail = self.shard_tokens % self.seq_len
        if tail:
            cut = self.written - tail  # global offset where the dropped tail begins
            for source, start, length in self._tail_docs:
                dropped = start + length - max(start, cut)
                if dropped <= 0:
                    continue
                self.counts.tokens[source] -= dropped
                if start >= cut:
                    self.counts.documents[source] -= 1
                else:
                    self.counts.truncated_documents += 1
            self.shard_tokens -= tail
            self.written -= tail
            self.doc_starts = [s for s in self.doc_starts if s < self.shard_tokens]
            self._open().truncate(self.shard_tokens * self.dtype.itemsize)
        if self.shard_tokens:
            self._close_shard()
        elif self._file is not None:
            self._file.close()
            self._file = None
            self._path(len(self.shards)).unlink(missing_ok=True)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    # --- resume -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        assert self.counts is not None
        return {"shards": self.shards, "shard_tokens": self.shard_tokens, "written": self.written,
                "tokens": self.counts.tokens, "documents": self.counts.documents,
                "truncated_documents": self.counts.truncated_documents, "tail_docs": self._tail_docs}

    def restore(self, state: dict[str, Any], doc_starts: np.ndarray) -> None:
        self.shards, self.shard_tokens, self.written = state["shards"], state["shard_tokens"], state["written"]
        self.counts = SplitCounts(state["tokens"], state["documents"], state["truncated_documents"])
        self.doc_starts = doc_starts.tolist()
        self._tail_docs = [tuple(d) for d in state["tail_docs"]]
