"""Layer selections."""

from __future__ import annotations

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.steering.layers import check_layer, parse_layers


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("13", [13]),
        ("0-3", [0, 1, 2, 3]),
        ("5,1,5", [1, 5]),
        ("all", list(range(30))),
        (" 2-3, 7 ", [2, 3, 7]),
    ],
)
def test_parse(spec: str, expected: list[int]) -> None:
    assert parse_layers(spec, 30) == expected


@pytest.mark.parametrize("spec", ["30", "0-30", "-1"])
def test_out_of_range_states_layer_count(spec: str) -> None:
    with pytest.raises(CaaBakeError, match=r"the model has 30 layers \(0-29\)"):
        parse_layers(spec, 30)


@pytest.mark.parametrize("spec", ["x", "3-", "1-2-3", "", "5-2"])
def test_unreadable(spec: str) -> None:
    with pytest.raises(CaaBakeError):
        parse_layers(spec, 30)


def test_check_layer() -> None:
    assert check_layer(0, 1) == 0
    with pytest.raises(CaaBakeError, match="out of range"):
        check_layer(1, 1)
