"""The gaps of a depth cut: each maximal run of dropped source layers, with the kept layer before it.

A cut keeps source layers ``kept`` (strictly increasing here: healing a gap needs an order). Between
two kept layers ``b`` and ``e`` with ``e > b + 1`` lies the gap ``b+1 .. e-1``; after the last kept layer,
the *tail* gap runs to the final norm. A gap at the very start (layer 0 dropped) has no kept layer
before it, so there is no down projection to fold a map into: it is refused, never healed wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DowncycleError

__all__ = ["Gap", "find_gaps"]


@dataclass(frozen=True)
class Gap:
    """Dropped source layers ``start .. end-1``.

    Attributes:
        start: the first dropped source layer.
        end: the source layer after the gap (``num_layers`` for the tail gap: the final norm follows).
        before: the kept source layer before the gap (``start - 1``).
        tail: whether the gap runs to the end of the decoder.
    """

    start: int
    end: int
    before: int
    tail: bool

    @property
    def name(self) -> str:
        return f"{self.start}-{self.end - 1}"

    @property
    def size(self) -> int:
        return self.end - self.start


def find_gaps(kept: list[int], num_layers: int) -> list[Gap]:
    """Every gap of the cut that keeps source layers ``kept`` of ``num_layers``.

    Raises:
        DowncycleError: layers repeated or out of order, or layer 0 dropped.
    """
    if any(b <= a for a, b in zip(kept, kept[1:])):
        raise DowncycleError(f"healing needs the kept layers in increasing order without repeats (got {kept})")
    if not kept:
        raise DowncycleError("healing needs at least one kept layer")
    if kept[0] != 0:
        raise DowncycleError(f"the cut drops layer 0{'-' + str(kept[0] - 1) if kept[0] > 1 else ''}: a gap at the start has no "
                             "kept layer before it to fold a map into (keep layer 0)")
    if kept[-1] >= num_layers:
        raise DowncycleError(f"layer {kept[-1]} is out of range for a {num_layers}-layer model")
    gaps = [Gap(a + 1, b, a, False) for a, b in zip(kept, kept[1:]) if b > a + 1]
    if kept[-1] < num_layers - 1:
        gaps.append(Gap(kept[-1] + 1, num_layers, kept[-1], True))
    return gaps
