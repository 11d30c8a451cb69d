"""Fixtures of the cross-cutting suites: what every bad-input test asserts (the exit status, 1 or
argparse's 2; exactly one line on stderr naming the file, key or value at fault; no traceback) and
a tree's hash, to show every input byte-identical afterwards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tree_hash():
    """``tree_hash(root)`` -> ``{relative path: sha256}`` of every file under ``root`` (and ``{"": ...}``
    for a file): a changed, removed or added file (a temporary left behind) changes it."""

    def digest(root: Path) -> dict[str, str]:
        root = Path(root)
        if root.is_file():
            return {"": hashlib.sha256(root.read_bytes()).hexdigest()}
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
                for p in sorted(root.rglob("*"))}

    return digest


@pytest.fixture(scope="session")
def refused():
    """``refused(capsys, argv, needles, code=1)`` -> the error line: runs ``downcycle ARGV`` in-process and
    asserts it was refused in one line holding every needle."""
    from downcycle import cli

    def run(capsys, argv: list[str], needles: list[str], code: int = 1) -> str:
        try:
            got = cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            got = e.code
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert got == code, (got, err)
        assert "Traceback" not in err, err
        if code == 2:  # argparse: its usage, then one error line
            assert lines[0].startswith("usage: ") and ": error: " in lines[-1], err
            lines = lines[-1:]
        assert len(lines) == 1 and lines[0].startswith("downcycle"), err
        for needle in needles:
            assert str(needle) in lines[0], (needle, lines[0])
        return lines[0]

    return run
