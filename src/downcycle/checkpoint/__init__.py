"""Checkpoints on disk: safetensors headers, byte-range writing, atomic directories, manifests.

The manifest functions are imported on first use (PEP 562): their module brings hashlib and
subprocess, which a cut does not need before its copies have started.
"""

from __future__ import annotations

from typing import Any

from .atomic import atomic_output_dir, check_free_space
from .safetensors_index import Checkpoint, TensorEntry, open_checkpoint, read_header
from .writer import OutShard, ShardCopy, parse_size, plan_shards, start_shards, write_shards

_MANIFEST = frozenset({"MANIFEST_NAME", "read_manifest", "write_manifest"})

__all__ = [
    "MANIFEST_NAME", "Checkpoint", "OutShard", "ShardCopy", "TensorEntry", "atomic_output_dir", "check_free_space",
    "open_checkpoint", "parse_size", "plan_shards", "read_header", "read_manifest", "start_shards", "write_manifest",
    "write_shards",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _MANIFEST:
        from . import manifest

        return getattr(manifest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
