"""The command line: a thin shell that parses a typed config and calls one library function.

Commands are the entries of the command table (:mod:`downcycle.commands`); their options are derived
from the config dataclasses in :mod:`downcycle.recipe`, so each option's help lives on its field.
Nothing here imports torch; a command imports its library module only when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import types
import typing
from typing import Any, NoReturn

from . import __version__
from .errors import DowncycleError
from .commands import COMMANDS


class _Parser(argparse.ArgumentParser):
    """argparse, taking an argument that starts with '-' and a digit as a value, as Python 3.13's does:
    ``--train-layers -4:`` and ``cut --drop -2:`` (layer specs), not only ``--lr -1``. Before 3.13
    only a whole negative number (``-4``) was a value; ``-4:`` was taken for an unknown option, and
    the option before it reported "expected one argument". No option of ours starts with '-' and a digit.

    Options are never abbreviated (``allow_abbrev=False``, for every sub-command, which argparse builds
    with this class): ``generate MODEL --prompt "text"`` is an unknown option named as such, not
    ``--prompt-file``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")


def config_class(command: str) -> type:
    """The config dataclass of ``command``."""
    return COMMANDS[command].config


def _echo(line: str) -> None:
    print(line, flush=True)


def execute(command: str, config: Any) -> Any:
    """Run ``command`` on ``config`` and print its summary, as ``downcycle COMMAND`` does;
    returns the stage's result. A pipeline's progress lines are printed as its stages go."""
    spec = COMMANDS[command]
    run = spec.load_run()
    result = run(config, echo=_echo) if spec.echo else run(config)
    text = spec.load_summary()(result)
    if spec.stream:
        print(flush=True)  # end the streamed line; the summary goes to stderr so stdout is the text alone
        if text:
            print(text, file=sys.stderr)
    elif text:
        print(text)
    return result


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per dataclass field: positional where the field says so, ``--kebab-case`` otherwise."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta, tp = f.metadata, _unwrap(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if meta.get("positional"):
            optional = {"nargs": "?", "default": default} if f.default is not dataclasses.MISSING else {}
            if meta.get("nargs"):  # a list field: MODEL... (its items' type)
                optional, tp = {"nargs": meta["nargs"]}, (typing.get_args(tp) or (str,))[0]
            parser.add_argument(f.name, type=tp, help=meta["help"], metavar=meta.get("metavar"), **optional)
        elif typing.get_origin(tp) is list:  # a repeatable option: --source A --source B
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action="append", type=(typing.get_args(tp) or (str,))[0],
                                metavar=meta.get("metavar"), help=f"{meta['help']}")
        elif tp is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=meta["help"])
        else:
            parser.add_argument(meta.get("flag") or f"--{f.name.replace('_', '-')}", dest=f.name, type=tp, default=default,
                                metavar=meta.get("metavar"), help=f"{meta['help']}" + (f" (default: {default})" if default is not None else ""))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or (``only``) of one: a command line names its command first,
    so a run builds just that sub-parser (tens of milliseconds less start-up for a fast ``cut``)."""
    parser = _Parser(prog="downcycle", description="Make smaller language models out of big pretrained ones, and prove how good they are.")
    parser.add_argument("--version", action="version", version=f"downcycle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        cls = config_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        add_config_arguments(sub.add_parser(name, help=doc, description=doc), cls)
    return parser


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``downcycle`` and ``python -m downcycle``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = vars(build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv))
    command = args.pop("command")
    signal.signal(signal.SIGTERM, _sigterm)  # so a killed run cleans up like Ctrl-C
    try:
        execute(command, config_class(command)(**args))
    except DowncycleError as e:
        print(f"downcycle: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permission denied...: the environment, not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"downcycle: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # data, eval and train keep what they finished beside OUT (.OUT.partial/, OUT.run/) for a rerun
        print("downcycle: interrupted; no partial output was left (a rerun with the same options resumes where it can)",
              file=sys.stderr)
        return 130
    return 0


def run(argv: list[str] | None = None) -> NoReturn:
    """The console script and ``python -m downcycle``: :func:`main`, then exit with its status.
    Library callers use :func:`main`, which returns."""
    sys.exit(main(argv))


__all__ = ["COMMANDS", "build_parser", "config_class", "execute", "main", "run"]
