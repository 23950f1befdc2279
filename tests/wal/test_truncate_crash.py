"""truncate_before against a power cut at every step (issue 20, item 2), on every loop x driver.

truncate_before makes the log's new start durable in the control file, then recycles or
unlinks the old segments one at a time, oldest first, fsyncing the directory after each.
The test cuts the power (aiopg_io.testing's simulator) just before each of those steps
in turn (the control file's sync, each rename or unlink, each directory fsync), crashes
the directory in several ways, and reopens: every cut must open, with every record from
the truncation point on, and the log a gap-free run of the records written.

The simulator models unlinks too (it sees the unlinkat ops): an unlink not followed by a
directory fsync may be undone by the crash, independently of an earlier rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from aiopg_io.wal import WALCorruptError, WALPoisonedError
from aiopg_io.wal._format import segment_name

from ._cuts import CuttingSimulator
from ._util import SEG, open_wal, payload, read_all

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("power_cuts")]

# How each cut is crashed: the two extremes, and random draws (not atomic sectors: a torn
# write of the control file may garble its slot; the other slot still holds the old state).
CRASHES = [("drop", 0), ("keep", 0), ("random", 1), ("random", 2)]


async def _base(directory: Path, driver: str) -> tuple[list[tuple[int, bytes]], int]:
    """A log over segments 0-4 and the LSN to truncate before (in segment 3)."""
    records = [payload(f"f{i}", 700) for i in range(400)]
    async with open_wal(directory, driver, segments_ahead=0) as wal:
        lsns = [await wal.append(r) for r in records]
        await wal.flush()
    recs = list(zip(lsns, records, strict=True))
    assert recs[-1][0] // SEG == 4
    return recs, next(lsn for lsn, _ in recs if lsn >= 3 * SEG)


async def _truncate_with_cut(directory: Path, driver: str, cut_at: int | None, cut: int) -> CuttingSimulator:
    sim = CuttingSimulator(driver, cut_at)
    # Awaited, not entered: no preallocation runs, so every run makes the same steps.
    wal = await open_wal(directory, sim, segments_ahead=1)
    try:
        sim.armed = True
        try:
            assert await wal.truncate_before(cut) == 3
        except (WALPoisonedError, OSError) as exc:
            # The cut op failed with the cut as its error: the WAL poisons itself or raises it.
            assert "Cut(" in repr(exc) + repr(exc.__cause__), f"not cut: {exc!r}"
            assert cut_at is not None and len(sim.steps) == cut_at, f"cut by {exc!r}"
        else:
            assert cut_at is None or cut_at > len(sim.steps)
        sim.armed = False
    finally:
        await wal.close(flush=False)
    return sim


async def test_truncate_before_survives_a_cut_at_every_step(tmp_path: Path, driver: str) -> None:
    base = tmp_path / "base"
    recs, cut = await _base(base, driver)
    kept = [r for r in recs if r[0] >= cut]
    # The steps of an uncut run: what the cuts below go through.
    whole = tmp_path / "whole"
    shutil.copytree(base, whole)
    steps = (await _truncate_with_cut(whole, driver, None, cut)).steps
    recycled = segment_name(5)  # segment 0 becomes the one after the last, 1 and 2 go
    assert steps == [
        "sync wal.control",
        f"rename {segment_name(0)} {recycled}",
        "fsync directory",
        f"unlink {segment_name(1)}",
        "fsync directory",
        f"unlink {segment_name(2)}",
        "fsync directory",
    ]
    assert await read_all(whole, driver) == kept
    removed_at_open = 0
    for cut_at in range(1, len(steps) + 1):
        for policy, seed in CRASHES:
            d = tmp_path / f"cut{cut_at}-{policy}{seed}"
            shutil.copytree(base, d)
            sim = await _truncate_with_cut(d, driver, cut_at, cut)
            sim.crash(seed=seed, policy=policy)  # type: ignore[arg-type]
            what = f"cut before step {cut_at} ({steps[cut_at - 1]}), crash {policy} {seed}"
            try:
                async with open_wal(d, driver, segments_ahead=0) as wal:
                    got = [r async for r in wal.read()]
                    removed_at_open += len(wal.recovery.removed)
            except WALCorruptError as exc:
                raise AssertionError(f"{what}: the WAL does not open: {exc}") from exc
            # Every record from the cut on; before it, what is there is a gap-free run.
            assert got[-len(kept) :] == kept, what
            assert got == recs[len(recs) - len(got) :], what
            names = set(os.listdir(d))
            assert recycled not in names or segment_name(0) not in names, what
    # Some cut left a segment before the new start (a rename or an unlink undone): the
    # open removed it instead of refusing.
    assert removed_at_open > 0


async def test_stale_segment_before_the_start_is_removed_at_open(tmp_path: Path, driver: str) -> None:
    # Issue 20's state: segment 0 was recycled and 1 unlinked; the cut undid the rename and
    # not the unlink. Segment 0 is back before a gap, older than the log's start.
    recs, cut = await _base(tmp_path, driver)
    old0 = (tmp_path / segment_name(0)).read_bytes()
    async with open_wal(tmp_path, driver, segments_ahead=1) as wal:
        assert await wal.truncate_before(cut) == 3
        assert wal.statistics().segments_recycled == 1
    os.rename(tmp_path / segment_name(5), tmp_path / segment_name(0))
    (tmp_path / segment_name(0)).write_bytes(old0)
    async with open_wal(tmp_path, driver, segments_ahead=0) as wal:
        assert wal.recovery.removed == (segment_name(0),)
        assert wal.oldest_lsn == 3 * SEG
        assert [r async for r in wal.read()] == [r for r in recs if r[0] >= cut]
    assert segment_name(0) not in os.listdir(tmp_path)


async def test_missing_segment_error_advises_no_loss(tmp_path: Path, driver: str) -> None:
    recs, _ = await _base(tmp_path, driver)
    os.unlink(tmp_path / segment_name(2))
    with pytest.raises(WALCorruptError) as info:
        await open_wal(tmp_path, driver)
    msg = str(info.value)
    assert msg.startswith(f"segment {segment_name(2)} is missing from ")
    assert (
        f"Restore segment {segment_name(2)} from a copy of this WAL; until then the WAL does not open" in msg
    )
    assert "move" not in msg
    assert len(recs) == 400
