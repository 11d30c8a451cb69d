"""Layer selections: ``"0-11,20-31"`` and friends, parsed into explicit lists of source indices.

Grammar (items separated by commas, kept in the order written, repeats allowed)::

    item  := INT              one layer                    "5"
           | INT "-" INT      inclusive range              "0-23"
           | [INT] ":" [INT]  half-open Python-style slice  ":20", "28:", "-8:"

Negative numbers are allowed in the slice form only (``-8:`` is the last eight layers); ``a-b``
needs ``a <= b``.
"""

from __future__ import annotations

import re

from ..errors import SpecError

_INT = r"-?\d+"
_RANGE = re.compile(r"^(\d+)-(\d+)$")
_SLICE = re.compile(rf"^({_INT})?:({_INT})?$")
_SINGLE = re.compile(r"^\d+$")

__all__ = ["parse_layers", "drop_to_keep", "format_layers"]


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """Parse ``spec`` against a model of ``num_layers`` layers.

    Returns:
        The selected source layer indices, in order, repeats preserved.

    Raises:
        SpecError: if the spec is empty, malformed, or names a layer outside ``[0, num_layers)``.
    """
    if num_layers <= 0:
        raise SpecError(f"the model has no layers to select from (num_layers={num_layers})")
    text = spec.strip()
    if not text:
        raise SpecError("empty layer spec")
    out: list[int] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise SpecError(f"empty item in layer spec {spec!r}")
        if _SINGLE.match(item):
            idx = int(item)
            _check(idx, num_layers, spec)
            out.append(idx)
        elif m := _RANGE.match(item):
            lo, hi = int(m[1]), int(m[2])
            if lo > hi:
                raise SpecError(f"descending range {item!r} in layer spec {spec!r} (write {hi}-{lo}? ranges go up)")
            _check(lo, num_layers, spec)
            _check(hi, num_layers, spec)
            out.extend(range(lo, hi + 1))
        elif m := _SLICE.match(item):
            lo = _resolve(m[1], 0, num_layers, spec)
            hi = _resolve(m[2], num_layers, num_layers, spec)
            if lo >= hi:
                raise SpecError(f"slice {item!r} in layer spec {spec!r} selects no layers of {num_layers}")
            out.extend(range(lo, hi))
        else:
            raise SpecError(f"cannot parse {item!r} in layer spec {spec!r} (use e.g. 0-23, 0-11,20-31 or :20,28:)")
    return out


def drop_to_keep(spec: str, num_layers: int) -> list[int]:
    """The complement of ``spec``: every layer not named, in source order."""
    dropped = set(parse_layers(spec, num_layers))
    keep = [i for i in range(num_layers) if i not in dropped]
    if not keep:
        raise SpecError(f"--drop {spec!r} drops all {num_layers} layers")
    return keep


def format_layers(layers: list[int]) -> str:
    """The shortest spec in ``a-b`` form that :func:`parse_layers` maps back to ``layers``."""
    parts: list[str] = []
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[j] + 1:
            j += 1
        parts.append(str(layers[i]) if i == j else f"{layers[i]}-{layers[j]}")
        i = j + 1
    return ",".join(parts)


def contiguous_runs(layers: list[int]) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` runs of consecutive indices, in order (mergekit's ``layer_range``)."""
    runs: list[tuple[int, int]] = []
    for idx in layers:
        if runs and runs[-1][1] == idx:
            runs[-1] = (runs[-1][0], idx + 1)
        else:
            runs.append((idx, idx + 1))
    return runs


def _check(idx: int, num_layers: int, spec: str) -> None:
    if not 0 <= idx < num_layers:
        raise SpecError(f"layer {idx} in spec {spec!r} is out of range: the model has layers 0-{num_layers - 1}")


def _resolve(text: str | None, default: int, num_layers: int, spec: str) -> int:
    if text is None:
        return default
    idx = int(text)
    if idx < 0:
        idx += num_layers
    if not 0 <= idx <= num_layers:
        raise SpecError(f"slice bound {text} in spec {spec!r} is out of range for {num_layers} layers")
    return idx
