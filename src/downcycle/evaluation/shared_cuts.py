"""Depth cuts of one reference evaluated layer by layer together, their shared prefixes run once.

A checkpoint ``downcycle cut`` wrote says in its manifest (``downcycle.json``) which checkpoint it
was cut from (``inputs.source_path``, with the hashes of its config, shard index and shard headers)
and which of its layers it kept (``outputs.kept_layers``). When ``eval`` runs layer by layer on two
or more models that are such cuts of one reference still on disk unchanged (the reference itself
among them or not), they form a :class:`CutFamily`: the first of them to score a task's batches
runs the reference's layers as a tree (:func:`downcycle.layerwise.run_tree`), every state after
layers ``k_0..k_j`` computed once for all the cuts that start with them, and each cut's last states
go through the reduction its task asked for; the other members of the family find their results
waiting when they ask for the same batches. Each cut's results and samples are written as a
separate evaluation writes them, and are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..artifacts.hashes import file_sha256
from ..artifacts.manifest import read_manifest
from ..checkpoint.safetensors_index import INDEX_NAME, open_checkpoint
from .layerwise_target import LayerwiseTarget, batches_digest

__all__ = ["CutFamily", "SharedCut", "cut_families", "cut_source"]

T = TypeVar("T")


def cut_source(path: Path) -> tuple[Path, list[int]] | None:
    """``(reference directory, kept layers)`` of a checkpoint ``downcycle cut`` wrote, when the
    reference is still there as it was cut (its config, shard index and shard headers hash as the
    manifest recorded); else None."""
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("stage") != "cut":
        return None
    inputs, outputs = manifest.get("inputs") or {}, manifest.get("outputs") or {}
    source, kept, hashes = inputs.get("source_path"), outputs.get("kept_layers"), inputs.get("hashes") or {}
    if not source or not isinstance(kept, list) or not (Path(source) / "config.json").is_file():
        return None
    src = Path(source)
    try:
        if hashes.get("config.json") != file_sha256(src / "config.json"):
            return None
        if INDEX_NAME in hashes and hashes[INDEX_NAME] != file_sha256(src / INDEX_NAME):
            return None
        if hashes.get("shard_headers") != open_checkpoint(src).header_sha256:
            return None
    except (OSError, ValueError):
        return None
    return src.resolve(), [int(i) for i in kept]


def cut_families(paths: list[Path], layerwise: Callable[[Path], bool], open_reference: Callable[[Path], Any],
                 budget: int | None = None) -> dict[Path, CutFamily]:
    """The families among ``paths`` (models still to evaluate): per member, its family.

    Args:
        layerwise: whether a model runs layer by layer (only those share).
        open_reference: opens a reference's skeleton (``open_layerwise`` with the run's dtype and device).
    """
    members: dict[Path, dict[Path, list[int] | None]] = {}
    for path in paths:
        found = cut_source(path) if layerwise(path) else None
        if found is not None:
            members.setdefault(found[0], {})[Path(path).resolve()] = found[1]
    for path in paths:  # the reference itself: every layer
        if Path(path).resolve() in members and layerwise(path):
            members[Path(path).resolve()][Path(path).resolve()] = None
    out: dict[Path, CutFamily] = {}
    for source, kept in members.items():
        if len(kept) >= 2:
            family = CutFamily(source, kept, open_reference, budget)
            out.update({p: family for p in kept})
    return out


class CutFamily:
    """Cuts of the reference ``source`` (``members``: path -> kept source layers, None for the
    reference itself) whose results are computed together; :meth:`done` when a member is finished."""

    def __init__(self, source: Path, members: dict[Path, list[int] | None], open_reference: Callable[[Path], Any],
                 budget: int | None = None) -> None:
        self.source, self.members, self.budget = source, dict(members), budget
        self.pending = set(members)
        self._open = open_reference
        self._lw: Any = None
        self._waiting: dict[str, dict[Path, list[Any]]] = {}  # batches' digest -> member -> its results

    def member(self, path: Path, lw: Any) -> SharedCut:
        """Member ``path`` as a target; ``lw``: its own skeleton (config, final norm, head)."""
        return SharedCut(lw, self, Path(path).resolve())

    def finals(self, path: Path, batches: list[dict[str, Any]], fn: Callable[[int, Any], T], progress: bool = False) -> list[T]:
        """:meth:`LayerwiseTarget.finals` of member ``path``: waiting since another member asked for
        the same batches, else run now for every member not finished (``fn`` reducing each one's
        last states: the final norms and heads of a reference's cuts are the reference's)."""
        from ..layerwise import run_tree

        key = batches_digest(batches)
        waiting = self._waiting.get(key, {})
        if path in waiting:
            return waiting.pop(path)
        if self._lw is None:
            self._lw = self._open(self.source)
        run = sorted(self.pending | {path})
        kept = {p: tuple(self.members[p] if self.members[p] is not None else range(self._lw.num_layers)) for p in run}
        results: dict[Path, list[Any]] = {p: [None] * len(batches) for p in run}

        def visit(prefix: tuple[int, ...], b: int, hidden: Any) -> None:
            for p in run:
                if kept[p] == prefix:
                    results[p][b] = fn(b, hidden)

        run_tree(self._lw, list(kept.values()), batches, visit, progress=progress,
                 **({} if self.budget is None else {"budget": self.budget}))
        mine = results.pop(path)
        if results:
            self._waiting.setdefault(key, {}).update(results)
        return mine

    def done(self, path: Path) -> None:
        """Member ``path`` is finished: nothing more is computed or kept for it."""
        path = Path(path).resolve()
        self.pending.discard(path)
        for waiting in self._waiting.values():
            waiting.pop(path, None)
        self._waiting = {k: v for k, v in self._waiting.items() if v}
        if not self.pending:
            self._lw = None


class SharedCut(LayerwiseTarget):
    """A member of a :class:`CutFamily` as the tasks see it: its own skeleton, the family's runs."""

    def __init__(self, lw: Any, family: CutFamily, path: Path) -> None:
        super().__init__(lw)
        self.family, self.path = family, path

    def finals(self, batches: list[dict[str, Any]], fn: Callable[[int, Any], T], progress: bool = False) -> list[T]:
        return self.family.finals(self.path, batches, fn, progress)
