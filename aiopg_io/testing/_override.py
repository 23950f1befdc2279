"""The default-driver override that :func:`aiopg_io.testing.inject` and
:func:`aiopg_io.testing.default_driver` set for the code running inside them.

It is a :class:`contextvars.ContextVar`, so it follows the task that set it (and the tasks it
starts) on asyncio and trio alike, and two tests running in one process never see each
other's override. :func:`aiopg_io.drivers.resolve` consults it first when it is given no
driver, through ``sys.modules`` rather than an import (a process that never imports
``aiopg_io.testing`` pays one dictionary look-up, and the drivers package does not depend on
this one); :func:`hook_installed` checks that it does.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..drivers import Driver, DriverFactory

__all__ = ["current", "default_driver", "hook_installed"]

_override: contextvars.ContextVar[DriverFactory | None] = contextvars.ContextVar(
    "aiopg_io_driver_override", default=None
)

F = TypeVar("F", bound="DriverFactory")


def current() -> DriverFactory | None:
    """The driver factory files opened without ``driver=`` use here, or None."""
    return _override.get()


@contextlib.contextmanager
def default_driver(factory: F) -> Iterator[F]:
    """Within the block, ``aiopg_io.open(...)`` (and anything else that resolves a driver
    without being given one: the WAL, the buffer pool) uses ``factory``.

    An explicit ``driver=`` argument still wins. Blocks nest; the innermost wins. The
    override belongs to the current context (task), as a :class:`contextvars.ContextVar`.
    """
    token = _override.set(factory)
    try:
        yield factory
    finally:
        _override.reset(token)


def hook_installed() -> bool:
    """Whether :func:`aiopg_io.drivers.resolve` consults the override (see the module doc)."""
    from ..drivers import resolve

    sentinel: DriverFactory = _Probe()
    with default_driver(sentinel):
        try:
            return resolve(None) is sentinel
        except Exception:
            return False


class _Probe:
    @property
    def key(self) -> object:
        return self

    @property
    def name(self) -> str:
        return "probe"

    def create(self) -> Driver:  # pragma: no cover - never called
        raise AssertionError("the override probe makes no driver")
