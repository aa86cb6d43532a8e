"""``caa_bake.core.multipliers``: the ``--mults`` list of eval, sweep and generate."""

from __future__ import annotations

import re

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.core.multipliers import parse_multipliers


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("-1,0,1", [-1.0, 0.0, 1.0]),
        ("1, -1 ,0.5", [-1.0, 0.5, 1.0]),
        ("2,2,2.0", [2.0]),
        ("-0", [0.0]),
        ("1,,", [1.0]),
        ("1e-1", [0.1]),
    ],
)
def test_multipliers_are_sorted_unique_floats(text: str, values: list[float]) -> None:
    parsed = parse_multipliers(text)
    assert parsed == values
    assert all(str(v) != "-0.0" for v in parsed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b", "cannot read multipliers 'a,b': use numbers separated by commas, e.g. -1,0,1"),
        ("1;2", "cannot read multipliers '1;2'"),
        ("inf", "multiplier must be a finite number, got inf"),
        ("0,-nan", "multiplier must be a finite number, got -nan"),
        ("", "no multipliers given (e.g. --mults -1,0,1)"),
        (" , ", "no multipliers given"),
    ],
)
def test_bad_multipliers(text: str, message: str) -> None:
    with pytest.raises(CaaBakeError, match=re.escape(message)):
        parse_multipliers(text)


@pytest.mark.parametrize(
    ("text", "values"),
    [("1,-1,0", [1.0, -1.0, 0.0]), (" 2 , -0 ,0.5,", [2.0, 0.0, 0.5]), ("-2", [-2.0])],
)
def test_keep_order_keeps_the_given_order(text: str, values: list[float]) -> None:
    parsed = parse_multipliers(text, keep_order=True)
    assert parsed == values
    assert all(str(v) != "-0.0" for v in parsed)


@pytest.mark.parametrize("text", ["1,1", "1,1.0", "0,-0"])
def test_keep_order_refuses_a_value_given_twice(text: str) -> None:
    with pytest.raises(CaaBakeError, match="is given twice"):
        parse_multipliers(text, keep_order=True)
