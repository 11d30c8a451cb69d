"""Where a task's documents come from: a local directory of files, or the Hugging Face hub.

Local layout (``--task-data DIR``): ``DIR/<stem>.<split>.jsonl``, ``DIR/<stem>.<split>.parquet`` or a
``datasets.save_to_disk`` directory ``DIR/<stem>.<split>/`` (its ``*.arrow`` files are read with
pyarrow). Rows keep the dataset's own Hugging Face schema. Without a local file, the task's
``hf_path``/``hf_name`` is loaded with the ``datasets`` library (online, or from its cache).

``downcycle eval`` without ``--task-data`` reads the default directory (:func:`resolve_task_data`):
``$DOWNCYCLE_TASK_DATA``, else ``$XDG_CACHE_HOME/downcycle/task-data`` (``~/.cache/...``) when it
exists, which ``downcycle taskdata`` fills with the full splits.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from .tasks.spec import Doc, MultipleChoiceSpec

__all__ = ["TASK_DATA_ENV", "TaskDocs", "default_task_data", "find_local", "load_docs", "pooled_sample", "resolve_task_data", "sample_indices"]

TASK_DATA_ENV = "DOWNCYCLE_TASK_DATA"


def default_task_data() -> Path:
    """Where task data lives when ``--task-data`` is not given: ``$DOWNCYCLE_TASK_DATA``, else
    ``$XDG_CACHE_HOME/downcycle/task-data`` (``~/.cache/downcycle/task-data``)."""
    env = os.environ.get(TASK_DATA_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "downcycle" / "task-data"


def resolve_task_data(given: Path | None) -> Path | None:
    """The task-data directory of a run: ``given``, else the default directory when it exists
    (None: the Hugging Face hub).

    Raises:
        DowncycleError: ``given`` or ``$DOWNCYCLE_TASK_DATA`` names a path that is not a directory (a
            mistyped directory is not a reason to go to the hub).
    """
    if given is not None:
        if not Path(given).is_dir():
            raise DowncycleError(f"--task-data {given}: no such directory (`downcycle taskdata --out {given}` writes one)")
        return Path(given)
    path = default_task_data()
    if os.environ.get(TASK_DATA_ENV) and not path.is_dir():
        raise DowncycleError(f"${TASK_DATA_ENV}={path}: not a directory (write it with `downcycle taskdata --out {path}`)")
    return path if path.is_dir() else None


def sample_indices(n: int, sample: int, seed: int) -> list[int]:
    """``sample`` of the ``n`` document positions, drawn with ``random.Random(seed)`` and sorted;
    all of them when ``sample >= n``. Depends only on ``n``, ``sample`` and ``seed`` (never the model)."""
    if sample >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), sample))


def pooled_sample(sizes: list[int], sample: int, seed: int) -> list[list[int]]:
    """A group's ``--sample``: ``sample`` items drawn from its subtasks' items taken together (in
    the group's subtask order) by :func:`sample_indices`, returned as each subtask's positions."""
    drawn, out, start = sample_indices(sum(sizes), sample, seed), [], 0
    for n in sizes:
        out.append([i - start for i in drawn if start <= i < start + n])
        start += n
    return out


def find_local(data_dir: Path, stem: str, split: str) -> Path | None:
    """The local file or directory holding ``stem``'s ``split``, or None."""
    for candidate in (data_dir / f"{stem}.{split}.jsonl", data_dir / f"{stem}.{split}.parquet", data_dir / f"{stem}.{split}"):
        if candidate.exists():
            return candidate
    return None


def _read_jsonl(path: Path) -> list[Doc]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DowncycleError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return docs


def _read_arrow_table(path: Path) -> list[Doc]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DowncycleError(f"{path}: reading parquet/arrow needs pyarrow (pip install pyarrow)") from None
    if path.is_file():
        return pq.read_table(path).to_pylist()
    files = sorted(path.glob("*.arrow"))
    if not files:
        raise DowncycleError(f"{path}: no .arrow files (expected a datasets.save_to_disk directory)")
    rows: list[Doc] = []
    for file in files:  # save_to_disk writes Arrow IPC streams
        with pa.memory_map(str(file)) as f:
            rows += pa.ipc.open_stream(f).read_all().to_pylist()
    return rows


def _load_hub(spec: MultipleChoiceSpec, split: str) -> list[Doc]:
    try:
        import datasets
    except ImportError:
        raise DowncycleError(f"task {spec.name}: no local data (--task-data) and the `datasets` library is not installed") from None
    try:
        return list(datasets.load_dataset(spec.hf_path, spec.hf_name, split=split))
    except Exception as e:  # noqa: BLE001 -- offline, unknown or gated: reported the same way
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DowncycleError(f"task {spec.name}: could not load {spec.hf_path} ({split}) from the hub and no local copy was given ({reason})") from None


def load_docs(spec: MultipleChoiceSpec, split: str, data_dir: Path | None) -> list[Doc]:
    """The processed documents of ``spec``'s ``split``.

    Raises:
        DowncycleError: when neither a local copy nor the hub provides them.
    """
    local = find_local(Path(data_dir), spec.stem, split) if data_dir is not None else None
    if local is not None:
        docs = _read_jsonl(local) if local.suffix == ".jsonl" else _read_arrow_table(local)
    elif data_dir is not None and not _hub_allowed():
        raise DowncycleError(f"{data_dir}: no {spec.stem}.{split}.jsonl/.parquet/ directory for task {spec.name}")
    else:
        docs = _load_hub(spec, split)
    return [spec.process(d) for d in docs] if spec.process else docs


@dataclass
class TaskDocs:
    """What one task evaluates.

    Attributes:
        docs: the evaluated documents.
        indices: their positions in the split (``doc`` in the samples; seeds their few-shot draw).
        shots: few-shot examples per document.
        pool: the documents few-shot examples are drawn from.
        sampled: whether ``indices`` is a seeded sample (``--sample``) rather than a prefix.
    """

    docs: list[Doc]
    indices: list[int]
    shots: int
    pool: list[Doc]
    sampled: bool = False


def docs_and_fewshot_pool(spec: Any, data_dir: Path | None, limit: int | None, shots: int | None,
                          sample: int | None = None, seed: int = 1234, indices: list[int] | None = None) -> TaskDocs:
    """What one task evaluates: its documents (the first ``limit``, a seeded ``sample``, or the
    given ``indices``: a group's pooled draw), the number of shots (the task's default unless
    ``shots`` is given) and the few-shot pool.

    Raises:
        DowncycleError: no documents, or shots asked of a task without a few-shot split.
    """
    docs = load_docs(spec, spec.split, data_dir)
    sampled = sample is not None or indices is not None
    if indices is None:
        indices = list(range(len(docs) if limit is None else min(limit, len(docs))))
        if sample is not None:
            indices = sample_indices(len(docs), sample, seed)
    docs = [docs[i] for i in indices]
    if not docs:
        raise DowncycleError(f"task {spec.name}: no documents")
    k = spec.default_shots if shots is None else shots
    pool: list[Doc] = []
    if k:
        if spec.fewshot_split is None:
            raise DowncycleError(f"task {spec.name}: has no few-shot split (use --shots 0)")
        pool = load_docs(spec, spec.fewshot_split, data_dir)
    return TaskDocs(docs, indices, k, pool, sampled)


def _hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False")
