"""The command line: a thin shell that parses a typed config and calls one library function.

Options are derived from the dataclasses in :mod:`downcycle.recipe`, so each option's help lives on
its field. Nothing here imports torch; commands import their library module only when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from . import __version__
from .errors import DowncycleError
from .recipe import ConvertConfig, CutConfig, DemoConfig


def _run_cut(cfg: CutConfig) -> None:
    from .cut import cut

    result = cut(cfg)
    print(f"wrote {result.out}: {len(result.kept_layers)} of {result.source_layers} layers, "
          f"{result.bytes_written / 1e6:.1f} MB in {len(result.shards)} shard(s)")
    for note in result.notes:
        print(f"  note: {note}")


def _run_convert(cfg: ConvertConfig) -> None:
    from .convert import convert

    print(f"wrote {convert(cfg)}")


def _run_demo(cfg: DemoConfig) -> None:
    from .demo import run_demo

    run_demo(cfg)


# name -> (config class, runner)
COMMANDS: dict[str, tuple[type, Callable[[Any], None]]] = {
    "cut": (CutConfig, _run_cut),
    "convert": (ConvertConfig, _run_convert),
    "demo": (DemoConfig, _run_demo),
}


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
            parser.add_argument(f.name, type=tp, help=meta["help"], metavar=meta.get("metavar"))
        elif tp is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=meta["help"])
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=tp, default=default,
                                metavar=meta.get("metavar"), help=f"{meta['help']}" + (f" (default: {default})" if default is not None else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="downcycle", description="Make smaller language models out of big pretrained ones, and prove how good they are.")
    parser.add_argument("--version", action="version", version=f"downcycle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (cls, _) in COMMANDS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        add_config_arguments(sub.add_parser(name, help=doc, description=doc), cls)
    return parser


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``downcycle`` and ``python -m downcycle``; returns the exit status."""
    args = vars(build_parser().parse_args(argv))
    cls, runner = COMMANDS[args.pop("command")]
    signal.signal(signal.SIGTERM, _sigterm)  # so a killed run cleans up like Ctrl-C
    try:
        runner(cls(**args))
    except DowncycleError as e:
        print(f"downcycle: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permission denied...: the environment, not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"downcycle: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("downcycle: interrupted; no partial output was left", file=sys.stderr)
        return 130
    return 0


__all__ = ["main", "build_parser", "COMMANDS"]
