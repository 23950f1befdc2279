"""The WAL's exceptions (under :class:`aiopg_io.errors.AiopgIOError`)."""

from __future__ import annotations

from ..errors import AiopgIOError

__all__ = [
    "NotAWALError",
    "WALCorruptError",
    "WALError",
    "WALFormatError",
    "WALLockedError",
    "WALPoisonedError",
]


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


class WALFormatError(NotAWALError):
    """The directory holds a WAL in an on-disk format this version does not read (the
    format is described in :mod:`aiopg_io.wal._format`; the message names the version)."""


class WALCorruptError(WALError, ValueError):
    """The WAL cannot be recovered or read without losing records that are known to exist:
    a segment missing, empty, zeroed, damaged or belonging to another WAL, with records of
    this WAL after it; or a control file that cannot be read.

    ``segment`` is the name of the segment file at fault (None when the fault is not in one
    segment) and ``lsn`` the position where the log breaks, when known.
    """

    def __init__(self, message: str, *, segment: str | None = None, lsn: int | None = None) -> None:
        super().__init__(message)
        self.segment = segment
        self.lsn = lsn
