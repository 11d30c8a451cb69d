"""PackedDataset reads exactly the shards' sequences; ranks split them disjointly and completely."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch

from downcycle.corpus.build import build_corpus
from downcycle.corpus.loader import PackedDataset, RankSampler, rank_indices
from downcycle.errors import DowncycleError
from downcycle.recipe import DataConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKENIZER = EXAMPLES / "tokenizer"
MOBY = EXAMPLES / "corpus" / "moby_dick.jsonl.gz"
SEQ = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cfg = DataConfig(tokenizer=str(TOKENIZER), source=[str(MOBY)], out=tmp_path_factory.mktemp("loader") / "c", seq_len=SEQ,
                     tokens="60K", val=0.1, shard_size="10KB", shuffle_tokens="20K", progress=False)
    return build_corpus(cfg)


def test_items_are_the_shard_rows(corpus, read_split):
    ds = PackedDataset(corpus, "train")
    tokens, _ = read_split(corpus, "train")
    assert len(ds) == len(tokens) // SEQ == ds.meta["splits"]["train"]["sequences"] and ds.seq_len == SEQ
    assert ds.num_tokens == len(tokens) and len(ds.shards) > 2
    rows = torch.stack([ds[i]["input_ids"] for i in range(len(ds))])
    assert rows.dtype == torch.long and rows.shape == (len(ds), SEQ)
    np.testing.assert_array_equal(rows.reshape(-1).numpy(), tokens.astype(np.int64))
    assert torch.equal(ds[-1]["input_ids"], rows[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert len(PackedDataset(corpus, "val")) == ds.meta["splits"]["val"]["sequences"] > 0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["input_ids"].shape == (4, SEQ)


def test_document_positions_restart_at_each_document(corpus, read_split):
    ds = PackedDataset(corpus, "train", document_positions=True)
    _, starts = read_split(corpus, "train")
    starts_set = set(starts)
    for i in range(len(ds)):
        pos = ds[i]["position_ids"].numpy()
        assert pos.shape == (SEQ,) and pos[0] == 0
        for j in range(1, SEQ):  # restart exactly where a document starts, count up otherwise
            assert pos[j] == (0 if i * SEQ + j in starts_set else pos[j - 1] + 1)
    assert (ds[0]["input_ids"][ds[0]["position_ids"] == 0] == 1).all()  # each document starts with BOS


def _rank_rows(args):
    corpus, rank, world = args
    ds = PackedDataset(corpus, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=RankSampler(ds, rank, world, shuffle=True, seed=7, even=False))
    return [tuple(row.tolist()) for batch in loader for row in batch["input_ids"]]


@pytest.mark.slow
def test_two_processes_see_disjoint_sequences_covering_all(corpus):
    with mp.get_context("spawn").Pool(2) as pool:
        r0, r1 = pool.map(_rank_rows, [(str(corpus), 0, 2), (str(corpus), 1, 2)])
    ds = PackedDataset(corpus, "train")
    everything = [tuple(ds[i]["input_ids"].tolist()) for i in range(len(ds))]
    assert len(r0) + len(r1) == len(ds) and abs(len(r0) - len(r1)) <= 1
    assert sorted(r0 + r1) == sorted(everything)  # disjoint and covering, as multisets of rows


def test_rank_indices():
    for n, world in ((10, 2), (11, 2), (7, 3), (2, 4)):
        parts = [rank_indices(n, r, world, shuffle=True, seed=3) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))
        even = [rank_indices(n, r, world, even=True) for r in range(world)]
        assert len({len(p) for p in even}) == 1 and len(np.unique(np.concatenate(even))) == n - n % world
    assert not np.array_equal(rank_indices(100, 0, 1, shuffle=True, epoch=0), rank_indices(100, 0, 1, shuffle=True, epoch=1))
    sampler = RankSampler(10, 1, 2, shuffle=False, even=True)
    assert list(sampler) == [1, 3, 5, 7, 9] and len(sampler) == 5
    with pytest.raises(DowncycleError):
        rank_indices(10, 2, 2)


def test_bad_corpus_errors(corpus, tmp_path):
    with pytest.raises(DowncycleError, match="corpus.json: not found"):
        PackedDataset(tmp_path)
    with pytest.raises(DowncycleError, match="no split 'test'"):
        PackedDataset(corpus, "test")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    path = broken / "train-00001.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DowncycleError, match="train-00001.bin: .* corpus.json says"):
        PackedDataset(broken)


def test_without_boundaries_document_positions_are_refused(tmp_path):
    cfg = DataConfig(tokenizer=str(TOKENIZER), source=[str(MOBY)], out=tmp_path / "nb", seq_len=SEQ, tokens="5K", val=0.0,
                     boundaries=False, progress=False)
    out = build_corpus(cfg)
    assert not list(out.glob("*.docs.npy"))
    assert len(PackedDataset(out)) == 5_000 // SEQ
    with pytest.raises(DowncycleError, match="document boundaries were not recorded"):
        PackedDataset(out, document_positions=True)
