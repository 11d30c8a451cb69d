"""Overwrite tensors of a safetensors checkpoint in place, byte for byte, without loading it.

For outputs that differ from a cut in a few tensors of the same dtype and shape (a healed down
projection, a retrained layer): the cut is written first, then only those tensors' bytes are
rewritten at the offsets its headers give. Memory is the size of the largest patched tensor.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DowncycleError
from .safetensors_index import open_checkpoint

__all__ = ["patch_tensors"]


def patch_tensors(directory: Path, new: dict[str, bytes]) -> None:
    """Write ``new[name]`` over tensor ``name``'s bytes in the checkpoint in ``directory``.

    Raises:
        DowncycleError: a name the checkpoint lacks, or bytes of another size than the tensor's.
    """
    ckpt = open_checkpoint(Path(directory))
    for name, data in new.items():
        entry = ckpt.tensors.get(name)
        if entry is None:
            raise DowncycleError(f"{directory}: no tensor named {name} to rewrite")
        if len(data) != entry.nbytes:
            raise DowncycleError(f"{directory}: {name} holds {entry.nbytes} bytes, the new values {len(data)}")
        with open(entry.file, "r+b") as f:
            f.seek(entry.start)
            f.write(data)
