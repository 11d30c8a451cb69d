"""``plan.json``: which source layers to keep, as written by ``downcycle analyze`` and read by ``cut``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.atomic import write_atomic
from ..errors import DowncycleError
from ..jsonfile import read_json

PLAN_NAME = "plan.json"

__all__ = ["Plan", "load_plan", "PLAN_NAME"]


@dataclass
class Plan:
    """A layer selection and why it was chosen."""

    kept_layers: list[int]
    source_layers: int | None = None
    strategy: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the plan as JSON (temporary file, then rename)."""
        write_atomic(Path(path), json.dumps(asdict(self), indent=2) + "\n")


def load_plan(path: Path) -> Plan:
    """Read a plan; a missing file, bad JSON or a missing/invalid ``kept_layers`` is a one-line error."""
    path = Path(path)
    doc = read_json(path, "expected a plan.json written by `downcycle analyze`")
    kept = doc.get("kept_layers") if isinstance(doc, dict) else None
    if not isinstance(kept, list) or not kept or not all(isinstance(i, int) and not isinstance(i, bool) for i in kept):
        raise DowncycleError(f"{path}: 'kept_layers' must be a non-empty list of layer indices")
    src = doc.get("source_layers")
    return Plan(kept, src if isinstance(src, int) else None, doc.get("strategy"), doc.get("details") or {})
