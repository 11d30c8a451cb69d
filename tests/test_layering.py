"""The layering of DESIGN.md as a contract (pyproject.toml's [tool.importlinter]): imports go
downward only, and stage packages never import one another. A violation fails this test with
import-linter's report of the offending import chain."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_imports_keep_the_layering(capsys):
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert status == 0, report
    assert "0 broken" in report
