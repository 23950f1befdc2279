"""The write-ahead log: :class:`WAL`, the facade over its parts (PostgreSQL's xlog.c).

A WAL object is one :class:`~._xlogctl.XLogCtl` (the shared state: positions, the WAL
buffers, identity, status) and the parts that move it, one job each:

- :mod:`._insert` — insertion (``XLogInsert``): ``append`` copies a record into the WAL
  buffers, a ring of :data:`~._format.PAGE_SIZE` pages, without awaiting when it fits;
  a record that does not fit is copied page by page under the insert lock.
- :mod:`._flush` — writing and group commit (``XLogWrite``/``XLogFlush``): one writer at a
  time, committers parked in LSN order, ``sync_method``, and poisoning on a failed write
  or sync (``data_sync_retry = off``).
- :mod:`._segments` — the segments' lifecycle: made before the first write into them and
  ahead in the background, recycled or removed by ``truncate_before``, each step durable.
- :mod:`._recovery` — opening (``StartupXLOG``): the segments checked against
  ``wal.control`` (:mod:`._control`), the end of the log found and stamped with a new epoch.
- :mod:`._reader` — ``read``: the durable records, with read-ahead, and how the log ended.

The on-disk format (pages, records, the decoder) is :mod:`._format`. This module checks
the arguments, wires the parts together, and keeps the public API: every method of
:class:`WAL` states its contract here; the module of its part says how it is kept.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from aiopg_io._checks import exact_int
from aiopg_io._paths import make_directories
from aiopg_io.drivers import DriverFactory

from ._flush import SYNC_METHODS, SyncMethod, XLogFlush
from ._format import HARD_MAX_RECORD, PAGE_SIZE
from ._insert import XLogInsert
from ._reader import WALReader, read_records
from ._recovery import WALRecovery, recover
from ._segments import DirectoryLock, WALSegments
from ._xlogctl import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, XLogCtl
from .errors import NotAWALError

__all__ = ["WAL", "WALStatistics"]

DEFAULT_WAL_BUFFERS = 4 * 1024 * 1024
#: The most ``wal_buffers`` may ask for: PostgreSQL's own bound on its ``wal_buffers`` setting,
#: ``INT_MAX / XLOG_BLCKSZ`` pages (guc_tables.c), so 262143 pages of 8 KiB (2 GiB less 8 KiB).
#: A ring past it gains nothing (a ring of a few segments already lets every writer run
#: ahead of the flush), and a number past the address space used to reach ``mmap`` as a bare
#: ENOMEM naming neither the argument nor a limit.
MAX_WAL_BUFFERS = (2**31 - 1) // PAGE_SIZE * PAGE_SIZE
DEFAULT_MAX_RECORD_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WALStatistics:
    """A snapshot of a WAL's counters. ``syncs`` counts sync system calls (and, for
    ``o_dsync``, durable writes); ``commits / syncs`` is the group-commit factor."""

    records: int
    bytes_appended: int
    commits: int
    flush_rounds: int
    writes: int
    syncs: int
    flush_waits: int
    backpressure_waits: int
    segments_created: int
    segments_recycled: int
    segments_removed: int
    insert_lsn: int
    flushed_lsn: int
    oldest_lsn: int
    epoch: int
    poisoned: bool


class _OpenCall:
    """What :meth:`WAL.open` returns: await it, or use it as an async context manager."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = kwargs
        self._wal: WAL | None = None

    def __await__(self) -> Generator[Any, None, WAL]:
        return WAL._open(**self._kwargs).__await__()

    async def __aenter__(self) -> WAL:
        self._wal = await WAL._open(**self._kwargs)
        return await self._wal.__aenter__()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._wal is not None
        await self._wal.__aexit__(et, e, tb)


class WAL:
    """A write-ahead log in one directory. Create with :meth:`open`; see the module docstring."""

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_size: int | None = None,
        sync_method: SyncMethod = "fdatasync",
        direct: bool = False,
        driver: str | DriverFactory | None = None,
        wal_buffers: int = DEFAULT_WAL_BUFFERS,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        segments_ahead: int = 1,
        init_zero: bool = True,
    ) -> _OpenCall:
        """Open (creating or recovering) the WAL in ``directory``. A missing ``directory`` is
        made, with its missing parents, each new entry made durable (its parent fsynced)
        before the first commit can be acknowledged.

        ``segment_size``: bytes per segment file, a multiple of 8192 from 32 KiB to 4 GiB less
        8 KiB (default 16 MiB for a new WAL; an existing WAL keeps its own, and a different
        explicit value is an error).
        ``wal_buffers``: bytes of WAL buffers (rounded up to whole 8 KiB pages, at least 2, at
        most 2 GiB less 8 KiB: PostgreSQL's bound on its wal_buffers, else ValueError).
        ``max_record_size``: the largest payload ``append`` accepts. ``segments_ahead``:
        segments kept ready beyond the current one. ``init_zero``: zero-fill new segments.

        Await the result (then ``await wal.close()``, or ``async with wal``), or use it
        directly as ``async with WAL.open(...) as wal``. Background preallocation runs only
        while the WAL is entered with ``async with``; otherwise segments are made when first
        needed.
        """
        return _OpenCall(
            dict(
                directory=directory,
                segment_size=segment_size,
                sync_method=sync_method,
                direct=direct,
                driver=driver,
                wal_buffers=wal_buffers,
                max_record_size=max_record_size,
                segments_ahead=segments_ahead,
                init_zero=init_zero,
            )
        )

    @classmethod
    async def _open(
        cls,
        *,
        directory: str | os.PathLike[str],
        segment_size: int | None,
        sync_method: SyncMethod,
        direct: bool,
        driver: str | DriverFactory | None,
        wal_buffers: int,
        max_record_size: int,
        segments_ahead: int,
        init_zero: bool,
    ) -> WAL:
        if sync_method not in SYNC_METHODS:
            raise ValueError(f"sync_method {sync_method!r} is not one of {', '.join(SYNC_METHODS)}")
        if segment_size is not None:
            exact_int("segment_size", segment_size, MIN_SEGMENT_SIZE)
            if segment_size % PAGE_SIZE:
                raise ValueError(
                    f"segment_size {segment_size} is not a multiple of the page size {PAGE_SIZE}"
                )
            if segment_size > MAX_SEGMENT_SIZE:  # else a struct.error from deep in the first write
                raise ValueError(
                    f"segment_size {segment_size} is over the format's limit {MAX_SEGMENT_SIZE} "
                    "(a 32-bit field, as PostgreSQL's xlp_seg_size)"
                )
        exact_int("wal_buffers", wal_buffers, 1)
        if wal_buffers > MAX_WAL_BUFFERS:
            raise ValueError(
                f"wal_buffers {wal_buffers} is over the limit {MAX_WAL_BUFFERS} "
                f"({MAX_WAL_BUFFERS // PAGE_SIZE} pages of {PAGE_SIZE} bytes: "
                "PostgreSQL's bound on wal_buffers)"
            )
        exact_int("max_record_size", max_record_size, 0)
        if max_record_size > HARD_MAX_RECORD:
            raise ValueError(
                f"max_record_size {max_record_size} is over the format's limit {HARD_MAX_RECORD}"
            )
        exact_int("segments_ahead", segments_ahead, 0)
        path = os.fspath(directory)
        if not os.path.isdir(path):
            if os.path.exists(path):
                raise NotAWALError(f"{path!r} is not a directory; a WAL lives in a directory of its own")
            await make_directories(path, driver)  # each new entry durable, through the op layer
        wal = cls(
            path,
            sync_method=sync_method,
            direct=direct,
            driver=driver,
            wal_buffers=wal_buffers,
            max_record_size=max_record_size,
            segments_ahead=segments_ahead,
            init_zero=init_zero,
        )
        try:
            await recover(wal._ctl, wal._segments, wal._flush, wal._insert, segment_size)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await wal._release()
            raise
        return wal

    def __init__(
        self,
        directory: str,
        *,
        sync_method: SyncMethod,
        direct: bool,
        driver: str | DriverFactory | None,
        wal_buffers: int,
        max_record_size: int,
        segments_ahead: int,
        init_zero: bool,
    ) -> None:
        self.directory = directory
        self.direct = direct
        self.driver = driver
        self._lock = DirectoryLock(directory)
        self._ctl = ctl = XLogCtl(directory, direct=direct, driver=driver, wal_buffers=wal_buffers)
        self._segments = WALSegments(ctl, init_zero=init_zero, segments_ahead=segments_ahead)
        self._flush = XLogFlush(ctl, self._segments, sync_method=sync_method)
        self._insert = XLogInsert(ctl, max_record_size=max_record_size, make_room=self._flush.make_room)
        self._tg: anyio.abc.TaskGroup | None = None
        self._n_commits = 0

    def __repr__(self) -> str:
        ctl = self._ctl
        state = "closed" if ctl.closed else "poisoned" if ctl.poison else "open"
        return (
            f"<aiopg_io.wal.WAL {self.directory!r} {state} insert={ctl.insert_end:#x} "
            f"flushed={ctl.flushed:#x} sync_method={self.sync_method}>"
        )

    # -- public state -------------------------------------------------------------------------

    @property
    def segment_size(self) -> int:
        return self._ctl.segment_size

    # The settings live in the part that uses them; read-only here, so the facade can never
    # report a value the part does not act on.
    @property
    def sync_method(self) -> SyncMethod:
        return self._flush.sync_method

    @property
    def max_record_size(self) -> int:
        return self._insert.max_record_size

    @property
    def segments_ahead(self) -> int:
        return self._segments.segments_ahead

    @property
    def init_zero(self) -> bool:
        return self._segments.init_zero

    @property
    def insert_lsn(self) -> int:
        """Where the next record goes (the end of the last one appended)."""
        return self._ctl.insert_end

    @property
    def flushed_lsn(self) -> int:
        """Every record starting below this LSN is durable."""
        return self._ctl.flushed

    @property
    def last_lsn(self) -> int | None:
        """The LSN of the last record appended (or recovered); None for an empty WAL."""
        return self._ctl.prev_lsn or None

    @property
    def oldest_lsn(self) -> int:
        """Where the oldest remaining segment starts (records below it were truncated)."""
        return self._ctl.oldest

    @property
    def recovery(self) -> WALRecovery:
        """What recovery found when this WAL was opened: how the log ended (CLEAN, or TORN
        at an LSN: the torn tail was cut there), its records, the leftovers it removed."""
        assert self._ctl.recovery is not None
        return self._ctl.recovery

    @property
    def closed(self) -> bool:
        return self._ctl.closed

    @property
    def poisoned(self) -> bool:
        return self._ctl.poison is not None

    def statistics(self) -> WALStatistics:
        ctl, ins, fl, segs = self._ctl, self._insert, self._flush, self._segments
        return WALStatistics(
            records=ins.records,
            bytes_appended=ins.bytes,
            commits=self._n_commits,
            flush_rounds=fl.rounds,
            writes=fl.writes,
            syncs=fl.syncs,
            flush_waits=fl.flush_waits,
            backpressure_waits=fl.backpressure_waits,
            segments_created=segs.created,
            segments_recycled=segs.recycled,
            segments_removed=segs.removed,
            insert_lsn=ctl.insert_end,
            flushed_lsn=ctl.flushed,
            oldest_lsn=ctl.oldest,
            epoch=ctl.epoch,
            poisoned=ctl.poison is not None,
        )

    def _check_lsn(self, lsn: object) -> int:
        """``lsn`` as an LSN at or below :attr:`insert_lsn` (a TypeError or ValueError else)."""
        if isinstance(lsn, bool) or not isinstance(lsn, int):
            raise TypeError(f"lsn must be an int, not {type(lsn).__name__}")
        if lsn < 0 or lsn > self._ctl.insert_end:
            raise ValueError(f"LSN {lsn:#x} is beyond the end of the WAL ({self._ctl.insert_end:#x})")
        return lsn

    # -- appending and flushing ---------------------------------------------------------------

    async def append(self, data: object) -> int:
        """Copy ``data`` (any bytes-like object, empty too) into the WAL buffers; return its LSN.

        Not durable yet: see :meth:`flush`. Waits only when the buffers are full, while a
        write goes out. ``data`` must stay unchanged until the call returns.
        """
        placed = self._insert.place(data)
        if isinstance(placed, memoryview):
            placed = await self._insert.insert_slow(placed)
        return placed[0]

    async def flush(self, lsn: int | None = None) -> None:
        """Return once the record at ``lsn`` (default: every record appended so far) and all
        before it are durable."""
        ctl = self._ctl
        ctl.check_usable()
        if lsn is not None and self._check_lsn(lsn) < ctl.flushed:
            return
        await self._flush.flush_to(ctl.insert_end)

    async def commit(self, data: object) -> int:
        """Append ``data`` and return its LSN once it is durable (group commit)."""
        placed = self._insert.place(data)
        if isinstance(placed, memoryview):
            placed = await self._insert.insert_slow(placed)
        lsn, end = placed
        self._n_commits += 1
        ctl = self._ctl
        if ctl.flushed < end:
            # flush_to(end), its first pass done here: one coroutine less per commit, whether
            # it parks behind the round that is out (group commit) or leads one (a lone commit).
            fl = self._flush
            item = fl.park_behind(end)
            if item is None:
                await fl.lead_round()
            else:
                while True:
                    try:
                        await item[1].wait()
                        break
                    except BaseException as exc:
                        if not fl.rewait(item, exc):
                            fl.abandon_wait(item)
                            raise
                fl.woken(item, end)
            if ctl.flushed < end:
                await fl.flush_to(end)
        return lsn

    # -- background preallocation -----------------------------------------------------------

    async def __aenter__(self) -> WAL:
        self._ctl.check_usable()
        if self._tg is None and self.segments_ahead:
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            self._segments.start_preallocating()
            tg.start_soon(self._segments.preallocate)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.close()
        finally:
            tg, self._tg = self._tg, None
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)

    # -- truncation ---------------------------------------------------------------------------

    async def truncate_before(self, lsn: int) -> int:
        """Drop the segments that hold only records before ``lsn`` (and before the durable
        end): recycled as future segments while fewer than ``segments_ahead`` are ready,
        removed otherwise. Returns how many segments went.

        Each step is durable before the next (module docstring), so a crash at any point
        leaves a log that opens with every record from ``lsn`` on. Runs to the end when
        cancelled. A failed write, sync, rename or unlink poisons the WAL: reopen it, and
        recovery finishes the job."""
        self._ctl.check_usable()
        return await self._segments.truncate_before(self._check_lsn(lsn))

    # -- closing ------------------------------------------------------------------------------

    async def close(self, *, flush: bool = True) -> None:
        """Flush what was appended, then release files, buffers and the directory lock.

        ``flush=False`` releases at once: records not durable yet may be lost, as in a crash
        (the next open recovers). Runs to the end even when cancelled. On a poisoned WAL it
        flushes nothing and raises nothing: it only releases.
        """
        ctl = self._ctl
        if ctl.closed:
            return
        with anyio.CancelScope(shield=True):
            try:
                if flush and ctl.poison is None and ctl.insert_end > ctl.flushed:
                    await self._flush.flush_to(ctl.insert_end)
            finally:
                await self._release()
        await anyio.lowlevel.checkpoint_if_cancelled()

    async def aclose(self) -> None:
        await self.close()

    async def _release(self) -> None:
        self._ctl.closed = True
        self._segments.want_ahead()  # the preallocator sees closed and returns
        self._flush.wake_all()
        self._insert.lock.wake_all()
        try:
            await self._flush.close_file()
        finally:
            self._lock.release()

    # -- reading ------------------------------------------------------------------------------

    def read(self, start: int | None = None) -> WALReader:
        """Yield ``(lsn, payload)`` for every durable record from ``start`` (default: the
        oldest kept). ``start`` must be the LSN of a record (or :attr:`insert_lsn`).

        The returned :class:`WALReader` tells, in :attr:`WALReader.end` once the iteration
        has finished, how the log it read ended."""
        ctl = self._ctl
        ctl.check_usable()
        if start is not None:
            if isinstance(start, bool) or not isinstance(start, int):
                raise TypeError(f"start must be an int LSN, not {type(start).__name__}")
            if start < ctl.oldest:
                raise ValueError(
                    f"LSN {start:#x} is before the oldest segment kept ({ctl.oldest:#x}); "
                    "it was removed by truncate_before"
                )
            if start > ctl.insert_end:
                raise ValueError(f"LSN {start:#x} is beyond the end of the WAL ({ctl.insert_end:#x})")
        return WALReader(self, start)

    def _read(self, start: int | None, reader: WALReader) -> AsyncGenerator[tuple[int, bytes], None]:
        return read_records(self._ctl, self._segments, start, reader)
