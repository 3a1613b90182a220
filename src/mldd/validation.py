"""Checks of user-given integers and devices, shared by every module (it imports nothing from mldd).

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds; an option such as
``history=True`` is a mistake, not the integer 1, and is refused here.
"""

from __future__ import annotations

from typing import TypeGuard

import torch

__all__ = ["as_device", "as_int", "check_int", "is_int", "is_number"]


def is_int(value: object, minimum: int | None = None) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``), and ``≥ minimum`` if that is given."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return minimum is None or value >= minimum


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a real ``int`` or ``float`` (not a ``bool``; NaN and Inf included,
    callers that need a finite value test that themselves)."""
    return not isinstance(value, bool) and isinstance(value, int | float)


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


def as_device(value: object, name: str = "device") -> torch.device:
    """``value`` as a ``torch.device`` that this machine has.

    Checked here, at construction, so that a typo or a missing GPU is reported once with the
    allowed values, not as a device-mismatch error deep inside the first training step.

    Args:
        value: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or another torch device string) or a
            ``torch.device``.
        name: the option's name for the message.

    Raises:
        ValueError: for a value that is not a device, or a CUDA device this machine lacks.
    """
    bad = ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {value!r}")
    if not isinstance(value, str | torch.device):
        raise bad
    try:
        device = torch.device(value)
    except RuntimeError:
        raise bad from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name}={value!r} needs CUDA, which this machine lacks "
                             "(torch.cuda.is_available() is False); use device='cpu'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name}={value!r}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return device
