"""The shared integer and number checks of mldd.validation (devices: tests/api/test_devices.py)."""

from __future__ import annotations

import pytest

from mldd.validation import as_int, check_int, is_int, is_number


@pytest.mark.parametrize(("value", "minimum", "ok"), [
    (1, None, True), (-3, None, True), (0, 0, True), (0, 1, False), (5, 5, True),
    (True, None, False), (False, 0, False), (1.0, None, False), ("2", None, False),
    (None, None, False),
])
def test_is_int(value, minimum, ok):
    assert is_int(value, minimum) is ok


def test_check_int_names_the_option_the_value_and_the_bound():
    check_int("history", 3)
    check_int("iterations", 0, 0)
    check_int("groups", None, allow_none=True)
    with pytest.raises(ValueError, match=r"^history must be an integer >= 1, got 0$"):
        check_int("history", 0)
    with pytest.raises(ValueError, match=r"^history must be an integer >= 1, got True$"):
        check_int("history", True)
    with pytest.raises(ValueError, match=r"^groups must be None or an integer >= 2, got 1.5$"):
        check_int("groups", 1.5, 2, allow_none=True)
    with pytest.raises(ValueError, match=r"got None$"):
        check_int("history", None)


def test_as_int_returns_the_checked_value():
    assert as_int("width", 7) == 7
    with pytest.raises(ValueError, match=r"^SmallCNN width must be an integer >= 1, got -1$"):
        as_int("SmallCNN width", -1)


def test_is_number_refuses_bool_and_non_numbers() -> None:
    assert is_number(2) and is_number(0.5) and is_number(float("nan"))
    assert not is_number(True) and not is_number("1") and not is_number(None)
