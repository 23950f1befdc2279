"""An op's buffers stay in place until it is reaped, on every driver, whatever the caller does
with its own views meanwhile (``Op``'s docstring): the op transfers through views of its own.

Played on a pipe, so the read stays out until the test writes: the caller releases the
memoryview it gave the op and tries to resize the bytearray under it. Before the op took
views of its own, the release dropped the one export that held the memory (the drivers
keep the op's views, which were the caller's), the resize moved the bytes, and the kernel's
read (io_uring, io_uring_c) or the thread's (worker, posix_aio) wrote into freed memory.
"""

from __future__ import annotations

import os

import pytest

from aiopg_io.drivers import Op, OpKind, driver_class
from tests._driving import wait_all


def test_an_op_keeps_its_buffers_in_place_when_the_callers_view_is_released(driver: str) -> None:
    d = driver_class(driver)()
    rfd, wfd = os.pipe()
    try:
        ba = bytearray(8)
        mv = memoryview(ba)
        op = Op(OpKind.READ, rfd, 0, (mv,))
        queued = d.capabilities.asynchronous  # the sync driver would block on the empty pipe
        if queued:
            d.submit([op])
        mv.release()  # the caller's view only
        with pytest.raises(BufferError):
            ba.extend(b"x" * 65536)  # the op's own view still exports it
        os.write(wfd, b"abcdefgh")
        if not queued:
            d.submit([op])
        wait_all(d, [op])
        assert (op.result, op.error, ba) == (8, None, bytearray(b"abcdefgh"))
        del op
        ba.extend(b"!")  # reaped and dropped: nothing holds it any more
        assert ba == b"abcdefgh!"
    finally:
        d.close()
        os.close(rfd)
        os.close(wfd)
