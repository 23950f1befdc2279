"""The on-disk format of the WAL: LSNs, segments, pages, records, and the decoder.

The layout is PostgreSQL's (src/include/access/xlog_internal.h, xlogrecord.h), cut down:

- An **LSN** is a 64-bit byte position in one endless address space
  (``XLogRecPtr``). The space is cut into **segments** of ``segment_size`` bytes, one file
  each, named by the segment number in 16 hex digits; a segment is cut into **pages** of
  :data:`PAGE_SIZE` bytes (``XLOG_BLCKSZ``).
- Every page starts with a header (``XLogPageHeaderData``, 24 bytes, little-endian):
  ``magic u16, info u16, tli u32, pageaddr u64, rem_len u32, pad u32``. The first page of a
  segment has the long header (``XLogLongPageHeaderData``, 40 bytes), which adds
  ``sysid u64, seg_size u32, blcksz u32``: a segment copied from another WAL (other
  ``sysid``) or written with other sizes is recognised. The system identifier is drawn when
  the WAL is created and kept in its control file (:mod:`aiopg_io.wal._control`, as
  PostgreSQL keeps it in ``pg_control``), which is what every segment is checked against:
  the first segment is no better witness than any other. ``pageaddr`` is the page's own
  LSN, so a recycled segment (renamed from an old number) or a stale page reads as invalid
  at once. When a record continues from the previous page, ``info`` has
  :data:`XLP_FIRST_IS_CONTRECORD` and ``rem_len`` counts the record's bytes still to come;
  a reader that lands on a page can therefore find the next record boundary
  (resynchronise) without the previous pages.
- The **magic** names the format version, as PostgreSQL's ``XLOG_PAGE_MAGIC`` changes with
  each incompatible WAL format. :data:`XLP_MAGIC` ``0xD0A2`` is format 2 (a control file
  beside the segments); ``0xD0A1`` (:data:`XLP_MAGIC_V1`) was format 1, the same pages
  without a control file. Format 1 is recognised, and refused with an error that says so.
- A **record** is a 24-byte header (``XLogRecord``) and the payload, starting on an
  8-byte boundary (MAXALIGN): ``tot_len u32, epoch u32, prev u64, info u8, pad[3], crc
  u32``. ``tot_len`` counts header + payload; ``prev`` is the LSN of the previous record
  (``xl_prev``), so a record that is valid on its own but belongs to another history is
  refused; ``crc`` covers the payload, then the header bytes before it, as PostgreSQL's
  ``xl_crc`` does. Header and payload may both be split across pages and segments.

Where this departs from PostgreSQL, and why:

- **CRC-32 (zlib) rather than CRC-32C.** ``zlib.crc32`` is in the standard library and runs
  at C speed (several GB/s with zlib's folding code); CRC-32C would need a third-party
  wheel for the same speed. Both detect every burst error up to 32 bits and a random
  corruption with probability 1 - 2**-32, which is all the WAL asks of them.
- **An epoch instead of a timeline.** PostgreSQL's ``xlp_tli`` changes only at
  point-in-time recovery. Here ``tli`` holds an *epoch* that grows by one at every open
  that resumes the log, and each record carries the epoch it was written in (in the slot
  of PostgreSQL's ``xl_xid``). After a crash, bytes that were written but never made
  durable may survive beyond the recovered end; a later record written at the same
  position could then make such a stale record line up (same position, matching
  ``prev``). The decoder refuses any page or record whose epoch is older than the last
  record it accepted, so stale bytes of an earlier run can never be read as the
  continuation of a later one. See :mod:`aiopg_io.wal._recovery` for the stamp written at open.

The decoder below works on bytes only (no I/O), so recovery logic is tested without files.
"""

from __future__ import annotations

import operator
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from aiopg_io.drivers._compiled import load

__all__ = [
    "CONTROL_NAME",
    "FORMAT_VERSION",
    "HARD_MAX_RECORD",
    "LOCK_NAME",
    "LONG_PAGE_HEADER_SIZE",
    "MAXALIGN",
    "PAGE_HEADER_SIZE",
    "PAGE_SIZE",
    "RECORD_HEADER_SIZE",
    "TEMP_PREFIX",
    "XLP_FIRST_IS_CONTRECORD",
    "XLP_LONG_HEADER",
    "XLP_MAGIC",
    "XLP_MAGIC_V1",
    "Decoder",
    "PageHeader",
    "align_up",
    "page_header_size",
    "pack_page_header",
    "pack_record_header",
    "parse_page_header",
    "record_crc",
    "segment_name",
    "segment_number",
    "write_record",
    "write_record_header",
    "write_record_py",
]

PAGE_SIZE = 8192
#: Format 2. Format 1 (0xD0A1) had no control file; see the module docstring.
XLP_MAGIC = 0xD0A2
XLP_MAGIC_V1 = 0xD0A1
FORMAT_VERSION = 2
XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
_XLP_ALL_FLAGS = XLP_FIRST_IS_CONTRECORD | XLP_LONG_HEADER
MAXALIGN = 8

_PAGE_HEADER = struct.Struct("<HHIQI4x")
_LONG_TAIL = struct.Struct("<QII")
PAGE_HEADER_SIZE = _PAGE_HEADER.size  # 24
LONG_PAGE_HEADER_SIZE = PAGE_HEADER_SIZE + _LONG_TAIL.size  # 40

_RECORD_HEADER = struct.Struct("<IIQB3xI")
RECORD_HEADER_SIZE = _RECORD_HEADER.size  # 24
_CRC_COVERED = RECORD_HEADER_SIZE - 4  # the header bytes before xl_crc
_PREFIX = struct.Struct("<IIQB3x")

#: tot_len is a u32; no record can be longer, whatever the writer's configured maximum.
HARD_MAX_RECORD = 0xFFFFFFFF - RECORD_HEADER_SIZE

_SEGMENT_RE = re.compile(r"^[0-9A-F]{16}$")
# The other names in a WAL directory: the lock, the control file, and the prefix of files
# being built (segments, the first control file) that are renamed into place once durable.
LOCK_NAME = "wal.lock"
CONTROL_NAME = "wal.control"
TEMP_PREFIX = "xlogtemp."


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def page_header_size(page_lsn: int, segment_size: int) -> int:
    return LONG_PAGE_HEADER_SIZE if page_lsn % segment_size == 0 else PAGE_HEADER_SIZE


def segment_name(segno: int) -> str:
    return f"{segno:016X}"


def segment_number(name: str) -> int | None:
    """The segment number a file name stands for, or None when it is not a segment name."""
    return int(name, 16) if _SEGMENT_RE.match(name) else None


@dataclass(frozen=True, slots=True)
class PageHeader:
    magic: int
    info: int
    epoch: int
    pageaddr: int
    rem_len: int
    sysid: int | None = None
    seg_size: int | None = None
    blcksz: int | None = None

    @property
    def size(self) -> int:
        return LONG_PAGE_HEADER_SIZE if self.info & XLP_LONG_HEADER else PAGE_HEADER_SIZE


def pack_page_header(page_lsn: int, *, segment_size: int, epoch: int, rem_len: int, sysid: int) -> bytes:
    info = XLP_FIRST_IS_CONTRECORD if rem_len else 0
    if page_lsn % segment_size == 0:
        return _PAGE_HEADER.pack(
            XLP_MAGIC, info | XLP_LONG_HEADER, epoch, page_lsn, rem_len
        ) + _LONG_TAIL.pack(sysid, segment_size, PAGE_SIZE)
    return _PAGE_HEADER.pack(XLP_MAGIC, info, epoch, page_lsn, rem_len)


def parse_page_header(page: memoryview | bytes) -> PageHeader | None:
    """The header at the start of ``page``, or None when the magic is wrong (zeros, garbage)."""
    if len(page) < PAGE_HEADER_SIZE:
        return None
    magic, info, epoch, pageaddr, rem_len = _PAGE_HEADER.unpack_from(page, 0)
    if magic != XLP_MAGIC:
        return None
    if info & XLP_LONG_HEADER:
        if len(page) < LONG_PAGE_HEADER_SIZE:
            return None
        sysid, seg_size, blcksz = _LONG_TAIL.unpack_from(page, PAGE_HEADER_SIZE)
        return PageHeader(magic, info, epoch, pageaddr, rem_len, sysid, seg_size, blcksz)
    return PageHeader(magic, info, epoch, pageaddr, rem_len)


def record_crc(payload: memoryview | bytes, prefix: bytes) -> int:
    return zlib.crc32(prefix, zlib.crc32(payload))


def write_record_header(
    buf: memoryview, offset: int, payload: memoryview | bytes, epoch: int, prev: int
) -> None:
    """:func:`pack_record_header` straight into ``buf`` at ``offset`` (the insertion hot path:
    positional arguments and bound methods, as it runs once per append)."""
    tot = RECORD_HEADER_SIZE + len(payload)
    crc = _crc32(_pack_prefix(tot, epoch, prev, 0), _crc32(payload))
    _pack_header_into(buf, offset, tot, epoch, prev, 0, crc)


_pack_header_into = _RECORD_HEADER.pack_into
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_pack_prefix = _PREFIX.pack
_crc32 = zlib.crc32


def write_record_py(buf: memoryview, offset: int, payload: memoryview | bytes, epoch: int, prev: int) -> None:
    """The record (header, then payload) into ``buf`` at ``offset``: :func:`write_record`'s
    pure-Python twin. Both count bytes (a view of wider items by its bytes), and refuse what
    the header cannot hold (OverflowError) and what the buffer cannot (ValueError) in the
    same words."""
    offset = operator.index(offset)
    if not 0 <= epoch <= _U32_MAX:
        raise OverflowError(f"epoch {epoch!r} does not fit the record header's u32")
    if not 0 <= prev <= _U64_MAX:
        raise OverflowError(f"prev {prev!r} does not fit the record header's u64")
    if buf.format != "B":
        buf = buf.cast("B")
    if type(payload) is not bytes:
        payload = memoryview(payload).cast("B")
    tot = RECORD_HEADER_SIZE + len(payload)
    if tot > _U32_MAX:
        raise OverflowError(f"a record of {tot} bytes does not fit the header's u32 length")
    if offset < 0 or offset + tot > len(buf):
        raise ValueError(
            f"a record of {tot} bytes at offset {offset} does not fit a buffer of {len(buf)} bytes"
        )
    write_record_header(buf, offset, payload, epoch, prev)
    buf[offset + RECORD_HEADER_SIZE : offset + RECORD_HEADER_SIZE + len(payload)] = payload


#: The record (header, then payload) into ``buf`` at ``offset``, which must have room for
#: it: ``aiopg_io/wal/_record.c`` where built (one call per append, no Python frame), else
#: :func:`write_record_py`; both write the same bytes.
write_record: Callable[[memoryview, int, memoryview | bytes, int, int], None] = write_record_py
_RECORD_C = load("aiopg_io.wal._record")[0]
if _RECORD_C is not None:
    write_record = _RECORD_C.write_record


def pack_record_header(payload: memoryview | bytes, *, epoch: int, prev: int) -> bytes:
    prefix = _PREFIX.pack(RECORD_HEADER_SIZE + len(payload), epoch, prev, 0)
    return prefix + record_crc(payload, prefix).to_bytes(4, "little")


class Decoder:
    """Turns the pages of the log, fed in order, into records; stops at the first invalid one.

    Feed whole pages with :meth:`feed`, starting with the page that holds ``start``. When
    it returns with :attr:`done` set, :attr:`end_lsn` is where the valid log ends (the
    position the next record would take) and :attr:`end_reason` says why it ended there.
    :attr:`torn` tells the two kinds of end apart: False when the log ends after a whole
    record and what follows was never part of it (zeros, a page of another position or of an
    older epoch, no more pages); True when the bytes at :attr:`end_lsn` are a record that is
    not whole or not valid (a write cut short, or damage), and :attr:`end_lsn` is its LSN.

    ``prev`` is the LSN the first record's prev-link must hold (None: not checked, as when
    a reader starts in the middle). ``resync`` starts at the first record boundary of the
    page holding ``start`` (skipping a continuation, as PostgreSQL's
    ``XLogFindNextRecord``), for reading from the oldest segment left after truncation.
    """

    def __init__(
        self,
        *,
        segment_size: int,
        start: int,
        sysid: int | None = None,
        prev: int | None = None,
        resync: bool = False,
        min_epoch: int = 0,
    ) -> None:
        self.segment_size = segment_size
        self.sysid = sysid
        self.pos = start
        self.prev = prev
        self.epoch = min_epoch  # no page or record may be older than the last record read
        self.max_epoch = min_epoch
        self.resync = resync
        self.done = False
        self.end_reason = ""
        self.torn = False
        # Past the last page accepted (valid header of this log, at its place): a segment
        # that starts below it was read as part of the log, if only as the continuation
        # of the torn record at the end.
        self.seen_to = start
        self.fail_page = start  # the page being read when the log ended
        self._page = start
        self.end_lsn = start
        self.last_lsn: int | None = prev
        self.records = 0
        # The record being assembled across pages.
        self._rec_lsn = 0
        self._need = 0  # bytes of the record still to come (header + payload)
        self._head = bytearray()
        self._tot_len = 0
        self._rec_epoch = 0
        self._payload = bytearray()
        self._skip = 0  # bytes of a continuation to skip when resynchronising

    def _stop(self, reason: str, end_lsn: int, *, torn: bool = True) -> None:
        self.done = True
        self.end_reason = reason
        self.end_lsn = end_lsn
        self.torn = torn
        self.fail_page = self._page

    def _check_page(self, page_lsn: int, page: memoryview) -> PageHeader | None:
        hdr = parse_page_header(page)
        at = f"page {page_lsn:#x}"
        end = self._rec_lsn if self._need else page_lsn if self.pos <= page_lsn else self.pos
        # A page never written (zeros), or left from another position or an older run, ends
        # the log cleanly, unless a record was still to continue on it.
        unwritten = not self._need
        if hdr is None:
            if any(page[:PAGE_HEADER_SIZE]):
                self._stop(f"{at}: no page header (bad magic: garbage)", end)
            else:
                self._stop(f"{at}: no page header (bad magic: zeros)", end, torn=not unwritten)
            return None
        if hdr.pageaddr != page_lsn:
            reason = f"{at}: header says {hdr.pageaddr:#x} (a stale or recycled page)"
            self._stop(reason, end, torn=not unwritten)
            return None
        if hdr.info & ~_XLP_ALL_FLAGS or bool(hdr.info & XLP_LONG_HEADER) != (
            page_lsn % self.segment_size == 0
        ):
            self._stop(f"{at}: invalid info bits {hdr.info:#x}", end)
            return None
        if hdr.info & XLP_LONG_HEADER:
            if hdr.seg_size != self.segment_size or hdr.blcksz != PAGE_SIZE:
                self._stop(f"{at}: segment/page size {hdr.seg_size}/{hdr.blcksz} differ from the WAL's", end)
                return None
            if self.sysid is None:
                self.sysid = hdr.sysid
            elif hdr.sysid != self.sysid:
                self._stop(f"{at}: system id {hdr.sysid:#x} is not this WAL's {self.sysid:#x}", end)
                return None
        if hdr.epoch < self.epoch:
            reason = f"{at}: epoch {hdr.epoch} is older than the log's {self.epoch} (stale page)"
            self._stop(reason, end, torn=not unwritten)
            return None
        contrecord = bool(hdr.info & XLP_FIRST_IS_CONTRECORD)
        if self._need:
            if not contrecord or hdr.rem_len != self._need:
                self._stop(f"{at}: continuation of the record at {self._rec_lsn:#x} is missing", end)
                return None
        elif (self.resync or self._skip) and self.pos <= page_lsn + hdr.size:
            self._skip = align_up(hdr.rem_len, MAXALIGN) if contrecord else 0
        elif contrecord and self.pos <= page_lsn + hdr.size:
            self._stop(f"{at}: a continuation where a record should start", end)
            return None
        self.max_epoch = max(self.max_epoch, hdr.epoch)
        self.seen_to = page_lsn + PAGE_SIZE
        return hdr

    def feed(self, page_lsn: int, page: memoryview) -> list[tuple[int, bytes]]:
        """Decode one page (``len(page) == PAGE_SIZE``); returns the records completed in it."""
        out: list[tuple[int, bytes]] = []
        if self.done:
            return out
        self._page = page_lsn
        hdr = self._check_page(page_lsn, page)
        if hdr is None:
            return out
        self.resync = False
        off = max(self.pos - page_lsn, hdr.size)
        if self._skip:
            n = min(self._skip, PAGE_SIZE - off)
            self._skip -= n
            off += n
        while off < PAGE_SIZE:
            if not self._need:
                # A record starts here; tot_len and epoch are never split (8-byte alignment).
                lsn = page_lsn + off
                tot_len, epoch = struct.unpack_from("<II", page, off)
                if tot_len == 0:
                    self._stop("end of WAL (zeros)", lsn, torn=False)
                    return out
                if tot_len < RECORD_HEADER_SIZE:
                    self._stop(f"record at {lsn:#x}: invalid length {tot_len}", lsn)
                    return out
                if epoch < self.epoch:
                    self._stop(f"record at {lsn:#x}: epoch {epoch} is older than the log's {self.epoch}", lsn)
                    return out
                avail = PAGE_SIZE - off
                if avail >= tot_len:
                    # The common case: the whole record on this page, decoded without copies.
                    if not self._accept_header(lsn, page[off : off + RECORD_HEADER_SIZE]):
                        return out
                    payload = page[off + RECORD_HEADER_SIZE : off + tot_len]
                    if not self._accept_record(lsn, page[off : off + RECORD_HEADER_SIZE], payload):
                        return out
                    out.append((lsn, bytes(payload)))
                    off = align_up(off + tot_len, MAXALIGN)
                    self.pos = page_lsn + off
                    continue
                self._rec_lsn = lsn
                self._need = tot_len
                self._tot_len = tot_len
                self._rec_epoch = epoch
                self._head = bytearray()
                self._payload = bytearray()
            n = min(self._need, PAGE_SIZE - off)
            chunk = page[off : off + n]
            off += n
            self._need -= n
            if len(self._head) < RECORD_HEADER_SIZE:
                h = RECORD_HEADER_SIZE - len(self._head)
                self._head += chunk[:h]
                chunk = chunk[h:]
                if len(self._head) == RECORD_HEADER_SIZE and not self._accept_header(
                    self._rec_lsn, self._head
                ):
                    return out
            self._payload += chunk
            if not self._need:
                if not self._accept_record(self._rec_lsn, self._head, self._payload):
                    return out
                out.append((self._rec_lsn, bytes(self._payload)))
                self._payload = bytearray()
                off = align_up(off, MAXALIGN)
                self.pos = page_lsn + off
        self.pos = page_lsn + PAGE_SIZE
        return out

    def finish(self, reason: str) -> None:
        """The pages ran out (no more segments, or the end the caller wanted) before an invalid one."""
        if not self.done:
            self._page = self.pos - self.pos % PAGE_SIZE
            self._stop(reason, self._rec_lsn if self._need else self.pos, torn=bool(self._need))

    def _accept_header(self, lsn: int, head: memoryview | bytearray) -> bool:
        _tot, _epoch, prev, info = _PREFIX.unpack_from(head, 0)
        if info != 0 or bytes(head[17:20]) != b"\0\0\0":
            self._stop(f"record at {lsn:#x}: invalid info bits {info:#x}", lsn)
            return False
        if self.prev is not None and prev != self.prev:
            self._stop(
                f"record at {lsn:#x}: prev-link {prev:#x} is not the previous record {self.prev:#x}", lsn
            )
            return False
        return True

    def _accept_record(self, lsn: int, head: memoryview | bytearray, payload: memoryview | bytearray) -> bool:
        crc = int.from_bytes(head[_CRC_COVERED:RECORD_HEADER_SIZE], "little")
        if zlib.crc32(head[:_CRC_COVERED], zlib.crc32(payload)) != crc:
            self._stop(f"record at {lsn:#x}: CRC mismatch (torn or corrupt)", lsn)
            return False
        epoch = int.from_bytes(head[4:8], "little")
        self.epoch = epoch
        self.max_epoch = max(self.max_epoch, epoch)
        self.prev = lsn
        self.last_lsn = lsn
        self.records += 1
        self._need = 0
        return True
