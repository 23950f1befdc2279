"""Reading the log: :meth:`WAL.read <aiopg_io.wal.WAL.read>`, :class:`WALReader`, and the
page scan recovery uses too (PostgreSQL's xlogreader.c with a read stream).

What it owns: nothing that outlives a read. It reads ``segment_size``, ``sysid``,
``oldest``, ``flushed`` and what recovery found from :class:`~._xlogctl.XLogCtl`, and the
set of segments from :class:`~._segments.WALSegments`.

How it works: pages are read in batches of :data:`_READ_AHEAD` reads of :data:`_READ_CHUNK`
bytes issued concurrently (a task group per batch, never across a ``yield``), so a scan keeps
several large reads in flight; the :class:`~._format.Decoder` turns pages into records and
says where and why the log ends. A read returns the records that were durable when it
started, and its :class:`WALReader` says how the log it read ended once the iteration is over.

Facts relied on:

- Bytes past the end of a file read as nothing (a short read); the buffers start zeroed, so
  they read as zeros, which the decoder takes as the end of the log.
- Records below ``flushed`` are durable and never change while the WAL is open: a read can
  run beside appends and commits, and stops at the durable end it saw when it started.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

import aiopg_io
from aiopg_io._direct import aligned_buffer

from ._format import PAGE_SIZE, Decoder, align_up, segment_name
from ._segments import WALSegments
from ._xlogctl import XLogCtl
from .errors import WALCorruptError

if TYPE_CHECKING:
    from ._wal import WAL

__all__ = ["WALEnd", "WALEndKind", "WALReader", "read_records", "scan"]

_READ_CHUNK = 256 * 1024
_READ_AHEAD = 4
_DURABLE_END = "end of the durable WAL"


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


def _durable_end(ctl: XLogCtl, limit: int) -> WALEnd:
    """How a read that stopped at the durable end ``limit`` ended: as recovery found the
    log when nothing was made durable since, else cleanly at ``limit``."""
    if limit == ctl.recovered_to and ctl.recovery is not None:
        return ctl.recovery.end
    return WALEnd(WALEndKind.CLEAN, limit, segment_name(limit // ctl.segment_size), _DURABLE_END)


async def read_records(
    ctl: XLogCtl, segments: WALSegments, start: int | None, reader: WALReader
) -> AsyncGenerator[tuple[int, bytes], None]:
    """The records of :meth:`WAL.read <aiopg_io.wal.WAL.read>` (its arguments checked);
    sets ``reader.end`` when done."""
    seg = ctl.segment_size
    resync = start is None or start == ctl.oldest
    pos = ctl.oldest if start is None else start
    decoder = Decoder(
        segment_size=seg,
        start=pos,
        sysid=ctl.sysid,
        prev=0 if pos == 0 else None,
        resync=resync and pos % seg == 0 and pos != 0,
    )
    limit = ctl.flushed  # the records durable when the scan starts
    yielded = False
    if pos < limit:
        async for batch in _pages(ctl, segments, decoder, pos, limit, collect=True):
            for lsn, payload in batch:
                if lsn >= limit:
                    reader.end = _durable_end(ctl, limit)
                    return
                yielded = True
                yield lsn, payload
    if decoder.done and decoder.end_lsn < limit and decoder.end_reason != _DURABLE_END:
        if not yielded and start is not None and decoder.end_lsn <= start:
            raise ValueError(f"no record starts at LSN {start:#x}: {decoder.end_reason}")
        name = segment_name(decoder.end_lsn // seg)
        reader.end = WALEnd(WALEndKind.DAMAGED, decoder.end_lsn, name, decoder.end_reason)
        raise WALCorruptError(
            f"the WAL in {ctl.directory!r} is unreadable at {decoder.end_lsn:#x} in segment {name}, "
            f"before its durable end {limit:#x}: {decoder.end_reason}",
            segment=name,
            lsn=decoder.end_lsn,
        )
    reader.end = _durable_end(ctl, limit)


async def scan(ctl: XLogCtl, segments: WALSegments, decoder: Decoder, start: int) -> None:
    """Feed ``decoder`` the pages from ``start`` until it stops (at the latest, at the end
    of the last segment): recovery's read of the log."""
    async for _ in _pages(ctl, segments, decoder, start, None, collect=False):
        pass


async def _pages(
    ctl: XLogCtl, segments: WALSegments, decoder: Decoder, start: int, limit: int | None, *, collect: bool
) -> AsyncIterator[list[tuple[int, bytes]]]:
    seg = ctl.segment_size
    page = start - start % PAGE_SIZE
    while not decoder.done:
        if limit is not None and page >= limit:
            decoder.finish(_DURABLE_END)
            break
        segno = page // seg
        if segno not in segments.segments:
            decoder.finish(f"segment {segment_name(segno)} does not exist")
            break
        seg_end = (segno + 1) * seg
        stop = seg_end if limit is None else min(seg_end, align_up(limit, PAGE_SIZE))
        chunks = await _read_batch(ctl, segno, page, stop)
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


async def _read_batch(ctl: XLogCtl, segno: int, page: int, stop: int) -> list[tuple[int, memoryview]]:
    """Read up to ``_READ_AHEAD`` chunks of pages from ``page`` (below ``stop``, in one
    segment) concurrently; bytes past the end of the file read as zeros."""
    seg = ctl.segment_size
    spans: list[tuple[int, int]] = []
    pos = page
    while pos < stop and len(spans) < _READ_AHEAD:
        n = min(_READ_CHUNK, stop - pos)
        spans.append((pos, n))
        pos += n
    bufs = [aligned_buffer(n) for _, n in spans]
    async with aiopg_io.open(ctl.segment_path(segno), "rb", direct=ctl.direct, driver=ctl.driver) as f:

        async def read_one(i: int) -> None:
            await f.preadinto(bufs[i], spans[i][0] - segno * seg)

        if len(spans) == 1:
            await read_one(0)
        else:
            async with anyio.create_task_group() as tg:
                for i in range(len(spans)):
                    tg.start_soon(read_one, i)
    return [(spans[i][0], bufs[i]) for i in range(len(spans))]
