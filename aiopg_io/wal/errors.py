"""The WAL's exceptions (under :class:`aiopg_io.errors.AiopgIOError`)."""

from __future__ import annotations

from ..errors import AiopgIOError

__all__ = ["NotAWALError", "WALCorruptError", "WALError", "WALLockedError", "WALPoisonedError"]


class WALError(AiopgIOError):
    """Base class of the WAL's own exceptions."""


class WALPoisonedError(WALError, OSError):
    """A write or sync of the WAL failed, so nothing after it can be called durable.

    Raised to every task waiting for a flush when the failure happened and by every later
    call (except ``close``). The original OSError is chained as ``__cause__`` and its errno
    is copied. The WAL must be closed and reopened: recovery then finds what really is on
    disk. (PostgreSQL PANICs for the same reason: after a failed fsync, Linux may have
    dropped the dirty pages and cleared the error, so a retry could "succeed" over lost data.)
    """


class WALLockedError(WALError, BlockingIOError):
    """Another WAL object (in this or another process) has the directory open."""


class NotAWALError(WALError, ValueError):
    """The directory holds a file that is not part of a WAL, or segments of another shape."""


class WALCorruptError(WALError, ValueError):
    """The WAL cannot be recovered without losing records that are known to exist
    (a segment missing in the middle, with valid segments after it)."""
