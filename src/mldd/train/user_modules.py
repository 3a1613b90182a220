"""``--import``: user modules that register their own problems and methods by name.

A module (or ``.py`` file) that calls :func:`mldd.problems.registry.register` or
:func:`mldd.train.methods.register_method` at import time makes its problems and methods usable
by name in ``mldd train`` and ``mldd bench``. Imported modules are remembered, so that the
benchmark's worker processes (started with ``spawn``, which re-imports nothing of the parent)
import them too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["IMPORTED", "import_user_modules"]

#: what :func:`import_user_modules` imported in this process, in order.
IMPORTED: list[str] = []


def import_user_modules(names: Sequence[str]) -> None:
    """Import each module name or ``.py`` file path in ``names`` (once each).

    Raises:
        ImportError: a file that does not exist or a module that cannot be imported; the message
            names it.
    """
    for name in names:
        is_file = name.endswith(".py") or "/" in name or "\\" in name
        # Files are remembered by absolute path, so processes started elsewhere find them.
        key = str(Path(name).resolve()) if is_file else name
        if key in IMPORTED:
            continue
        if is_file:
            path = Path(key)
            if not path.is_file():
                raise ImportError(f"--import {name}: no such file")
            spec = importlib.util.spec_from_file_location(f"mldd_user_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"--import {name}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ImportError(f"--import {name}: {exc}") from exc
        IMPORTED.append(key)
