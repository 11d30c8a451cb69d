"""Progress reports of every stage: a tqdm bar on a terminal, plain lines everywhere else.

A bar redraws itself with carriage returns, which a CI log, ``nohup`` or a pipe keeps as one ever
longer line (a ``make demo`` log was one multi-megabyte line). When the bar's stream is not a
terminal, the same tqdm writes one ordinary line at most every ``LINE_INTERVAL`` seconds and a
final line when it closes. In a Jupyter kernel, tqdm's notebook widget is used as before.

The libraries' own bars (transformers' "Loading weights" and "Writing model shards",
huggingface_hub's downloads) are turned off in the same case by :func:`quiet_library_bars`, which
the code that loads, converts and saves models calls before it does; a long library loop that
calls tqdm directly (transformers' GGUF de-quantization) reports through :func:`progress_bar`
instead, inside :func:`library_bar_as_lines`. Nothing is changed at import, nor on a terminal.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["LINE_INTERVAL", "library_bar_as_lines", "progress_bar", "quiet_library_bars"]

LINE_INTERVAL = 5.0  # seconds between two progress lines in a log
_LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _Lines:
    """A file for tqdm that turns each redraw (``\\r`` + status + padding) into one line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, reporting in plain lines when its stream is not a terminal.

    Takes tqdm's arguments (``total``, ``desc``, ``unit``, ``disable``, ``leave``...). Off a
    terminal, ``mininterval`` becomes :data:`LINE_INTERVAL`, the line has no bar graphic, and ``leave``
    is forced on so that the log ends with the final count.
    """
    stream = kwargs.get("file") or sys.stderr
    if "ipykernel" in sys.modules:
        from tqdm.auto import tqdm as notebook_or_std

        return notebook_or_std(iterable, **kwargs)
    from tqdm import tqdm

    if _is_terminal(stream):
        return tqdm(iterable, **kwargs)
    known = kwargs.get("total") is not None or hasattr(iterable, "__len__")
    kwargs.update(file=_Lines(stream), mininterval=max(kwargs.get("mininterval", 0.1), LINE_INTERVAL), ascii=True,
                  leave=True, dynamic_ncols=False, **({"bar_format": _LINE_FORMAT} if known else {}))
    return tqdm(iterable, **kwargs)


def _bars_redraw() -> bool:
    """Whether a bar on stderr is shown as a bar (a terminal, or a Jupyter kernel's widget)."""
    return _is_terminal(sys.stderr) or "ipykernel" in sys.modules


def quiet_library_bars() -> None:
    """Turn off transformers' and huggingface_hub's own bars (loading and writing weights, downloads)
    when stderr is not a terminal: they cannot be made to write lines, and add nothing to a log. On a
    terminal (or in a notebook) they are left as they are."""
    if _bars_redraw():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


@contextlib.contextmanager
def library_bar_as_lines(module: Any, name: str = "tqdm") -> Iterator[None]:
    """Within the block, the tqdm that a library loop calls as ``module.<name>`` is :func:`progress_bar`
    when stderr is not a terminal, so that the loop reports in plain lines (at most one every
    :data:`LINE_INTERVAL` seconds, and the last) instead of a redrawn bar.

    For the loops :func:`quiet_library_bars` cannot reach because they call tqdm itself (transformers'
    GGUF de-quantization: ``transformers.modeling_gguf_pytorch_utils.tqdm``). On a terminal, or where
    ``module`` has no such name (another library version), nothing changes. The name is restored on exit.
    """
    if _bars_redraw() or not hasattr(module, name):
        yield
        return
    original = getattr(module, name)
    setattr(module, name, progress_bar)
    try:
        yield
    finally:
        setattr(module, name, original)
