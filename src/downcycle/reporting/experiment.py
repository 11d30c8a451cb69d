"""An experiment directory, discovered by its manifests rather than by the names of its directories.

Every stage writes a directory with a ``downcycle.json`` whose ``stage`` says what it is, so the
layout `downcycle demo` writes (``data/``, ``analyze/``, ``cut-*/``,
``heal-*/``, ``eval/``, ``compare/``) and any other (a recipe run, sweep subdirectories) read the
same. Models are the outputs of ``cut`` and ``train`` stages, plus the reference: the source of the
cuts, which may live outside the experiment directory. A ``train`` output that is a cut's source is
the reference (pretrained by downcycle); one trained *from* the reference is the control (the uncut
model trained on the same tokens as the healed ones); any other ``train`` output is a healed model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.manifest import MANIFEST_NAME
from ..evaluation.results import EvalResults, read_results
from ..jsonfile import read_json

__all__ = ["Experiment", "Model", "Stage", "discover"]
REPORT_DIR = "report"  # the report's own directory inside the experiment (never a stage to report on)


@dataclass
class Stage:
    """One directory with a manifest."""

    path: Path
    name: str  # path relative to the experiment directory, "/"-separated
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest.get("stage"))


@dataclass
class Model:
    """A checkpoint of the experiment: the reference, a cut or a healed model.

    Attributes:
        role: ``reference``, ``cut``, ``healed`` or ``control`` (the reference trained like the healed models).
        parent: for a healed model or the control, the name of the model it was trained from (a cut, usually).
        results: its evaluation, when an ``eval`` stage evaluated it.
        results_dir: the directory of that evaluation's ``results.json`` (its per-item ``samples/`` beside it).
    """

    name: str
    path: Path
    role: str
    stage: Stage | None = None
    parent: str | None = None
    results: EvalResults | None = None
    results_dir: Path | None = None

    @property
    def method(self) -> str | None:
        return self.stage.manifest["config"].get("method") if self.stage and self.stage.kind in ("train", "heal") else None


@dataclass
class Experiment:
    root: Path
    stages: list[Stage]
    models: list[Model] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Stage]:
        return [s for s in self.stages if s.kind == kind]

    def model(self, name: str) -> Model:
        return next(m for m in self.models if m.name == name)

    def by_role(self, role: str) -> list[Model]:
        return [m for m in self.models if m.role == role]


def _walk(root: Path) -> list[Stage]:
    """Every directory under ``root`` with a manifest, in sorted order; hidden directories (atomic
    temporaries), ``*.run`` (unfinished training checkpoints) and the report itself are skipped.
    A manifest that is not valid JSON (truncated, edited) is an error naming it: skipping it would
    drop its models from the report without a word."""
    stages = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".run")
                         and not (here == root and d == REPORT_DIR))
        if MANIFEST_NAME in files and here != root:
            manifest = read_json(here / MANIFEST_NAME, "a stage's manifest")
            if isinstance(manifest, dict) and "stage" in manifest:
                stages.append(Stage(here, here.relative_to(root).as_posix(), manifest))
    return stages


def _resolved(path: str | Path | None, base: Path | None = None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute() and base is not None and not p.exists():
        p = base / p
    return p.resolve()


def _relocated(path: Path, root: Path, candidates: list[Path]) -> Path | None:
    """The candidate under ``root`` that ``path`` (recorded before the experiment directory was moved
    or copied) names: the one whose path relative to ``root`` is the longest tail of ``path``."""
    best, best_len = None, 0
    for c in candidates:
        try:
            rel = c.relative_to(root).parts
        except ValueError:
            continue
        if rel and Path(path).parts[-len(rel):] == rel and len(rel) > best_len:
            best, best_len = c, len(rel)
    return best


def discover(root: Path) -> Experiment:
    """Read the stages, models and evaluation results of the experiment in ``root``."""
    root = Path(root).resolve()
    exp = Experiment(root, _walk(root))
    by_path = {s.path.resolve(): s for s in exp.stages}
    cut_sources = {_resolved(s.manifest.get("inputs", {}).get("source_path")) for s in exp.of_kind("cut")} - {None}
    for src in sorted(cut_sources):
        stage = by_path.get(src)
        name = stage.name if stage else src.name
        exp.models.append(Model(name, src, "reference", stage))
    for s in exp.of_kind("cut"):
        if s.path.resolve() not in cut_sources:
            exp.models.append(Model(s.name, s.path, "cut", s))
    for s in exp.of_kind("heal") + exp.of_kind("train"):  # heal first: a training run may start from a heal's output
        if s.path.resolve() in cut_sources:
            continue
        names = {m.path.resolve(): m.name for m in exp.models}
        parent = _resolved(s.manifest.get("inputs", {}).get("model", {}).get("path"))
        if parent is not None and parent not in names:
            parent = _relocated(parent, root, list(names)) or parent
        role = "control" if parent in cut_sources else "healed"
        exp.models.append(Model(s.name, s.path, role, s, parent=names.get(parent) if parent else None))
    _attach_results(exp)
    return exp


def _attach_results(exp: Experiment) -> None:
    """Give each model the results of the ``eval`` stages that evaluated it (matched by resolved
    path, else by the config.json hash the results record; the newest evaluation wins)."""
    from ..artifacts.hashes import file_sha256

    found: list[tuple[str, EvalResults, Path]] = []
    for s in exp.of_kind("eval"):
        for rel in (s.manifest.get("outputs") or {}).values():
            if isinstance(rel, str) and (s.path / rel).is_file():
                r = read_results(s.path / rel)
                found.append((r.created, r, (s.path / rel).parent))
    found.sort(key=lambda item: item[0])
    config_hash = {m.name: file_sha256(m.path / "config.json") for m in exp.models if (m.path / "config.json").is_file()}
    for _, r, where in found:
        path = _resolved(r.model.path, exp.root)
        match = [m for m in exp.models if m.path.resolve() == path]
        if not match:
            match = [m for m in exp.models if r.model.hashes.get("config.json") and config_hash.get(m.name) == r.model.hashes["config.json"]]
            if len(match) > 1:  # equal configs (two cuts of the same depth): where it was evaluated decides
                moved = _relocated(Path(r.model.path), exp.root, [m.path.resolve() for m in match])
                match = [m for m in match if m.path.resolve() == moved]
        if len(match) == 1:
            match[0].results, match[0].results_dir = r, where
