"""How recovery tells a clean end from damage (issue 12, rows 10-12), on every loop x driver.

- A segment that is empty, zeroed, missing or another WAL's, with segments of this WAL
  holding records after it, is refused with WALCorruptError naming it: restoring the file
  brings the records back, opening would drop them.
- A segment of another WAL is refused wherever it is, the first one included: segments
  are checked against the system identifier in the control file, not against each other.
- A torn tail (a record not whole at the end) is cut, as in PostgreSQL, and reported at
  its LSN on ``wal.recovery`` and on the reader that reads up to it; a clean end is
  reported as clean.
- The on-disk format is version 2: a format-1 directory (no control file) is refused
  with an error that says so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from aiopg_io.wal import (
    PAGE_SIZE,
    WALCorruptError,
    WALEnd,
    WALEndKind,
    WALFormatError,
)
from aiopg_io.wal._format import XLP_MAGIC_V1, segment_name

from ._util import SEG, append_records, open_wal, patch_file, payload, read_all

pytestmark = pytest.mark.anyio

CONTROL = "wal.control"


def _seg(directory: Path, segno: int) -> Path:
    return directory / segment_name(segno)


def _in_segment(recs: list[tuple[int, bytes]], segno: int) -> list[tuple[int, bytes]]:
    return [r for r in recs if r[0] // SEG == segno]


async def _refused(directory: Path, driver: str, segno: int, match: str) -> WALCorruptError:
    with pytest.raises(WALCorruptError, match=match) as info:
        await open_wal(directory, driver)
    assert info.value.segment == segment_name(segno)
    return info.value


# -- row 10: an empty or zeroed segment with records after it ---------------------------------


async def test_middle_segment_truncated_to_zero_is_refused(tmp_path: Path, driver: str) -> None:
    recs = await append_records(tmp_path, driver, 400)
    assert _in_segment(recs, 3), "the log should reach segment 3"
    keep = _seg(tmp_path, 1).read_bytes()
    os.truncate(_seg(tmp_path, 1), 0)
    err = await _refused(
        tmp_path,
        driver,
        1,
        rf"segment {segment_name(1)} in .* is empty \(0 bytes, not {SEG}\), but segment "
        rf"{segment_name(2)} after it holds records of this WAL\. Restore segment {segment_name(1)} "
        "from a copy",
    )
    # The log breaks at the record spanning into segment 1, or at its start if none does.
    first = next(i for i, (lsn, _) in enumerate(recs) if lsn >= SEG)
    assert err.lsn == (recs[first - 1][0] if recs[first][0] > SEG + 40 else SEG)
    # Nothing was changed by the refusal: with the segment back, every record is there.
    _seg(tmp_path, 1).write_bytes(keep)
    assert await read_all(tmp_path, driver) == recs


async def test_zeroed_middle_segment_is_refused(tmp_path: Path, driver: str) -> None:
    recs = await append_records(tmp_path, driver, 400)
    _seg(tmp_path, 2).write_bytes(bytes(SEG))
    await _refused(
        tmp_path,
        driver,
        2,
        rf"segment {segment_name(2)} in .* holds no page of this WAL \(page {2 * SEG:#x}: no page header "
        rf"\(bad magic: zeros\)\), but segment {segment_name(3)} after it holds records",
    )
    assert len(_in_segment(recs, 3)) > 0


async def test_segment_cut_short_in_the_middle_is_refused(tmp_path: Path, driver: str) -> None:
    await append_records(tmp_path, driver, 400)
    os.truncate(_seg(tmp_path, 1), 3 * PAGE_SIZE + 100)
    await _refused(
        tmp_path, driver, 1, rf"segment {segment_name(1)} in .* is cut short \({3 * PAGE_SIZE + 100} bytes"
    )


# -- row 11: a segment of another WAL -------------------------------------------------------


async def test_first_segment_of_another_wal_is_refused(tmp_path: Path, driver: str) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    await append_records(ours, driver, 400)
    theirs = await append_records(other, driver, 30)
    shutil.copyfile(_seg(other, 0), _seg(ours, 0))
    await _refused(
        ours,
        driver,
        0,
        rf"segment {segment_name(0)} in .* belongs to another WAL \(system id 0x[0-9a-f]+; this "
        rf"WAL's, in {CONTROL}, is 0x[0-9a-f]+\)",
    )
    # The other WAL itself is untouched and reads back whole.
    assert await read_all(other, driver) == theirs


async def test_middle_segment_of_another_wal_is_refused(tmp_path: Path, driver: str) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    await append_records(ours, driver, 400)
    await append_records(other, driver, 400, size=650)
    shutil.copyfile(_seg(other, 2), _seg(ours, 2))
    await _refused(ours, driver, 2, rf"segment {segment_name(2)} in .* belongs to another WAL")


async def test_another_wal_segment_after_the_end_is_refused(tmp_path: Path, driver: str) -> None:
    # Not in the way of any record yet, but the log would write over it when it got there.
    ours, other = tmp_path / "ours", tmp_path / "other"
    await append_records(ours, driver, 20)
    await append_records(other, driver, 400)
    shutil.copyfile(_seg(other, 3), _seg(ours, 3))
    await _refused(ours, driver, 3, "belongs to another WAL")


# -- row 12: how the log ended --------------------------------------------------------------


async def test_clean_end_is_reported_as_clean(tmp_path: Path, driver: str) -> None:
    recs = await append_records(tmp_path, driver, 50)
    async with open_wal(tmp_path, driver) as wal:
        end = wal.insert_lsn  # where the next record goes: right after the last one
        assert end % PAGE_SIZE and end - recs[-1][0] < 24 + 700 + 24 + 8
        assert wal.recovery.end == WALEnd(WALEndKind.CLEAN, end, segment_name(0), "end of WAL (zeros)")
        assert wal.recovery.records == 50 and wal.recovery.removed == ()
        reader = wal.read()
        assert reader.end is None
        assert [r async for r in reader] == recs
        assert reader.end == wal.recovery.end  # nothing made durable since the open
        lsn = await wal.commit(b"one more")
        reader = wal.read(start=recs[-1][0])
        async for _ in reader:
            break
        assert reader.end is None  # an iteration left early tells nothing
        reader = wal.read(start=recs[-1][0])
        assert [r async for r in reader] == [recs[-1], (lsn, b"one more")]
        assert reader.end is not None and reader.end.kind is WALEndKind.CLEAN
        assert reader.end.lsn == wal.flushed_lsn and reader.end.reason == "end of the durable WAL"


async def test_flipped_byte_is_a_torn_tail_at_its_record(tmp_path: Path, driver: str) -> None:
    recs = await append_records(tmp_path, driver, 50)
    lsn = recs[45][0]
    patch_file(_seg(tmp_path, 0), lsn + 24 + 300, bytes([recs[45][1][300] ^ 0x01]))
    async with open_wal(tmp_path, driver) as wal:
        end = wal.recovery.end
        assert (end.kind, end.lsn, end.segment) == (WALEndKind.TORN, lsn, segment_name(0))
        assert end.reason == f"record at {lsn:#x}: CRC mismatch (torn or corrupt)"
        assert str(end) == f"torn tail at {lsn:#x} in segment {segment_name(0)}: {end.reason}"
        assert wal.recovery.records == 45
        reader = wal.read()
        assert [r async for r in reader] == recs[:45]
        assert reader.end == end
        assert wal.insert_lsn == lsn  # the torn record's place is where the log goes on
    # The open cut the torn tail: the next one finds a clean end there.
    async with open_wal(tmp_path, driver) as wal:
        assert wal.recovery.end.kind is WALEndKind.CLEAN and wal.recovery.end.lsn == lsn


async def test_segment_truncated_mid_record_is_a_torn_tail(tmp_path: Path, driver: str) -> None:
    recs = await append_records(tmp_path, driver, 50)
    lsn = recs[40][0]
    size = lsn % SEG + 300
    os.truncate(_seg(tmp_path, 0), size)
    async with open_wal(tmp_path, driver) as wal:
        end = wal.recovery.end
        assert (end.kind, end.lsn) == (WALEndKind.TORN, lsn)
        assert end.reason == (
            f"record at {lsn:#x}: CRC mismatch (torn or corrupt) (segment {segment_name(0)} is {size} bytes, "
            f"not {SEG}: cut short)"
        )
        assert [r async for r in wal.read()] == recs[:40]


async def test_zeroed_page_is_a_torn_tail_at_the_record_spanning_into_it(tmp_path: Path, driver: str) -> None:
    recs = await append_records(tmp_path, driver, 20, size=3000)
    assert recs[-1][0] < SEG
    i = next(i for i, (lsn, d) in enumerate(recs) if lsn // PAGE_SIZE == 3 and (lsn + 3024) // PAGE_SIZE == 4)
    patch_file(_seg(tmp_path, 0), 4 * PAGE_SIZE, bytes(PAGE_SIZE))
    async with open_wal(tmp_path, driver) as wal:
        end = wal.recovery.end
        assert (end.kind, end.lsn) == (WALEndKind.TORN, recs[i][0])
        assert end.reason == f"page {4 * PAGE_SIZE:#x}: no page header (bad magic: zeros)"
        assert [r async for r in wal.read()] == recs[:i]


async def test_break_inside_a_whole_segment_before_later_ones_is_reported_as_damage(
    tmp_path: Path, driver: str
) -> None:
    # As in PostgreSQL the log ends there (test_wal.py checks what is kept); that later
    # segments held records says it was no crash: the end is reported as damage.
    recs = await append_records(tmp_path, driver, 400)
    lsn = _in_segment(recs, 1)[10][0]
    patch_file(_seg(tmp_path, 1), lsn % SEG + 24 + 5, b"\xff")
    async with open_wal(tmp_path, driver) as wal:
        end = wal.recovery.end
        assert (end.kind, end.lsn, end.segment) == (WALEndKind.DAMAGED, lsn, segment_name(1))
        assert end.reason == (
            f"record at {lsn:#x}: CRC mismatch (torn or corrupt); segment {segment_name(2)} after it held "
            "records of this WAL, cut off with the rest of the log after this point"
        )
        assert [r async for r in wal.read()] == [r for r in recs if r[0] < lsn]


async def test_reader_meeting_damage_before_the_durable_end(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver) as wal:
        lsns = [await wal.commit(payload(f"d{i}", 500)) for i in range(10)]
        patch_file(_seg(tmp_path, 0), lsns[6] + 24 + 1, b"\x00\xff")  # under the open WAL
        reader = wal.read()
        got = []
        with pytest.raises(
            WALCorruptError,
            match=rf"unreadable at {lsns[6]:#x} in segment {segment_name(0)}, before its durable end",
        ) as info:
            async for r in reader:
                got.append(r)
        assert [lsn for lsn, _ in got] == lsns[:6]
        assert info.value.lsn == lsns[6] and info.value.segment == segment_name(0)
        assert reader.end == WALEnd(
            WALEndKind.DAMAGED,
            lsns[6],
            segment_name(0),
            f"record at {lsns[6]:#x}: CRC mismatch (torn or corrupt)",
        )


# -- the format version ----------------------------------------------------------------------


async def test_format_1_directory_is_refused_with_its_version(tmp_path: Path, driver: str) -> None:
    await append_records(tmp_path, driver, 10)
    os.unlink(tmp_path / CONTROL)
    patch_file(_seg(tmp_path, 0), 0, XLP_MAGIC_V1.to_bytes(2, "little"))
    with pytest.raises(
        WALFormatError, match=r"is in format 1 \(page magic 0xd0a1, no wal\.control\).* reads format 2"
    ):
        await open_wal(tmp_path, driver)
