"""Checkpoints on disk: safetensors headers, byte-range writing, atomic directories, manifests."""

from .atomic import atomic_output_dir, check_free_space
from .manifest import MANIFEST_NAME, read_manifest, write_manifest
from .safetensors_index import Checkpoint, TensorEntry, open_checkpoint, read_header
from .writer import OutShard, parse_size, plan_shards, write_shards

__all__ = [
    "MANIFEST_NAME", "Checkpoint", "OutShard", "TensorEntry", "atomic_output_dir", "check_free_space",
    "open_checkpoint", "parse_size", "plan_shards", "read_header", "read_manifest", "write_manifest",
    "write_shards",
]  # fmt: skip
