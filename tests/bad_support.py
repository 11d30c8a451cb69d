"""What every bad-input test asserts: the exit status (1, or argparse's 2), exactly one line on
stderr naming the file, key or value at fault, no traceback, and every input byte-identical."""

from __future__ import annotations

import hashlib
from pathlib import Path

from downcycle import cli


def tree_hash(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (and ``{"": ...}`` for a file): a
    changed, removed or added file (a temporary left behind) changes it."""
    root = Path(root)
    if root.is_file():
        return {"": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def refused(capsys, argv: list[str], needles: list[str], code: int = 1) -> str:
    """Run ``downcycle ARGV`` in-process; assert it was refused in one line holding every needle."""
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
