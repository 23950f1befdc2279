"""The compiled modules (C extensions built by setup.py), loaded in one place: the drivers'
ring, the loop glue's wakers and the WAL's record writer (drivers are the lowest layer, so it
lives here; the WAL imports this loader and nothing else of ``aiopg_io.drivers``).

Each has a pure-Python twin that runs where the extension did not build (no C compiler) or
is refused here: ``AIOPG_IO_PURE=1`` forces every twin, for differential runs and for
debugging, and ``python -m aiopg_io info`` reports which path runs and why.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = ["PURE_REASON", "load"]

PURE_REASON = "AIOPG_IO_PURE=1 forces the pure-Python path"


def load(name: str) -> tuple[Any, str | None]:
    """The extension module ``name`` and None, or None and why it is not used here."""
    if os.environ.get("AIOPG_IO_PURE", "").strip().lower() in ("1", "true", "yes", "on"):
        return None, PURE_REASON
    try:
        return importlib.import_module(name), None
    except ImportError as exc:
        return None, (
            f"the C extension {name} is not built ({exc}); reinstall with a C compiler "
            "(pip install -e .) to build it"
        )
