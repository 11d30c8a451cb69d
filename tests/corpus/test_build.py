"""`downcycle data` end to end on the shipped tokenizer and corpus: exact budgets, every document's
tokens once and in order, EOS between documents, disjoint splits, reproducible bytes, resume."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from downcycle.corpus.build import build_corpus, partial_dir, split_budgets
from downcycle.corpus.pack import Packer
from downcycle.errors import DowncycleError
from downcycle.recipe import DataConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKENIZER = EXAMPLES / "tokenizer"
MOBY = EXAMPLES / "corpus" / "moby_dick.jsonl.gz"
SEQ = 128


def _cfg(tmp_path, name="c", **kw) -> DataConfig:
    base = {"tokenizer": str(TOKENIZER), "source": [str(MOBY)], "out": tmp_path / name, "seq_len": SEQ, "shard_size": "20KB",
            "shuffle_tokens": "50K", "val": 0.05, "progress": False, "batch_docs": 16}
    return DataConfig(**(base | kw))


@pytest.fixture(scope="module")
def moby(reference_encode):
    with gzip.open(MOBY, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts, reference_encode(texts)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One budgeted, shuffled corpus with a validation split (built once)."""
    return build_corpus(_cfg(tmp_path_factory.mktemp("corpus"), tokens="200K"))


def test_exact_budget_manifest_and_shards_agree(built, read_split):
    meta = json.loads((built / "corpus.json").read_text())
    manifest = json.loads((built / "downcycle.json").read_text())
    train_b, val_b = split_budgets(200_000, 0.05, SEQ)
    assert (train_b, val_b) == (189_952, 9_984)  # whole sequences: 1484 and 78 of 128
    for split, budget in (("train", train_b), ("val", val_b)):
        info = meta["splits"][split]
        tokens, _ = read_split(built, split)
        assert len(tokens) == info["tokens"] == budget == info["sequences"] * SEQ == manifest["outputs"][split]["tokens"]
        assert sum(s[split]["tokens"] for s in meta["sources"]) == budget
        assert sum(s[split]["documents"] for s in meta["sources"]) == info["documents"]
        for shard in info["shards"]:  # each shard a whole number of sequences, as corpus.json says
            assert (built / shard["file"]).stat().st_size == shard["sequences"] * SEQ * 2
    assert meta["token_dtype"] == "uint16" and meta["vocab_size"] == 8192
    assert (meta["bos_token_id"], meta["eos_token_id"]) == (1, 2)
    assert len(meta["splits"]["train"]["shards"]) > 3  # shards of 20 KB: several
    assert manifest["stage"] == "data" and manifest["inputs"]["tokenizer"]["sha256"] == meta["tokenizer"]["sha256"]


def test_every_document_once_in_order_with_eos_and_disjoint_splits(built, moby, read_split, segments):
    _, encoded = moby
    by_tokens: dict[tuple, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_tokens.setdefault(tuple(ids), []).append(i)
    seen: dict[str, Counter] = {}
    for split in ("train", "val"):
        tokens, starts = read_split(built, split)
        segs = segments(tokens, starts)
        assert starts[0] == 0 and len(segs) == json.loads((built / "corpus.json").read_text())["splits"][split]["documents"]
        found = Counter()
        for k, seg in enumerate(segs):
            if tuple(seg) in by_tokens:  # a whole document, exactly its reference encoding
                found[by_tokens[tuple(seg)][0]] += 1
            else:  # only the last document of a split may be cut by the budget: then a prefix
                assert k == len(segs) - 1, f"{split} segment {k} is no document's encoding"
                match = [i for i, ids in enumerate(encoded) if ids[: len(seg)] == seg]
                assert match, "the truncated last document is no document's prefix"
                found[match[0]] += 1
        assert max(found.values()) == 1  # once
        seen[split] = found
        # EOS closes every document and BOS opens the next one
        for s in starts[1:]:
            assert tokens[s - 1] == 2 and tokens[s] == 1
    assert not set(seen["train"]) & set(seen["val"])  # disjoint by document
    assert len(seen["val"]) >= 2


def test_source_order_without_shuffle_is_the_exact_concatenation(tmp_path, moby, read_split):
    _, encoded = moby
    out = build_corpus(_cfg(tmp_path, tokens="100K", val=0.0, shuffle_tokens="0"))
    tokens, _ = read_split(out, "train")
    stream = np.concatenate([np.array(ids) for ids in encoded])
    assert len(tokens) == 100_000 // SEQ * SEQ
    np.testing.assert_array_equal(tokens, stream[: len(tokens)])
    assert "val" not in json.loads((out / "corpus.json").read_text())["splits"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path, built, corpus_bytes):
    again = build_corpus(_cfg(tmp_path, "again", tokens="200K"))
    assert corpus_bytes(again) == corpus_bytes(built)
    other = build_corpus(_cfg(tmp_path, "other", tokens="200K", seed=1))
    assert corpus_bytes(other) != corpus_bytes(built)


def test_resume_after_interruption_gives_the_same_bytes(tmp_path, built, monkeypatch, corpus_bytes):
    calls = {"n": 0}
    original = Packer._close_shard

    def interrupted(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(Packer, "_close_shard", interrupted)
    cfg = _cfg(tmp_path, "resumed", tokens="200K")
    with pytest.raises(KeyboardInterrupt):
        build_corpus(cfg)
    assert not cfg.out.exists() and (partial_dir(cfg.out) / "state.json").is_file()
    state = json.loads((partial_dir(cfg.out) / "state.json").read_text())
    assert 1 <= sum(len(p["shards"]) for p in state["packers"].values()) < 5
    monkeypatch.setattr(Packer, "_close_shard", original)
    build_corpus(cfg)
    assert corpus_bytes(cfg.out) == corpus_bytes(built)
    assert not partial_dir(cfg.out).exists()


def test_all_tokens_without_budget_drops_only_the_partial_tail(tmp_path, moby):
    _, encoded = moby
    out = build_corpus(_cfg(tmp_path, val=0.0))
    meta = json.loads((out / "corpus.json").read_text())
    total = sum(len(ids) for ids in encoded)
    assert meta["splits"]["train"]["tokens"] == total // SEQ * SEQ
    assert meta["sources"][0]["train"]["tokens"] == total // SEQ * SEQ


def test_mixture_weights_and_dedup(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"text": f"alpha {i} " * 30}) + "\n" for i in range(400)))
    b.write_text("".join(json.dumps({"text": f"beta {i % 200} " * 30}) + "\n" for i in range(400)))  # 200 duplicates
    cfg = _cfg(tmp_path, source=[str(a), str(b)], weights="3,1", tokens="40K", val=0.0, dedup=True, batch_docs=8)
    meta = json.loads((build_corpus(cfg) / "corpus.json").read_text())
    sa, sb = meta["sources"]
    assert sa["train"]["tokens"] + sb["train"]["tokens"] == 40_000 // SEQ * SEQ
    assert abs(sa["train"]["tokens"] / 40_000 - 0.75) < 0.03
    assert sb["duplicates_dropped"] > 0 and sa["duplicates_dropped"] == 0
    meta = json.loads((build_corpus(_cfg(tmp_path, "all", source=[str(b)], val=0.0, dedup=True)) / "corpus.json").read_text())
    assert meta["sources"][0]["duplicates_dropped"] == 200 and meta["sources"][0]["documents_read"] == 400


def test_large_vocabulary_is_stored_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1} | {f"w{i}": i + 2 for i in range(70_000)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>").save_pretrained(str(tmp_path / "tok"))
    (tmp_path / "d.txt").write_text(" ".join(f"w{i}" for i in range(69_000, 69_990)))
    out = build_corpus(_cfg(tmp_path, tokenizer=str(tmp_path / "tok"), source=[str(tmp_path / "d.txt")], val=0.0, seq_len=7))
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["token_dtype"] == "uint32" and meta["bos_token_id"] is None
    tokens = np.fromfile(out / "train-00000.bin", dtype="<u4")
    assert tokens[0] == 69_002 and len(tokens) == 987 and meta["splits"]["train"]["tokens"] == 987  # 990 + EOS, to 7s


def test_errors(tmp_path, built):
    with pytest.raises(DowncycleError, match="too few tokens: the train split got"):
        build_corpus(_cfg(tmp_path, tokens="10M"))
    assert not partial_dir(tmp_path / "c").exists() and not (tmp_path / "c").exists()
    with pytest.raises(DowncycleError, match="already exists"):
        build_corpus(_cfg(tmp_path, tokens="10K", out=built))
    with pytest.raises(DowncycleError, match="no loadable tokenizer|no such model directory"):
        build_corpus(_cfg(tmp_path, tokenizer=str(tmp_path / "nothing")))
    with pytest.raises(DowncycleError, match="nope.jsonl: no such file"):  # checked first, before the tokenizer loads
        build_corpus(_cfg(tmp_path, source=[str(MOBY), str(tmp_path / "nope.jsonl")], tokenizer=str(tmp_path / "nothing")))
    with pytest.raises(DowncycleError, match="2 weights for 1 sources"):
        _cfg(tmp_path, weights="1,2")
    with pytest.raises(DowncycleError, match="--tokens: 'lots'"):
        _cfg(tmp_path, tokens="lots")


def test_cli_end_to_end(tmp_path, capsys):
    from downcycle.cli import main

    out = tmp_path / "cli"
    argv = ["data", "--tokenizer", str(TOKENIZER), "--source", str(MOBY), "--source", str(MOBY), "--weights", "1,1",
            "--tokens", "30K", "--seq-len", "256", "--val", "0.1", "--out", str(out), "--no-progress", "--dedup"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((out / "corpus.json").read_text())
    assert (meta["splits"]["train"]["tokens"], meta["splits"]["val"]["tokens"]) == split_budgets(30_000, 0.1, 256) == (27_136, 2_816)
    assert main(argv) == 1 and "already exists" in capsys.readouterr().err
    assert main(argv[:-4] + ["--out", str(tmp_path / "x"), "--tokens", "1T", "--no-progress"]) == 1
    assert "too few tokens" in capsys.readouterr().err


def test_progress_bar_shows_tokens_per_second_and_resume_state_of_another_config_is_ignored(tmp_path, capsys, monkeypatch,
                                                                                            corpus_bytes):
    cfg = _cfg(tmp_path, "p", tokens="20K", progress=True)
    work = partial_dir(cfg.out)
    work.mkdir()
    (work / "state.json").write_text(json.dumps({"key": "another config"}))
    (work / "train-00000.bin").write_bytes(b"stale bytes")
    build_corpus(cfg)
    err = capsys.readouterr().err
    assert "tok/s" in err and "tokens: 100%" in err
    assert not work.exists()
    assert corpus_bytes(cfg.out) == corpus_bytes(build_corpus(_cfg(tmp_path, "q", tokens="20K")))
