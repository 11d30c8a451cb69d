"""Progress reports of every stage: a tqdm bar on a terminal, plain lines everywhere else.

A bar redraws itself with carriage returns, which a CI log, ``nohup`` or a pipe keeps as one ever
longer line (a ``make demo`` log was one multi-megabyte line). When the bar's stream is not a
terminal, the same tqdm writes one ordinary line at most every ``LINE_INTERVAL`` seconds and a
final line when it closes. In a Jupyter kernel, tqdm's notebook widget is used as before.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["LINE_INTERVAL", "progress_bar", "quiet_library_bars"]

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


def quiet_library_bars() -> None:
    """Turn off transformers' and huggingface_hub's own bars (loading and writing weights) when
    stderr is not a terminal: they cannot be made to write lines, and add nothing to a log."""
    if _is_terminal(sys.stderr) or "ipykernel" in sys.modules:
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()
