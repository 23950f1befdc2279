"""The write-ahead log: insertion into WAL buffers, group commit, segments, recovery, reading.

How it works, in PostgreSQL's terms (src/backend/access/transam/xlog.c):

- **Insertion** (``XLogInsert``/``CopyXLogRecordToWAL``): ``append`` builds the record
  header (CRC over the payload) and copies header and payload into the WAL buffers, a
  ring of :data:`PAGE_SIZE` pages (``XLogCtl->pages``), laying a page header at each page
  boundary. The page for LSN ``p`` lives in slot ``(p // PAGE_SIZE) % nbuffers``. A record
  that fits the free part of the ring is copied without any await; otherwise ``append``
  copies page by page and, whenever the next page's slot still holds bytes not yet
  written, waits while a write goes out (back-pressure: memory stays bounded by
  ``wal_buffers`` whatever the record size).
- **Writing and group commit** (``XLogWrite``/``XLogFlush`` under ``WALWriteLock``): one
  task at a time is the writer. A committer whose record is not durable either becomes the
  writer — it takes *everything appended so far*, issues one write (a ``pwritev`` of at
  most two slices of the ring per segment) and one sync — or, when a write is already
  going out, parks in a heap keyed by the LSN it needs. After each round, the parked
  tasks now covered are woken in LSN order, and the lowest one still uncovered is woken
  to lead the next round, which by then has gathered every commit that arrived meanwhile.
  Before its first write a leader yields once (a zero-time ``commit_delay``) so the tasks
  the last round just woke append first and one write carries them all; commits arriving
  while the write is out are written again before the sync (up to three writes, one
  sync). The round runs shielded from cancellation: a cancelled committer does not
  abandon the I/O that others wait on. A round costs one sync plus the CPU of the commits
  it carries, so with many committers (all of them in one sync) that CPU bounds throughput
  (the figures and the command: docs/benchmarks.md, "WAL group commit").
- **sync_method** (``wal_sync_method``): ``fdatasync`` (default) and ``fsync`` sync after
  the write; ``o_dsync`` opens segments with ``O_DSYNC`` so the write itself is durable.
  With ``direct=True`` segments are also opened ``O_DIRECT`` and every write covers whole
  aligned blocks: the block holding the end of the last write is written again with the
  new bytes (PostgreSQL rewrites the partial last page the same way). Rewriting those
  bytes is safe even if torn: they are identical to what is on disk.
- **Segments**: a missing segment is created before the first write into it; with
  ``async with``, a background task keeps ``segments_ahead`` segments ready beyond the
  current one. ``truncate_before(lsn)`` renames segments wholly before ``lsn``'s segment
  to future numbers (recycling, as ``RemoveOldXlogFiles``) while fewer than
  ``segments_ahead`` are ready, and unlinks the rest. The log's new start is made durable in
  the control file first (:mod:`aiopg_io.wal._control`); then each rename or unlink is
  followed by a directory fsync, oldest segment first (:mod:`aiopg_io.wal._segments`), so a
  crash at any point leaves the log from some segment on, and recycled segments.
- **Recovery on open** (``StartupXLOG`` reading with xlogreader.c): all segments are
  fsynced (a previous process may have died with records in the page cache: they are
  part of the log only once durable, like PostgreSQL's ``SyncDataDirectory``), then read
  from the oldest, with read-ahead; decoding stops at the first invalid page or record
  (bad magic or page address, bad length, prev-link or CRC, an epoch older than the log:
  see :mod:`aiopg_io.wal._format`). The log ends there; appending resumes at that point.
  Before any new record, the page holding the end is *stamped* in two synced writes:
  first its tail is zeroed (the torn remnant is cut), then its header gets the new epoch,
  which makes the new epoch durable before any record of it exists. Stale bytes that
  survive further on (pages written but never synced before the crash) carry older
  epochs, and the decoder refuses them even where a new record lines up with them.
  Before reading, every segment's first page is checked against the control file's
  system identifier (a segment of another WAL is refused, the first one too), and segments
  older than the log's start (left by a truncation a crash cut short) are removed. A
  segment missing, empty, cut short or with no page of this WAL where the log breaks, while
  a later segment holds pages of this WAL, is refused with WALCorruptError naming it (those
  records exist; silently dropping them would lose acknowledged data). A later segment
  that the torn record itself spans into, or whose pages are older than the log's last
  page, is no such evidence: a power cut can keep the last part of a record spanning
  segments and lose an earlier one (segments are synced in order, so never more than
  that). Corruption in the middle of a whole segment ends the log there, as in PostgreSQL;
  records after it are not recoverable. What recovery found (:class:`WALRecovery`: a clean
  end, a torn tail at an LSN, or damage) is kept on :attr:`WAL.recovery`.
- **Reading** (``read``): pages are read in batches of four 256 KiB reads issued
  concurrently (a task group per batch, never across a ``yield``), so a scan keeps several
  large reads in flight. It returns the records that were durable when it started, and
  its :class:`WALReader` says how the log it read ended once the iteration is over.
- **Failure** (``data_sync_retry = off``): any failed write or sync poisons the WAL.
  Every parked task and every later call raises WALPoisonedError chaining the OSError;
  the flushed LSN never moves again, so nothing after the failure is acknowledged.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel

import aiopg_io
from aiopg_io._direct import aligned_buffer, dio_alignment
from aiopg_io._file import AsyncFile
from aiopg_io._glue import Park, current_glue
from aiopg_io._handoff import FifoLock
from aiopg_io._paths import fsync_directory
from aiopg_io.drivers import DriverFactory
from aiopg_io.errors import ClosedError

from ._control import ControlData, create_control, read_control, write_control
from ._format import (
    HARD_MAX_RECORD,
    MAXALIGN,
    PAGE_SIZE,
    RECORD_HEADER_SIZE,
    XLP_MAGIC_V1,
    Decoder,
    PageHeader,
    align_up,
    pack_page_header,
    pack_record_header,
    page_header_size,
    parse_page_header,
    segment_name,
    write_record_header,
)
from ._segments import (
    CONTROL_NAME,
    DirectoryLock,
    create_segment,
    list_segments,
    recycle_or_remove,
    remove_file,
)
from .errors import NotAWALError, WALCorruptError, WALFormatError, WALPoisonedError

__all__ = ["WAL", "SyncMethod", "WALEnd", "WALEndKind", "WALReader", "WALRecovery", "WALStatistics"]

SyncMethod = Literal["fdatasync", "o_dsync", "fsync"]
_SYNC_METHODS = ("fdatasync", "o_dsync", "fsync")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
DEFAULT_WAL_BUFFERS = 4 * 1024 * 1024
DEFAULT_MAX_RECORD_SIZE = 64 * 1024 * 1024
_READ_CHUNK = 256 * 1024
_READ_AHEAD = 4
_MIN_SEGMENT_SIZE = 4 * PAGE_SIZE
_DURABLE_END = "end of the durable WAL"
_WRITES_PER_ROUND = 3


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


class WALEndKind(enum.Enum):
    """How a log (or a read of it) ended; see :class:`WALEnd` and the guide's WAL section."""

    #: The last record is whole, and nothing of the log follows it: zeros, a page or
    #: segment never written in this history (preallocated, recycled, older than the last
    #: crash), or the durable end a reader stops at. After a clean shutdown this is the end.
    CLEAN = "clean"
    #: The bytes at ``lsn`` were meant to be a record but are not a whole, valid one (a
    #: bad CRC, length or prev-link, a continuation missing, a segment cut short): a write
    #: cut by a crash, or damage to the last records. Only records not acknowledged can be
    #: lost this way when the disk keeps its promises. Recovery cuts the log there.
    TORN = "torn"
    #: A reader met an invalid record before the durable end: records known to be durable
    #: cannot be read. :class:`~aiopg_io.wal.WALCorruptError` is raised with it.
    DAMAGED = "damaged"


@dataclass(frozen=True, slots=True)
class WALEnd:
    """Where and why a log ended: ``kind``, ``lsn`` (for CLEAN, where the next record
    goes; for TORN and DAMAGED, where the record that is not valid starts), ``segment``
    (the name of the segment file holding ``lsn``) and ``reason`` (what was found there)."""

    kind: WALEndKind
    lsn: int
    segment: str
    reason: str

    def __str__(self) -> str:
        what = {WALEndKind.CLEAN: "clean end", WALEndKind.TORN: "torn tail", WALEndKind.DAMAGED: "damage"}
        return f"{what[self.kind]} at {self.lsn:#x} in segment {self.segment}: {self.reason}"


@dataclass(frozen=True, slots=True)
class WALRecovery:
    """What recovery found when the WAL was opened (:attr:`WAL.recovery`): where the log
    ended and why, how many records it holds, and the names of the segments it removed
    as leftovers of a ``truncate_before`` cut short (older than the log's start)."""

    end: WALEnd
    records: int
    removed: tuple[str, ...] = ()


class WALReader(AsyncIterator[tuple[int, bytes]]):
    """What :meth:`WAL.read` returns: an async iterator of ``(lsn, payload)``.

    :attr:`end` is None until the iteration has finished (an iterator left early never
    sets it), then a :class:`WALEnd`: CLEAN at the durable end the read stopped at, or
    the end recovery found (:attr:`WAL.recovery`) when the read stopped there and nothing
    was made durable after it; DAMAGED when the read raised WALCorruptError.
    """

    def __init__(self, wal: WAL, start: int | None) -> None:
        self.end: WALEnd | None = None
        self._gen: AsyncGenerator[tuple[int, bytes], None] = wal._read(start, self)

    def __aiter__(self) -> WALReader:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()


def _record_view(data: object) -> memoryview:
    if isinstance(data, str):
        raise TypeError("a WAL record must be a bytes-like object, not 'str' (encode it first)")
    try:
        mv = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a WAL record must be a bytes-like object, not {type(data).__name__}") from None
    if not mv.c_contiguous:
        raise TypeError("a WAL record must be a C-contiguous buffer")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def _check_size(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} {value} is below the minimum {minimum}")
    return value


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
        """Open (creating or recovering) the WAL in ``directory``.

        ``segment_size``: bytes per segment file, a multiple of 8192 (default 16 MiB for a
        new WAL; an existing WAL keeps its own, and a different explicit value is an error).
        ``wal_buffers``: bytes of WAL buffers (rounded up to whole 8 KiB pages, at least 2).
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
        if sync_method not in _SYNC_METHODS:
            raise ValueError(f"sync_method {sync_method!r} is not one of {', '.join(_SYNC_METHODS)}")
        if segment_size is not None:
            _check_size("segment_size", segment_size, _MIN_SEGMENT_SIZE)
            if segment_size % PAGE_SIZE:
                raise ValueError(
                    f"segment_size {segment_size} is not a multiple of the page size {PAGE_SIZE}"
                )
        _check_size("wal_buffers", wal_buffers, 1)
        _check_size("max_record_size", max_record_size, 0)
        if max_record_size > HARD_MAX_RECORD:
            raise ValueError(
                f"max_record_size {max_record_size} is over the format's limit {HARD_MAX_RECORD}"
            )
        _check_size("segments_ahead", segments_ahead, 0)
        path = os.fspath(directory)
        if not os.path.isdir(path):
            if os.path.exists(path):
                raise NotAWALError(f"{path!r} is not a directory; a WAL lives in a directory of its own")
            os.makedirs(path, exist_ok=True)
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
            await wal._recover(segment_size)
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
        self.sync_method: SyncMethod = sync_method
        self.direct = direct
        self.driver = driver
        self.max_record_size = max_record_size
        self.segments_ahead = segments_ahead
        self.init_zero = init_zero
        self._lock = DirectoryLock(directory)
        self._segment_size = DEFAULT_SEGMENT_SIZE
        nbuf = max(2, align_up(wal_buffers, PAGE_SIZE) // PAGE_SIZE)
        self._ring_size = nbuf * PAGE_SIZE
        self._ring = aligned_buffer(self._ring_size)
        self._io_align = 1
        self._opener: Callable[[str, int], int] | None = None
        if sync_method == "o_dsync":
            self._opener = _dsync_opener
        self._sysid = 0
        self._epoch = 0
        self._control: ControlData | None = None
        self._recovery: WALRecovery | None = None
        self._recovered_to = 0  # the durable end right after recovery
        self._truncating: anyio.Event | None = None  # set when the running truncate_before ends
        # Positions in the LSN space (see the module docstring of _format).
        self._insert_pos = 0  # the next byte to fill (at a page boundary: its header is not laid yet)
        self._insert_end = 0  # the end of the last complete record
        self._prev_lsn = 0  # the LSN of the last record (0: none)
        self._write_pos = 0  # bytes below went to the kernel
        self._flushed = 0  # bytes below are durable (always a record boundary)
        self._oldest = 0  # where the oldest segment starts
        self._segments: set[int] = set()
        self._write_file: AsyncFile | None = None
        self._write_segno = -1
        self._write_unsynced = False
        # Writer and waiters.
        self._writing = False
        self._just_woken = 0  # tasks the last round woke (they commit again at once)
        self._waiters: list[tuple[int, int, Park]] = []
        self._park = current_glue().park
        self._seq = itertools.count()
        self._room_waiters: list[anyio.Event] = []
        self._insert_lock = FifoLock()  # held while a record is copied piecewise (slow path)
        self._creating: dict[int, anyio.Event] = {}
        self._prealloc_wanted: anyio.Event | None = None
        self._prealloc_error: BaseException | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._poison: OSError | None = None
        self._closed = False
        # Counters.
        self._n_records = 0
        self._n_bytes = 0
        self._n_commits = 0
        self._n_rounds = 0
        self._n_writes = 0
        self._n_syncs = 0
        self._n_flush_waits = 0
        self._n_backpressure = 0
        self._n_created = 0
        self._n_recycled = 0
        self._n_removed = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "poisoned" if self._poison else "open"
        return (
            f"<aiopg_io.wal.WAL {self.directory!r} {state} insert={self._insert_end:#x} "
            f"flushed={self._flushed:#x} sync_method={self.sync_method}>"
        )

    # -- public state -------------------------------------------------------------------------

    @property
    def segment_size(self) -> int:
        return self._segment_size

    @property
    def insert_lsn(self) -> int:
        """Where the next record goes (the end of the last one appended)."""
        return self._insert_end

    @property
    def flushed_lsn(self) -> int:
        """Every record starting below this LSN is durable."""
        return self._flushed

    @property
    def last_lsn(self) -> int | None:
        """The LSN of the last record appended (or recovered); None for an empty WAL."""
        return self._prev_lsn or None

    @property
    def oldest_lsn(self) -> int:
        """Where the oldest remaining segment starts (records below it were truncated)."""
        return self._oldest

    @property
    def recovery(self) -> WALRecovery:
        """What recovery found when this WAL was opened: how the log ended (CLEAN, or TORN
        at an LSN: the torn tail was cut there), its records, the leftovers it removed."""
        assert self._recovery is not None
        return self._recovery

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def poisoned(self) -> bool:
        return self._poison is not None

    def statistics(self) -> WALStatistics:
        return WALStatistics(
            records=self._n_records,
            bytes_appended=self._n_bytes,
            commits=self._n_commits,
            flush_rounds=self._n_rounds,
            writes=self._n_writes,
            syncs=self._n_syncs,
            flush_waits=self._n_flush_waits,
            backpressure_waits=self._n_backpressure,
            segments_created=self._n_created,
            segments_recycled=self._n_recycled,
            segments_removed=self._n_removed,
            insert_lsn=self._insert_end,
            flushed_lsn=self._flushed,
            oldest_lsn=self._oldest,
            epoch=self._epoch,
            poisoned=self._poison is not None,
        )

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"the WAL in {self.directory!r} is closed")
        if self._poison is not None:
            raise self._poisoned_error()

    def _poisoned_error(self) -> WALPoisonedError:
        cause = self._poison
        assert cause is not None
        err = WALPoisonedError(
            cause.errno or 0,
            f"the WAL in {self.directory!r} is poisoned: a write or sync failed ({cause}); records after "
            f"LSN {self._flushed:#x} are not durable and no more will be acknowledged. Close the WAL and "
            "reopen it: recovery finds what reached the disk",
        )
        err.__cause__ = cause
        return err

    def _poison_with(self, exc: OSError) -> None:
        if self._poison is None:
            self._poison = exc

    # -- appending ----------------------------------------------------------------------------

    async def append(self, data: object) -> int:
        """Copy ``data`` (any bytes-like object, empty too) into the WAL buffers; return its LSN.

        Not durable yet: see :meth:`flush`. Waits only when the buffers are full, while a
        write goes out. ``data`` must stay unchanged until the call returns.
        """
        placed = self._append_now(data)
        if isinstance(placed, memoryview):
            placed = await self._insert_slow(placed)
        return placed[0]

    def _append_now(self, data: object) -> tuple[int, int] | memoryview:
        """Validate ``data`` and copy it when it fits the free buffers: ``(lsn, end)``.
        Otherwise the view to hand to :meth:`_insert_slow`. Never awaits (the hot path)."""
        if self._closed or self._poison is not None:
            self._check_usable()
        mv = _record_view(data)
        if len(mv) > self.max_record_size:
            raise ValueError(
                f"a WAL record of {len(mv)} bytes is over max_record_size ({self.max_record_size} bytes); "
                "split it, or open the WAL with a larger max_record_size"
            )
        if not self._insert_lock.contended and self._fast_end(len(mv)) is not None:
            return self._insert_fast(mv)
        return mv

    def _fast_end(self, n: int) -> int | None:
        """Where a record of ``n`` payload bytes would end, when it fits the free buffers."""
        pos = self._insert_pos
        tot = RECORD_HEADER_SIZE + n
        in_page = pos % PAGE_SIZE
        if in_page == 0:
            in_page = page_header_size(pos, self._segment_size)
            pos += in_page
        if in_page + tot > PAGE_SIZE:
            return None
        end = pos + tot
        if end > self._window_end():
            return None
        return end

    def _window_end(self) -> int:
        """The first byte whose ring slot may still hold bytes not written yet."""
        return self._write_pos - self._write_pos % PAGE_SIZE + self._ring_size

    def _lay_page(self, page_lsn: int, rem_len: int) -> int:
        """Zero the page's slot and write its header there; returns the header size."""
        r = page_lsn % self._ring_size
        hdr = pack_page_header(
            page_lsn, segment_size=self._segment_size, epoch=self._epoch, rem_len=rem_len, sysid=self._sysid
        )
        ring = self._ring
        ring[r : r + PAGE_SIZE] = bytes(PAGE_SIZE)
        ring[r : r + len(hdr)] = hdr
        return len(hdr)

    def _insert_fast(self, mv: memoryview) -> tuple[int, int]:
        pos = self._insert_pos
        if pos % PAGE_SIZE == 0:
            pos += self._lay_page(pos, 0)
        r = pos % self._ring_size
        ring = self._ring
        n = len(mv)
        write_record_header(ring, r, mv, epoch=self._epoch, prev=self._prev_lsn)
        end = pos + RECORD_HEADER_SIZE + n
        ring[r + RECORD_HEADER_SIZE : r + RECORD_HEADER_SIZE + n] = mv
        self._prev_lsn = pos
        aligned_end = align_up(end, MAXALIGN)
        self._insert_pos = self._insert_end = aligned_end
        self._n_records += 1
        self._n_bytes += len(mv)
        return pos, aligned_end

    async def _insert_slow(self, mv: memoryview) -> tuple[int, int]:
        """Copy a record page by page, making room as needed; one such copy at a time, in
        arrival order, and ahead of any later fast-path append."""
        await self._insert_lock.acquire()
        try:
            # A record half copied cannot be taken back (its first pages may be on disk
            # already), so the copy runs to the end even when the caller is cancelled; the
            # cancellation is delivered right after (the record is then in the log).
            with anyio.CancelScope(shield=True):
                self._check_usable()
                header = pack_record_header(mv, epoch=self._epoch, prev=self._prev_lsn)
                tot = RECORD_HEADER_SIZE + len(mv)
                remaining = tot
                pos = self._insert_pos
                lsn = -1
                for part in (memoryview(header), mv):
                    i = 0
                    while i < len(part):
                        if pos % PAGE_SIZE == 0:
                            while pos + PAGE_SIZE > self._window_end():
                                await self._make_room()
                            pos += self._lay_page(pos, remaining if lsn >= 0 else 0)
                            self._insert_pos = pos
                        if lsn < 0:
                            lsn = pos
                        take = min(len(part) - i, PAGE_SIZE - pos % PAGE_SIZE)
                        r = pos % self._ring_size
                        self._ring[r : r + take] = part[i : i + take]
                        i += take
                        pos += take
                        remaining -= take
                        self._insert_pos = pos
                end = align_up(pos, MAXALIGN)
                self._insert_pos = self._insert_end = end
                self._prev_lsn = lsn
                self._n_records += 1
                self._n_bytes += len(mv)
            await anyio.lowlevel.checkpoint_if_cancelled()
            return lsn, end
        finally:
            self._insert_lock.release()

    async def _make_room(self) -> None:
        """Wait until a write has freed some WAL buffers (leading that write if none is out)."""
        self._check_usable()
        self._n_backpressure += 1
        if self._writing:
            ev = anyio.Event()
            self._room_waiters.append(ev)
            await ev.wait()
            self._check_usable()
        else:
            await self._round(sync=False)

    # -- flushing -----------------------------------------------------------------------------

    async def flush(self, lsn: int | None = None) -> None:
        """Return once the record at ``lsn`` (default: every record appended so far) and all
        before it are durable."""
        self._check_usable()
        if lsn is not None:
            if isinstance(lsn, bool) or not isinstance(lsn, int):
                raise TypeError(f"lsn must be an int, not {type(lsn).__name__}")
            if lsn > self._insert_end or lsn < 0:
                raise ValueError(f"LSN {lsn:#x} is beyond the end of the WAL ({self._insert_end:#x})")
            if lsn < self._flushed:
                return
        await self._flush_to(self._insert_end)

    async def commit(self, data: object) -> int:
        """Append ``data`` and return its LSN once it is durable (group commit)."""
        placed = self._append_now(data)
        if isinstance(placed, memoryview):
            placed = await self._insert_slow(placed)
        lsn, end = placed
        self._n_commits += 1
        if self._flushed < end:
            if self._writing:
                # _flush_to's first wait, inlined: one coroutine frame less per wake-up.
                self._n_flush_waits += 1
                ev = self._park()
                item = (end, next(self._seq), ev)
                heapq.heappush(self._waiters, item)
                try:
                    await ev.wait()
                except BaseException:
                    self._abandon_wait(item)
                    raise
            if self._flushed < end:
                await self._flush_to(end)
        return lsn

    async def _flush_to(self, target: int) -> None:
        while self._flushed < target:
            self._check_usable()
            if self._writing:
                self._n_flush_waits += 1
                ev = self._park()
                item = (target, next(self._seq), ev)
                heapq.heappush(self._waiters, item)
                try:
                    await ev.wait()
                except BaseException:
                    self._abandon_wait(item)
                    raise
                continue
            await self._round(sync=True)

    def _abandon_wait(self, item: tuple[int, int, Park]) -> None:
        if item[2].is_set:
            self._wake_after_round()  # pass on a lead we cannot take to the next in line
        else:
            self._waiters.remove(item)
            heapq.heapify(self._waiters)

    def _wake_after_round(self) -> None:
        waiters = self._waiters
        if self._poison is not None:
            while waiters:
                heapq.heappop(waiters)[2].set()
        else:
            woken = 0
            while waiters and waiters[0][0] <= self._flushed:
                heapq.heappop(waiters)[2].set()
                woken += 1
            self._just_woken = woken
            if waiters and not self._writing:
                heapq.heappop(waiters)[2].set()  # the next round's leader
        rooms, self._room_waiters = self._room_waiters, []
        for ev in rooms:
            ev.set()

    async def _round(self, *, sync: bool) -> None:
        """Write everything appended so far and, with ``sync``, make it durable."""
        self._writing = True
        try:
            with anyio.CancelScope(shield=True):
                self._n_rounds += 1
                try:
                    if sync and self._just_woken:
                        # Let every task runnable now append first (those the last round just
                        # woke): one write then carries all of them. A zero-time commit_delay,
                        # skipped when the last round woke nobody (a lone committer).
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                    # Commits that arrive while the write is out join this round's sync: the
                    # leader writes again (a cheap copy to the page cache) before syncing.
                    for _ in range(_WRITES_PER_ROUND if sync else 1):
                        upto = self._insert_pos
                        durable_to = self._insert_end
                        if upto <= self._write_pos:
                            break
                        await self._write(self._write_pos, upto)
                        self._write_pos = upto
                    if self.sync_method == "o_dsync":
                        self._flushed = max(self._flushed, durable_to)
                    elif sync and self._flushed < durable_to:
                        await self._sync_write_file()
                        self._flushed = durable_to
                except OSError as exc:
                    self._poison_with(exc)
                    raise self._poisoned_error() from exc
        finally:
            self._writing = False
            self._wake_after_round()

    async def _write(self, start: int, end: int) -> None:
        if self._io_align > 1:
            start -= start % self._io_align
            end = align_up(end, self._io_align)
        seg = self._segment_size
        ring, ring_size = self._ring, self._ring_size
        pos = start
        while pos < end:
            segno = pos // seg
            chunk_end = min(end, (segno + 1) * seg)
            f = await self._segment_for_write(segno)
            r = pos % ring_size
            n = chunk_end - pos
            if r + n <= ring_size:
                await f.pwrite(ring[r : r + n], pos - segno * seg)
            else:
                await f.pwritev([ring[r:], ring[: n - (ring_size - r)]], pos - segno * seg)
            self._n_writes += 1
            if self.sync_method == "o_dsync":
                self._n_syncs += 1
            else:
                self._write_unsynced = True
            pos = chunk_end

    async def _sync_write_file(self) -> None:
        f = self._write_file
        if f is None or not self._write_unsynced:
            return
        self._n_syncs += 1
        if self.sync_method == "fsync":
            await f.fsync()
        else:
            await f.fdatasync()
        self._write_unsynced = False

    async def _segment_for_write(self, segno: int) -> AsyncFile:
        if self._write_file is not None and self._write_segno == segno:
            return self._write_file
        if self._write_file is not None:
            # Leaving a segment: it must be durable before its file is closed.
            await self._sync_write_file()
            f, self._write_file = self._write_file, None
            await f.aclose()
        await self._ensure_segment(segno)
        self._write_file = await aiopg_io.open(
            self._segment_path(segno), "r+b", direct=self.direct, driver=self.driver, opener=self._opener
        )
        self._write_segno = segno
        self._write_unsynced = False
        if self._prealloc_wanted is not None:
            self._prealloc_wanted.set()
        return self._write_file

    def _segment_path(self, segno: int) -> str:
        return os.path.join(self.directory, segment_name(segno))

    async def _ensure_segment(self, segno: int) -> None:
        while segno not in self._segments:
            ev = self._creating.get(segno)
            if ev is not None:
                await ev.wait()
                if segno not in self._segments and self._prealloc_error is not None:
                    err, self._prealloc_error = self._prealloc_error, None
                    raise err
                continue
            ev = self._creating[segno] = anyio.Event()
            try:
                if await create_segment(
                    self.directory,
                    segno,
                    self._segment_size,
                    init_zero=self.init_zero,
                    direct=self.direct,
                    driver=self.driver,
                ):
                    self._n_created += 1
                self._segments.add(segno)
            finally:
                del self._creating[segno]
                ev.set()

    # -- background preallocation -----------------------------------------------------------

    async def __aenter__(self) -> WAL:
        self._check_usable()
        if self._tg is None and self.segments_ahead:
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            self._prealloc_wanted = anyio.Event()
            self._prealloc_wanted.set()
            tg.start_soon(self._preallocate)
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

    async def _preallocate(self) -> None:
        while not self._closed:
            wanted = self._prealloc_wanted
            assert wanted is not None
            await wanted.wait()
            self._prealloc_wanted = anyio.Event()
            base = max(self._write_segno, self._insert_pos // self._segment_size)
            for segno in range(base + 1, base + 1 + self.segments_ahead):
                if segno in self._segments or segno in self._creating:
                    continue
                try:
                    await self._ensure_segment(segno)
                except OSError as exc:
                    # Not fatal here: the writer makes the segment itself and fails then.
                    self._prealloc_error = exc
                    break

    # -- truncation ---------------------------------------------------------------------------

    async def truncate_before(self, lsn: int) -> int:
        """Drop the segments that hold only records before ``lsn`` (and before the durable
        end): recycled as future segments while fewer than ``segments_ahead`` are ready,
        removed otherwise. Returns how many segments went.

        Each step is durable before the next (module docstring), so a crash at any point
        leaves a log that opens with every record from ``lsn`` on. Runs to the end when
        cancelled. A failed write, sync, rename or unlink poisons the WAL: reopen it, and
        recovery finishes the job."""
        self._check_usable()
        if isinstance(lsn, bool) or not isinstance(lsn, int):
            raise TypeError(f"lsn must be an int, not {type(lsn).__name__}")
        if lsn < 0 or lsn > self._insert_end:
            raise ValueError(f"LSN {lsn:#x} is beyond the end of the WAL ({self._insert_end:#x})")
        while self._truncating is not None:
            await self._truncating.wait()
            self._check_usable()
        # Claimed without an await when no truncation runs, so the segments it chooses are
        # those the caller saw (the preallocator gets no turn in between).
        done = self._truncating = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                gone = await self._truncate(lsn)
        finally:
            self._truncating = None
            done.set()
        await anyio.lowlevel.checkpoint_if_cancelled()
        return gone

    async def _truncate(self, lsn: int) -> int:
        cutoff = min(lsn, self._flushed) // self._segment_size
        current = max(self._write_segno, self._insert_pos // self._segment_size)
        cutoff = min(cutoff, current)
        old = sorted(s for s in self._segments if s < cutoff)
        if not old:
            return 0
        ready = sorted(s for s in self._segments if s > current)
        nxt = max([current, *ready]) + 1
        moves: list[tuple[int, int | None]] = []
        for segno in old:
            if len(ready) < self.segments_ahead and nxt not in self._creating:
                moves.append((segno, nxt))
                ready.append(nxt)
                nxt += 1
            else:
                moves.append((segno, None))
        assert self._control is not None
        # The recycling targets count as being made, so the preallocator (which runs while
        # this awaits) waits for them instead of creating them first.
        targets = {n: anyio.Event() for _, n in moves if n is not None}
        self._creating.update(targets)
        try:
            # The new start first (PostgreSQL updates pg_control before RemoveOldXlogFiles):
            # from then on a segment before it that a crash leaves behind is a leftover.
            self._control = await write_control(
                self.directory, replace(self._control, oldest=cutoff), self.driver
            )
            self._oldest = cutoff * self._segment_size
            for o, n in moves:  # oldest first, each step durable before the next
                recycled = await recycle_or_remove(self.directory, o, n, self.driver)
                self._segments.discard(o)
                if recycled and n is not None:
                    self._segments.add(n)
                    self._n_recycled += 1
                else:
                    self._n_removed += 1
                if n is not None:
                    del self._creating[n]
                    targets.pop(n).set()
        except OSError as exc:
            self._poison_with(exc)
            raise self._poisoned_error() from exc
        finally:
            for n, ev in targets.items():
                del self._creating[n]
                ev.set()
        return len(moves)

    # -- closing ------------------------------------------------------------------------------

    async def close(self, *, flush: bool = True) -> None:
        """Flush what was appended, then release files, buffers and the directory lock.

        ``flush=False`` releases at once: records not durable yet may be lost, as in a crash
        (the next open recovers). Runs to the end even when cancelled. On a poisoned WAL it
        flushes nothing and raises nothing: it only releases.
        """
        if self._closed:
            return
        with anyio.CancelScope(shield=True):
            try:
                if flush and self._poison is None and self._insert_end > self._flushed:
                    await self._flush_to(self._insert_end)
            finally:
                await self._release()
        await anyio.lowlevel.checkpoint_if_cancelled()

    async def aclose(self) -> None:
        await self.close()

    async def _release(self) -> None:
        self._closed = True
        if self._prealloc_wanted is not None:
            self._prealloc_wanted.set()  # the preallocator sees _closed and returns
        while self._waiters:
            heapq.heappop(self._waiters)[2].set()
        for ev in self._room_waiters:
            ev.set()
        self._room_waiters = []
        self._insert_lock.wake_all()
        try:
            if self._write_file is not None:
                f, self._write_file = self._write_file, None
                await f.aclose()
        finally:
            self._lock.release()

    # -- recovery -----------------------------------------------------------------------------

    async def _recover(self, segment_size: int | None) -> None:
        segments = await anyio.to_thread.run_sync(list_segments, self.directory)
        control = await read_control(self.directory, self.driver)
        if control is None:
            if segments:
                await self._refuse_without_control(segments)
            new = ControlData(
                sysid=secrets.randbits(63) | 1,
                segment_size=DEFAULT_SEGMENT_SIZE if segment_size is None else segment_size,
                blcksz=PAGE_SIZE,
                oldest=0,
            )
            try:
                control = await create_control(self.directory, new, self.driver)
            except OSError as exc:
                self._poison_with(exc)  # as a failed write of the stamp: the WAL does not open
                raise self._poisoned_error() from exc
        control_path = os.path.join(self.directory, CONTROL_NAME)
        existing = control.segment_size
        if control.blcksz != PAGE_SIZE or existing % PAGE_SIZE or existing < _MIN_SEGMENT_SIZE:
            raise NotAWALError(
                f"{control_path!r} describes segments of {existing} bytes in pages of {control.blcksz}; "
                f"this version reads pages of {PAGE_SIZE} and segments of a multiple of them"
            )
        if segment_size is not None and existing != segment_size:
            raise NotAWALError(
                f"the WAL in {self.directory!r} has segments of {existing} bytes, not the "
                f"segment_size={segment_size} asked for; open it without segment_size"
            )
        self._control = control
        self._segment_size = seg = existing
        self._sysid = sysid = control.sysid
        if self.direct:
            align = dio_alignment(self.directory)
            if PAGE_SIZE % align.offset or PAGE_SIZE % align.memory:
                raise ValueError(
                    f"direct I/O in {self.directory!r} needs {align.block}-byte alignment, which the "
                    f"{PAGE_SIZE}-byte WAL page does not divide; use direct=False"
                )
            self._io_align = align.offset
        # Every segment's first page says whose it is and which position it was written for.
        heads: dict[int, PageHeader | None] = {}
        sizes: dict[int, int] = {}
        for segno in sorted(segments):
            head = await self._read_first_page(segno)
            sizes[segno] = os.stat(segments[segno]).st_size
            heads[segno] = self._check_head(segno, head)
        start = control.oldest
        removed = await self._remove_leftovers(sorted(s for s in segments if s < start))
        for segno in removed:
            del segments[segno], heads[segno]
        self._segments = set(segments)
        live = sorted(s for s, h in heads.items() if h is not None and h.pageaddr == s * seg)

        def heads_epoch(segno: int) -> int:
            h = heads[segno]
            return 0 if h is None else h.epoch

        max_epoch = max([h.epoch for h in heads.values() if h is not None], default=0)
        if segments:
            await self._fsync_segments(sorted(segments))
        decoder = Decoder(
            segment_size=seg,
            start=start * seg,
            sysid=sysid,
            prev=0 if start == 0 else None,
            resync=start != 0,
        )
        await self._scan(decoder, start * seg, None)
        end = decoder.end_lsn
        # A segment of this WAL after the end is evidence of records lost, unless it was
        # read as the continuation of the torn record (the part of a record spanning
        # segments that a power cut kept while losing an earlier part), or is older than
        # the log's last page (the log's epochs never decrease: such a segment is that
        # continuation, left stale by the open that cut the torn record).
        later = [
            s
            for s in live
            if s > end // seg and s * seg >= decoder.seen_to and heads_epoch(s) >= decoder.max_epoch
        ]
        kind = WALEndKind.TORN if decoder.torn else WALEndKind.CLEAN
        reason = decoder.end_reason
        size = sizes.get(end // seg, seg)
        if later:
            # A segment missing, empty, short or without a page of this WAL is a file lost or
            # replaced: restoring it brings the records back, so the WAL refuses to open. A
            # break inside a segment that is whole is the end of the log, as in PostgreSQL,
            # but is reported as damage: no crash leaves one before a later segment.
            self._refuse_gap(decoder, later[0], segments, sizes, heads)
            kind = WALEndKind.DAMAGED
            reason += (
                f"; segment {segment_name(later[0])} after it held records of this WAL, cut off with "
                "the rest of the log after this point"
            )
        elif decoder.torn and size < seg:
            reason += f" (segment {segment_name(end // seg)} is {size} bytes, not {seg}: cut short)"
        self._prev_lsn = decoder.last_lsn or 0
        self._oldest = start * seg
        self._epoch = max(max_epoch, decoder.max_epoch) + 1
        self._recovery = WALRecovery(
            WALEnd(kind, end, segment_name(end // seg), reason),
            decoder.records,
            tuple(segment_name(s) for s in removed),
        )
        await self._stamp(end)
        self._recovered_to = self._flushed

    def _check_head(self, segno: int, head: bytes | None) -> PageHeader | None:
        """The first page header of segment ``segno`` when it is one of this WAL's (at its
        own position, or recycled from another); None when it has none (zeros, garbage, an
        empty file). A segment of another WAL, format or shape is refused here."""
        name = segment_name(segno)
        hdr = parse_page_header(head) if head is not None else None
        if hdr is None:
            if head is not None and len(head) >= 2 and int.from_bytes(head[:2], "little") == XLP_MAGIC_V1:
                raise WALFormatError(
                    f"segment {name} in {self.directory!r} is in WAL format 1 (page magic "
                    f"{XLP_MAGIC_V1:#x}), not this WAL's format 2: it belongs to another WAL; move it out "
                    "of the directory",
                )
            return None
        if hdr.sysid is None:
            return None  # a first page without the long header: not a segment start
        if hdr.sysid != self._sysid:
            raise WALCorruptError(
                f"segment {name} in {self.directory!r} belongs to another WAL (system id {hdr.sysid:#x}; "
                f"this WAL's, in {CONTROL_NAME}, is {self._sysid:#x}): move it out of the directory, and "
                f"restore this WAL's segment {name} from a copy if it replaced one",
                segment=name,
            )
        if hdr.seg_size != self._segment_size or hdr.blcksz != PAGE_SIZE:
            raise WALCorruptError(
                f"segment {name} in {self.directory!r} was written with segments of {hdr.seg_size} bytes "
                f"and pages of {hdr.blcksz}, not this WAL's {self._segment_size} and {PAGE_SIZE}: it "
                "belongs to another WAL; move it out of the directory",
                segment=name,
            )
        return hdr

    async def _remove_leftovers(self, segnos: list[int]) -> list[int]:
        """Remove segments older than the log's start (left by a truncate_before that a
        crash cut short: the start moved first), durably. Returns their numbers."""
        for segno in segnos:
            await remove_file(self._segment_path(segno), self.driver)
        if segnos:
            await fsync_directory(self.directory, self.driver)
        return segnos

    async def _refuse_without_control(self, segments: dict[int, str]) -> None:
        first = min(segments)
        path = segments[first]
        head = await self._read_first_page(first)
        if head is not None and len(head) >= 2 and int.from_bytes(head[:2], "little") == XLP_MAGIC_V1:
            raise WALFormatError(
                f"the WAL in {self.directory!r} is in format 1 (page magic {XLP_MAGIC_V1:#x}, no "
                f"{CONTROL_NAME}), written by an earlier aiopg_io; this version reads format 2 only: read "
                "its records with the version that wrote it and append them to a new WAL"
            )
        hdr = parse_page_header(head) if head is not None else None
        if hdr is None or hdr.sysid is None:
            size = os.stat(path).st_size
            raise NotAWALError(
                f"{path!r} is not a WAL segment (no page header, {size} bytes), and {self.directory!r} "
                f"has no {CONTROL_NAME}; point WAL.open at an empty or WAL-only directory"
            )
        raise WALCorruptError(
            f"{self.directory!r} holds segments of a WAL (system id {hdr.sysid:#x}) but no {CONTROL_NAME}: "
            "the control file, which says whose segments these are and where the log starts, is lost; "
            "restore it from a copy of this WAL",
            segment=segment_name(first),
        )

    def _refuse_gap(
        self,
        decoder: Decoder,
        later: int,
        segments: dict[int, str],
        sizes: dict[int, int],
        heads: dict[int, PageHeader | None],
    ) -> None:
        """The log ends before segment ``later``, which holds records of this WAL: those
        records exist. When the segment at fault is missing, empty, short or does not go
        on with the log from its first page, raise WALCorruptError naming it; else return."""
        seg = self._segment_size
        end = decoder.end_lsn
        at = decoder.fail_page // seg
        missing = [s for s in range(end // seg, later) if s not in segments]
        name = segment_name(missing[0] if missing else at)
        if missing:
            what = f"segment {name} is missing from {self.directory!r}"
        elif sizes[at] == 0:
            what = f"segment {name} in {self.directory!r} is empty (0 bytes, not {seg})"
        elif sizes[at] < seg:
            what = (
                f"segment {name} in {self.directory!r} is cut short ({sizes[at]} bytes, not {seg}); the log "
                f"breaks at {end:#x} ({decoder.end_reason})"
            )
        elif decoder.fail_page == at * seg and heads[at] is None:
            what = f"segment {name} in {self.directory!r} holds no page of this WAL ({decoder.end_reason})"
        elif decoder.fail_page == at * seg:
            what = f"segment {name} in {self.directory!r} does not go on with the log ({decoder.end_reason})"
        else:
            return  # a break inside a whole segment: the caller reports it
        raise WALCorruptError(
            f"{what}, but segment {segment_name(later)} after it holds records of this WAL. Restore "
            f"segment {name} from a copy of this WAL; until then the WAL does not open, since opening "
            f"would end the log at {end:#x} and lose every record after it, acknowledged ones included",
            segment=name,
            lsn=end,
        )

    async def _read_first_page(self, segno: int) -> bytes | None:
        buf = aligned_buffer(PAGE_SIZE)
        async with aiopg_io.open(
            self._segment_path(segno), "rb", direct=self.direct, driver=self.driver
        ) as f:
            got = await f.preadinto(buf, 0)
        return bytes(buf[:got]) if got else None

    async def _fsync_segments(self, segnos: list[int]) -> None:
        for segno in segnos:
            async with aiopg_io.open(self._segment_path(segno), "rb", driver=self.driver) as f:
                await f.fsync()
        await fsync_directory(self.directory, self.driver)

    async def _stamp(self, end: int) -> None:
        """Cut the torn tail at ``end`` and make the new epoch durable (module docstring)."""
        seg = self._segment_size
        page = end - end % PAGE_SIZE
        segno = page // seg
        r = page % self._ring_size
        ring = self._ring
        ring[r : r + PAGE_SIZE] = bytes(PAGE_SIZE)
        if end > page:
            f = await self._segment_for_write(segno)
            got = await f.preadinto(ring[r : r + PAGE_SIZE], page - segno * seg)
            if got < end - page:
                raise WALCorruptError(f"segment {segment_name(segno)} shrank while the WAL was being opened")
            ring[r + (end - page) : r + PAGE_SIZE] = bytes(PAGE_SIZE - (end - page))
        try:
            # 1. The tail of the page: zeros after the last valid byte (the old header stays).
            await self._write(end, page + PAGE_SIZE)
            await self._sync_write_file()
            # 2. The header, now with the new epoch (a fresh one on an empty page).
            if end == page:
                hsize = self._lay_page(page, 0)
                end = page + hsize
            else:
                ring[r + 4 : r + 8] = self._epoch.to_bytes(4, "little")
                hsize = page_header_size(page, seg)
            await self._write(page, page + hsize)
            await self._sync_write_file()
        except OSError as exc:
            self._poison_with(exc)
            raise self._poisoned_error() from exc
        self._insert_pos = self._insert_end = self._write_pos = self._flushed = end

    async def _scan(self, decoder: Decoder, start: int, limit: int | None) -> None:
        """Feed ``decoder`` the pages from ``start`` until it stops (recovery: to the end of
        the last segment; ``limit``: stop there)."""
        async for _ in self._pages(decoder, start, limit, collect=False):
            pass

    async def _pages(
        self, decoder: Decoder, start: int, limit: int | None, *, collect: bool
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        seg = self._segment_size
        page = start - start % PAGE_SIZE
        while not decoder.done:
            if limit is not None and page >= limit:
                decoder.finish(_DURABLE_END)
                break
            segno = page // seg
            if segno not in self._segments:
                decoder.finish(f"segment {segment_name(segno)} does not exist")
                break
            seg_end = (segno + 1) * seg
            stop = seg_end if limit is None else min(seg_end, align_up(limit, PAGE_SIZE))
            chunks = await self._read_batch(segno, page, stop)
            for chunk_start, data in chunks:
                for off in range(0, len(data), PAGE_SIZE):
                    records = decoder.feed(chunk_start + off, data[off : off + PAGE_SIZE])
                    if records and collect:
                        yield records
                    if decoder.done:
                        break
                if decoder.done:
                    break
            page = chunks[-1][0] + len(chunks[-1][1])

    async def _read_batch(self, segno: int, page: int, stop: int) -> list[tuple[int, memoryview]]:
        """Read up to ``_READ_AHEAD`` chunks of pages from ``page`` (below ``stop``, in one
        segment) concurrently; bytes past the end of the file read as zeros."""
        seg = self._segment_size
        spans: list[tuple[int, int]] = []
        pos = page
        while pos < stop and len(spans) < _READ_AHEAD:
            n = min(_READ_CHUNK, stop - pos)
            spans.append((pos, n))
            pos += n
        bufs = [aligned_buffer(n) for _, n in spans]
        async with aiopg_io.open(
            self._segment_path(segno), "rb", direct=self.direct, driver=self.driver
        ) as f:

            async def read_one(i: int) -> None:
                await f.preadinto(bufs[i], spans[i][0] - segno * seg)

            if len(spans) == 1:
                await read_one(0)
            else:
                async with anyio.create_task_group() as tg:
                    for i in range(len(spans)):
                        tg.start_soon(read_one, i)
        return [(spans[i][0], bufs[i]) for i in range(len(spans))]

    # -- reading ------------------------------------------------------------------------------

    def read(self, start: int | None = None) -> WALReader:
        """Yield ``(lsn, payload)`` for every durable record from ``start`` (default: the
        oldest kept). ``start`` must be the LSN of a record (or :attr:`insert_lsn`).

        The returned :class:`WALReader` tells, in :attr:`WALReader.end` once the iteration
        has finished, how the log it read ended."""
        self._check_usable()
        if start is not None:
            if isinstance(start, bool) or not isinstance(start, int):
                raise TypeError(f"start must be an int LSN, not {type(start).__name__}")
            if start < self._oldest:
                raise ValueError(
                    f"LSN {start:#x} is before the oldest segment kept ({self._oldest:#x}); "
                    "it was removed by truncate_before"
                )
            if start > self._insert_end:
                raise ValueError(f"LSN {start:#x} is beyond the end of the WAL ({self._insert_end:#x})")
        return WALReader(self, start)

    def _durable_end(self, limit: int) -> WALEnd:
        """How a read that stopped at the durable end ``limit`` ended: as recovery found the
        log when nothing was made durable since, else cleanly at ``limit``."""
        if limit == self._recovered_to and self._recovery is not None:
            return self._recovery.end
        return WALEnd(WALEndKind.CLEAN, limit, segment_name(limit // self._segment_size), _DURABLE_END)

    async def _read(self, start: int | None, reader: WALReader) -> AsyncGenerator[tuple[int, bytes], None]:
        seg = self._segment_size
        resync = start is None or start == self._oldest
        pos = self._oldest if start is None else start
        decoder = Decoder(
            segment_size=seg,
            start=pos,
            sysid=self._sysid,
            prev=0 if pos == 0 else None,
            resync=resync and pos % seg == 0 and pos != 0,
        )
        limit = self._flushed  # the records durable when the scan starts
        yielded = False
        if pos < limit:
            async for batch in self._pages(decoder, pos, limit, collect=True):
                for lsn, payload in batch:
                    if lsn >= limit:
                        reader.end = self._durable_end(limit)
                        return
                    yielded = True
                    yield lsn, payload
        if decoder.done and decoder.end_lsn < limit and decoder.end_reason != _DURABLE_END:
            if not yielded and start is not None and decoder.end_lsn <= start:
                raise ValueError(f"no record starts at LSN {start:#x}: {decoder.end_reason}")
            name = segment_name(decoder.end_lsn // seg)
            reader.end = WALEnd(WALEndKind.DAMAGED, decoder.end_lsn, name, decoder.end_reason)
            raise WALCorruptError(
                f"the WAL in {self.directory!r} is unreadable at {decoder.end_lsn:#x} in segment {name}, "
                f"before its durable end {limit:#x}: {decoder.end_reason}",
                segment=name,
                lsn=decoder.end_lsn,
            )
        reader.end = self._durable_end(limit)


def _dsync_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_DSYNC, 0o666)
