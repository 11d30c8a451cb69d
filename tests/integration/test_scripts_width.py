"""scripts/depth_vs_width.sh (the depth-vs-width experiment on the real model, `make width`) runs only
where SmolLM2 is present; what CI can check without it: the script is valid bash, and every downcycle
command in it parses with the CLI's own parser (an option renamed in the CLI fails here, not after an
hour of the real run)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from downcycle.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "depth_vs_width.sh"


def _commands() -> list[list[str]]:
    text = SCRIPT.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        m = re.search(r"\$DC (\w+) (.*)$", line)
        if m:
            args = re.sub(r'"\$\{EVAL_MODELS\[@\]\}"', "REF M1", m[2])
            args = re.sub(r"\$\{?\w+\}?|\$\([^)]*\)", "X", args)  # variables and substitutions: any value
            commands.append([m[1], *shlex.split(args)])
    return commands


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: a[0])
def test_every_downcycle_command_of_the_script_parses(argv):
    args = vars(build_parser(argv[0]).parse_args(argv))
    assert args  # argparse exits (SystemExit) on an unknown option or a missing argument


def test_the_script_uses_the_commands_of_the_experiment():
    assert sorted({a[0] for a in _commands()}) == ["analyze", "compare", "cut", "data", "eval", "prune", "train"]
