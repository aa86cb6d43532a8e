"""``caa_bake.core.progress``: the quiet switch, ``CAA_BAKE_QUIET`` and the tqdm wrapper."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from transformers.utils import logging as hf_logging

from caa_bake.core.progress import is_quiet, progress, set_quiet

# the module itself: ``caa_bake.core.progress`` as an attribute is the function of that name
progress_mod = importlib.import_module("caa_bake.core.progress")


@pytest.fixture(autouse=True)
def loud(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start every test loud (conftest sets CAA_BAKE_QUIET=1) and restore the switch after."""
    monkeypatch.delenv("CAA_BAKE_QUIET", raising=False)
    was_quiet = progress_mod._quiet
    hf_was_enabled = hf_logging.is_progress_bar_enabled()
    set_quiet(False)
    yield
    progress_mod._quiet = was_quiet
    if hf_was_enabled:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


def test_set_quiet_switches_caa_bake_and_transformers_bars() -> None:
    assert not is_quiet()
    assert hf_logging.is_progress_bar_enabled()
    set_quiet(True)
    assert is_quiet()
    assert not hf_logging.is_progress_bar_enabled()
    set_quiet(False)
    assert not is_quiet()
    assert hf_logging.is_progress_bar_enabled()


@pytest.mark.parametrize(
    ("value", "quiet"),
    [("1", True), ("yes", True), ("true", True), ("0", False), ("", False)],
)
def test_env_var(monkeypatch: pytest.MonkeyPatch, value: str, quiet: bool) -> None:
    monkeypatch.setenv("CAA_BAKE_QUIET", value)
    assert is_quiet() is quiet


def test_env_var_wins_over_set_quiet_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_QUIET", "1")
    set_quiet(False)
    assert is_quiet()


def test_progress_yields_every_item_in_order_and_draws_a_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = [3, 1, 4, 1, 5]
    assert list(progress(iter(items), desc="counting", total=len(items), unit="pair")) == items
    err = capsys.readouterr().err
    assert "counting" in err
    assert "/5 " in err  # tqdm draws the total it was given
    assert "pair/s" in err


def test_progress_is_silent_when_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    set_quiet(True)
    assert list(progress(range(4), desc="hidden")) == [0, 1, 2, 3]
    assert capsys.readouterr() == ("", "")


def test_progress_is_silent_with_the_env_var(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAA_BAKE_QUIET", "1")
    assert list(progress(["a", "b"], desc="hidden")) == ["a", "b"]
    assert capsys.readouterr() == ("", "")


def test_progress_is_lazy() -> None:
    seen: list[int] = []

    def source() -> Iterator[int]:
        for i in range(3):
            seen.append(i)
            yield i

    wrapped = progress(source(), desc="lazy")
    assert seen == []
    assert next(wrapped) == 0
    assert seen == [0]
