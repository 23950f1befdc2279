"""The exceptions aiopg_io raises, under one base class.

Each also derives from the built-in a caller of ``open()``/aiofiles would already catch
(ValueError, OSError, RuntimeError), so aiopg_io is a drop-in where code catches those.
Messages name the value, the limit and, where there is one, what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AiopgIOError",
    "AlignmentError",
    "ClosedError",
    "DirectIOUnsupportedError",
    "DriverOptionError",
    "DriverUnavailableError",
    "InvalidOffsetError",
    "OpsStillHeldError",
    "SendfileError",
    "WrongLoopError",
]


class AiopgIOError(Exception):
    """Base class of every exception defined by aiopg_io."""


class DriverUnavailableError(AiopgIOError, RuntimeError):
    """The driver asked for is unknown or cannot run here; the message lists the ones that can."""


class DriverOptionError(AiopgIOError, ValueError):
    """A driver option that the driver does not take, or a value out of its range
    (``"worker:bogus=1"``, ``"worker:threads=abc"``); the message names the option, the
    value and what the driver accepts. Raised before any driver is created."""


class WrongLoopError(AiopgIOError, RuntimeError):
    """A file (or a WAL or buffer pool, through its files) used outside the event loop that
    opened it: in a later ``asyncio.run``, from another thread's loop, under another
    library's loop, or in a child after ``fork()``.

    Raised at once, before any I/O, so nothing was read or written. A file's I/O is bound
    to the loop that opened it (its completions arrive there); open the file in the loop
    that uses it. ``aclose()`` works from anywhere and always frees the fd.
    """


class AlignmentError(AiopgIOError, ValueError):
    """A buffer address, file offset or length is not aligned as direct I/O requires.

    Raised before any system call, so nothing was read or written.
    """


class DirectIOUnsupportedError(AiopgIOError, OSError):
    """The filesystem refused O_DIRECT (EINVAL from open(2)); the message names the path."""


class ClosedError(AiopgIOError, ValueError):
    """An operation on a closed file, WAL or buffer pool (a ValueError, as for Python files)."""


class OpsStillHeldError(AiopgIOError, RuntimeError):
    """A driver's ``close()`` could not get back ops the kernel holds: it refuses every way
    to cancel them (io_uring before Linux 5.5 has no ``IORING_OP_ASYNC_CANCEL``) and they
    did not end on their own within a second (a read from a pipe nobody writes to).

    Nothing is freed under the kernel: the driver, its ring and the ops' buffers are kept
    alive and released once the kernel returns the ops (when data or EOF arrives). ``held``
    are those ops; ``drained`` the ones that did end during the close (REAPED), which a
    normal ``close()`` would have returned.
    """

    def __init__(self, message: str, held: Sequence[object], drained: Sequence[object]) -> None:
        super().__init__(message)
        self.held = list(held)
        self.drained = list(drained)


class InvalidOffsetError(AiopgIOError, OSError, ValueError):
    """A negative or out-of-range file offset, size or length (EINVAL, as the kernel says).

    Both an OSError (what Python's own files raise for a negative seek) and a ValueError.
    """


class SendfileError(AiopgIOError, OSError):
    """The socket failed part-way through :func:`aiopg_io.sendfile` (the peer reset or
    closed the connection, or another socket error): an OSError with the socket's errno,
    chained from it. ``sent`` is the number of bytes that went out before it, ``method``
    the path that ran (``"sendfile"`` or ``"copy"``). Close the socket: what the peer got
    is exactly the first ``sent`` bytes of the range, but the connection is no longer
    usable."""

    def __init__(self, errno: int, message: str, sent: int, method: str) -> None:
        super().__init__(errno, message)
        self.sent = sent
        self.method = method
