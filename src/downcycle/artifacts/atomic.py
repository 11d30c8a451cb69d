"""Outputs that appear whole or not at all: a stage's directory, and single files (state, plans,
cards, reports) replaced through a temporary sibling. And the rule that keeps inputs safe from
them: an output is never one of its stage's inputs, nor inside one, nor holds one."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DowncycleError

__all__ = ["atomic_output_dir", "check_free_space", "check_new_output", "check_output_apart", "remove_stale", "write_atomic"]

_SCHEME = re.compile(r"^[a-z]+:")  # gen:MODEL_DIR (data sources); hf:ORG/NAME names no local path
_GLOB = re.compile(r"[*?[]")
Inputs = Iterable[tuple[str, object]]  # (the option that names it, its value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or a nonsense pid): leave it
        return True
    return True


def remove_stale(parent: Path, prefix: str) -> None:
    """Remove ``parent/{prefix}{pid}-*`` left by a process that no longer runs (killed with SIGKILL,
    or the machine lost power, before it could clean up). Another live run's files are kept."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path = Path(parent) / name
            if path.is_dir():
                _rmtree(path)
            else:
                path.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8) through a temporary sibling: readers, and a
    process killed mid-write, see the old or the new file, never half of one."""
    path = Path(path)
    remove_stale(path.parent, f".{path.name}.tmp-")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _on_disk(value: object) -> list[Path]:
    """The local files or directories an input names (resolved, symlinks followed): none for a hub
    id, a dataset id or a path that does not exist (nothing there to lose); every match of a glob;
    for ``gen:DIR`` (text a model writes), the model's directory."""
    text = str(value)
    path = Path(text).expanduser()
    if not path.exists() and _SCHEME.match(text):
        path = Path(text.split(":", 1)[1]).expanduser()
    if _GLOB.search(str(path)) and not path.exists():
        import glob

        return [Path(p).resolve() for p in glob.glob(str(path), recursive=True)]
    return [path.resolve()] if path.exists() else []


def check_output_apart(out: Path, inputs: Inputs) -> None:
    """Refuse an output that is one of the ``inputs``, lies inside one, or contains one: replacing it
    (``--force``) would destroy that input. Inputs not on disk (hub ids) are not at risk.

    Args:
        out: the directory (or file) a stage writes.
        inputs: ``(option, value)`` pairs, e.g. from :func:`downcycle.recipe.fields.inputs_of`.
    """
    target = Path(out).expanduser().resolve()
    for label, value in inputs:
        for path in _on_disk(value):
            if path == target or path in target.parents or target in path.parents:
                raise DowncycleError(f"{out}: the output must not be the {label} ({value}), lie inside it or contain it")


def check_new_output(out: Path, force: bool, inputs: Inputs = ()) -> None:
    """Refuse an output that is, holds or lies inside one of ``inputs`` (:func:`check_output_apart`),
    and an existing ``out`` unless ``force``: stages call this before any work (loading a model,
    reading a corpus), :func:`atomic_output_dir` again when it starts."""
    check_output_apart(out, inputs)
    if Path(out).exists() and not force:
        raise DowncycleError(f"{out}: already exists (pass --force to replace it)")


@contextmanager
def atomic_output_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; rename it to ``out`` only on success.

    An existing ``out`` is refused unless ``force``; then it is replaced only once the new one is
    complete (an output that is, holds or lies in an input the stage refused before, through
    :func:`check_new_output`). Any exception, ``KeyboardInterrupt`` included, removes the temporary
    directory; one left by a killed process (its id is in the name) is removed by the next run.
    """
    out = Path(out)
    check_new_output(out, force)
    if out.exists() and not out.is_dir():
        raise DowncycleError(f"{out}: exists and is not a directory")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise DowncycleError(f"{parent}: parent directory of the output does not exist")
    for kind in ("tmp", "old"):
        remove_stale(parent, f".{out.name}.{kind}-")
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    tmp = parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = parent / f".{out.name}.old-{tag}"
            os.rename(out, old)
            os.rename(tmp, out)
            _rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        _rmtree(tmp)
        raise


def _rmtree(path: Path) -> None:
    import shutil  # only when replacing or cleaning up: its import is a few ms of a fast cut's start-up

    shutil.rmtree(path, ignore_errors=True)


def check_free_space(out: Path, needed: int, margin: int = 16 * 1024 * 1024) -> None:
    """Refuse to start a write that cannot fit on the output's filesystem."""
    parent = Path(out).absolute().parent
    st = os.statvfs(parent)  # what shutil.disk_usage reports as free, without importing shutil
    free = st.f_bavail * st.f_frsize
    if free < needed + margin:
        raise DowncycleError(
            f"{parent}: not enough free disk space ({free / 1e9:.2f} GB free, {needed / 1e9:.2f} GB needed)"
        )
