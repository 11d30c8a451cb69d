"""Provenance helpers: library versions read from dist-info names agree with importlib.metadata."""

from __future__ import annotations

from importlib import metadata

from downcycle.artifacts.manifest import _TRACKED, git_revision, versions


def test_versions_equal_importlib_metadata():
    got = versions()
    for name in _TRACKED:
        try:
            expected = metadata.version(name)
        except metadata.PackageNotFoundError:
            expected = None
        assert got[name] == expected, name


def test_git_revision_is_the_checkout_head_or_none():
    import subprocess
    from pathlib import Path

    rev = git_revision()
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        assert rev is None
    else:
        assert rev is not None and rev.removesuffix("+dirty") == head.stdout.strip()
