"""Every source format yields the same documents; bad sources get one-line errors naming them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from downcycle.corpus.sources import iter_texts
from downcycle.errors import DowncycleError

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"
MOBY = CORPUS / "moby_dick.jsonl.gz"
DOCS = ["The first document.\nIt has two lines.", "Second: ünïcödé, “quotes” and emoji 🐋.", "Third one."]


def _moby_texts() -> list[str]:
    with gzip.open(MOBY, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def test_txt_one_document_per_file_and_per_block(tmp_path):
    for i, d in enumerate(DOCS):
        (tmp_path / f"{i}.txt").write_text(d, encoding="utf-8")
    assert list(iter_texts(str(tmp_path))) == DOCS  # a directory: its files in sorted order
    assert list(iter_texts(str(tmp_path / "*.txt"))) == DOCS  # a glob: the same
    blocks = tmp_path / "blocks.txt"
    blocks.write_text("\n\n\n".join(DOCS) + "\n\n", encoding="utf-8")
    assert list(iter_texts(str(blocks), txt_docs="blank-line")) == DOCS
    assert list(iter_texts(str(blocks))) == [blocks.read_text(encoding="utf-8")]


def test_jsonl_json_and_field(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d, "n": i}) + "\n" for i, d in enumerate(DOCS)))
    assert list(iter_texts(str(tmp_path / "a.jsonl"), text_field="body")) == DOCS
    assert list(iter_texts(str(tmp_path / "a.jsonl"), text_field="body", limit_docs=2)) == DOCS[:2]
    assert list(iter_texts(str(tmp_path / "a.jsonl"), text_field="body", filters={"n": "1"})) == [DOCS[1]]
    (tmp_path / "b.json").write_text(json.dumps([{"text": d} for d in DOCS]))
    assert list(iter_texts(str(tmp_path / "b.json"))) == DOCS
    (tmp_path / "c.json").write_text(json.dumps({"version": 1, "data": [{"text": d} for d in DOCS]}))
    assert list(iter_texts(str(tmp_path / "c.json"))) == DOCS


def test_parquet_and_arrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"text": DOCS * 700, "id": list(range(2100))})  # > one record batch
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=500)
    assert list(iter_texts(str(tmp_path / "d.parquet"))) == DOCS * 700
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert list(iter_texts(str(tmp_path / "d.arrow"), limit_docs=4)) == (DOCS * 2)[:4]


def test_save_to_disk_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": DOCS, "n": [0, 1, 2]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert list(iter_texts(str(tmp_path / "ds"))) == DOCS
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert list(iter_texts(str(tmp_path / "dd"))) == DOCS  # a DatasetDict: its train split
    assert list(iter_texts(str(tmp_path / "dd" / "test"))) == DOCS[:1]


def test_shipped_corpus_gz_and_zst(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    expected = _moby_texts()
    assert len(expected) == 138 and expected[2].startswith("CHAPTER 1. Loomings.")
    assert list(iter_texts(str(MOBY))) == expected
    raw = gzip.decompress(MOBY.read_bytes())
    (tmp_path / "moby.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    assert list(iter_texts(str(tmp_path / "moby.jsonl.zst"))) == expected
    # the whole shipped corpus: >= 20 MB of text in five sources
    texts = list(iter_texts(str(CORPUS / "*.jsonl.gz")))
    assert sum(len(t.encode()) for t in texts) >= 20e6 and len(texts) == 2098


@pytest.mark.parametrize("make, source, message", [
    (None, "missing.jsonl", "missing.jsonl: no such file"),
    (lambda p: (p / "a.jsonl").write_text('{"body": "x"}\n'), "a.jsonl", "no field 'text' (fields: body)"),
    (lambda p: (p / "a.jsonl").write_text('{"text": "x"}\nnot json\n'), "a.jsonl", "a.jsonl:2: not valid JSON"),
    (lambda p: (p / "a.jsonl").write_text('{"text": 3}\n'), "a.jsonl", "holds int, not text"),
    (lambda p: (p / "a.jsonl").write_text(""), "a.jsonl", "a.jsonl: no documents"),
    (lambda p: (p / "a.jsonl").write_text('{"text": "  "}\n'), "a.jsonl", "a.jsonl: no documents"),
    (lambda p: (p / "a.jsonl.gz").write_bytes(b"not gzip at all"), "a.jsonl.gz", "a.jsonl.gz: cannot be read"),
    (lambda p: (p / "a.txt").write_bytes(b"\xff\xfe\xfa"), "a.txt", "a.txt: cannot be read"),
    (lambda p: (p / "a.csv").write_text("x"), "a.csv", "a.csv: unsupported file type"),
    (lambda p: (p / "a.parquet").write_bytes(b"PAR1 nonsense"), "a.parquet", "a.parquet: cannot be read"),
    (None, "*.jsonl", "*.jsonl: the glob matches no readable files"),
    (lambda p: (p / "sub").mkdir(), "sub", "sub: directory holds no readable files"),
])  # fmt: skip
def test_bad_sources_get_one_line_errors(tmp_path, make, source, message):
    if make:
        make(tmp_path)
    with pytest.raises(DowncycleError) as err:
        list(iter_texts(str(tmp_path / source)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_hub_id_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DowncycleError, match=r"^hf:HuggingFaceFW/fineweb-edu/sample-10BT: .*offline") as err:
        list(iter_texts("hf:HuggingFaceFW/fineweb-edu/sample-10BT"))
    assert "\n" not in str(err.value)
    with pytest.raises(DowncycleError, match="offline"):
        list(iter_texts("allenai/c4"))
    with pytest.raises(DowncycleError, match="no such file or directory"):
        list(iter_texts("not/a/dataset/id/at/all.txt"))


def test_hub_id_streams_with_config_split_and_filter(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(repo, config, split, streaming):
        calls.append((repo, config, split, streaming))
        return iter([{"text": "a", "language": "en"}, {"text": "b", "language": "fr"}, {"text": "c", "language": "en"}])

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # the online path, whatever an earlier test set
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert list(iter_texts("hf:org/web/sample-10BT@validation", filters={"language": "en"})) == ["a", "c"]
    assert list(iter_texts("org/web")) == ["a", "b", "c"]
    assert calls == [("org/web", "sample-10BT", "validation", True), ("org/web", None, "train", True)]

    def failing(*a, **k):
        raise ConnectionError("Couldn't reach 'org/web' on the Hub (LocalEntryNotFoundError)\nmore lines")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DowncycleError, match=r"^org/web: .*could not be streamed .*Couldn't reach 'org/web'.*\)$"):
        list(iter_texts("org/web"))
