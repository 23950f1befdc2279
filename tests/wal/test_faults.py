"""Injected I/O failures and power loss (aiopg_io.testing), on every loop x driver.

Power loss runs with ``atomic_sectors=True``: the WAL, as PostgreSQL's, rewrites the
partial last sector it shares with records already durable (same bytes, plus new ones);
a torn write that garbles those *old* bytes is outside the model both rely on.

The WAL reports its segment creates, renames and directory fsyncs to the simulator, so a
crash also undoes directory entries that were never made durable: a missing directory
fsync after creating or recycling a segment loses acknowledged records here.

Power loss runs on every sync method (and O_DIRECT with fdatasync and o_dsync, as
test_wal.py's direct test): with o_dsync nothing is synced after a write, so the records
survive only through the simulator's O_DSYNC model, which one test switches off to show it.
"""

from __future__ import annotations

import errno
from pathlib import Path

import anyio
import pytest

from aiopg_io.drivers.base import Op, OpKind
from aiopg_io.errors import AiopgIOError
from aiopg_io.testing import Fault, FaultInjector, PowerLossSimulator, _powerloss, _simulated_disk
from aiopg_io.wal import PAGE_SIZE, WAL, WALCorruptError, WALPoisonedError

from ._util import SEG, check_payload, open_wal, payload, read_all

pytestmark = pytest.mark.anyio

SYNC_METHODS = ["fdatasync", "fsync", "o_dsync"]


async def _commit_many(
    wal: WAL, tag: str, n: int, acked: dict[int, bytes], errors: list[BaseException]
) -> None:
    async def one(i: int) -> None:
        data = payload(f"{tag}{i}", (i * 613) % 3000)
        try:
            lsn = await wal.commit(data)
        except WALPoisonedError as exc:
            errors.append(exc)
        else:
            acked[lsn] = data

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)


async def test_fsync_eio_poisons_the_wal(tmp_path: Path, driver: str, fault_injector: object) -> None:
    injector: FaultInjector = fault_injector(driver=driver)  # type: ignore[operator]
    acked: dict[int, bytes] = {}
    errors: list[BaseException] = []
    async with open_wal(tmp_path, injector, segments_ahead=0) as wal:
        await _commit_many(wal, "ok", 10, acked, errors)
        assert not errors and len(acked) == 10
        flushed = wal.flushed_lsn
        injector.add(Fault(kind="fdatasync", errno=errno.EIO))
        await _commit_many(wal, "lost", 30, acked, errors)
        assert len(acked) == 10, "a commit was acknowledged after the failed sync"
        assert len(errors) == 30
        for exc in errors:
            assert isinstance(exc, OSError) and isinstance(exc, AiopgIOError)
            assert exc.errno == errno.EIO
            assert isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EIO
        with pytest.raises(
            WALPoisonedError, match=r"is poisoned: a write or sync failed .*Input/output error"
        ):
            await wal.commit(b"later")
        with pytest.raises(WALPoisonedError, match="no more will be acknowledged"):
            await wal.append(b"later")
        with pytest.raises(WALPoisonedError):
            await wal.flush()
        with pytest.raises(WALPoisonedError):
            wal.read()
        assert wal.flushed_lsn == flushed
        assert wal.statistics().poisoned
    # Reopening recovers; every acknowledged record is there.
    got = dict(await read_all(tmp_path, driver))
    assert {lsn: got[lsn] for lsn in acked} == acked


@pytest.mark.parametrize("short", [None, 100])
async def test_enospc_on_write(
    tmp_path: Path, driver: str, fault_injector: object, short: int | None
) -> None:
    injector: FaultInjector = fault_injector(driver=driver)  # type: ignore[operator]
    acked: dict[int, bytes] = {}
    errors: list[BaseException] = []
    async with open_wal(tmp_path, injector, segments_ahead=0) as wal:
        await _commit_many(wal, "ok", 5, acked, errors)
        injector.add(Fault(kind="writes", errno=errno.ENOSPC, short=short))
        await _commit_many(wal, "full", 20, acked, errors)
        assert len(acked) == 5 and len(errors) == 20
        with pytest.raises(WALPoisonedError, match=r"No space left on device") as info:
            await wal.commit(b"x")
        assert info.value.errno == errno.ENOSPC
    got = dict(await read_all(tmp_path, driver))
    assert {lsn: got[lsn] for lsn in acked} == acked
    for data in got.values():
        check_payload(data)


async def test_failure_while_waiting_for_buffers(tmp_path: Path, driver: str, fault_injector: object) -> None:
    injector: FaultInjector = fault_injector(Fault(kind="writes", errno=errno.EIO), driver=driver)  # type: ignore[operator]
    with pytest.raises(WALPoisonedError, match="Input/output error"):
        # The stamp at open writes first: the WAL cannot even open.
        await open_wal(tmp_path, injector, wal_buffers=1)
    injector2: FaultInjector = fault_injector(driver=driver)  # type: ignore[operator]
    async with open_wal(tmp_path, injector2, wal_buffers=1, segments_ahead=0) as wal:
        injector2.add(Fault(kind="writes", errno=errno.EIO))
        with pytest.raises(WALPoisonedError, match="Input/output error"):
            await wal.append(bytes(40000))  # larger than the buffers: must write to go on


@pytest.mark.parametrize("sync_method", SYNC_METHODS)
async def test_power_loss_keeps_acknowledged_records(
    tmp_path: Path, driver: str, power_loss: object, sync_method: str
) -> None:
    await _power_loss(tmp_path, driver, power_loss, sync_method, range(5))


@pytest.mark.parametrize("sync_method", ["fdatasync", "o_dsync"])
async def test_power_loss_keeps_acknowledged_records_direct(
    data_dir: Path, direct_driver: str, power_loss: object, sync_method: str
) -> None:
    await _power_loss(data_dir, direct_driver, power_loss, sync_method, range(2), direct=True)


async def test_o_dsync_records_are_lost_to_a_simulator_blind_to_o_dsync(
    tmp_path: Path, driver: str, power_loss: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With o_dsync the WAL acknowledges a commit once its write completes, with no sync
    # after it: what keeps the records is the simulator's O_DSYNC model, which the test
    # above relies on. Without it, the same scenario must lose acknowledged records, or
    # leave a log that does not open (a torn segment before one that holds records).
    monkeypatch.setattr(_simulated_disk, "_SYNC_WRITE_FLAGS", 0)
    with pytest.raises((AssertionError, WALCorruptError)) as info:
        await _power_loss(tmp_path, driver, power_loss, "o_dsync", range(1))
    if isinstance(info.value, AssertionError):
        assert "acknowledged record lost" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("sync_method", SYNC_METHODS)
async def test_power_loss_many_seeds(
    tmp_path: Path, driver: str, power_loss: object, sync_method: str
) -> None:
    await _power_loss(tmp_path, driver, power_loss, sync_method, range(100, 160))


async def _power_loss(
    tmp_path: Path, driver: str, power_loss: object, sync_method: str, seeds: range, *, direct: bool = False
) -> None:
    make = power_loss
    for seed in seeds:
        d = tmp_path / f"s{seed}"
        acked: dict[int, bytes] = {}
        for phase in range(2):  # the second phase writes over the first one's cut tail
            sim: PowerLossSimulator = make(driver, atomic_sectors=True)  # type: ignore[operator]
            errors: list[BaseException] = []
            wal = await open_wal(
                d, sim, sync_method=sync_method, direct=direct, segments_ahead=0, wal_buffers=1
            )
            await _commit_many(wal, f"p{phase}.", 24, acked, errors)
            # Appended, never flushed; tiny buffers make most of them go out unsynced, so
            # the crash keeps, drops or tears them: they may or may not survive.
            for i in range(20):
                await wal.append(payload(f"u{phase}.{i}", (i * 700) % 5000))
            left = sim.unsynced()
            await wal.close(flush=False)
            sim.crash(seed=seed * 2 + phase)
            got = await read_all(d, driver, direct=direct)
            have = dict(got)
            assert {lsn: have.get(lsn) for lsn in acked} == acked, f"seed {seed}: acknowledged record lost"
            assert [lsn for lsn, _ in got] == sorted(have)
            for data in have.values():
                check_payload(data)
            if sync_method == "o_dsync":
                # Every write went to an O_DSYNC segment: durable when it completed.
                assert left == {}, "an o_dsync WAL left writes that a crash may lose"
            else:
                assert left, "the scenario should leave unsynced writes for the crash"


async def test_power_loss_after_recycling_segments(tmp_path: Path, driver: str, power_loss: object) -> None:
    await _recycling(tmp_path, driver, power_loss, "fdatasync")


@pytest.mark.slow
@pytest.mark.parametrize("sync_method", ["fsync", "o_dsync"])
async def test_power_loss_after_recycling_segments_other_sync_methods(
    tmp_path: Path, driver: str, power_loss: object, sync_method: str
) -> None:
    await _recycling(tmp_path, driver, power_loss, sync_method)


async def _recycling(tmp_path: Path, driver: str, power_loss: object, sync_method: str) -> None:
    make = power_loss
    for seed in range(4):
        d = tmp_path / f"s{seed}"
        async with open_wal(d, driver, segments_ahead=0) as wal:
            recs = [(await wal.commit(payload(f"f{i}", 700)), payload(f"f{i}", 700)) for i in range(300)]
        cut = next(lsn for lsn, _ in recs if lsn >= 2 * SEG)
        acked = dict(r for r in recs if r[0] >= cut)
        sim: PowerLossSimulator = make(driver, atomic_sectors=True)  # type: ignore[operator]
        wal = await open_wal(d, sim, sync_method=sync_method, segments_ahead=2)
        assert await wal.truncate_before(cut) == 2
        assert wal.statistics().segments_recycled == 2  # renamed to future segment numbers
        errors: list[BaseException] = []
        # Into the first recycled segment, not past the second: no segment is created, so
        # only truncate_before's own directory fsync makes the renames durable.
        first_recycled = recs[-1][0] // SEG + 1
        k = 0
        while wal.insert_lsn < first_recycled * SEG + 4 * PAGE_SIZE:
            await _commit_many(wal, f"n{k}.", 8, acked, errors)
            k += 1
        assert not errors
        assert wal.insert_lsn < (first_recycled + 1) * SEG
        for i in range(10):
            await wal.append(payload(f"u{i}", 3000))
        await wal.close(flush=False)
        sim.crash(seed=seed, policy="drop" if seed % 2 else "random")
        got = await read_all(d, driver)
        have = dict(got)
        assert {lsn: have.get(lsn) for lsn in acked} == acked, f"seed {seed}: acknowledged record lost"
        assert min(have) == cut
        for data in have.values():
            check_payload(data)


@pytest.mark.parametrize("sync_method", ["fdatasync", "fsync"])
async def test_a_commit_is_one_linked_write_and_sync(
    tmp_path: Path, driver: str, sync_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What reaches the driver, seen from the power-loss simulator (which gets every op).
    sim = PowerLossSimulator(driver, atomic_sectors=True)
    kinds: list[OpKind] = []

    def record(disk: _simulated_disk.SimulatedDisk, op: Op) -> _simulated_disk.Note:
        kinds.append(op.kind)
        return _simulated_disk.before_op(disk, op)

    monkeypatch.setattr(_powerloss, "before_op", record)
    async with open_wal(tmp_path, sim, segments_ahead=0, sync_method=sync_method) as wal:
        kinds.clear()
        lsn = await wal.commit(b"one op")
        assert kinds == [OpKind.WRITE_SYNC]
        assert wal.flushed_lsn > lsn
    sim.discard()


@pytest.mark.parametrize("half", ["writes", "syncs"])
async def test_either_half_of_the_linked_op_poisons(
    tmp_path: Path, driver: str, fault_injector: object, half: str
) -> None:
    injector: FaultInjector = fault_injector(driver=driver)  # type: ignore[operator]
    async with open_wal(tmp_path, injector, segments_ahead=0) as wal:
        lsn = await wal.commit(b"durable")
        flushed = wal.flushed_lsn
        ops = injector.ops
        injector.add(Fault(kind=half, errno=errno.EIO))
        with pytest.raises(WALPoisonedError, match="Input/output error") as info:
            await wal.commit(b"never acknowledged")
        assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EIO
        # A failed write never reaches its sync; a failed sync came after the whole write.
        assert injector.ops == ops + (1 if half == "writes" else 2)
        assert [e.kind.value for e in injector.log] == (["write"] if half == "writes" else ["fdatasync"])
        assert wal.flushed_lsn == flushed and wal.poisoned
    got = dict(await read_all(tmp_path, driver))
    assert got[lsn] == b"durable"
