"""``results.json``: the typed record of one model's evaluation, read back by ``downcycle compare``.

Schema (``RESULTS_SCHEMA``)::

    {"schema": 1, "model": {"name", "path", "parameters", "hashes": {file: sha256}},
     "tasks": {task: {"version", "kind", "n_shot", "limit", "n", "metrics": {metric: {"value", "stderr"}},
                      "subtasks": [names], "sample": N or null, "indices": [positions] or null}},
     "config": {...}, "versions": {...}, "git_revision", "created", "seconds"}
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..jsonfile import read_json

RESULTS_NAME = "results.json"
RESULTS_SCHEMA = 1

__all__ = ["RESULTS_NAME", "RESULTS_SCHEMA", "EvalResults", "MetricValue", "ModelInfo", "TaskResult", "read_results"]


@dataclass
class MetricValue:
    value: float
    stderr: float | None = None


@dataclass
class TaskResult:
    version: str
    kind: str
    n_shot: int
    limit: int | None
    n: int
    metrics: dict[str, MetricValue]
    subtasks: list[str] = field(default_factory=list)
    sample: int | None = None  # --sample N: a seeded random sample of N items (per subtask for a group)
    indices: list[int] | None = None  # with --sample: the positions in the split of the items evaluated


@dataclass
class ModelInfo:
    name: str
    path: str
    parameters: int
    hashes: dict[str, str]


@dataclass
class EvalResults:
    model: ModelInfo
    tasks: dict[str, TaskResult]
    config: dict[str, Any]
    versions: dict[str, Any]
    git_revision: str | None
    seconds: float
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema: int = RESULTS_SCHEMA

    def write(self, directory: Path) -> Path:
        path = Path(directory) / RESULTS_NAME
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        return path


def read_results(path: str | Path) -> EvalResults:
    """Read a results.json (or the directory holding it).

    Raises:
        DowncycleError: a missing file, invalid JSON or a document that does not match the schema.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    doc = read_json(path, "expected a results.json written by `downcycle eval`")
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
        raise DowncycleError(f"{path}: not a downcycle results.json (schema {RESULTS_SCHEMA})")
    try:
        tasks = {name: TaskResult(**{**t, "metrics": {m: MetricValue(**v) for m, v in t["metrics"].items()}})
                 for name, t in doc["tasks"].items()}
        return EvalResults(model=ModelInfo(**doc["model"]), tasks=tasks, config=doc["config"], versions=doc["versions"],
                           git_revision=doc["git_revision"], seconds=doc["seconds"], created=doc["created"])
    except (KeyError, TypeError, AttributeError) as e:
        raise DowncycleError(f"{path}: malformed results ({type(e).__name__}: {e})") from None
