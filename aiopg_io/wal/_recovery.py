"""Recovery on open: checking the segments against ``wal.control``, finding where the log
ends (:class:`WALRecovery`), and stamping the new epoch (PostgreSQL's ``StartupXLOG`` reading
with xlogreader.c).

What it owns: nothing after open. It sets, once, ``segment_size``, ``sysid``, ``epoch``,
``control``, ``oldest``, the positions and ``recovery`` of :class:`~._xlogctl.XLogCtl`, the
set of segments of :class:`~._segments.WALSegments`, and the writer's ``io_align``.

How it works:

- All segments are fsynced (a previous process may have died with records in the page
  cache: they are part of the log only once durable, like PostgreSQL's
  ``SyncDataDirectory``), then read from the oldest, with read-ahead (:mod:`._reader`);
  decoding stops at the first invalid page or record (bad magic or page address, bad
  length, prev-link or CRC, an epoch older than the log: see :mod:`aiopg_io.wal._format`).
  The log ends there; appending resumes at that point.
- Before any new record, the page holding the end is *stamped* in two synced writes: first
  its tail is zeroed (the torn remnant is cut), then its header gets the new epoch, which
  makes the new epoch durable before any record of it exists. Stale bytes that survive
  further on (pages written but never synced before the crash) carry older epochs, and the
  decoder refuses them even where a new record lines up with them.
- Before reading, every segment's first page is checked against the control file's system
  identifier (a segment of another WAL is refused, the first one too), and segments older
  than the log's start (left by a truncation a crash cut short) are removed.
- A segment missing, empty, cut short or with no page of this WAL where the log breaks,
  while a later segment holds pages of this WAL, is refused with WALCorruptError naming it
  (those records exist; silently dropping them would lose acknowledged data). A later
  segment that the torn record itself spans into, or whose pages are older than the log's
  last page, is no such evidence: a power cut can keep the last part of a record spanning
  segments and lose an earlier one (segments are synced in order, so never more than that).
  Corruption in the middle of a whole segment ends the log there, as in PostgreSQL; records
  after it are not recoverable. What recovery found (:class:`WALRecovery`: a clean end, a
  torn tail at an LSN, or damage) is kept on :attr:`WAL.recovery <aiopg_io.wal.WAL.recovery>`.

Facts relied on:

- Records written but not synced before a crash may or may not be on disk, in any part:
  only a completed fsync promises anything (fsync(2)); until then the page cache writes
  dirty pages back in no promised order, and a write spanning pages may land in part.
- The writer syncs each segment before it moves to the next (:mod:`._flush`), so at most the
  last segments the log reached hold bytes not durable.
- O_DIRECT needs offsets and memory aligned to the file system's direct-I/O alignment
  (:mod:`aiopg_io._direct`); the WAL's 8 KiB pages must be a multiple of it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

import aiopg_io
from aiopg_io._direct import aligned_buffer, dio_alignment
from aiopg_io._paths import fsync_directory

from ._control import ControlData, create_control, read_control
from ._flush import XLogFlush
from ._format import (
    CONTROL_NAME,
    PAGE_SIZE,
    XLP_MAGIC_V1,
    Decoder,
    PageHeader,
    page_header_size,
    parse_page_header,
    segment_name,
)
from ._insert import XLogInsert
from ._reader import WALEnd, WALEndKind, scan
from ._segments import WALSegments, list_segments
from ._xlogctl import DEFAULT_SEGMENT_SIZE, MIN_SEGMENT_SIZE, XLogCtl
from .errors import NotAWALError, WALCorruptError, WALFormatError

__all__ = ["WALRecovery", "recover"]


@dataclass(frozen=True, slots=True)
class WALRecovery:
    """What recovery found when the WAL was opened (:attr:`WAL.recovery`): where the log
    ended and why, how many records it holds, and the names of the segments it removed
    as leftovers of a ``truncate_before`` cut short (older than the log's start)."""

    end: WALEnd
    records: int
    removed: tuple[str, ...] = ()


async def recover(
    ctl: XLogCtl, segs: WALSegments, flush: XLogFlush, insert: XLogInsert, segment_size: int | None
) -> None:
    """Open the WAL in ``ctl.directory`` (module docstring); ``segment_size`` is what the
    caller asked for (None: the WAL's own, or the default for a new one)."""
    segments = await list_segments(ctl.directory, ctl.driver)
    control = await read_control(ctl.directory, ctl.driver)
    if control is None:
        if segments:
            await _refuse_without_control(ctl, segments)
        new = ControlData(
            sysid=secrets.randbits(63) | 1,
            segment_size=DEFAULT_SEGMENT_SIZE if segment_size is None else segment_size,
            blcksz=PAGE_SIZE,
            oldest=0,
        )
        try:
            control = await create_control(ctl.directory, new, ctl.driver)
        except OSError as exc:
            # As a failed write of the stamp: the WAL does not open.
            raise ctl.poisoned_by(exc) from exc
    control_path = os.path.join(ctl.directory, CONTROL_NAME)
    existing = control.segment_size
    if control.blcksz != PAGE_SIZE or existing % PAGE_SIZE or existing < MIN_SEGMENT_SIZE:
        raise NotAWALError(
            f"{control_path!r} describes segments of {existing} bytes in pages of {control.blcksz}; "
            f"this version reads pages of {PAGE_SIZE} and segments of a multiple of them"
        )
    if segment_size is not None and existing != segment_size:
        raise NotAWALError(
            f"the WAL in {ctl.directory!r} has segments of {existing} bytes, not the "
            f"segment_size={segment_size} asked for; open it without segment_size"
        )
    ctl.control = control
    ctl.segment_size = seg = existing
    ctl.sysid = sysid = control.sysid
    if ctl.direct:
        align = dio_alignment(ctl.directory)
        if PAGE_SIZE % align.offset or PAGE_SIZE % align.memory:
            raise ValueError(
                f"direct I/O in {ctl.directory!r} needs {align.block}-byte alignment, which the "
                f"{PAGE_SIZE}-byte WAL page does not divide; use direct=False"
            )
        flush.io_align = align.offset
    # Every segment's first page says whose it is and which position it was written for.
    heads: dict[int, PageHeader | None] = {}
    sizes: dict[int, int] = {}
    for segno in sorted(segments):
        head = await _read_first_page(ctl, segno)
        sizes[segno] = os.stat(segments[segno]).st_size
        heads[segno] = _check_head(ctl, segno, head)
    start = control.oldest
    removed = await segs.remove_leftovers(sorted(s for s in segments if s < start))
    for segno in removed:
        del segments[segno], heads[segno]
    segs.segments = set(segments)
    live = sorted(s for s, h in heads.items() if h is not None and h.pageaddr == s * seg)

    def heads_epoch(segno: int) -> int:
        h = heads[segno]
        return 0 if h is None else h.epoch

    max_epoch = max([h.epoch for h in heads.values() if h is not None], default=0)
    if segments:
        await _fsync_segments(ctl, sorted(segments))
    decoder = Decoder(
        segment_size=seg,
        start=start * seg,
        sysid=sysid,
        prev=0 if start == 0 else None,
        resync=start != 0,
    )
    await scan(ctl, segs, decoder, start * seg)
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
        _refuse_gap(ctl, decoder, later[0], segments, sizes, heads)
        kind = WALEndKind.DAMAGED
        reason += (
            f"; segment {segment_name(later[0])} after it held records of this WAL, cut off with "
            "the rest of the log after this point"
        )
    elif decoder.torn and size < seg:
        reason += f" (segment {segment_name(end // seg)} is {size} bytes, not {seg}: cut short)"
    ctl.prev_lsn = decoder.last_lsn or 0
    ctl.oldest = start * seg
    ctl.epoch = max(max_epoch, decoder.max_epoch) + 1
    ctl.recovery = WALRecovery(
        WALEnd(kind, end, segment_name(end // seg), reason),
        decoder.records,
        tuple(segment_name(s) for s in removed),
    )
    await _stamp(ctl, flush, insert, end)
    ctl.recovered_to = ctl.flushed


def _check_head(ctl: XLogCtl, segno: int, head: bytes | None) -> PageHeader | None:
    """The first page header of segment ``segno`` when it is one of this WAL's (at its
    own position, or recycled from another); None when it has none (zeros, garbage, an
    empty file). A segment of another WAL, format or shape is refused here."""
    name = segment_name(segno)
    hdr = parse_page_header(head) if head is not None else None
    if hdr is None:
        if head is not None and len(head) >= 2 and int.from_bytes(head[:2], "little") == XLP_MAGIC_V1:
            raise WALFormatError(
                f"segment {name} in {ctl.directory!r} is in WAL format 1 (page magic "
                f"{XLP_MAGIC_V1:#x}), not this WAL's format 2: it belongs to another WAL; move it out "
                "of the directory",
            )
        return None
    if hdr.sysid is None:
        return None  # a first page without the long header: not a segment start
    if hdr.sysid != ctl.sysid:
        raise WALCorruptError(
            f"segment {name} in {ctl.directory!r} belongs to another WAL (system id {hdr.sysid:#x}; "
            f"this WAL's, in {CONTROL_NAME}, is {ctl.sysid:#x}): move it out of the directory, and "
            f"restore this WAL's segment {name} from a copy if it replaced one",
            segment=name,
        )
    if hdr.seg_size != ctl.segment_size or hdr.blcksz != PAGE_SIZE:
        raise WALCorruptError(
            f"segment {name} in {ctl.directory!r} was written with segments of {hdr.seg_size} bytes "
            f"and pages of {hdr.blcksz}, not this WAL's {ctl.segment_size} and {PAGE_SIZE}: it "
            "belongs to another WAL; move it out of the directory",
            segment=name,
        )
    return hdr


async def _refuse_without_control(ctl: XLogCtl, segments: dict[int, str]) -> None:
    first = min(segments)
    path = segments[first]
    head = await _read_first_page(ctl, first)
    if head is not None and len(head) >= 2 and int.from_bytes(head[:2], "little") == XLP_MAGIC_V1:
        raise WALFormatError(
            f"the WAL in {ctl.directory!r} is in format 1 (page magic {XLP_MAGIC_V1:#x}, no "
            f"{CONTROL_NAME}), written by an earlier aiopg_io; this version reads format 2 only: read "
            "its records with the version that wrote it and append them to a new WAL"
        )
    hdr = parse_page_header(head) if head is not None else None
    if hdr is None or hdr.sysid is None:
        size = os.stat(path).st_size
        raise NotAWALError(
            f"{path!r} is not a WAL segment (no page header, {size} bytes), and {ctl.directory!r} "
            f"has no {CONTROL_NAME}; point WAL.open at an empty or WAL-only directory"
        )
    raise WALCorruptError(
        f"{ctl.directory!r} holds segments of a WAL (system id {hdr.sysid:#x}) but no {CONTROL_NAME}: "
        "the control file, which says whose segments these are and where the log starts, is lost; "
        "restore it from a copy of this WAL",
        segment=segment_name(first),
    )


def _refuse_gap(
    ctl: XLogCtl,
    decoder: Decoder,
    later: int,
    segments: dict[int, str],
    sizes: dict[int, int],
    heads: dict[int, PageHeader | None],
) -> None:
    """The log ends before segment ``later``, which holds records of this WAL: those
    records exist. When the segment at fault is missing, empty, short or does not go
    on with the log from its first page, raise WALCorruptError naming it; else return."""
    seg = ctl.segment_size
    end = decoder.end_lsn
    at = decoder.fail_page // seg
    missing = [s for s in range(end // seg, later) if s not in segments]
    name = segment_name(missing[0] if missing else at)
    if missing:
        what = f"segment {name} is missing from {ctl.directory!r}"
    elif sizes[at] == 0:
        what = f"segment {name} in {ctl.directory!r} is empty (0 bytes, not {seg})"
    elif sizes[at] < seg:
        what = (
            f"segment {name} in {ctl.directory!r} is cut short ({sizes[at]} bytes, not {seg}); the log "
            f"breaks at {end:#x} ({decoder.end_reason})"
        )
    elif decoder.fail_page == at * seg and heads[at] is None:
        what = f"segment {name} in {ctl.directory!r} holds no page of this WAL ({decoder.end_reason})"
    elif decoder.fail_page == at * seg:
        what = f"segment {name} in {ctl.directory!r} does not go on with the log ({decoder.end_reason})"
    else:
        return  # a break inside a whole segment: the caller reports it
    raise WALCorruptError(
        f"{what}, but segment {segment_name(later)} after it holds records of this WAL. Restore "
        f"segment {name} from a copy of this WAL; until then the WAL does not open, since opening "
        f"would end the log at {end:#x} and lose every record after it, acknowledged ones included",
        segment=name,
        lsn=end,
    )


async def _read_first_page(ctl: XLogCtl, segno: int) -> bytes | None:
    buf = aligned_buffer(PAGE_SIZE)
    async with aiopg_io.open(ctl.segment_path(segno), "rb", direct=ctl.direct, driver=ctl.driver) as f:
        got = await f.preadinto(buf, 0)
    return bytes(buf[:got]) if got else None


async def _fsync_segments(ctl: XLogCtl, segnos: list[int]) -> None:
    for segno in segnos:
        async with aiopg_io.open(ctl.segment_path(segno), "rb", driver=ctl.driver) as f:
            await f.fsync()
    await fsync_directory(ctl.directory, ctl.driver)


async def _stamp(ctl: XLogCtl, flush: XLogFlush, insert: XLogInsert, end: int) -> None:
    """Cut the torn tail at ``end`` and make the new epoch durable (module docstring)."""
    seg = ctl.segment_size
    page = end - end % PAGE_SIZE
    segno = page // seg
    r = page % ctl.ring_size
    ring = ctl.ring
    ring[r : r + PAGE_SIZE] = bytes(PAGE_SIZE)
    if end > page:
        f = await flush.segment_for_write(segno)
        got = await f.preadinto(ring[r : r + PAGE_SIZE], page - segno * seg)
        if got < end - page:
            raise WALCorruptError(f"segment {segment_name(segno)} shrank while the WAL was being opened")
        ring[r + (end - page) : r + PAGE_SIZE] = bytes(PAGE_SIZE - (end - page))
    try:
        # 1. The tail of the page: zeros after the last valid byte (the old header stays).
        await flush.write(end, page + PAGE_SIZE)
        await flush.sync_write_file()
        # 2. The header, now with the new epoch (a fresh one on an empty page).
        if end == page:
            hsize = insert.lay_page(page, 0)
            end = page + hsize
        else:
            ring[r + 4 : r + 8] = ctl.epoch.to_bytes(4, "little")
            hsize = page_header_size(page, seg)
        await flush.write(page, page + hsize)
        await flush.sync_write_file()
    except OSError as exc:
        raise ctl.poisoned_by(exc) from exc
    ctl.insert_pos = ctl.insert_end = ctl.write_pos = ctl.flushed = end
