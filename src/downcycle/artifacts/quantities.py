"""Sizes and counts as people write them: ``"5GB"``, ``"512MiB"``, ``"1B"`` tokens, ``"20K"``.

One parser for both, each with its own unit table: a size's ``B`` is a byte, a count's ``B`` a
billion (``--tokens 1B``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DowncycleError

__all__ = ["BYTES", "COUNT", "Units", "parse_quantity"]


@dataclass(frozen=True)
class Units:
    """A kind of quantity: its name in errors, its suffixes (case-insensitive) and examples."""

    noun: str
    scale: dict[str, int]
    examples: str


BYTES = Units("size", {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1},
              "256MB, 5GB, 512MiB")
COUNT = Units("count", {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}, "1B, 500M, 20K, 123456")


def parse_quantity(text: str | int, what: str = "size", units: Units = BYTES) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"512MiB"`` -> 536_870_912 (``units=BYTES``); ``"1B"`` ->
    1_000_000_000, ``"2.5M"`` -> 2_500_000 (``units=COUNT``); a bare number is itself, ints pass through.
    Spaces, underscores and commas are ignored.

    Raises:
        DowncycleError: naming ``what`` (the option) for text that is not a positive quantity.
    """
    if isinstance(text, int):
        value = text
    else:
        s = str(text).strip().upper().replace(" ", "").replace("_", "").replace(",", "")
        unit = next((u for u in sorted(units.scale, key=len, reverse=True) if s.endswith(u)), "")
        try:
            value = round(float(s[: len(s) - len(unit)]) * units.scale.get(unit, 1))
        except ValueError:
            raise DowncycleError(f"{what}: {text!r} is not a {units.noun} (e.g. {units.examples})") from None
    if value <= 0:
        raise DowncycleError(f"{what}: {text!r} must be positive")
    return value
