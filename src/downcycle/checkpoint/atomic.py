"""Output directories that appear whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DowncycleError

__all__ = ["atomic_output_dir", "check_free_space"]


@contextmanager
def atomic_output_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; rename it to ``out`` only on success.

    An existing ``out`` is refused unless ``force``; then it is replaced only once the new one is
    complete. Any exception, ``KeyboardInterrupt`` included, removes the temporary directory.
    """
    out = Path(out)
    if out.exists() and not force:
        raise DowncycleError(f"{out}: already exists (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise DowncycleError(f"{out}: exists and is not a directory")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise DowncycleError(f"{parent}: parent directory of the output does not exist")
    tag = os.urandom(4).hex()
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
