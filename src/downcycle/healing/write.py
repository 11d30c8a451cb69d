"""The healed checkpoint: the reference cut to the output's layer list by ``downcycle cut`` (config,
per-layer fields, tokenizer files: all as a plain cut writes them), then the tensors healing changed
written over their bytes (:func:`downcycle.checkpoint.patch.patch_tensors`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checkpoint.patch import patch_tensors
from ..checkpoint.safetensors_index import open_checkpoint
from ..recipe import CutConfig
from ..surgery.cut import MERGEKIT_NAME, cut
from ..surgery.layerspec import format_layers

__all__ = ["tensor_bytes", "write_healed"]

_ST_TORCH = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
_NOT_CARRIED = ("downcycle.json", "README.md", MERGEKIT_NAME)  # the cut's own record: the heal writes its own


def tensor_bytes(tensor: Any, st_dtype: str) -> bytes:
    """``tensor`` in the safetensors dtype ``st_dtype`` (F32, F16, BF16, F64), as raw little-endian bytes."""
    import torch

    t = tensor.detach().to("cpu", getattr(torch, _ST_TORCH[st_dtype])).contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def write_healed(tmp: Path, reference: str, layers: list[int], tensors: dict[str, Any]) -> dict[str, Any]:
    """Fill ``tmp`` (an atomic output being written) with the reference cut to source ``layers`` and
    ``tensors`` (output name -> torch tensor) written over theirs; returns the cut's outputs record."""
    sub = tmp / ".cut"
    result = cut(CutConfig(source=reference, out=sub, layers=format_layers(layers), progress=False))
    for name in os.listdir(sub):
        if name not in _NOT_CARRIED:
            os.rename(sub / name, tmp / name)
    for name in os.listdir(sub):
        (sub / name).unlink()
    sub.rmdir()
    entries = open_checkpoint(tmp).tensors
    patch_tensors(tmp, {name: tensor_bytes(t, entries[name].dtype) if name in entries else b"" for name, t in tensors.items()})
    return {"kept_layers": result.kept_layers, "source_layers": result.source_layers, "layers_spec": format_layers(layers),
            "bytes": result.bytes_written, "shards": result.shards, "config_notes": result.notes}
