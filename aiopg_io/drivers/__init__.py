"""The I/O methods and the one place that chooses between them.

Drivers are imported lazily by name (anyio's backends are too), so a driver whose module
needs something this machine lacks (liburing, kqueue) costs nothing until it is asked for,
and asking for it yields a reason instead of an ImportError.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from ..errors import DriverOptionError, DriverUnavailableError
from .base import Capabilities as Capabilities
from .base import Driver as Driver
from .base import DriverStatistics as DriverStatistics
from .base import Op as Op
from .base import OpKind as OpKind
from .base import OpState as OpState

__all__ = [
    "DRIVER_NAMES",
    "Capabilities",
    "Driver",
    "DriverFactory",
    "DriverSpec",
    "DriverStatistics",
    "Op",
    "OpKind",
    "OpState",
    "auto_order",
    "default_driver",
    "driver_class",
    "driver_options",
    "resolve",
    "unavailable_reason",
]

# name -> (module, class). The order is the order `info` prints them in.
_REGISTRY: dict[str, tuple[str, str]] = {
    "io_uring": ("aiopg_io.drivers.io_uring", "IoUringDriver"),
    # The io_uring driver on the C ring: what auto picks first where it runs (auto_order).
    "io_uring_c": ("aiopg_io.drivers.io_uring_c", "IoUringCDriver"),
    "posix_aio": ("aiopg_io.drivers.posix_aio", "PosixAioDriver"),
    "worker": ("aiopg_io.drivers.worker", "WorkerDriver"),
    "sync": ("aiopg_io.drivers.sync", "SyncDriver"),
}
DRIVER_NAMES = tuple(_REGISTRY)


def auto_order() -> tuple[str, ...]:
    """The drivers ``auto`` tries, best first. The only platform choice in the package.

    On Linux, ``io_uring_c`` (the io_uring driver on the C ring) first: it runs wherever its
    extension loads and the kernel has io_uring, and it beats the pure driver on every loop
    for the CPU it spends per op (docs/benchmarks.md, "The file calls' ring path in C").
    Where it cannot run, the pure ``io_uring`` driver: the extension did not build or load,
    or ``AIOPG_IO_PURE=1`` refused it (drivers/_compiled.py; ``unavailable_reason`` says
    which). glibc's POSIX AIO is itself a thread pool, slower than ``worker``; FreeBSD's is
    kernel AIO, better than threads. ``sync`` blocks the loop and is never chosen.
    """
    if sys.platform.startswith("linux"):
        return ("io_uring_c", "io_uring", "worker")
    if sys.platform.startswith("freebsd"):
        return ("posix_aio", "worker")
    return ("worker",)


def driver_class(name: str) -> type[Driver]:
    """The class of a registered driver, or DriverUnavailableError for an unknown name."""
    try:
        module, cls = _REGISTRY[name]
    except KeyError:
        raise DriverUnavailableError(
            f"unknown driver {name!r}: the drivers are {', '.join(DRIVER_NAMES)} (or 'auto'); "
            f"available here: {', '.join(_available()) or 'none'}"
        ) from None
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise DriverUnavailableError(f"driver {name!r} cannot be imported: {exc}") from exc
    result: type[Driver] = getattr(mod, cls)
    return result


_reasons: dict[tuple[str, bool], str | None] = {}
if hasattr(os, "register_at_fork"):
    # A fork child asks anew: posix_aio cannot run in the child of a process that used it
    # on glibc (posix_aio/_libc.py says why).
    os.register_at_fork(after_in_child=_reasons.clear)


def unavailable_reason(name: str, *, direct: bool = False) -> str | None:
    """Why driver ``name`` cannot run here, or None; computed once per process (and once
    more in a fork child)."""
    key = (name, direct)
    if key not in _reasons:
        try:
            cls = driver_class(name)
        except DriverUnavailableError as exc:
            _reasons[key] = str(exc)
        else:
            _reasons[key] = cls.unavailable_reason(direct=direct)
    return _reasons[key]


def _available() -> list[str]:
    return [n for n in DRIVER_NAMES if n in _REGISTRY and _safe_reason(n) is None]


def _safe_reason(name: str) -> str | None:
    try:
        return unavailable_reason(name)
    except Exception as exc:  # a probe that crashes is a reason, not a crash of `info`
        return f"probe failed: {exc!r}"


@runtime_checkable
class DriverFactory(Protocol):
    """Anything that makes drivers: a :class:`DriverSpec`, or a wrapper such as the
    fault injector in :mod:`aiopg_io.testing`. ``key`` identifies the IOContext it shares."""

    @property
    def key(self) -> object: ...

    @property
    def name(self) -> str: ...

    def create(self) -> Driver: ...


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """A driver name with constructor options, e.g. ``DriverSpec("worker", (("threads", 4),))``.

    Parsed from strings as ``"worker"`` or ``"worker:threads=4"`` (the form
    ``AIOPG_IO_DRIVER`` takes). Hashable: files opened with equal specs on one event loop
    share one IOContext.
    """

    name: str
    options: tuple[tuple[str, int | str], ...] = ()

    @property
    def key(self) -> object:
        return self

    @classmethod
    def parse(cls, text: str) -> DriverSpec:
        name, _, rest = text.strip().partition(":")
        options: list[tuple[str, int | str]] = []
        for item in filter(None, rest.split(",")):
            k, eq, v = item.partition("=")
            if not eq:
                raise ValueError(f"driver option {item!r} in {text!r} is not key=value")
            options.append((k.strip(), int(v) if v.strip().lstrip("-").isdigit() else v.strip()))
        return cls(name, tuple(options))

    def create(self) -> Driver:
        cls = driver_class(self.name)
        reason = unavailable_reason(self.name)
        if reason is not None:
            raise DriverUnavailableError(
                f"driver {self.name!r} cannot run here: {reason}; "
                f"available here: {', '.join(_available()) or 'none'}"
            )
        from ._fallback import with_thread_fallback  # imports the worker driver: lazily

        # Kinds the driver does not run itself go to threads (posix_aio's path ops).
        return with_thread_fallback(cls(**dict(self.options)))


@functools.cache
def driver_options(name: str) -> tuple[str, ...]:
    """The options driver ``name`` takes (its constructor's keyword-only arguments)."""
    init = driver_class(name).__init__
    return tuple(p.name for p in inspect.signature(init).parameters.values() if p.kind is p.KEYWORD_ONLY)


def _checked(spec: DriverSpec, text: str) -> DriverSpec:
    """``spec``, once each option is one its driver takes (values are checked when it is made)."""
    known = driver_options(spec.name)
    for key, _ in spec.options:
        if key not in known:
            raise DriverOptionError(
                f"driver {spec.name!r} has no option {key!r} (in {text!r}); "
                f"it takes: {', '.join(known) or 'no options'}"
            )
    return spec


_override: contextvars.ContextVar[DriverFactory | None] = contextvars.ContextVar(
    "aiopg_io_default_driver", default=None
)

F = TypeVar("F", bound=DriverFactory)


@contextlib.contextmanager
def default_driver(factory: F) -> Iterator[F]:
    """Within the block, ``aiopg_io.open(...)`` (and anything else that resolves a driver
    without being given one: the WAL, the buffer pool) uses ``factory``.

    An explicit ``driver=`` argument still wins. Blocks nest; the innermost wins. The
    override belongs to the current context (task), as a :class:`contextvars.ContextVar`
    does: it follows the task that set it, and the tasks it starts, on asyncio and trio
    alike. This is how :mod:`aiopg_io.testing` slips its fault injector and power-loss
    simulator under code that opens its own files.
    """
    token = _override.set(factory)
    try:
        yield factory
    finally:
        _override.reset(token)


def resolve(driver: str | DriverFactory | None, *, direct: bool = False) -> DriverFactory:
    """Pick the driver for a file: the argument, else the :func:`default_driver` in force
    (which :func:`aiopg_io.testing.inject` sets), else ``AIOPG_IO_DRIVER``, else ``auto``.

    ``auto`` takes the first of :func:`auto_order` that runs here (for ``direct=True``,
    that also runs direct I/O). A name that is unknown or cannot run raises
    DriverUnavailableError naming the drivers that can, and why this one cannot.
    """
    if driver is None:
        override = _override.get()
        if override is not None:
            return override
        driver = os.environ.get("AIOPG_IO_DRIVER") or "auto"
    if not isinstance(driver, str):
        if isinstance(driver, DriverFactory):
            return driver
        raise TypeError(f"driver must be a name or a DriverFactory, not {type(driver).__name__}")
    spec = DriverSpec.parse(driver)
    if spec.name == "auto":
        for name in auto_order():
            if unavailable_reason(name, direct=direct) is None:
                return _checked(DriverSpec(name, spec.options), driver)
        raise DriverUnavailableError(
            "no driver can run here: "
            + "; ".join(f"{n}: {unavailable_reason(n, direct=direct)}" for n in auto_order())
        )
    driver_class(spec.name)  # unknown names fail here, with the list
    reason = unavailable_reason(spec.name, direct=direct)
    if reason is not None:
        raise DriverUnavailableError(
            f"driver {spec.name!r} cannot run here: {reason}; "
            f"available here: {', '.join(_available()) or 'none'}"
        )
    return _checked(spec, driver)
