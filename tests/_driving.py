"""Driving a driver in driver-level tests: one way to wait for ops without an event loop, the
ops several driver tests build, and a factory that hands an IOContext a driver built for the
scenario."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from aiopg_io.drivers import Driver, Op, OpKind, OpState

D = TypeVar("D", bound=Driver)


def wait_all(driver: Driver, ops: Sequence[Op], timeout: float = 20.0) -> list[Op]:
    """Reap until every op in ``ops`` came back, waiting on the completion fd as a loop
    would (a driver that is not asynchronous is reaped at once, as the IOContext does); the
    ops reaped meanwhile, in the order they came. Fails after ``timeout`` seconds.
    ``driver.submit`` is the caller's."""
    # The caller holds ops, so their ids stay theirs; one reaped already never comes again.
    want = {id(op) for op in ops if op.state is not OpState.REAPED}
    got: list[Op] = []
    deadline = time.monotonic() + timeout
    fd = driver.fileno() if driver.capabilities.asynchronous else None
    while want:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(want)} ops did not complete within {timeout} s; {driver.statistics()}"
        if fd is not None:
            select.select([fd], [], [], min(left, 1.0))
        for op in driver.reap():
            assert op.state is OpState.REAPED
            want.discard(id(op))
            got.append(op)
    return got


def write_sync_op(fd: int, offset: int, *chunks: bytes, path: str | None = None) -> Op:
    """A linked write + sync (``OpKind.WRITE_SYNC``) of ``chunks`` at ``offset``."""
    return Op(OpKind.WRITE_SYNC, fd, offset, tuple(memoryview(c) for c in chunks), path=path)


class Factory(Generic[D]):
    """A ``DriverFactory`` whose drivers ``make`` builds, named ``name``: each factory is its
    own key, so it gets an IOContext of its own on each loop."""

    def __init__(self, make: Callable[[], D], name: str) -> None:
        self.make = make
        self.name = name

    @property
    def key(self) -> object:
        return self

    def create(self) -> D:
        return self.make()
