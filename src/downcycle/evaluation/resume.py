"""The finished part of an interrupted ``downcycle eval``, kept beside ``OUT`` so that a rerun resumes.

``OUT`` itself appears whole or not at all (an atomic directory). Until then the work lives in
``.OUT.partial/``::

    key.json                   the hash of the options that decide the results
    <model name>/model.json    which model this is: its path, config.json and weight files
    <model name>/tasks/T.json  task T's results, written (atomically) after its samples
    <model name>/samples/      per-item samples, as in OUT
    <model name>/results.json  the model's results, once every task is done

A rerun with the same options takes every finished task of an unchanged model from here and
evaluates the rest; each task is computed whole or not at all, so the results equal an
uninterrupted run's. Other options, or a model whose files changed, discard what was kept.

Across processes (:mod:`.distributed`) process 0 alone keeps this directory; it tells the others
what it kept (:meth:`ModelProgress.kept`), and they skip the same tasks (:class:`KeptElsewhere`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..artifacts.atomic import write_atomic
from ..artifacts.hashes import config_hash
from ..recipe import EvalConfig, to_dict
from .results import MetricValue, TaskResult

__all__ = ["EvalProgress", "KeptElsewhere", "ModelProgress", "partial_dir"]

_KEY_NAME, _MODEL_NAME, _TASKS_DIR = "key.json", "model.json", "tasks"
# Options that change where or how visibly results are written, not what they are.
_OPERATIONAL = ("models", "out", "force", "progress")


def partial_dir(out: Path) -> Path:
    return Path(out).absolute().parent / f".{Path(out).name}.partial"


def _write_json(path: Path, doc: Any) -> None:
    write_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def model_fingerprint(path: Path) -> str:
    """A cheap identity of a model directory: its resolved path, config.json bytes, and its weight
    files' names, sizes and modification times (a retrained model in the same place changes it)."""
    h = hashlib.sha256(str(Path(path).resolve()).encode())
    config = Path(path) / "config.json"
    h.update(config.read_bytes() if config.is_file() else b"")
    for f in sorted(Path(path).glob("*.safetensors*")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


class ModelProgress:
    """One model's working directory under ``.OUT.partial/`` and its finished tasks."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def load(self, task: str) -> dict[str, TaskResult] | None:
        """The results ``task`` added (a group: itself and its subtasks), if it finished before."""
        doc = _read_json(self.dir / _TASKS_DIR / f"{task}.json")
        if not isinstance(doc, dict):
            return None
        return {name: TaskResult(**{**t, "metrics": {m: MetricValue(**v) for m, v in t["metrics"].items()}})
                for name, t in doc.items()}

    def kept(self, tasks: list[str]) -> list[str]:
        """Those of ``tasks`` whose results :meth:`load` finds."""
        return [t for t in tasks if self.load(t) is not None]

    def save(self, task: str, results: dict[str, TaskResult]) -> None:
        (self.dir / _TASKS_DIR).mkdir(exist_ok=True)
        _write_json(self.dir / _TASKS_DIR / f"{task}.json", {n: dataclasses.asdict(r) for n, r in results.items()})

    def move_to(self, target: Path) -> None:
        """Move the model's outputs (results.json, samples) to ``target``, leaving the progress files."""
        shutil.rmtree(self.dir / _TASKS_DIR, ignore_errors=True)
        (self.dir / _MODEL_NAME).unlink(missing_ok=True)
        os.replace(self.dir, target)


class KeptElsewhere:
    """A model's progress as a process other than 0 sees it: the tasks process 0 kept are skipped
    (their results are process 0's to read), nothing is written."""

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = set(tasks)

    def load(self, task: str) -> dict[str, TaskResult] | None:
        return {} if task in self.tasks else None

    def save(self, task: str, results: dict[str, TaskResult]) -> None:
        pass


class EvalProgress:
    """The ``.OUT.partial/`` of one evaluation (see the module docstring)."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.root = partial_dir(cfg.out)
        key = config_hash({k: v for k, v in to_dict(cfg).items() if k not in _OPERATIONAL})
        if (_read_json(self.root / _KEY_NAME) or {}).get("key") != key:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True)
            _write_json(self.root / _KEY_NAME, {"key": key})

    def model(self, name: str, path: Path) -> ModelProgress:
        """The working directory of model ``name`` at ``path``, emptied if it held another model's work."""
        directory = self.root / name
        fingerprint = model_fingerprint(path)
        if (_read_json(directory / _MODEL_NAME) or {}).get("fingerprint") != fingerprint:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            _write_json(directory / _MODEL_NAME, {"path": str(path), "fingerprint": fingerprint})
        return ModelProgress(directory)

    def finish(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
