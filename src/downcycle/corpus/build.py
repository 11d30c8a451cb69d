"""``downcycle data``: build a token-budgeted corpus of packed sequences with the model's tokenizer.

The pipeline, one document batch at a time (nothing holds the corpus)::

    sources --mixture--> batch of texts --dedup, split by hash--> tokenizer (all cores)
        --> [BOS] ids [EOS] --bounded shuffle--> packer(train) / packer(val) --> shard files

Each split stops exactly at its budget (see :func:`split_budgets`). Work happens in a sibling
``.OUT.partial`` directory; a state file written after every finished shard lets an interrupted
build of the same config resume there (sources are re-read up to where they were, not
re-tokenized). The finished shards are moved into ``OUT`` through :func:`atomic_output_dir`.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts.atomic import atomic_output_dir, check_new_output, write_atomic
from ..artifacts.hashes import config_hash
from ..artifacts.manifest import write_manifest
from ..artifacts.quantities import BYTES, COUNT, parse_quantity
from ..errors import DowncycleError
from ..recipe import DataConfig, inputs_of, output_dict, to_dict
from .generated import generator_provenance, is_generated
from .mixture import Doc, ShuffleBuffer, SourceStream, in_validation, pick_source
from .pack import Packer
from .shards import read_corpus_meta, write_corpus_meta
from .sources import check_source
from .tokenize import encode_documents, load_fast_tokenizer, token_dtype

STATE_NAME = "state.json"

__all__ = ["build_corpus", "partial_dir", "split_budgets", "summary"]


def split_budgets(total: int | None, val: float, seq_len: int) -> tuple[int | None, int | None]:
    """``(train, val)`` token budgets, each a whole number of sequences, summing to at most ``total``.

    The validation budget is ``val * total`` rounded down to whole sequences (at least one sequence
    when ``val > 0``); training gets the rest, rounded down. ``total=None`` means no budgets.
    """
    if total is None:
        return None, (None if val > 0 else 0)
    v = max(seq_len, int(total * val) // seq_len * seq_len) if val > 0 else 0
    t = (total - v) // seq_len * seq_len
    if t <= 0:
        raise DowncycleError(f"--tokens: {total} tokens leave no training sequence of {seq_len} after {v} validation tokens")
    return t, v


def parse_shuffle_tokens(text: str) -> int:
    return 0 if str(text).strip() == "0" else parse_quantity(text, "--shuffle-tokens", COUNT)


def shuffle_capacity(config: DataConfig) -> int:
    """Tokens of the shuffle buffer: none with a ``gen:`` source, whose documents are independent
    samples already, and which never ends: a buffer would be filled by generating past the budget."""
    return 0 if any(is_generated(s) for s in config.source) else parse_shuffle_tokens(config.shuffle_tokens)


def generated_split(index: int, share: float, packers: dict[str, Packer]) -> str:
    """The split of a ``gen:`` source's ``index``-th document: one in every ``1 / share`` goes to
    validation (the samples are independent, so any fixed assignment is unbiased; a hash below
    ``--val`` would leave a one-sequence validation budget waiting for rare documents); a document
    for a full split goes to the other."""
    if "val" not in packers:
        return "train"
    split = "val" if math.floor((index + 1) * share) > math.floor(index * share) else "train"
    other = "train" if split == "val" else "val"
    return other if packers[split].full and not packers[other].full else split


def partial_dir(out: Path) -> Path:
    """Where an unfinished build of ``out`` keeps its shards and resume state."""
    return out.absolute().parent / f".{out.name}.partial"


def build_corpus(config: DataConfig) -> Path:
    """Build the corpus described by ``config`` into ``config.out`` and return its path.

    Raises:
        DowncycleError: an existing output without --force, bad sources or tokenizer, or sources
            that hold fewer tokens than the budget asks for.
    """
    out = Path(config.out)
    check_new_output(out, config.force, inputs_of(config))  # fail before any work
    for source in config.source:
        check_source(source)
    backend, info = load_fast_tokenizer(config.tokenizer, trust_remote_code=config.trust_remote_code)
    dtype = token_dtype(info.vocab_size)
    seq_len = config.seq_len
    train_budget, val_budget = split_budgets(config.token_budget(), config.val, seq_len)
    seqs_per_shard = max(1, parse_quantity(config.shard_size, "--shard-size", BYTES) // (seq_len * dtype.itemsize))
    shuffle_tokens = shuffle_capacity(config)
    generated = {src: generator_provenance(src, config.generation()) for src in config.source if is_generated(src)}
    kwargs = {"text_field": config.text_field, "txt_docs": config.txt_docs, "filters": config.filters() or None,
              "generation": config.generation() if generated else None}
    # a gen: source is read a few documents at a time: what is read ahead past the budget is generated for nothing
    streams = [SourceStream(src, w, kwargs, config.gen_batch if src in generated else config.batch_docs)
               for src, w in zip(config.source, config.weight_list())]

    work = partial_dir(out)
    key = config_hash(output_dict(config) | {"tokenizer_sha256": info.sha256})  # a resume needs the same bytes-defining config
    state = _load_state(work, key) if config.resume else None
    if state is None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    splits = ["train"] + (["val"] if val_budget != 0 else [])
    budgets = {"train": train_budget, "val": val_budget}
    # a gen: source's validation share of documents: that of the budgets (the validation one is at least a sequence)
    gen_share = val_budget / (val_budget + train_budget) if train_budget and val_budget else config.val
    packers = {s: Packer(work, s, seq_len, dtype, seqs_per_shard, budgets[s], len(streams), config.boundaries) for s in splits}
    shuffle = ShuffleBuffer(shuffle_tokens, config.seed)
    seen: set[bytes] | None = set() if config.dedup else None
    duplicates = [0] * len(streams)
    if state is not None:
        duplicates = _restore(work, state, streams, packers, shuffle, seen)

    from ..progress import progress_bar

    total = sum(b for b in budgets.values() if b) if train_budget is not None else None
    bar = progress_bar(total=total, unit="tok", unit_scale=True, desc="tokens", disable=not config.progress, dynamic_ncols=True)
    bar.update(sum(p.written for p in packers.values()))
    checkpointed = sum(len(p.shards) for p in packers.values())
    try:
        while not all(p.full for p in packers.values()):
            i = pick_source(streams)
            if i is None:
                break
            texts, docs_split = [], []
            batch = streams[i].next_batch()
            first = streams[i].consumed - len(batch)  # the stream position of the batch's first document
            for j, (text, digest) in enumerate(batch):
                if seen is not None:
                    if digest in seen:
                        duplicates[i] += 1
                        continue
                    seen.add(digest)
                if streams[i].source in generated:
                    split = generated_split(first + j, gen_share, packers)
                else:
                    split = "val" if "val" in packers and in_validation(digest, config.seed, config.val) else "train"
                if not packers[split].full:  # a full split's documents need no tokenizing
                    texts.append(text)
                    docs_split.append(split)
            before = sum(p.written for p in packers.values())
            for tokens, split in zip(encode_documents(backend, info, texts, dtype), docs_split):
                streams[i].tokens += len(tokens)
                for doc in shuffle.push(Doc(tokens, i, split)):
                    packers[doc.split].add(doc.tokens, doc.source)
            bar.update(sum(p.written for p in packers.values()) - before)
            if sum(len(p.shards) for p in packers.values()) > checkpointed:
                _save_state(work, key, streams, packers, shuffle, seen, duplicates)
                checkpointed = sum(len(p.shards) for p in packers.values())
        before = sum(p.written for p in packers.values())
        for doc in shuffle.drain():
            packers[doc.split].add(doc.tokens, doc.source)
        bar.update(sum(p.written for p in packers.values()) - before)
        for split, p in packers.items():
            if p.budget is not None and p.written < p.budget:
                raise DowncycleError(
                    f"the sources hold too few tokens: the {split} split got {p.written} of its {p.budget} "
                    f"(sources: {', '.join(config.source)}); lower --tokens" + (" or change --val" if split == "val" else ""))
            p.finish()
    except DowncycleError:
        for p in packers.values():
            p.flush()
        shutil.rmtree(work, ignore_errors=True)  # nothing worth resuming: the same config fails again
        raise
    finally:
        bar.close()
        for s in streams:
            s.close()
    meta = _corpus_meta(config, info, dtype, packers, streams, duplicates)
    with atomic_output_dir(out, force=config.force) as tmp:
        for p in packers.values():
            for shard in p.shards:
                for name in (shard["file"], shard.get("docs")):
                    if name:
                        os.replace(work / name, tmp / name)
        write_corpus_meta(tmp, meta)
        inputs = {"tokenizer": info.as_dict(), "sources": list(config.source)} | ({"generators": generated} if generated else {})
        write_manifest(tmp, "data", to_dict(config), inputs=inputs,
                       outputs={s: {k: v for k, v in meta["splits"][s].items() if k != "shards"} for s in meta["splits"]},
                       hashed=output_dict(config))
    shutil.rmtree(work, ignore_errors=True)
    return out


def _corpus_meta(config: DataConfig, info: Any, dtype: np.dtype, packers: dict[str, Packer],
                 streams: list[SourceStream], duplicates: list[int]) -> dict[str, Any]:
    splits = {}
    for split, p in packers.items():
        assert p.counts is not None
        splits[split] = {"shards": p.shards, "sequences": p.written // config.seq_len, "tokens": p.written,
                         "documents": sum(p.counts.documents), "truncated_documents": p.counts.truncated_documents,
                         "budget": p.budget}
    sources = []
    for i, s in enumerate(streams):
        entry: dict[str, Any] = {"source": s.source, "weight": s.weight, "documents_read": s.consumed,
                                 "duplicates_dropped": duplicates[i], "exhausted": s.exhausted}
        for split, p in packers.items():
            assert p.counts is not None
            entry[split] = {"tokens": p.counts.tokens[i], "documents": p.counts.documents[i]}
        sources.append(entry)
    return {
        "seq_len": config.seq_len, "token_dtype": "uint16" if dtype.itemsize == 2 else "uint32",
        "vocab_size": info.vocab_size, "eos_token_id": info.eos_token_id, "bos_token_id": info.bos_token_id,
        "tokenizer": info.as_dict(), "seed": config.seed, "val_fraction": config.val, "dedup": config.dedup,
        "tokens_requested": config.token_budget(), "boundaries": config.boundaries,
        "shuffle": {"method": "bounded document shuffle buffer", "buffer_tokens": shuffle_capacity(config)},
        "splits": splits, "sources": sources,
    }  # fmt: skip


def _save_state(work: Path, key: str, streams: list[SourceStream], packers: dict[str, Packer], shuffle: ShuffleBuffer,
                seen: set[bytes] | None, duplicates: list[int]) -> None:
    """Checkpoint after a finished shard: written atomically (tmp + rename), arrays first, JSON last."""
    for p in packers.values():
        p.flush()
    buf_state, arrays = shuffle.state()
    for split, p in packers.items():
        arrays[f"{split}_doc_starts"] = np.asarray(p.doc_starts, dtype=np.int64)
    arrays["seen"] = np.frombuffer(b"".join(sorted(seen)), dtype=np.uint8).reshape(-1, 16) if seen else np.zeros((0, 16), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(work / "state.npz", buffer.getvalue())
    doc = {"key": key, "shuffle": buf_state, "duplicates": duplicates,
           "streams": [{"consumed": s.consumed, "tokens": s.tokens, "exhausted": s.exhausted} for s in streams],
           "packers": {split: p.state() for split, p in packers.items()}}
    write_atomic(work / STATE_NAME, json.dumps(doc))


def _load_state(work: Path, key: str) -> dict[str, Any] | None:
    try:
        state = json.loads((work / STATE_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if state.get("key") == key and (work / "state.npz").is_file() else None


def _restore(work: Path, state: dict[str, Any], streams: list[SourceStream], packers: dict[str, Packer],
             shuffle: ShuffleBuffer, seen: set[bytes] | None) -> list[int]:
    arrays = dict(np.load(work / "state.npz"))
    for s, saved in zip(streams, state["streams"]):
        s.consumed, s.tokens, s.exhausted = saved["consumed"], saved["tokens"], saved["exhausted"]
    for split, p in packers.items():
        p.restore(state["packers"][split], arrays[f"{split}_doc_starts"])
    shuffle.restore(state["shuffle"], arrays)
    if seen is not None:
        seen.update(bytes(row) for row in arrays["seen"])
    return list(state["duplicates"])


def summary(out: Path) -> str:
    """Each split's sequences and tokens, from the corpus's ``corpus.json``."""
    meta = read_corpus_meta(out)
    parts = [f"{s} {v['sequences']:,} x {meta['seq_len']} = {v['tokens']:,} tokens from {v['documents']:,} documents"
             for s, v in meta["splits"].items()]
    return f"wrote {out}: " + "; ".join(parts) + f" ({meta['token_dtype']})"
