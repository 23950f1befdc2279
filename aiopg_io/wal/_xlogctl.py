"""The state every part of the WAL reads: positions, the WAL buffers, identity, status.

PostgreSQL keeps this in shared memory as ``XLogCtlData`` (src/backend/access/transam/xlog.c):
the insert position, ``LogwrtResult`` (how far the log is written and flushed), the WAL buffer
pages and their size. Here one :class:`XLogCtl` per WAL object holds the same, and the parts
(:mod:`._insert`, :mod:`._flush`, :mod:`._segments`, :mod:`._recovery`, :mod:`._reader`) each
read it and move only what they own:

- ``insert_pos`` / ``insert_end`` / ``prev_lsn``: moved by insertion (:mod:`._insert`);
- ``write_pos`` / ``flushed`` / ``write_segno``: moved by the writer (:mod:`._flush`);
- ``oldest`` and ``control``: moved by truncation (:mod:`._segments`);
- ``segment_size``, ``sysid``, ``epoch``, ``recovery``, ``recovered_to``: set once, by
  recovery at open (:mod:`._recovery`).

LSNs are byte positions (:mod:`._format`); the page for LSN ``p`` lives in ring slot
``(p // PAGE_SIZE) % nbuffers``, so the ring holds at most ``ring_size`` bytes not written yet.

**Poisoning** (PostgreSQL's ``data_sync_retry = off``): a failed write, sync, rename or
unlink records its OSError here (:meth:`XLogCtl.poison_with`); from then on every call raises
WALPoisonedError chaining it, and ``flushed`` never moves again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aiopg_io._direct import aligned_buffer
from aiopg_io.drivers import DriverFactory
from aiopg_io.errors import ClosedError

from ._control import ControlData
from ._format import PAGE_SIZE, align_up, segment_name
from .errors import WALPoisonedError

if TYPE_CHECKING:
    from ._recovery import WALRecovery

__all__ = ["DEFAULT_SEGMENT_SIZE", "MAX_SEGMENT_SIZE", "MIN_SEGMENT_SIZE", "XLogCtl"]

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
MIN_SEGMENT_SIZE = 4 * PAGE_SIZE
#: The largest segment size: the control file and a segment's long page header hold it in 32
#: bits (as PostgreSQL's ``xlp_seg_size``), so the largest whole number of pages under 2**32.
MAX_SEGMENT_SIZE = 2**32 - PAGE_SIZE


class XLogCtl:
    """The shared state of one WAL object (module docstring)."""

    def __init__(
        self, directory: str, *, direct: bool, driver: str | DriverFactory | None, wal_buffers: int
    ) -> None:
        self.directory = directory
        self.direct = direct
        self.driver = driver
        self.segment_size = DEFAULT_SEGMENT_SIZE
        nbuf = max(2, align_up(wal_buffers, PAGE_SIZE) // PAGE_SIZE)
        self.ring_size = nbuf * PAGE_SIZE
        self.ring = aligned_buffer(self.ring_size)
        self.sysid = 0
        self.epoch = 0
        self.control: ControlData | None = None
        self.recovery: WALRecovery | None = None
        self.recovered_to = 0  # the durable end right after recovery
        # Positions in the LSN space (see the module docstring of _format).
        self.insert_pos = 0  # the next byte to fill (at a page boundary: its header is not laid yet)
        self.insert_end = 0  # the end of the last complete record
        self.prev_lsn = 0  # the LSN of the last record (0: none)
        self.write_pos = 0  # bytes below went to the kernel
        self.flushed = 0  # bytes below are durable (always a record boundary)
        self.oldest = 0  # where the oldest segment starts
        self.write_segno = -1  # the segment the writer has open (-1: none)
        self.poison: OSError | None = None
        self.closed = False

    def segment_path(self, segno: int) -> str:
        return os.path.join(self.directory, segment_name(segno))

    def current_segno(self) -> int:
        """The segment being written or filled: the newest the log needs."""
        return max(self.write_segno, self.insert_pos // self.segment_size)

    def check_usable(self) -> None:
        if self.closed:
            raise ClosedError(f"the WAL in {self.directory!r} is closed")
        if self.poison is not None:
            raise self.poisoned_error()

    def poisoned_error(self) -> WALPoisonedError:
        cause = self.poison
        assert cause is not None
        err = WALPoisonedError(
            cause.errno or 0,
            f"the WAL in {self.directory!r} is poisoned: a write or sync failed ({cause}); records after "
            f"LSN {self.flushed:#x} are not durable and no more will be acknowledged. Close the WAL and "
            "reopen it: recovery finds what reached the disk",
        )
        err.__cause__ = cause
        return err

    def poison_with(self, exc: OSError) -> None:
        if self.poison is None:
            self.poison = exc

    def poisoned_by(self, exc: OSError) -> WALPoisonedError:
        """Poison the WAL with ``exc`` and return the error to raise (``from exc``)."""
        self.poison_with(exc)
        return self.poisoned_error()
