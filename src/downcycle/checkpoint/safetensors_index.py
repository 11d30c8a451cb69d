"""Reading a safetensors checkpoint without loading it: headers, offsets and an index of every tensor.

A safetensors file is ``u64 little-endian header length N`` + ``N bytes of JSON`` + raw tensor data;
the JSON maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` relative to
the start of the data, plus an optional ``"__metadata__"`` string map. Everything downcycle needs for
surgery is in the headers, so opening a 100 GB checkpoint reads a few kilobytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import DowncycleError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
METADATA_KEY = "__metadata__"
# Bytes per element; sub-byte and exotic types are copied verbatim but not size-checked.
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
    "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}  # fmt: skip
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
_BIN_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "model*.bin")

__all__ = ["TensorEntry", "Checkpoint", "open_checkpoint", "read_header"]


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live. ``start`` is an absolute offset in ``file``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int
    nbytes: int


@dataclass
class Checkpoint:
    """Every tensor of a (possibly sharded) safetensors checkpoint, by name, plus shard facts."""

    directory: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    shards: list[Path]
    raw_headers: dict[str, bytes] = field(repr=False)  # shard file name -> its JSON header bytes

    @cached_property
    def header_sha256(self) -> dict[str, str]:
        """Shard file name -> sha256 of its header bytes: a cheap identity of the weights' layout."""
        import hashlib  # here, not at import: loading OpenSSL is a few ms of a fast cut's start-up

        return {name: hashlib.sha256(raw).hexdigest() for name, raw in self.raw_headers.items()}

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def read_header(path: Path) -> tuple[dict, int, bytes]:
    """Parse and validate one safetensors file's header.

    Returns:
        (header: tensors plus ``__metadata__`` if present, absolute data start, the header's JSON bytes)

    Raises:
        DowncycleError: naming the file, if it is truncated or its header is corrupt.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise DowncycleError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise DowncycleError(f"{path}: corrupt or truncated safetensors file (header of {n} bytes, file of {size})")
            raw = f.read(n)
    except OSError as e:
        raise DowncycleError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DowncycleError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise DowncycleError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_start = 8 + n
    for name, info in header.items():
        if name == METADATA_KEY:
            continue
        _validate_entry(path, name, info, size - data_start)
    return header, data_start, raw


def _validate_entry(path: Path, name: str, info: object, data_size: int) -> None:
    try:
        begin, end = info["data_offsets"]  # type: ignore[index]
        dtype, shape = info["dtype"], info["shape"]  # type: ignore[index]
    except (TypeError, KeyError, ValueError) as e:
        raise DowncycleError(f"{path}: corrupt header entry for tensor {name!r}") from e
    if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
        raise DowncycleError(f"{path}: tensor {name!r} has invalid offsets {begin}..{end}")
    if end > data_size:
        raise DowncycleError(
            f"{path}: truncated: tensor {name!r} ends at byte {end} of data but the file holds {data_size}"
        )
    if dtype in DTYPE_SIZES and math.prod(shape) * DTYPE_SIZES[dtype] != end - begin:
        raise DowncycleError(f"{path}: tensor {name!r} has {end - begin} bytes, not {dtype}{list(shape)}")


def open_checkpoint(directory: Path) -> Checkpoint:
    """Index a local checkpoint directory (``model.safetensors`` or sharded with an index).

    Raises:
        DowncycleError: for a directory without safetensors weights (``.bin``-only ones are named as
            such), a missing shard, a tensor the index names but its shard lacks, or a corrupt shard.
    """
    index_path = directory / INDEX_NAME
    if index_path.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise DowncycleError(f"{index_path}: not a valid safetensors index ({e})") from e
        shard_names = sorted(set(weight_map.values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
        if not files:
            _raise_no_weights(directory)
        shard_names = [SINGLE_NAME] if SINGLE_NAME in files else files
        weight_map = {}
    tensors: dict[str, TensorEntry] = {}
    metadata: dict[str, str] = {}
    raw_headers: dict[str, bytes] = {}
    for shard in shard_names:
        path = directory / shard
        if not path.is_file():
            raise DowncycleError(f"{path}: shard named in {INDEX_NAME} is missing")
        header, data_start, raw_headers[shard] = read_header(path)
        metadata = metadata or dict(header.get(METADATA_KEY) or {})
        for name, info in header.items():
            if name == METADATA_KEY or (weight_map and weight_map.get(name) != shard):
                continue
            begin, end = info["data_offsets"]
            tensors[name] = TensorEntry(name, info["dtype"], tuple(info["shape"]), path, data_start + begin, end - begin)
    missing = [n for n in weight_map if n not in tensors]
    if missing:
        shard = weight_map[missing[0]]
        raise DowncycleError(f"{directory / shard}: missing tensor {missing[0]!r} named in {INDEX_NAME}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return Checkpoint(directory, tensors, metadata, [directory / s for s in shard_names], raw_headers)


def _raise_no_weights(directory: Path) -> None:
    bins = [p.name for pat in _BIN_PATTERNS for p in directory.glob(pat)]
    if bins:
        raise DowncycleError(
            f"{directory}: has only PyTorch pickle weights ({bins[0]}); downcycle reads safetensors. "
            f"Convert them safely first: downcycle convert {directory} DIR"
        )
    raise DowncycleError(f"{directory}: no model.safetensors or {INDEX_NAME} found")
