"""Text sources: every way a corpus can arrive, streamed one document at a time.

A *source* is a string: a file (``.txt``, ``.jsonl``, ``.json``, ``.parquet``, ``.arrow``, the text
formats also as ``.gz``/``.zst``), a directory (a ``datasets`` ``save_to_disk`` directory, or any
directory of such files), a glob of these, or a Hugging Face dataset ``hf:ORG/NAME[/CONFIG][@SPLIT]``
(a bare ``ORG/NAME`` that is not a local path means the same), streamed when online.

Nothing is read whole: files are streamed line by line or record batch by record batch, so memory
does not grow with the source. Readers are a table (:data:`READERS`) keyed by file suffix.
"""

from __future__ import annotations

import glob as _glob
import gzip
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DowncycleError

__all__ = ["COMPRESSIONS", "READERS", "check_source", "expand_source", "iter_records", "iter_texts"]

_HF_ID = re.compile(r"^(?:hf:)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?:/([\w.-]+))?(?:@([\w.\[\]:%-]+))?$")
_BATCH_ROWS = 1024  # rows per Arrow/Parquet record batch: bounded memory, amortised Python overhead


def _open_text(path: Path) -> io.TextIOBase:
    """A text stream over ``path``, decompressing ``.gz``/``.zst`` on the fly."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if path.suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DowncycleError(f"{path}: reading .zst needs the zstandard package (pip install 'downcycle[data]')") from None
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True), encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_txt(path: Path, text_field: str, txt_docs: str) -> Iterator[dict[str, Any]]:
    with _open_text(path) as f:
        if txt_docs == "file":
            yield {text_field: f.read()}
            return
        block: list[str] = []
        for line in f:  # a document per block of lines separated by one or more blank lines
            if line.strip():
                block.append(line)
            elif block:
                yield {text_field: "".join(block).rstrip("\n")}
                block = []
        if block:
            yield {text_field: "".join(block).rstrip("\n")}


def _read_jsonl(path: Path, text_field: str, txt_docs: str) -> Iterator[dict[str, Any]]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DowncycleError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield record if isinstance(record, dict) else {text_field: record}


def _read_json(path: Path, text_field: str, txt_docs: str) -> Iterator[dict[str, Any]]:
    with _open_text(path) as f:  # one JSON document must be parsed whole; JSON Lines streams
        text = f.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:  # many ".json" files are really JSON Lines
        yield from _read_jsonl(path, text_field, txt_docs)
        return
    if isinstance(doc, dict):  # {"data": [...]} or one record
        lists = [v for v in doc.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        doc = lists[0] if len(lists) == 1 and text_field not in doc else [doc]
    if not isinstance(doc, list):
        raise DowncycleError(f"{path}: expected a JSON list of records or JSON Lines")
    for record in doc:
        yield record if isinstance(record, dict) else {text_field: record}


def _arrow_batches(batches: Iterable[Any], path: Path, text_field: str) -> Iterator[dict[str, Any]]:
    for batch in batches:
        if text_field not in batch.schema.names:
            raise DowncycleError(f"{path}: no field {text_field!r} (fields: {', '.join(batch.schema.names)}); pass --text-field")
        yield from batch.to_pylist()


def _pyarrow(path: Path) -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DowncycleError(f"{path}: reading {path.suffix} files needs pyarrow (pip install 'downcycle[data]')") from None
    return pyarrow


def _read_parquet(path: Path, text_field: str, txt_docs: str) -> Iterator[dict[str, Any]]:
    pq = _pyarrow(path).parquet

    yield from _arrow_batches(pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS), path, text_field)


def _read_arrow(path: Path, text_field: str, txt_docs: str) -> Iterator[dict[str, Any]]:
    """An Arrow IPC file; ``datasets.save_to_disk`` writes the *stream* format, others the file format."""
    pa = _pyarrow(path)
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            yield from _arrow_batches((reader.get_batch(i) for i in range(reader.num_record_batches)), path, text_field)
            return
        yield from _arrow_batches(reader, path, text_field)


READERS: dict[str, Callable[[Path, str, str], Iterator[dict[str, Any]]]] = {
    ".txt": _read_txt, ".md": _read_txt, ".jsonl": _read_jsonl, ".json": _read_json,
    ".parquet": _read_parquet, ".arrow": _read_arrow,
}  # fmt: skip
COMPRESSIONS = (".gz", ".zst")


def _kind(path: Path) -> str | None:
    """The reader suffix of ``path`` (``x.jsonl.gz`` -> ``.jsonl``), or None if unsupported."""
    suffixes = path.suffixes
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] in (".parquet", ".arrow"):
            return None  # already compressed internally; not a format we read
    return suffixes[-1] if suffixes and suffixes[-1] in READERS else None


def _dataset_dir_files(path: Path) -> list[Path] | None:
    """The ``.arrow`` files of a ``save_to_disk`` directory (its ``train`` split for a DatasetDict)."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if "train" not in splits:
            raise DowncycleError(f"{path}: a DatasetDict without a 'train' split; name a split directory, e.g. {path / splits[0]}" if splits else f"{path}: an empty DatasetDict")
        path = path / "train"
    if (path / "state.json").is_file():
        state = json.loads((path / "state.json").read_text())
        return [path / f["filename"] for f in state.get("_data_files", [])]
    return None


def expand_source(source: str) -> list[Path]:
    """The files of a local ``source`` in reading order (sorted), or ``[]`` if it names no local path.

    Raises:
        DowncycleError: a glob that matches nothing readable, or a file of an unsupported type.
    """
    path = Path(source).expanduser()
    if path.is_file():
        if _kind(path) is None:
            raise DowncycleError(f"{source}: unsupported file type (use .txt, .jsonl, .json, .parquet, .arrow, or .gz/.zst of the text ones)")
        return [path]
    if path.is_dir():
        if (path / "corpus.json").is_file():  # token ids, not text: reading its corpus.json as a record misleads
            raise DowncycleError(f"{source}: a corpus of token ids written by `downcycle data`, not text; pass the text it "
                                 "was built from (only `downcycle eval --tasks loss --data` reads a corpus directory)")
        files = _dataset_dir_files(path)
        if files is None:
            files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) is not None)
        if not files:
            raise DowncycleError(f"{source}: directory holds no readable files (.txt, .jsonl, .json, .parquet, .arrow)")
        return files
    if any(c in source for c in "*?["):
        matches = sorted(Path(p) for p in _glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file() and _kind(p) is not None]
        if not files:
            raise DowncycleError(f"{source}: the glob matches no readable files")
        return files
    return []


def check_source(source: str) -> None:
    """Fail fast, before any work, on a source that names nothing: a missing path, an empty glob or
    directory, an unsupported file, or a string that is not a dataset id either."""
    from .generated import check_generated, is_generated

    if is_generated(source):
        check_generated(source)
        return
    if not expand_source(source) and _HF_ID.match(source) is None:
        raise DowncycleError(f"{source}: no such file or directory (and not a Hugging Face dataset id)")


def iter_records(source: str, *, text_field: str = "text", txt_docs: str = "file", generation: Any = None) -> Iterator[dict[str, Any]]:
    """Every record of ``source`` as a dict (a ``.txt`` document is ``{text_field: text}``); a
    ``gen:MODEL_DIR`` source samples them with ``generation`` (:class:`.generated.GenerationOptions`)."""
    from .generated import GenerationOptions, is_generated, iter_generated

    if is_generated(source):
        yield from iter_generated(source, generation or GenerationOptions(), text_field)
        return
    files = expand_source(source)
    if files:
        for path in files:
            try:
                yield from READERS[_kind(path)](path, text_field, txt_docs)  # type: ignore[index]
            except (OSError, UnicodeDecodeError, EOFError) as e:
                raise DowncycleError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
            except DowncycleError:
                raise
            except Exception as e:
                if type(e).__module__.split(".")[0] in ("pyarrow", "zstandard", "zstd"):
                    raise DowncycleError(f"{path}: cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
                raise
        return
    from .hub import iter_hub_records

    match = _HF_ID.match(source)
    if match is None:
        raise DowncycleError(f"{source}: no such file or directory (and not a Hugging Face dataset id)")
    yield from iter_hub_records(source, *match.groups())


def iter_texts(source: str, *, text_field: str = "text", limit_docs: int | None = None, txt_docs: str = "file",
               filters: dict[str, str] | None = None, skip_empty: bool = True, generation: Any = None) -> Iterator[str]:
    """Yield the documents of ``source`` as strings, in a fixed order, streaming.

    Args:
        source: a file, directory, glob or HF dataset id (see the module docstring).
        text_field: the record field holding the text (ignored for ``.txt``).
        limit_docs: stop after this many documents.
        txt_docs: ``"file"`` (a ``.txt`` file is one document) or ``"blank-line"`` (one per block).
        filters: keep only records whose fields equal these values (compared as strings).
        skip_empty: skip documents that are empty or whitespace only.
        generation: how a ``gen:MODEL_DIR`` source samples (:class:`.generated.GenerationOptions`).

    Raises:
        DowncycleError: missing source, unreadable file, a record without ``text_field``, a
            non-string text, or a source that yields no document at all.
    """
    if txt_docs not in ("file", "blank-line"):
        raise DowncycleError(f"txt_docs: {txt_docs!r} must be 'file' or 'blank-line'")
    count = 0
    if limit_docs is not None and limit_docs <= 0:
        return
    for record in iter_records(source, text_field=text_field, txt_docs=txt_docs, generation=generation):
        if filters and any(str(record.get(k)) != v for k, v in filters.items()):
            continue
        if text_field not in record:
            raise DowncycleError(f"{source}: a record has no field {text_field!r} (fields: {', '.join(map(str, record))}); pass --text-field")
        text = record[text_field]
        if not isinstance(text, str):
            raise DowncycleError(f"{source}: field {text_field!r} holds {type(text).__name__}, not text")
        if skip_empty and not text.strip():
            continue
        yield text
        count += 1
        if limit_docs is not None and count >= limit_docs:
            return
    if count == 0:
        raise DowncycleError(f"{source}: no documents" + (f" match the filter {filters}" if filters else ""))
