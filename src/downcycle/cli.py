"""The command line: a thin shell that parses a typed config and calls one library function.

Options are derived from the dataclasses in :mod:`downcycle.recipe`, so each option's help lives on
its field. Nothing here imports torch; commands import their library module only when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, recipe
from .errors import DowncycleError

if TYPE_CHECKING:
    from .recipe import (
        AnalyzeConfig,
        CardConfig,
        CompareConfig,
        ConvertConfig,
        CutConfig,
        DataConfig,
        DemoConfig,
        EvalConfig,
        GenerateConfig,
        LsConfig,
        ReportConfig,
        RunConfig,
        SweepConfig,
        TaskDataConfig,
        TrainConfig,
    )


def _run_cut(cfg: CutConfig) -> None:
    from .pipeline.cut_keep import run_cut

    result = run_cut(cfg)
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


def _run_train(cfg: TrainConfig) -> None:
    from .training import run_train

    result = run_train(cfg)
    if not result.main_process:  # in a distributed run only the main process reports
        return
    for note in result.notes:
        print(f"  note: {note}")
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    print(f"wrote {result.out}: {result.method}, {result.steps} steps, {result.tokens:,} tokens, "
          f"train loss {result.train_loss:.4f}{val} ({result.tokens_per_second:,.0f} tokens/s)")


def _run_analyze(cfg: AnalyzeConfig) -> None:
    from .analysis.run import run_analyze

    result = run_analyze(cfg)
    plan = result.plan
    print(f"wrote {result.out}: strategy {plan.strategy} keeps {len(plan.kept_layers)} of {plan.source_layers} layers, "
          f"drops {plan.details['dropped_layers']} ({', '.join(result.files)})")
    print(f"  next: downcycle cut {cfg.model} OUT --plan {result.out / 'plan.json'}")


def _run_ls(cfg: LsConfig) -> None:
    from .registries import list_registries

    for registry, entries in list_registries(cfg.registry).items():
        print(f"{registry}:")
        width = max((len(name) for name in entries), default=0)
        for name, text in entries.items():
            print(f"  {name:<{width}}  {text}")


def _run_eval(cfg: EvalConfig) -> None:
    from .evaluation.run import run_eval

    result = run_eval(cfg)
    for name, res in result.models.items():
        parts = [f"{task} {m}={v.value:.4f}" for task, t in res.tasks.items() for m, v in t.metrics.items()
                 if m in ("acc", "acc_norm", "perplexity", "bits_per_byte") or m.startswith("exact_match")]
        print(f"{name}: " + ", ".join(parts))
    print(f"wrote {result.out} ({result.seconds:.1f} s)")


def _run_taskdata(cfg: TaskDataConfig) -> None:
    from .evaluation.task_package import run_taskdata

    result = run_taskdata(cfg)
    print(f"wrote {result.out}: {len(result.files)} files, {sum(result.files.values()):,} items from {result.source}")


def _run_compare(cfg: CompareConfig) -> None:
    from .report.compare import run_compare

    result = run_compare(cfg)
    print(result.markdown)
    print(f"wrote {result.out}: {', '.join(result.files)}")


def _run_data(cfg: DataConfig) -> None:
    from .data.corpus import build_corpus
    from .data.shards import read_corpus_meta

    out = build_corpus(cfg)
    meta = read_corpus_meta(out)
    parts = [f"{s} {v['sequences']:,} x {meta['seq_len']} = {v['tokens']:,} tokens from {v['documents']:,} documents"
             for s, v in meta["splits"].items()]
    print(f"wrote {out}: " + "; ".join(parts) + f" ({meta['token_dtype']})")


def _run_generate(cfg: GenerateConfig) -> None:
    from .generation import run_generate

    result = run_generate(cfg)
    print(flush=True)  # end the streamed line; the summary goes to stderr so stdout is the text alone
    for note in result.notes:
        print(f"  note: {note}", file=sys.stderr)
    chat = ", chat template" if result.chat else ""
    print(f"[{len(result.prompt_ids)} prompt tokens{chat}, {len(result.tokens)} new, stop: {result.stop}, "
          f"{result.tokens_per_second:.1f} tokens/s]", file=sys.stderr)


def _run_report(cfg: ReportConfig) -> None:
    from .report.build import run_report

    result = run_report(cfg)
    for verdict in result.verdicts:
        print("  " + verdict.replace("**", ""))
    cached = len(result.models) - len(result.generated)
    print(f"wrote {result.html} and {result.markdown} ({len(result.models)} models, {len(result.figures)} figures"
          + (f", samples: {len(result.generated)} generated, {cached} cached" if cfg.samples else "")
          + (f"; refreshed {len(result.cards)} model cards" if result.cards else "") + ")")


def _run_card(cfg: CardConfig) -> None:
    from .report.card import write_card

    print(f"wrote {write_card(cfg.model_dir, cfg.results)}")


def _run_run(cfg: RunConfig) -> None:
    from .pipeline.run import run_recipe

    _pipeline_summary(run_recipe(cfg), cfg.dry_run)


def _run_sweep(cfg: SweepConfig) -> None:
    from .pipeline.run import run_sweep

    _pipeline_summary(run_sweep(cfg), cfg.dry_run)


def _pipeline_summary(result: Any, dry_run: bool) -> None:
    if dry_run:
        return
    print(f"\n{result.out}: ran {len(result.ran)} stage(s), skipped {len(result.skipped)} already done "
          f"({result.seconds:.0f} s)")
    report = result.out / "report.html"
    if report.is_file():
        print(f"report: {report}")


# name -> (config class name in downcycle.recipe, runner); a class is imported when its command is
# built, so that a run imports the one config module it uses
COMMANDS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "cut": ("CutConfig", _run_cut),
    "convert": ("ConvertConfig", _run_convert),
    "demo": ("DemoConfig", _run_demo),
    "train": ("TrainConfig", _run_train),
    "analyze": ("AnalyzeConfig", _run_analyze),
    "ls": ("LsConfig", _run_ls),
    "eval": ("EvalConfig", _run_eval),
    "taskdata": ("TaskDataConfig", _run_taskdata),
    "compare": ("CompareConfig", _run_compare),
    "data": ("DataConfig", _run_data),
    "generate": ("GenerateConfig", _run_generate),
    "report": ("ReportConfig", _run_report),
    "card": ("CardConfig", _run_card),
    "run": ("RunConfig", _run_run),
    "sweep": ("SweepConfig", _run_sweep),
}


def config_class(command: str) -> type:
    """The config dataclass of ``command``."""
    return getattr(recipe, COMMANDS[command][0])


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
    parser = argparse.ArgumentParser(prog="downcycle", description="Make smaller language models out of big pretrained ones, and prove how good they are.")
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
    cls, runner = config_class(command), COMMANDS[command][1]
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
        # data, eval and train keep what they finished beside OUT (.OUT.partial/, OUT.run/) for a rerun
        print("downcycle: interrupted; no partial output was left (a rerun with the same options resumes where it can)",
              file=sys.stderr)
        return 130
    return 0


# Commands that leave nothing for the interpreter's teardown when they succeed: every file written
# and closed, every thread joined. Teardown (freeing each module and object) takes ~8 ms, a few
# per cent of a 1 GB cut.
_FAST_EXIT = frozenset({"cut"})


def run(argv: list[str] | None = None) -> NoReturn:
    """The console script and ``python -m downcycle``: :func:`main`, then exit with its status.

    After a successful command of ``_FAST_EXIT`` in a process with nothing registered to run at
    exit and no other thread, the process ends without the interpreter's teardown, as mypy does
    after a check. Library callers use :func:`main`, which always returns.
    """
    argv = sys.argv[1:] if argv is None else argv
    status = main(argv)
    if status == 0 and argv and argv[0] in _FAST_EXIT and _nothing_left_to_do():
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # e.g. a closed pipe: leave the report of it to the normal exit
            sys.exit(status)
        os._exit(status)
    sys.exit(status)


def _nothing_left_to_do() -> bool:
    import atexit
    import threading

    ncallbacks = getattr(atexit, "_ncallbacks", None)  # CPython's; elsewhere, exit normally
    return ncallbacks is not None and ncallbacks() == 0 and threading.active_count() == 1


__all__ = ["main", "run", "build_parser", "config_class", "COMMANDS"]
