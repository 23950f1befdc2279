"""Insertion: copying records into the WAL buffers (PostgreSQL's ``XLogInsert``).

What it owns: the insert lock, ``insert_pos`` / ``insert_end`` / ``prev_lsn`` of
:class:`~._xlogctl.XLogCtl`, and laying page headers into the ring.

How it works, in PostgreSQL's terms (src/backend/access/transam/xlog.c,
``XLogInsertRecord``/``CopyXLogRecordToWAL``): an append builds the record header (CRC over
the payload) and copies header and payload into the WAL buffers, a ring of
:data:`~._format.PAGE_SIZE` pages (``XLogCtl->pages``), laying a page header at each page
boundary. A record that fits the free part of the ring and ends in the next page at the
latest is copied without any await (the hot path: :meth:`XLogInsert.place`); otherwise it
is copied page by page under the insert lock (:meth:`XLogInsert.insert_slow`) and,
whenever the next page's slot still holds bytes not yet written, waits while a write goes
out (back-pressure, :meth:`._flush.XLogFlush.make_room`): memory stays
bounded by ``wal_buffers`` whatever the record size.

Facts relied on:

- The ring slot of a page may be reused once every byte of it went to the kernel
  (``write_pos``, moved by the writer): :meth:`XLogInsert.window_end` is the first byte whose
  slot may still hold bytes not written yet.
- A record half copied cannot be taken back (its first pages may be on disk already), so a
  piecewise copy runs to its end even when the caller is cancelled.
- The insert lock (:class:`aiopg_io._handoff.FifoLock`) keeps piecewise copies in arrival
  order, and a fast-path append never overtakes one: while any task holds or waits for the
  lock (``slow_pending``), every append takes the slow path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

from aiopg_io._checks import readable_view
from aiopg_io._handoff import FifoLock

from ._format import (
    MAXALIGN,
    PAGE_SIZE,
    RECORD_HEADER_SIZE,
    align_up,
    pack_page_header,
    pack_record_header,
    page_header_size,
    write_record,
)
from ._xlogctl import XLogCtl

__all__ = ["XLogInsert"]


class XLogInsert:
    """Copies records into the WAL buffers of ``ctl``; ``make_room`` waits until a write
    has freed some of them."""

    def __init__(
        self, ctl: XLogCtl, *, max_record_size: int, make_room: Callable[[], Awaitable[None]]
    ) -> None:
        self._ctl = ctl
        self.max_record_size = max_record_size
        self._make_room = make_room
        self.lock = FifoLock()  # held while a record is copied piecewise (slow path)
        # Tasks in insert_slow (holding the lock or queued for it): while any is, a new
        # append queues behind them. A plain count, read on every append.
        self.slow_pending = 0
        self.records = 0
        self.bytes = 0

    def place(self, data: object) -> tuple[int, int] | memoryview:
        """Validate ``data`` and copy it when it fits the free buffers and reaches at most
        into the next page: ``(lsn, end)``. Otherwise the view to hand to
        :meth:`insert_slow`, with nothing changed. Never awaits: the hot path."""
        ctl = self._ctl
        if ctl.closed or ctl.poison is not None:
            ctl.check_usable()
        # bytes is always a flat, contiguous byte buffer, copied and CRC'd as it is: the
        # checks and the view are for anything else.
        mv: bytes | memoryview = (
            data if type(data) is bytes else readable_view(data, "a WAL record", str_hint="encode it first")
        )
        n = len(mv)
        if n > self.max_record_size:
            raise ValueError(
                f"a WAL record of {n} bytes is over max_record_size ({self.max_record_size} bytes); "
                "split it, or open the WAL with a larger max_record_size"
            )
        if self.slow_pending:
            return memoryview(mv)
        pos = ctl.insert_pos
        tot = RECORD_HEADER_SIZE + n
        in_page = pos % PAGE_SIZE
        if in_page == 0 or in_page + tot > PAGE_SIZE:
            return self._place_at_page_end(mv, pos, tot)
        # In the page: its slot is in the window already (the page was laid).
        write_record(ctl.ring, pos % ctl.ring_size, mv, ctl.epoch, ctl.prev_lsn)
        ctl.prev_lsn = pos
        aligned_end = -(-(pos + tot) // MAXALIGN) * MAXALIGN  # align_up, inlined
        ctl.insert_pos = ctl.insert_end = aligned_end
        self.records += 1
        self.bytes += n
        return pos, aligned_end

    def _place_at_page_end(self, mv: bytes | memoryview, pos: int, tot: int) -> tuple[int, int] | memoryview:
        """:meth:`place` for a record that starts a page or runs past the end of its page:
        copied here when it ends in the next page at the latest and every page it touches
        has a free slot, exactly as :meth:`insert_slow` would lay it (the same page headers,
        ``rem_len`` and alignment); otherwise the view for :meth:`insert_slow`."""
        ctl = self._ctl
        seg = ctl.segment_size
        lsn = pos + page_header_size(pos, seg) if pos % PAGE_SIZE == 0 else pos
        next_page = pos - pos % PAGE_SIZE + PAGE_SIZE
        first = min(tot, next_page - lsn)  # the record's bytes on its first page
        rest = tot - first
        last_page = next_page if rest else next_page - PAGE_SIZE
        if rest > PAGE_SIZE - page_header_size(next_page, seg) or last_page + PAGE_SIZE > self.window_end():
            return memoryview(mv)
        if lsn != pos:
            self.lay_page(pos, 0)
        ring, ring_size = ctl.ring, ctl.ring_size
        r = lsn % ring_size
        if not rest:
            write_record(ring, r, mv, ctl.epoch, ctl.prev_lsn)
            end = lsn + tot
        else:
            record = memoryview(pack_record_header(mv, epoch=ctl.epoch, prev=ctl.prev_lsn) + mv)
            ring[r : r + first] = record[:first]
            cont = next_page + self.lay_page(next_page, rest)
            r = cont % ring_size
            ring[r : r + rest] = record[first:]
            end = cont + rest
        ctl.prev_lsn = lsn
        aligned_end = align_up(end, MAXALIGN)
        ctl.insert_pos = ctl.insert_end = aligned_end
        self.records += 1
        self.bytes += len(mv)
        return lsn, aligned_end

    def window_end(self) -> int:
        """The first byte whose ring slot may still hold bytes not written yet."""
        ctl = self._ctl
        return ctl.write_pos - ctl.write_pos % PAGE_SIZE + ctl.ring_size

    def lay_page(self, page_lsn: int, rem_len: int) -> int:
        """Zero the page's slot and write its header there; returns the header size."""
        ctl = self._ctl
        r = page_lsn % ctl.ring_size
        hdr = pack_page_header(
            page_lsn, segment_size=ctl.segment_size, epoch=ctl.epoch, rem_len=rem_len, sysid=ctl.sysid
        )
        ring = ctl.ring
        ring[r : r + PAGE_SIZE] = bytes(PAGE_SIZE)
        ring[r : r + len(hdr)] = hdr
        return len(hdr)

    async def insert_slow(self, mv: memoryview) -> tuple[int, int]:
        """Copy a record page by page, making room as needed; one such copy at a time, in
        arrival order, and ahead of any later fast-path append."""
        ctl = self._ctl
        self.slow_pending += 1
        try:
            await self.lock.acquire()
        except BaseException:
            self.slow_pending -= 1
            raise
        try:
            # A record half copied cannot be taken back (its first pages may be on disk
            # already), so the copy runs to the end even when the caller is cancelled; the
            # cancellation is delivered right after (the record is then in the log).
            with anyio.CancelScope(shield=True):
                ctl.check_usable()
                header = pack_record_header(mv, epoch=ctl.epoch, prev=ctl.prev_lsn)
                tot = RECORD_HEADER_SIZE + len(mv)
                remaining = tot
                pos = ctl.insert_pos
                lsn = -1
                for part in (memoryview(header), mv):
                    i = 0
                    while i < len(part):
                        if pos % PAGE_SIZE == 0:
                            while pos + PAGE_SIZE > self.window_end():
                                await self._make_room()
                            pos += self.lay_page(pos, remaining if lsn >= 0 else 0)
                            ctl.insert_pos = pos
                        if lsn < 0:
                            lsn = pos
                        take = min(len(part) - i, PAGE_SIZE - pos % PAGE_SIZE)
                        r = pos % ctl.ring_size
                        ctl.ring[r : r + take] = part[i : i + take]
                        i += take
                        pos += take
                        remaining -= take
                        ctl.insert_pos = pos
                end = align_up(pos, MAXALIGN)
                ctl.insert_pos = ctl.insert_end = end
                ctl.prev_lsn = lsn
                self.records += 1
                self.bytes += len(mv)
            await anyio.lowlevel.checkpoint_if_cancelled()
            return lsn, end
        finally:
            self.slow_pending -= 1
            self.lock.release()
