"""The hashes manifests record: of the small files a stage read (configs, indexes, plans) and of
stage configs (which decide whether a pipeline stage must re-run)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["config_hash", "file_sha256"]


def file_sha256(path: Path) -> str:
    """sha256 of a file, read 4 MiB at a time (configs and indexes as well as GGUF files and wheels)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of a stage config (sorted JSON), used to decide whether a stage must re-run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
