"""The front page and the manual cannot rot (STYLE.md, practice 13; litgpt's tests/test_readme.py).

- README.md stays a short front page (at most :data:`README_MAX_LINES` lines);
- every ``downcycle ...`` command line in a shell code block of README.md or docs/**/*.md parses with
  the real parser, options written in full (no abbreviations), into its command's typed config;
- README's quick start runs, exactly as written, on the shipped reference model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from downcycle.cli import build_parser, config_class, main
from downcycle.errors import DowncycleError

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 250
DOC_FILES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}  # a fence's info string: these blocks hold commands
MIN_COMMANDS = 90  # the manual holds about 100 today; far fewer found means the extraction broke
QUICK_START = "## Quick start on your own model"  # README's section whose commands the last test runs
SEPARATORS = {"&&", "||", ";", "|", "do", "then", "&"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, logical line)`` of every line in a shell code block of a Markdown text: ``\\``
    continuations joined, a ``$ `` prompt removed."""
    found: list[tuple[int, str]] = []
    fence: str | None = None  # the open fence's backticks, when inside a block
    shell = False
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if fence is None:
            match = re.match(r"^(`{3,})\s*([\w+-]*)", stripped)
            if match:
                fence, shell = match.group(1), match.group(2).lower() in SHELL_FENCES
            continue
        if stripped.startswith(fence) and not stripped.strip("`"):
            fence, pending = None, None
            continue
        if not shell:
            continue
        line = stripped.removeprefix("$ ")
        if pending is not None:
            start, line = pending[0], pending[1] + " " + line
            pending = None
        else:
            start = number
        if line.endswith("\\"):
            pending = (start, line[:-1].rstrip())
            continue
        found.append((start, line))
    return found


def downcycle_argvs(line: str) -> list[list[str]]:
    """The arguments after ``downcycle`` (or ``python -m downcycle``, ``torchrun ... -m downcycle``) of
    every downcycle command in one shell line; ``#`` comments dropped, ``&&``/``;``/``|`` split."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: not a command line
        return []
    segments, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        elif token.endswith(";") and token != ";":
            current.append(token[:-1])
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    argvs = []
    for words in segments:
        while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] == "time"):
            words = words[1:]
        if words and Path(words[0]).name == "downcycle":
            argvs.append(words[1:])
            continue
        for i in range(len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "downcycle":
                argvs.append(words[i + 2 :])
                break
    return argvs


def doc_commands(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line number, line, argv)`` of every downcycle command in the shell code blocks of ``path``."""
    return [(number, line, argv) for number, line in shell_lines(path.read_text(encoding="utf-8")) for argv in downcycle_argvs(line)]


def strict_parser() -> argparse.ArgumentParser:
    """The CLI's parser with abbreviated options refused, as the CLI refuses them (allow_abbrev=False):
    the docs write every option in full."""
    parser = build_parser()
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.allow_abbrev = False
    return parser


def check_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when ``argv`` parses and builds its command's config; else why not."""
    if any(a in ("-h", "--help", "--version") for a in argv):
        return None  # prints and exits 0: nothing to build
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = vars(parser.parse_args(argv))
    except SystemExit:
        return "does not parse: " + err.getvalue().strip().splitlines()[-1]
    command = args.pop("command")
    try:
        config_class(command)(**args)
    except DowncycleError as e:  # the config's own checks (a config never reads files as it is built)
        return f"parses, but its config refuses it: {e}"
    return None


def test_readme_is_a_short_front_page():
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines; the front page keeps to {README_MAX_LINES} (the rest goes to docs/)"


def test_the_docs_hold_enough_commands():
    total = sum(len(doc_commands(p)) for p in DOC_FILES)
    assert total >= MIN_COMMANDS, f"only {total} downcycle commands found in README.md and docs/: is the extraction broken?"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_parses(path: Path):
    parser = strict_parser()
    failures = [f"{path.relative_to(ROOT)}:{number}: {line}\n    {why}"
                for number, line, argv in doc_commands(path) if (why := check_command(parser, argv)) is not None]
    assert not failures, "\n".join(failures)


def test_extraction():
    """The extraction itself: fences, continuations, prompts, comments, chains, env prefixes, -m."""
    text = """
```bash
$ downcycle cut a b --layers 0-3   # keep # not this
downcycle data --tokenizer t \\
    --source s --out o
make demo && downcycle ls
PYTHONPATH=src python -m downcycle eval m --out e
```
```yaml
downcycle: not a command
```
```python
downcycle.cut(source='a')
```
```
for m in a b; do downcycle generate $m hi; done
```
"""
    argvs = [a for _, line in shell_lines(text) for a in downcycle_argvs(line)]
    assert argvs == [["cut", "a", "b", "--layers", "0-3"], ["data", "--tokenizer", "t", "--source", "s", "--out", "o"], ["ls"],
                     ["eval", "m", "--out", "e"], ["generate", "$m", "hi"]]
    assert check_command(strict_parser(), ["cut", "a", "b", "--lay", "0-3"]) is not None  # abbreviations are refused


def readme_quick_start() -> list[tuple[int, str, list[str]]]:
    """The commands of README's quick-start section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(QUICK_START)
    end = text.find("\n## ", start + len(QUICK_START))
    section = text[start : end if end != -1 else len(text)]
    offset = text[:start].count("\n")
    return [(number + offset, line, argv) for number, line in shell_lines(section) for argv in downcycle_argvs(line)]


def test_readme_quick_start_runs(tmp_path, monkeypatch, one_torch_thread):
    """README's quick start, exactly as written, on the shipped reference model: analyze, cut, eval, heal."""
    commands = readme_quick_start()
    assert [argv[0] for _, _, argv in commands] == ["analyze", "cut", "eval", "heal", "eval"]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for number, line, argv in commands:
        assert main(argv) == 0, f"README.md:{number}: {line} failed"
    expected = ["analysis/plan.json", "analysis/scores.json", "small/model.safetensors", "small/downcycle.json",
                "eval/reference/results.json", "eval/small/results.json", "healed/model.safetensors", "healed/downcycle.json",
                "eval-healed/healed/results.json"]
    missing = [p for p in expected if not (tmp_path / p).is_file()]
    assert not missing, f"README's quick start did not write {missing}; written: {sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*.json'))}"
