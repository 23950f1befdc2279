"""The WAL's on-disk format and decoder, on bytes alone (no files, no event loop)."""

from __future__ import annotations

import mmap
import os
import zlib

import pytest

from aiopg_io.wal._format import (
    LONG_PAGE_HEADER_SIZE,
    PAGE_HEADER_SIZE,
    PAGE_SIZE,
    RECORD_HEADER_SIZE,
    XLP_FIRST_IS_CONTRECORD,
    XLP_LONG_HEADER,
    Decoder,
    align_up,
    pack_page_header,
    pack_record_header,
    parse_page_header,
    segment_name,
    segment_number,
    write_record,
    write_record_header,
    write_record_py,
)

SEG = 4 * PAGE_SIZE
SYSID = 0x1234_5678_9ABC


def build(
    records: list[bytes], *, epoch: int = 1, pages: int = 8, start_prev: int = 0
) -> tuple[bytearray, list[int]]:
    """A log image from LSN 0, written the way the WAL lays it out (an independent encoder)."""
    image = bytearray(pages * PAGE_SIZE)
    pos = 0
    prev = start_prev
    lsns = []

    def put(data: bytes, remaining: int) -> int:
        nonlocal pos
        i = 0
        while i < len(data):
            if pos % PAGE_SIZE == 0:
                hdr = pack_page_header(pos, segment_size=SEG, epoch=epoch, rem_len=remaining, sysid=SYSID)
                image[pos : pos + len(hdr)] = hdr
                pos += len(hdr)
            n = min(len(data) - i, PAGE_SIZE - pos % PAGE_SIZE)
            image[pos : pos + n] = data[i : i + n]
            pos += n
            i += n
            remaining -= n
        return remaining

    for payload in records:
        if pos % PAGE_SIZE == 0:
            hdr = pack_page_header(pos, segment_size=SEG, epoch=epoch, rem_len=0, sysid=SYSID)
            image[pos : pos + len(hdr)] = hdr
            pos += len(hdr)
        lsns.append(pos)
        head = pack_record_header(payload, epoch=epoch, prev=prev)
        rest = put(head, RECORD_HEADER_SIZE + len(payload))
        put(payload, rest)
        prev = lsns[-1]
        pos = align_up(pos, 8)
    return image, lsns


def decode(image: bytes | bytearray, **kw: object) -> tuple[list[tuple[int, bytes]], Decoder]:
    args: dict[object, object] = {"segment_size": SEG, "start": 0, "prev": 0}
    args.update(kw)
    d = Decoder(**args)  # type: ignore[arg-type]
    out = []
    mv = memoryview(bytes(image))
    for page in range(0, len(image), PAGE_SIZE):
        out += d.feed(page, mv[page : page + PAGE_SIZE])
        if d.done:
            break
    d.finish("out of pages")
    return out, d


def test_header_sizes_match_postgresql_layout() -> None:
    assert (PAGE_HEADER_SIZE, LONG_PAGE_HEADER_SIZE, RECORD_HEADER_SIZE) == (24, 40, 24)
    long = parse_page_header(pack_page_header(0, segment_size=SEG, epoch=3, rem_len=0, sysid=SYSID))
    assert long is not None and long.info & XLP_LONG_HEADER and long.sysid == SYSID and long.seg_size == SEG
    short = parse_page_header(pack_page_header(PAGE_SIZE, segment_size=SEG, epoch=3, rem_len=77, sysid=SYSID))
    assert short is not None and short.info == XLP_FIRST_IS_CONTRECORD and short.rem_len == 77
    assert short.pageaddr == PAGE_SIZE and short.epoch == 3
    assert parse_page_header(bytes(PAGE_SIZE)) is None


def test_record_crc_is_zlib_crc32_over_payload_then_header() -> None:
    head = pack_record_header(b"abc", epoch=1, prev=40)
    assert int.from_bytes(head[20:24], "little") == zlib.crc32(head[:20], zlib.crc32(b"abc"))


def test_record_header_written_in_place_is_the_packed_one() -> None:
    # The insertion hot path writes the header straight into the ring, from bytes as they
    # are and from views: the same 24 bytes as pack_record_header, around other bytes.
    for payload in (b"", b"abc", bytes(range(256)) * 3):
        for given in (payload, memoryview(bytearray(payload))):
            buf = bytearray(b"\xee" * (RECORD_HEADER_SIZE + 16))
            prev = 0x1234_5678_9A
            write_record_header(memoryview(buf), 8, given, epoch=5, prev=prev)
            assert buf[8 : 8 + RECORD_HEADER_SIZE] == pack_record_header(payload, epoch=5, prev=prev)
            assert buf[:8] == buf[8 + RECORD_HEADER_SIZE :] == b"\xee" * 8


def test_record_written_by_c_and_by_python_is_the_same() -> None:
    # write_record is aiopg_io/wal/_record.c where built, else its Python twin: both lay
    # the packed header then the payload, and touch nothing around them.
    from aiopg_io.wal import _format

    writers = [write_record_py]
    if _format._RECORD_C is not None:
        assert write_record is _format._RECORD_C.write_record
        writers.append(_format._RECORD_C.write_record)
    elif os.environ.get("AIOPG_IO_PURE") is None:
        pytest.skip("aiopg_io.wal._record is not built here (no C compiler or no zlib.h)")
    for payload in (b"", b"abc", bytes(range(256)) * 3):
        for given in (payload, memoryview(bytearray(payload)), bytearray(payload)):
            images = []
            for write in writers:
                buf = bytearray(b"\xee" * (RECORD_HEADER_SIZE + len(payload) + 16))
                write(memoryview(buf), 8, given, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFF8)
                assert buf[8 : 8 + RECORD_HEADER_SIZE] == pack_record_header(
                    payload, epoch=0xFFFF_FFFF, prev=0xFFFF_FFFF_FFFF_FFF8
                )
                assert buf[8 + RECORD_HEADER_SIZE : -8] == payload
                assert buf[:8] == buf[-8:] == b"\xee" * 8
                images.append(bytes(buf))
            assert len(set(images)) == 1
    for write in writers:
        with pytest.raises(ValueError, match="a record of 32 bytes at offset 8 does not fit a buffer of 30"):
            write(memoryview(bytearray(30)), 8, b"too long", 1, 0)  # 32 bytes at 8 in 30
        with pytest.raises(TypeError):
            write(memoryview(bytearray(64)), 0, "text", 1, 0)


def _huge_view(n: int) -> memoryview:
    """A view of ``n`` bytes nobody touches (an anonymous mapping: no memory until written)."""
    try:
        return memoryview(mmap.mmap(-1, n))
    except (OSError, OverflowError, MemoryError) as exc:
        pytest.skip(f"no {n}-byte mapping here ({exc!r})")


def test_record_refusals_are_the_same_in_c_and_python() -> None:
    """What the header cannot hold (an epoch past u32, a prev past u64, negative ones, a
    record of 2**32 bytes or more) is OverflowError, and what the buffer cannot (an offset
    before it or past it, huge ones) ValueError, in the same words from both writers, and
    nothing is written. Both count bytes: a view of wider items writes its bytes. The C
    writer used to word the overflows as CPython's conversions do (and the length as the
    payload's), and the Python one raised struct.error, or counted a view's items."""
    from aiopg_io.wal import _format

    if _format._RECORD_C is None:
        pytest.skip("aiopg_io.wal._record is not built here (no C compiler or no zlib.h)")
    writers = [write_record_py, _format._RECORD_C.write_record]
    buf = bytearray(b"\xee" * 100)
    huge = 2**32 - RECORD_HEADER_SIZE  # a record of 2**32 bytes: one past the u32 length
    refused: list[tuple[tuple[object, ...], type[Exception], str]] = [
        ((0, b"x", 2**32, 0), OverflowError, "epoch 4294967296 does not fit the record header's u32"),
        ((0, b"x", -1, 0), OverflowError, "epoch -1 does not fit the record header's u32"),
        (
            (0, b"x", 1, 2**64),
            OverflowError,
            "prev 18446744073709551616 does not fit the record header's u64",
        ),
        ((0, b"x", 1, -1), OverflowError, "prev -1 does not fit the record header's u64"),
        (
            (0, _huge_view(huge), 1, 0),
            OverflowError,
            "a record of 4294967296 bytes does not fit the header's u32",
        ),
        (
            (0, _huge_view(2**31), 1, 0),
            ValueError,
            "a record of 2147483672 bytes at offset 0 does not fit a buffer",
        ),
        (
            (-1, b"x", 1, 0),
            ValueError,
            "a record of 25 bytes at offset -1 does not fit a buffer of 100 bytes",
        ),
        (
            (2**63, b"x", 1, 0),
            ValueError,
            f"a record of 25 bytes at offset {2**63} does not fit a buffer of 100",
        ),
        ((77, b"", 1, 0), ValueError, "a record of 24 bytes at offset 77 does not fit a buffer of 100 bytes"),
        ((0.0, b"x", 1, 0), TypeError, "'float' object cannot be interpreted as an integer"),
    ]
    for args, kind, words in refused:
        for write in writers:
            with pytest.raises(kind) as info:
                write(memoryview(buf), *args)
            assert str(info.value).startswith(words), (write, args)
            assert buf == b"\xee" * 100, (write, args)
    images = []
    for write in writers:
        wide = memoryview(bytearray(b"\xee" * 64)).cast("I")
        write(wide, 4, memoryview(bytearray(b"abcdefgh")).cast("I"), 1, 2)
        images.append(bytes(wide))
    assert images[0] == images[1]
    assert (
        images[0][4 : 4 + RECORD_HEADER_SIZE + 8]
        == pack_record_header(b"abcdefgh", epoch=1, prev=2) + b"abcdefgh"
    )


def test_segment_names() -> None:
    assert segment_name(0x1F) == "000000000000001F"
    assert segment_number("000000000000001F") == 0x1F
    assert segment_number("000000000000001f") is None
    assert segment_number("wal.lock") is None


def test_round_trip_small_empty_and_spanning_records() -> None:
    records = [b"", b"a", b"x" * 100, b"y" * (PAGE_SIZE * 2 + 5), b"", b"z" * (SEG + 17), b"end"]
    image, lsns = build(records, pages=16)
    got, d = decode(image)
    assert got == list(zip(lsns, records, strict=True))
    assert d.end_reason == "end of WAL (zeros)"
    assert d.last_lsn == lsns[-1]
    assert d.end_lsn == align_up(lsns[-1] + RECORD_HEADER_SIZE + 3, 8)


def test_crc_mismatch_ends_the_log_at_that_record() -> None:
    records = [b"one" * 10, b"two" * 10, b"three" * 10]
    image, lsns = build(records)
    image[lsns[1] + RECORD_HEADER_SIZE + 2] ^= 0xFF
    got, d = decode(image)
    assert got == [(lsns[0], records[0])]
    assert d.end_lsn == lsns[1]
    assert "CRC mismatch" in d.end_reason


def test_wrong_prev_link_is_refused() -> None:
    image, lsns = build([b"a" * 50, b"b" * 50])
    _, d = decode(image, prev=999)
    assert d.end_lsn == lsns[0] and "prev-link" in d.end_reason


def test_bad_length_is_refused() -> None:
    image, lsns = build([b"a" * 50, b"b" * 50])
    image[lsns[1] : lsns[1] + 4] = (5).to_bytes(4, "little")
    got, d = decode(image)
    assert len(got) == 1 and d.end_lsn == lsns[1] and "invalid length 5" in d.end_reason


def test_torn_continuation_page_cuts_the_spanning_record() -> None:
    records = [b"a" * 10, b"b" * (PAGE_SIZE + 100)]
    image, lsns = build(records)
    image[PAGE_SIZE : PAGE_SIZE + 2] = b"\0\0"  # the next page's magic: never written
    got, d = decode(image)
    assert got == [(lsns[0], records[0])]
    assert d.end_lsn == lsns[1] and "bad magic" in d.end_reason


def test_stale_page_address_is_refused() -> None:
    image, lsns = build([b"a" * (PAGE_SIZE - 100), b"b" * 200])
    stale = pack_page_header(PAGE_SIZE * 9, segment_size=SEG, epoch=1, rem_len=0, sysid=SYSID)
    image[PAGE_SIZE : PAGE_SIZE + len(stale)] = stale
    got, d = decode(image)
    assert [lsn for lsn, _ in got] == [lsns[0]]
    assert "stale or recycled" in d.end_reason


def test_other_system_id_is_refused() -> None:
    image, _ = build([b"a"])
    _, d = decode(image, sysid=SYSID + 1)
    assert d.end_lsn == 0 and "system id" in d.end_reason


def test_a_record_of_an_older_epoch_after_a_newer_one_is_stale() -> None:
    # Epoch 1 wrote A, B, C; the run of epoch 2 rewrote B at the same place (same size):
    # C's prev-link still matches, only its epoch tells it is stale.
    image, lsns = build([b"A" * 40, b"B" * 40, b"C" * 40])
    b2 = pack_record_header(b"b" * 40, epoch=2, prev=lsns[0])
    image[lsns[1] : lsns[1] + RECORD_HEADER_SIZE] = b2
    image[lsns[1] + RECORD_HEADER_SIZE : lsns[1] + RECORD_HEADER_SIZE + 40] = b"b" * 40
    got, d = decode(image)
    assert got == [(lsns[0], b"A" * 40), (lsns[1], b"b" * 40)]
    assert d.end_lsn == lsns[2] and "epoch 1 is older" in d.end_reason


def test_resync_skips_the_continuation_at_a_segment_start() -> None:
    records = [b"a" * 10, b"b" * (SEG + 3000), b"c" * 20, b"d" * 30]
    image, lsns = build(records, pages=12)
    d = Decoder(segment_size=SEG, start=SEG, resync=True)
    out = []
    mv = memoryview(bytes(image))
    for page in range(SEG, len(image), PAGE_SIZE):
        out += d.feed(page, mv[page : page + PAGE_SIZE])
        if d.done:
            break
    assert out == [(lsns[2], records[2]), (lsns[3], records[3])]


def test_decoder_started_mid_log_without_prev_check() -> None:
    records = [b"r%d" % i * 20 for i in range(30)]
    image, lsns = build(records)
    start = lsns[7]
    d = Decoder(segment_size=SEG, start=start)
    out = []
    mv = memoryview(bytes(image))
    first = start - start % PAGE_SIZE
    for page in range(first, len(image), PAGE_SIZE):
        out += d.feed(page, mv[page : page + PAGE_SIZE])
        if d.done:
            break
    assert out == list(zip(lsns[7:], records[7:], strict=True))
