"""``downcycle convert``: turn a PyTorch pickle (``.bin``) checkpoint into safetensors, safely
(a ``.gguf`` file goes to :mod:`.gguf`).

Pickles can run code when loaded; these are read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers. One ``.bin`` shard becomes one safetensors shard.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from ..artifacts.atomic import atomic_output_dir, check_new_output
from ..artifacts.hashes import file_sha256
from ..artifacts.manifest import write_manifest
from ..checkpoint.safetensors_index import INDEX_NAME
from ..errors import DowncycleError
from ..recipe import ConvertConfig, inputs_of, to_dict

BIN_INDEX = "pytorch_model.bin.index.json"
_WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")

__all__ = ["convert", "summary"]


def convert(config: ConvertConfig) -> Path:
    """Convert ``config.source`` (``pytorch_model*.bin``, or a ``.gguf`` file) to a safetensors
    checkpoint in ``config.out``."""
    src = config.source
    check_new_output(config.out, config.force, inputs_of(config))
    if src.suffix.lower() == ".gguf":
        from .gguf import convert_gguf

        return convert_gguf(config)
    import torch
    from safetensors.torch import save_file

    if not src.is_dir():
        raise DowncycleError(f"{src}: no such model directory (nor a .gguf file)")
    bins = sorted(src.glob("pytorch_model*.bin"))
    if not bins:
        raise DowncycleError(f"{src}: no pytorch_model*.bin weights to convert")
    with atomic_output_dir(config.out, force=config.force) as tmp:
        weight_map: dict[str, str] = {}
        total = 0
        for k, path in enumerate(bins, 1):
            state = _load_bin(torch, path)
            if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
                held = type(state).__name__ if not isinstance(state, dict) else \
                    f"a dict with non-tensor entries, e.g. {next(k for k, t in state.items() if not isinstance(t, torch.Tensor))!r}"
                raise DowncycleError(f"{path}: not a state dict of tensors (it holds {held})")
            seen: dict[tuple[int, int], str] = {}
            tensors = {}
            for name, t in state.items():
                key = (t.untyped_storage().data_ptr(), t.storage_offset())
                # safetensors stores no aliases: a tied copy becomes its own tensor
                tensors[name] = t.clone().contiguous() if key in seen else t.contiguous()
                seen[key] = name
                total += t.numel() * t.element_size()
            name = "model.safetensors" if len(bins) == 1 else f"model-{k:05d}-of-{len(bins):05d}.safetensors"
            save_file(tensors, tmp / name, metadata={"format": "pt"})
            weight_map.update((t, name) for t in tensors)
        if len(bins) > 1:
            (tmp / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
        for path in src.iterdir():
            if path.is_file() and not path.name.endswith(_WEIGHT_SUFFIXES) and path.name != BIN_INDEX:
                shutil.copy2(path, tmp / path.name)
        hashes = {p.name: file_sha256(p) for p in bins}
        write_manifest(tmp, "convert", to_dict(config), {"source_path": str(src.resolve()), "hashes": hashes},
                       {"shards": sorted(set(weight_map.values())), "tensors": len(weight_map)})
    return config.out


def _load_bin(torch: Any, path: Path) -> Any:
    """``torch.load(path, weights_only=True)``, memory-mapped when the file's format allows it (the
    zip format of torch >= 1.6; an older file is read whole). torch's warnings about the pickle
    (its protocol) are not the user's concern: the load succeeds or is refused in one line."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unpicklable or unsafe content, reported in one line
        raise DowncycleError(f"{path}: cannot be loaded safely (weights_only=True): {refusal_reason(e)}") from None


def refusal_reason(error: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` objected to, in a few words: its message is several
    lines of advice (one of them to load unsafely) with terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it holds {found[1]}, a Python object and not a tensor (unpickling it could run code)"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found:
        return f"not a weights-only pickle ({found[1].strip().rstrip('.')})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


def summary(out: Path) -> str:
    return f"wrote {out}"
