"""The hashes manifests record: of the small files a stage read (configs, indexes, plans) and of
stage configs (which decide whether a pipeline stage must re-run)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["config_hash", "file_sha256"]


def file_sha256(path: Path) -> str:
    """sha256 of a small file (configs, indexes)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of a stage config (sorted JSON), used to decide whether a stage must re-run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
