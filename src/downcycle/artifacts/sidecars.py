"""The files beside a model's weights that a new checkpoint inherits: tokenizer files, special
tokens, chat template, generation config, licence."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

# Weights in any format: never inherited, the new checkpoint writes its own.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")
# Provenance and the model card describe the source, not the new model.
NEVER_COPIED = frozenset({"README.md", "downcycle.json", "model.safetensors.index.json"})

__all__ = ["copy_sidecars", "WEIGHT_SUFFIXES"]


def copy_sidecars(source: Path, out: Path, rewritten: Collection[str] = ()) -> list[str]:
    """Copy the source's top-level files that are not weights, provenance, the card, or one of
    ``rewritten`` (files the caller writes itself, e.g. ``config.json``). Subdirectories (such as
    ``original/`` with consolidated pickles) are not copied.

    Returns:
        The names copied.
    """
    import shutil  # here: a cut calls this while its shards are being copied, not before

    copied = []
    for path in sorted(Path(source).iterdir()):
        name = path.name
        if path.is_file() and not name.startswith(".") and name not in NEVER_COPIED and name not in rewritten \
                and not name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(path, Path(out) / name)
            copied.append(name)
    return copied
