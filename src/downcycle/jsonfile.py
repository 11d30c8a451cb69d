"""Reading the JSON files a user points downcycle at (configs, plans, corpus and results files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DowncycleError

__all__ = ["read_json"]


def read_json(path: Path, missing_hint: str) -> Any:
    """Parse ``path``; a missing file or invalid JSON is a one-line :class:`DowncycleError`.

    Args:
        path: the file.
        missing_hint: what the file should have been, said when it is missing, e.g.
            "is DIR a Hugging Face model directory?".
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DowncycleError(f"{path}: not found ({missing_hint})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DowncycleError(f"{path}: not valid JSON ({e})") from None
