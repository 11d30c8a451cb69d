"""Whether a checkpoint fits the memory a device has free: the test that chooses layer-by-layer
execution when no ``--layerwise`` / ``--no-layerwise`` says otherwise."""

from __future__ import annotations

from pathlib import Path

__all__ = ["HEADROOM", "available_bytes", "fits_in_memory", "weight_bytes"]

HEADROOM = 0.8  # the share of the free memory the weights may take: activations, the tokenizer, the allocator need the rest

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_STORED = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def weight_bytes(source: str | Path, dtype: str = "auto") -> int:
    """Bytes of the checkpoint's tensors once loaded in ``dtype`` (``auto``: as stored)."""
    from ..checkpoint.safetensors_index import open_checkpoint

    total = 0
    for entry in open_checkpoint(Path(source)).tensors.values():
        size = _STORED.get(entry.dtype, 4)
        per = _BYTES[dtype] if dtype in _BYTES and entry.dtype in ("F32", "BF16", "F16", "F64") else size
        total += entry.nbytes // size * per
    return total


def available_bytes(device: str) -> int:
    """Free memory of ``device``: a CUDA device's free memory, else the host's ``MemAvailable``."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def fits_in_memory(source: str | Path, dtype: str, device: str) -> bool:
    """Whether the weights of ``source`` in ``dtype`` take at most :data:`HEADROOM` of ``device``'s free memory."""
    return weight_bytes(source, dtype) <= HEADROOM * available_bytes(device)
