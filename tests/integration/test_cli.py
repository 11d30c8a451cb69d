"""The real CLI, end to end, in subprocesses: fast help with no torch import, a cut that loads."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


def _py(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("argv", [["--help"], ["cut", "--help"]])
def test_help_is_fast_and_does_not_import_torch(argv):
    code = (
        "import sys, contextlib, io\n"
        "from downcycle.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    try: main({argv!r})\n"
        "    except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'safetensors') if m in sys.modules))"
    )
    assert _py(code) == "[]"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "downcycle", *argv], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: downcycle" in done.stdout
    assert time.perf_counter() - start < 5  # a generous bound for a loaded CI machine; typically ~0.1 s


def test_cut_never_imports_torch(tiny_model, tmp_path):
    src, out = tiny_model("gpt2"), tmp_path / "out"
    code = (
        "import sys\n"
        "from downcycle.cli import main\n"
        f"assert main(['cut', {str(src)!r}, {str(out)!r}, '--layers', '0-2']) == 0\n"
        "print('torch' in sys.modules)"
    )
    assert _py(code).splitlines()[-1] == "False"


@pytest.mark.slow
def test_python_m_downcycle_cut_end_to_end(tiny_model, tmp_path):
    src, out = tiny_model("gpt_neox"), tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "downcycle", "cut", str(src), str(out), "--layers", "0-1,4-5"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "4 of 6 layers" in done.stdout  # printed through a pipe before the exit that skips teardown
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    assert json.loads((out / "downcycle.json").read_text())["outputs"]["kept_layers"] == [0, 1, 4, 5]
    assert (out / "README.md").is_file()
    bad = subprocess.run([sys.executable, "-m", "downcycle", "cut", str(src), str(out), "--layers", "0-9"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "already exists" in bad.stderr


@pytest.mark.parametrize("argv, unknown", [
    (["generate", "model", "--prompt", "text"], "--prompt"),  # once taken for --prompt-file
    (["cut", "src", "out", "--lay", "0-2"], "--lay"),  # once taken for --layers
    (["eval", "model", "--task", "loss"], "--task"),  # once taken for --tasks
])
def test_options_are_never_abbreviated(argv, unknown, capsys):
    """An option's prefix is an unknown option, named in a one-line error with exit 2, on every sub-command."""
    from downcycle.cli import build_parser

    for parser in (build_parser(), build_parser(argv[0])):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"unrecognized arguments: {unknown}" in err
