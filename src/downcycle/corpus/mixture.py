"""Mixing sources by token weight, and the bounded document shuffle.

**Mixture.** Each source is read in batches of documents. The next batch always comes from the
source furthest behind its share (smallest ``tokens_taken / weight``), so every prefix of the
stream holds the sources in proportion to their weights, up to one batch. A source that runs out
leaves the mixture (the corpus then says how many tokens it really gave).

**Shuffle.** A streaming shuffle buffer over tokenized documents: it fills to ``capacity`` tokens,
then each arriving document evicts a uniformly chosen one (``numpy.random.Generator`` seeded by
``--seed``), and the rest leave in random order at the end. Memory is bounded by the capacity (plus
one document); documents stay whole, so their tokens stay in order. Sequences are not shuffled
again on disk: the loader's sampler shuffles sequence order each epoch.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from .sources import iter_texts

_PREFETCH = 2  # batches read ahead per source
_BATCH_CHARS = 4_000_000  # the tokenizer's transient memory grows with the text in one batch

__all__ = ["Doc", "ShuffleBuffer", "SourceStream", "in_validation", "pick_source", "text_digest"]


@dataclass
class Doc:
    tokens: np.ndarray  # (n,) ids incl. BOS/EOS
    source: int
    split: str


def text_digest(text: str) -> bytes:
    """A 16-byte hash of a document's text: its identity for dedup and for the split."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def in_validation(digest: bytes, seed: int, fraction: float) -> bool:
    """Whether a document belongs to the validation split: a seeded hash of its text below ``fraction``.

    A function of the text alone, so identical documents always land in the same split and the
    choice does not depend on reading order.
    """
    if fraction <= 0:
        return False
    h = hashlib.blake2b(digest, digest_size=8, key=seed.to_bytes(8, "little", signed=True)).digest()
    return int.from_bytes(h, "little") < fraction * 2**64


@dataclass
class SourceStream:
    """One source, read ahead in batches by a background thread; ``consumed`` counts documents taken.

    The reader thread reads, decompresses, parses and hashes the next batches (at most
    ``_PREFETCH`` of them) while the tokenizer works on the current one, which releases the GIL;
    the order of batches is the source's order whatever the timing, so output stays deterministic.
    """

    source: str
    weight: float
    kwargs: dict[str, Any]
    batch_size: int = 1024
    consumed: int = 0  # documents taken by the consumer (a resumed stream skips these)
    tokens: int = 0  # tokens taken from it so far (before split budgets), for the mixture
    exhausted: bool = False
    _queue: queue.Queue | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _read(self, q: queue.Queue) -> None:
        def put(item: Any) -> bool:
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            it = iter_texts(self.source, **self.kwargs)
            if self.consumed:  # resume: skip what was used (re-read, never re-tokenized)
                it = islice(it, self.consumed, None)
            batch: list[tuple[str, bytes]] = []
            chars = 0
            for text in it:
                batch.append((text, text_digest(text)))
                chars += len(text)
                if len(batch) == self.batch_size or chars >= _BATCH_CHARS:
                    if not put(batch):
                        return
                    batch, chars = [], 0
            if put(batch):
                put(None)  # the end
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, raised there
            put(e)

    def next_batch(self) -> list[tuple[str, bytes]]:
        """The next batch of ``(text, digest)``: ``batch_size`` documents or ``_BATCH_CHARS`` of text,
        whichever comes first (huge documents must not make a huge batch); ``[]`` at the end."""
        if self.exhausted:
            return []
        if self._queue is None:
            self._queue = queue.Queue(maxsize=_PREFETCH)
            self._thread = threading.Thread(target=self._read, args=(self._queue,), daemon=True, name=f"read {self.source}")
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.exhausted = True
            raise item
        if item is None:
            self.exhausted = True
            return []
        self.consumed += len(item)
        return item

    def close(self) -> None:
        """Stop the reader thread and wait for it: it exits at its next put, after the batch it is
        reading (a ``gen:`` source finishes the batch it is sampling; no thread outlives the build)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


def pick_source(streams: list[SourceStream]) -> int | None:
    """Index of the live source furthest behind its weight, or None when all are exhausted."""
    live = [i for i, s in enumerate(streams) if not s.exhausted]
    if not live:
        return None
    return min(live, key=lambda i: (streams[i].tokens / streams[i].weight, i))


class ShuffleBuffer:
    """A bounded streaming shuffle of documents (see the module docstring)."""

    def __init__(self, capacity_tokens: int, seed: int) -> None:
        self.capacity = capacity_tokens
        self.rng = np.random.default_rng(seed)
        self.docs: list[Doc] = []
        self.tokens = 0

    def push(self, doc: Doc) -> Iterator[Doc]:
        """Add ``doc``; yield the documents it evicts (none until the buffer is full)."""
        if self.capacity <= 0:
            yield doc
            return
        self.docs.append(doc)
        self.tokens += len(doc.tokens)
        while self.tokens > self.capacity and self.docs:
            yield self._pop(int(self.rng.integers(len(self.docs))))

    def drain(self) -> Iterator[Doc]:
        while self.docs:
            yield self._pop(int(self.rng.integers(len(self.docs))))

    def _pop(self, i: int) -> Doc:
        self.docs[i], self.docs[-1] = self.docs[-1], self.docs[i]  # O(1) removal; order is random anyway
        doc = self.docs.pop()
        self.tokens -= len(doc.tokens)
        return doc

    # --- resume -----------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        lengths = np.array([len(d.tokens) for d in self.docs], dtype=np.int64)
        arrays = {
            "buf_tokens": np.concatenate([d.tokens for d in self.docs]) if self.docs else np.zeros(0, np.uint32),
            "buf_lengths": lengths,
            "buf_sources": np.array([d.source for d in self.docs], dtype=np.int64),
            "buf_val": np.array([d.split == "val" for d in self.docs], dtype=bool),
        }
        return {"rng": self.rng.bit_generator.state}, arrays

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.rng.bit_generator.state = state["rng"]
        pieces = np.split(arrays["buf_tokens"], np.cumsum(arrays["buf_lengths"])[:-1]) if len(arrays["buf_lengths"]) else []
        self.docs = [Doc(t, int(s), "val" if v else "train") for t, s, v in zip(pieces, arrays["buf_sources"], arrays["buf_val"])]
        self.tokens = int(arrays["buf_lengths"].sum())
