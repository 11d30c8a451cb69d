"""Safetensors checkpoints on disk: the header index (:mod:`.safetensors_index`) and the writer that
copies tensors' byte ranges into new shards (:mod:`.writer`). What a stage writes around the
weights (atomic directories, manifests, hashes) is :mod:`downcycle.artifacts`."""

from .safetensors_index import Checkpoint, TensorEntry, open_checkpoint, read_header
from .writer import OutShard, ShardCopy, plan_shards, start_shards, write_shards

__all__ = ["Checkpoint", "OutShard", "ShardCopy", "TensorEntry", "open_checkpoint", "plan_shards", "read_header", "start_shards", "write_shards"]
