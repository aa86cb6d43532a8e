"""Sampler settings, multipliers and the run digest."""

from __future__ import annotations

import pytest

from caa_bake.core import CaaBakeError
from caa_bake.generation.settings import Sampler, fmt_mult, parse_mults, settings_digest


def test_default_is_the_papers_greedy_100_tokens() -> None:
    sampler = Sampler()
    assert sampler.greedy and sampler.max_new_tokens == 100 and sampler.samples == 1
    # greedy rows do not carry knobs that do not matter
    assert sampler.record() == {
        "temperature": 0.0,
        "max_new_tokens": 100,
        "samples": 1,
        "greedy": True,
    }
    assert sampler.describe() == "greedy, 100 new tokens"


def test_sampling_record_keeps_every_knob() -> None:
    sampler = Sampler(temperature=0.7, top_p=0.9, top_k=40, seed=3, max_new_tokens=20, samples=2)
    assert sampler.record() == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 3,
        "max_new_tokens": 20,
        "samples": 2,
        "greedy": False,
    }
    assert "top-k 40" in sampler.describe() and "2 sample(s)" in sampler.describe()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "--temperature"),
        ({"temperature": float("nan")}, "--temperature"),
        ({"top_p": 0.0}, "--top-p"),
        ({"top_p": 1.5}, "--top-p"),
        ({"top_k": -1}, "--top-k"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"samples": 0}, "--samples"),
        ({"samples": 2}, "needs --temperature > 0"),
    ],
)
def test_bad_settings_are_one_clear_line(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(CaaBakeError, match=message.replace("-", r"\-")):
        Sampler(**kwargs)  # type: ignore[arg-type]


def test_parse_mults() -> None:
    assert parse_mults("-1,0,1") == [-1.0, 0.0, 1.0]
    assert parse_mults(" 2 , -0 ,0.5,") == [2.0, 0.0, 0.5]
    assert str(parse_mults("-0")[0]) == "0.0"  # -0 is the unbaked model, written 0
    for bad, message in [
        ("a", "cannot read"),
        ("1,1", "twice"),
        ("inf", "finite"),
        (",", "no mult"),
    ]:
        with pytest.raises(CaaBakeError, match=message):
            parse_mults(bad)


def test_fmt_mult_and_digest() -> None:
    assert [fmt_mult(m) for m in (-1.0, 0.0, 1.0, 0.5, -2.5)] == ["-1", "0", "+1", "+0.5", "-2.5"]
    a = settings_digest(Sampler().record())
    assert a == settings_digest(Sampler().record()) and len(a) == 8
    assert a != settings_digest(Sampler(max_new_tokens=50).record())
