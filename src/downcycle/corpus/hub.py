"""Hugging Face datasets as sources, streamed (``datasets.load_dataset(..., streaming=True)``).

Only reachable when online; offline (``HF_HUB_OFFLINE=1`` or no network) the user gets one line
that says so, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..errors import DowncycleError

__all__ = ["iter_hub_records"]


def iter_hub_records(source: str, repo: str, config: str | None, split: str | None) -> Iterator[dict[str, Any]]:
    """Stream the records of the hub dataset ``repo`` (subset ``config``, split ``split`` or train)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get("HF_DATASETS_OFFLINE", "0") in ("1", "true"):
        raise DowncycleError(f"{source}: not a local path, and Hugging Face datasets cannot be streamed offline (HF_HUB_OFFLINE is set)")
    try:
        import datasets
    except ImportError:
        raise DowncycleError(f"{source}: streaming a Hugging Face dataset needs the datasets package (pip install 'downcycle[data]')") from None
    try:
        stream = datasets.load_dataset(repo, config, split=split or "train", streaming=True)
        it = iter(stream)
        first = next(it, None)
    except Exception as e:  # noqa: BLE001 -- every hub failure (offline, unknown, gated) is reported the same way
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DowncycleError(f"{source}: not a local path, and it could not be streamed from the Hugging Face Hub ({reason})") from None
    if first is None:
        return
    yield first
    yield from it
