"""Sizes and counts: one parser, a unit table each (a size's B is a byte, a count's a billion)."""

from __future__ import annotations

import pytest

from downcycle.artifacts.quantities import BYTES, COUNT, parse_quantity
from downcycle.errors import DowncycleError


def test_one_parser_two_unit_tables():
    assert parse_quantity("1B", "--tokens", COUNT) == 10**9 and parse_quantity("1B", "--shard-size", BYTES) == 1
    assert parse_quantity("2.5M", units=COUNT) == 2_500_000 and parse_quantity("1,000", units=COUNT) == 1000
    assert parse_quantity("20k", units=COUNT) == 20_000 and parse_quantity("1 GiB") == 2**30 and parse_quantity(7) == 7


def test_bad_quantities_name_the_option():
    with pytest.raises(DowncycleError, match=r"--tokens: 'lots' is not a count \(e.g. 1B"):
        parse_quantity("lots", "--tokens", COUNT)
    with pytest.raises(DowncycleError, match=r"--max-shard-size: 'big' is not a size \(e.g. 256MB"):
        parse_quantity("big", "--max-shard-size")
    with pytest.raises(DowncycleError, match="must be positive"):
        parse_quantity("0GB")
