import pytest

from downcycle.errors import SpecError
from downcycle.surgery.layerspec import contiguous_runs, drop_to_keep, format_layers, parse_layers


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0-23", list(range(24))),
        ("0-11,20-31", list(range(12)) + list(range(20, 32))),
        (":20,28:", list(range(20)) + list(range(28, 32))),
        ("0-15,8-23", list(range(16)) + list(range(8, 24))),
        ("5", [5]),
        (" 3 , 1 ", [3, 1]),
        ("-8:", list(range(24, 32))),
        (":-8", list(range(24))),
        ("31", [31]),
    ],
)
def test_parse(spec, expected):
    assert parse_layers(spec, 32) == expected


@pytest.mark.parametrize("spec", ["", " ", "32", "0-32", "a", "1-", "-1", "5-3", "3:3", "0,,1", "1.5", ":40"])
def test_parse_rejects(spec):
    with pytest.raises(SpecError):
        parse_layers(spec, 32)


def test_drop_is_the_complement():
    assert drop_to_keep("24-31", 32) == list(range(24))
    assert drop_to_keep("3,5", 8) == [0, 1, 2, 4, 6, 7]
    with pytest.raises(SpecError, match="drops all"):
        drop_to_keep("0-7", 8)


@pytest.mark.parametrize("layers", [list(range(24)), [0, 1, 2, 5, 6, 2, 3], [7], [3, 2, 1]])
def test_format_round_trips(layers):
    assert parse_layers(format_layers(layers), 32) == layers


def test_contiguous_runs():
    assert contiguous_runs(list(range(12)) + list(range(20, 32))) == [(0, 12), (20, 32)]
    assert contiguous_runs([0, 1, 2, 1, 2]) == [(0, 3), (1, 3)]
