"""Helpers shared by the tests of aiopg_io.testing: driving a driver without an event loop."""

from __future__ import annotations

import os
from collections.abc import Sequence

from aiopg_io.drivers import Driver, Op, OpKind

from .._driving import wait_all


def run(driver: Driver, ops: Sequence[Op], timeout: float = 10.0) -> list[Op]:
    """Submit ``ops`` and reap until every one is back (blocking; for driver-level tests)."""
    driver.submit(ops)
    return wait_all(driver, ops, timeout)


def write(fd: int, data: bytes, offset: int, path: str | None = None) -> Op:
    return Op(OpKind.WRITE, fd, offset, (memoryview(data),), path=path)


def read(fd: int, n: int, offset: int, path: str | None = None) -> Op:
    buf = bytearray(n)
    return Op(OpKind.READ, fd, offset, (memoryview(buf),), path=path, keepalive=buf)


def sync(fd: int, path: str | None = None, kind: OpKind = OpKind.FDATASYNC) -> Op:
    return Op(kind, fd, path=path)


def fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))
