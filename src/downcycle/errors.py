"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-line message and a non-zero exit; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class DowncycleError(Exception):
    """A user-facing error: bad input, a model we do not understand, an output we must not overwrite."""


class SpecError(DowncycleError, ValueError):
    """A malformed, empty or out-of-range layer selection."""
