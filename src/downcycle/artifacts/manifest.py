"""``downcycle.json``: what every output directory says about how it was made.

It records the stage, its exact config, its inputs and their hashes, library versions and the git
revision of downcycle itself, so that any result can be traced and a pipeline stage whose manifest
matches its config can be skipped.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .hashes import config_hash

MANIFEST_NAME = "downcycle.json"
SCHEMA_VERSION = 1
_TRACKED = ("downcycle", "torch", "transformers", "safetensors", "accelerate", "peft", "huggingface_hub")

__all__ = ["MANIFEST_NAME", "git_revision", "read_manifest", "versions", "write_manifest"]


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape results (None: not installed)."""
    out: dict[str, str | None] = {"python": "{}.{}.{}".format(*sys.version_info[:3])}
    for name in _TRACKED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The git commit downcycle runs from (``+dirty`` if modified), or None outside a checkout.
    The two git commands run concurrently."""
    here = str(Path(__file__).resolve().parent)
    try:
        rev = subprocess.Popen(["git", "-C", here, "rev-parse", "HEAD"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        dirty = subprocess.Popen(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        head, _ = rev.communicate(timeout=5)
        changes, _ = dirty.communicate(timeout=5)
        if rev.returncode != 0:
            return None
        return head.strip() + ("+dirty" if changes.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_manifest(directory: Path, stage: str, config: dict[str, Any], inputs: dict[str, Any],
                   outputs: dict[str, Any] | None = None, hashed: dict[str, Any] | None = None) -> Path:
    """Write ``directory/downcycle.json`` and return its path.

    ``config_hash`` is taken over ``hashed`` (the fields that affect the output, see
    ``recipe.output_dict``) when given, else over the whole config.
    """
    doc = {
        "schema": SCHEMA_VERSION,
        "stage": stage,
        "config": config,
        "config_hash": config_hash(config if hashed is None else hashed),
        "inputs": inputs,
        "outputs": outputs or {},
        "versions": versions(),
        "git_revision": git_revision(),
        "command": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),  # ISO 8601, UTC (no datetime import)
    }
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())
