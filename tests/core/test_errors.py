"""``caa_bake.core.errors.CaaBakeError``: always one line, whatever the message looked like."""

from __future__ import annotations

import pytest

import caa_bake
from caa_bake.core.errors import CaaBakeError


def test_message_is_kept() -> None:
    assert str(CaaBakeError("layer 9 is out of range")) == "layer 9 is out of range"


@pytest.mark.parametrize(
    ("raw", "one_line"),
    [
        ("cannot read x.json:\n  Expecting value", "cannot read x.json: Expecting value"),
        ("  leading and trailing  \n", "leading and trailing"),
        ("tabs\tand\r\nCRLF", "tabs and CRLF"),
        ("many     spaces", "many spaces"),
    ],
)
def test_whitespace_collapses_to_one_line(raw: str, one_line: str) -> None:
    error = CaaBakeError(raw)
    assert str(error) == one_line
    assert error.args == (one_line,)


def test_is_an_exception_exported_by_the_package() -> None:
    assert caa_bake.CaaBakeError is CaaBakeError
    assert issubclass(CaaBakeError, Exception)
    with pytest.raises(CaaBakeError, match=r"^boom$"):
        raise CaaBakeError("boom\n")
