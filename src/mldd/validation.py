"""Checks of user-given integers, shared by every module (it imports nothing from mldd).

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds; an option such as
``history=True`` is a mistake, not the integer 1, and is refused here.
"""

from __future__ import annotations

__all__ = ["as_int", "check_int", "is_int"]


def is_int(value: object, minimum: int | None = None) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``), and ``≥ minimum`` if that is given."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return minimum is None or value >= minimum


def check_int(name: str, value: object, minimum: int = 1, *, allow_none: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer ``≥ minimum``.

    Args:
        name: the option's name as the user wrote it (it may carry the owner, e.g.
            ``"SmallCNN width"``).
        value: the value given.
        minimum: the smallest allowed value (default 1).
        allow_none: also accept ``None`` (an option that is off or derived).
    """
    if allow_none and value is None:
        return
    if not is_int(value, minimum):
        none = "None or " if allow_none else ""
        raise ValueError(f"{name} must be {none}an integer >= {minimum}, got {value!r}")


def as_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` after :func:`check_int` (``None`` not allowed), typed as ``int``."""
    check_int(name, value, minimum)
    assert isinstance(value, int)
    return value
