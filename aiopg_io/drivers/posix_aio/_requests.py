"""A request (one aiocb handed to the system) and a run (the requests of one op's round).

The driver builds them and the notifiers fill in ``result`` / ``error`` when the system
says a request is done. A request's aiocb and the buffer it points at must stay alive and
unmoved until then: the request holds both (``cb``, ``keep``).
"""

from __future__ import annotations

import ctypes
import errno

from ..base import Op

__all__ = ["Request", "Run"]


class Request:
    """One aiocb in (or queued for) the system, and what keeps its memory alive."""

    __slots__ = ("cb", "error", "fd", "in_kernel", "keep", "nbytes", "op", "result", "run")

    def __init__(self, op: Op, run: Run, cb: ctypes.Structure, nbytes: int, keep: object) -> None:
        self.op = op
        self.run = run
        self.cb = cb
        self.nbytes = nbytes
        self.keep = keep  # the ctypes view of the buffer: holds a buffer export until done
        self.fd = -1  # the fildes handed to the system (maybe a dup of op.fd)
        self.in_kernel = False
        self.result = 0
        self.error = errno.EINPROGRESS


class Run:
    """One round of an op: its requests (a split vectored op has one per piece), in file
    order. ``bounce``: a bounced read's buffer and the pieces its bytes are copied out to."""

    __slots__ = ("bounce", "outstanding", "requests")

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.outstanding = 0
        self.bounce: tuple[memoryview, list[memoryview]] | None = None
