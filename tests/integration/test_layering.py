"""The layering of DESIGN.md as a contract (pyproject.toml's [tool.importlinter]): imports go
downward only, and stage packages never import one another. A violation fails this test with
import-linter's report of the offending import chain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# In a process of its own: import-linter's console keeps the streams it first saw, which pytest's
# capturing replaces and closes between tests.
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"


def test_imports_keep_the_layering():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
