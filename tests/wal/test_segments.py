"""WAL segments (aiopg_io/wal/_segments.py) on every loop x driver: preallocation runs ahead
of the insert position, truncate_before recycles or removes whole segments, and opening
removes stale temporary files through the op layer (seen by the fault injector and the
power-loss simulator; a cut around the removal recovers)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import anyio
import pytest

from aiopg_io.drivers import OpKind
from aiopg_io.testing import Fault, FaultInjector, PowerLossSimulator
from aiopg_io.wal import NotAWALError, WALPoisonedError
from aiopg_io.wal._format import segment_name
from tests.conftest import open_fds

from ._cuts import CuttingSimulator
from ._util import SEG, commit_records, open_wal, payload, read_all

pytestmark = pytest.mark.anyio


async def test_truncate_before_recycles_segments(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 400)
    async with open_wal(tmp_path, driver, segments_ahead=2) as wal:
        cut = next(lsn for lsn, _ in recs if lsn >= 3 * SEG)
        gone = await wal.truncate_before(cut)
        stats = wal.statistics()
        assert gone == 3 == stats.segments_recycled + stats.segments_removed
        assert stats.segments_recycled >= 1
        assert wal.oldest_lsn == 3 * SEG
        names = sorted(os.listdir(tmp_path))
        assert not {segment_name(0), segment_name(1), segment_name(2)} & set(names)
        kept = [r for r in recs if r[0] >= 3 * SEG]
        assert [r async for r in wal.read()] == kept  # resynchronised past the continuation
        with pytest.raises(ValueError, match="removed by truncate_before"):
            wal.read(start=recs[0][0])
        assert await wal.truncate_before(cut) == 0
        # Write through the recycled segments (they hold stale pages of old positions).
        more = [(await wal.commit(payload(f"n{i}", 900)), payload(f"n{i}", 900)) for i in range(200)]
    assert await read_all(tmp_path, driver) == kept + more


async def test_preallocation_runs_ahead(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver, segments_ahead=2) as wal:
        await wal.commit(b"x")
        for _ in range(100):
            if {segment_name(1), segment_name(2)} <= set(os.listdir(tmp_path)):
                break
            await anyio.sleep(0.01)
        assert {segment_name(1), segment_name(2)} <= set(os.listdir(tmp_path))
        assert os.path.getsize(tmp_path / segment_name(2)) == SEG
        assert not [n for n in os.listdir(tmp_path) if n.startswith("xlogtemp")]


# -- stale temporary files (a process died building a segment or the control file) ------------


def _plant_stale_temps(directory: Path) -> list[str]:
    """What a process killed mid-build leaves: a temporary segment and a temporary control
    file, half written. Their names."""
    names = [f"xlogtemp.999999.{segment_name(7)}", "xlogtemp.999999.control"]
    for name in names:
        (directory / name).write_bytes(b"\xa5" * 5000)
    return names


async def test_stale_temporary_files_are_removed_at_open_through_the_op_layer(
    tmp_path: Path, driver: str
) -> None:
    recs = await commit_records(tmp_path, driver, 60)
    names = _plant_stale_temps(tmp_path)
    injector = FaultInjector(driver=driver)
    before = open_fds()
    async with open_wal(tmp_path, injector, segments_ahead=0) as wal:
        assert [r async for r in wal.read()] == recs
    assert open_fds() == before
    assert not set(names) & set(os.listdir(tmp_path))
    # Each removal was an unlink op the injector saw (a fault matching it hits it).
    seen = FaultInjector(Fault(kind="unlinkat", path="xlogtemp.*", times=None, delay=0.001), driver=driver)
    _plant_stale_temps(tmp_path)
    async with open_wal(tmp_path, seen, segments_ahead=0):
        pass
    assert sorted(os.path.basename(e.path or "") for e in seen.log) == sorted(names)
    assert {e.kind for e in seen.log} == {OpKind.UNLINKAT}


async def test_a_failed_removal_of_a_stale_temporary_file_fails_the_open_and_changes_nothing(
    tmp_path: Path, driver: str
) -> None:
    recs = await commit_records(tmp_path, driver, 60)
    names = _plant_stale_temps(tmp_path)
    listing = sorted(os.listdir(tmp_path))
    injector = FaultInjector(Fault(kind="unlinkat", path="xlogtemp.*", errno=errno.EIO), driver=driver)
    before = open_fds()
    with pytest.raises(OSError) as info:
        await open_wal(tmp_path, injector, segments_ahead=0)
    assert info.value.errno == errno.EIO and "injected by aiopg_io.testing" in str(info.value)
    assert os.path.basename(info.value.filename) == names[0]  # the first in name order
    assert not isinstance(info.value, WALPoisonedError)
    assert open_fds() == before
    assert sorted(os.listdir(tmp_path)) == listing  # checked before any removal: nothing gone
    # The WAL is as it was: it opens, with every record, once the cause is gone.
    async with open_wal(tmp_path, driver, segments_ahead=0) as wal:
        assert [r async for r in wal.read()] == recs
    assert not set(names) & set(os.listdir(tmp_path))


async def test_a_foreign_directory_keeps_its_temporary_looking_files(tmp_path: Path, driver: str) -> None:
    (tmp_path / "xlogtemp.1.0000000000000001").write_bytes(b"x")
    (tmp_path / "zz-notes.txt").write_bytes(b"not a WAL")
    with pytest.raises(NotAWALError, match=r"zz-notes\.txt"):
        await open_wal(tmp_path, driver)
    assert sorted(os.listdir(tmp_path)) == ["wal.lock", "xlogtemp.1.0000000000000001", "zz-notes.txt"]


@pytest.mark.usefixtures("power_cuts")
@pytest.mark.parametrize("cut_at", [1, 2, 3, None])
async def test_a_power_cut_around_the_removal_of_stale_temporary_files(
    tmp_path: Path, driver: str, cut_at: int | None
) -> None:
    # The steps of an open that finds two stale temporary files: their unlinks, then
    # recovery's directory fsync (after fsyncing the segments). Cut before each, or not at
    # all, crash in several ways: the WAL opens with every record, and the open removes
    # whatever temporary file the crash brought back.
    base = tmp_path / "base"
    base.mkdir()
    recs = await commit_records(base, driver, 60)
    names = _plant_stale_temps(base)
    for policy, seed in [("drop", 0), ("keep", 0), ("random", 1)]:
        d = tmp_path / f"{policy}{seed}"
        shutil.copytree(base, d)
        sim = CuttingSimulator(driver, cut_at)
        sim.armed = True
        try:
            async with open_wal(d, sim, segments_ahead=0):
                pass
        except OSError as exc:
            assert cut_at is not None and "Cut(" in str(exc), f"not cut: {exc!r}"
        steps = [f"unlink {names[0]}", f"unlink {names[1]}", "fsync directory"]
        assert sim.steps[:3] == steps[:cut_at]
        report = sim.crash(seed=seed, policy=policy)  # type: ignore[arg-type]
        left = set(names) & set(os.listdir(d))
        removed = set(names if cut_at is None else names[: cut_at - 1])
        assert left >= set(names) - removed, report
        if cut_at is None:
            assert not left  # the open's directory fsync made the removals durable
        elif policy == "keep":
            assert left == set(names) - removed, report
        elif policy == "drop":
            assert left == set(names), report  # no removal was durable yet: all are back
        async with open_wal(d, driver, segments_ahead=0) as wal:
            assert [r async for r in wal.read()] == recs
            assert wal.recovery.removed == ()
        assert not set(names) & set(os.listdir(d))


# -- a WAL directory that does not exist yet ------------------------------------------------------


async def test_a_missing_wal_directory_is_made_durably_through_the_op_layer(
    tmp_path: Path, driver: str
) -> None:
    where = tmp_path / "a" / "wal"
    # Faults that only delay, to see every mkdir and directory fsync the open makes, in order.
    seen = FaultInjector(
        Fault(kind="mkdirat", times=None, delay=0.001),
        Fault(kind="fsync", times=None, delay=0.001),
        driver=driver,
    )
    before = open_fds()
    async with open_wal(where, seen, segments_ahead=0) as wal:
        lsn = await wal.commit(b"first")
    assert open_fds() == before
    steps = [(e.kind, e.path) for e in seen.log]
    # The WAL directory is tried first (ENOENT: no parent), then each directory made is
    # followed by the fsync of its parent, the top one first.
    a, w = str(tmp_path / "a"), str(where)
    assert steps[:5] == [
        (OpKind.MKDIRAT, w),
        (OpKind.MKDIRAT, a),
        (OpKind.FSYNC, str(tmp_path)),
        (OpKind.MKDIRAT, w),
        (OpKind.FSYNC, a),
    ]
    assert await read_all(where, driver) == [(lsn, b"first")]
    # An existing WAL directory is opened without making or syncing a parent again.
    again = FaultInjector(Fault(kind="mkdirat", times=None, delay=0.001), driver=driver)
    async with open_wal(where, again, segments_ahead=0):
        pass
    assert again.log == []


async def test_a_new_wal_directory_survives_a_power_cut(tmp_path: Path, driver: str) -> None:
    where = tmp_path / "a" / "wal"
    sim = PowerLossSimulator(driver, atomic_sectors=True)
    async with open_wal(where, sim, segments_ahead=0) as wal:
        acked = [(await wal.commit(payload(f"r{i}", 300)), payload(f"r{i}", 300)) for i in range(5)]
        await wal.close(flush=False)
    sim.crash(policy="drop")  # every entry not made durable is gone
    assert await read_all(where, driver) == acked


async def test_a_wal_path_under_a_file_fails_with_the_system_s_error_and_makes_nothing(
    tmp_path: Path, driver: str
) -> None:
    (tmp_path / "f").write_bytes(b"keep")
    with pytest.raises(NotADirectoryError) as info:
        await open_wal(tmp_path / "f" / "wal", driver)
    assert info.value.filename == str(tmp_path / "f" / "wal")
    assert os.listdir(tmp_path) == ["f"] and (tmp_path / "f").read_bytes() == b"keep"
