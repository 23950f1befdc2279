"""A lone committer's round: submitted at once, done in the call on the ``sync`` driver.

With no task parked behind it, a round's linked write + sync is submitted as soon as it is
started (not at the end of the tick); a driver that runs it in submit (``sync``) has the log
durable before the leader would park, and the commit then only yields once. These tests pin
what that path must keep: no acknowledgement before the sync that covers the record, the
failed sync poisoning the WAL, a schedule point per commit, and group commit for the
commits that arrive while such a leader yields.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from aiopg_io.drivers import _blocking
from aiopg_io.testing import PowerLossSimulator
from aiopg_io.wal import WAL, WALPoisonedError

from ._util import SEG, check_payload, open_wal, payload, read_all

pytestmark = pytest.mark.anyio


async def test_a_lone_commit_is_synced_when_acknowledged(tmp_path: Path, driver: str) -> None:
    # Every op reaches the simulator, which keeps what was written and not synced: a commit
    # acknowledged before its sync would leave its bytes there when it returns.
    sim = PowerLossSimulator(driver, atomic_sectors=True)
    acked: dict[int, bytes] = {}
    async with open_wal(tmp_path, sim, segments_ahead=0) as wal:
        for i in range(40):  # 40 x ~1.2 KiB: the log crosses a 64 KiB segment
            data = payload(f"lone{i}", 900 + i * 13)
            lsn = await wal.commit(data)
            assert wal.flushed_lsn > lsn
            assert sim.unsynced() == {}, f"commit {i} was acknowledged before its sync"
            acked[lsn] = data
        for i in range(5):
            await wal.append(payload(f"tail{i}", 3000))  # not durable: the crash may take them
        await wal.close(flush=False)
    sim.crash(seed=7)
    got = dict(await read_all(tmp_path, driver))
    assert {lsn: got.get(lsn) for lsn in acked} == acked
    for data in got.values():
        check_payload(data)


async def test_commits_arriving_while_a_lone_leader_yields_share_a_sync(tmp_path: Path, driver: str) -> None:
    # 32 tasks started at once: the first one's round is lone (on sync, done at once); the
    # others come while its leader yields and must still go in one round, not one each.
    async with open_wal(tmp_path, driver) as wal:
        base = wal.statistics()
        acked: dict[int, bytes] = {}

        async def one(i: int) -> None:
            data = payload(f"burst{i}", 200)
            lsn = await wal.commit(data)
            assert wal.flushed_lsn > lsn
            acked[lsn] = data

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(one, i)
        syncs = wal.statistics().syncs - base.syncs
        assert syncs <= 4, f"{syncs} syncs for 32 commits that arrived together"
    assert dict(await read_all(tmp_path, driver)) == acked


async def test_a_lone_commit_done_in_submit_syncs_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the sync driver the round runs in the committer's own call. The sync is watched:
    # each commit must return after one fdatasync that found its record in the file.
    sync_fdatasync = _blocking._fdatasync
    seen: list[bytes] = []
    synced_at: list[int] = []

    def watching_fdatasync(fd: int) -> None:
        sync_fdatasync(fd)
        seen.append(os.pread(fd, SEG, 0))

    monkeypatch.setattr(_blocking, "_fdatasync", watching_fdatasync)
    async with WAL.open(tmp_path, driver="sync", segment_size=SEG, segments_ahead=0) as wal:
        for i in range(20):
            data = payload(f"in{i}", 300)
            before = len(seen)
            lsn = await wal.commit(data)
            synced_at.append(len(seen) - before)
            assert wal.flushed_lsn > lsn
            assert data in seen[-1], f"commit {i} returned before a sync of its record"
    assert synced_at == [1] * 20, "a lone commit is one linked write + sync"


async def test_a_failed_sync_done_in_submit_poisons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync_fdatasync = _blocking._fdatasync
    fail = False

    def failing_fdatasync(fd: int) -> None:
        if fail:
            raise OSError(errno.EIO, "injected EIO")
        sync_fdatasync(fd)

    monkeypatch.setattr(_blocking, "_fdatasync", failing_fdatasync)
    acked: dict[int, bytes] = {}
    async with WAL.open(tmp_path, driver="sync", segment_size=SEG, segments_ahead=0) as wal:
        for i in range(5):
            data = payload(f"ok{i}", 300)
            acked[await wal.commit(data)] = data
        flushed = wal.flushed_lsn
        fail = True
        with pytest.raises(WALPoisonedError, match="injected EIO") as info:
            await wal.commit(payload("lost", 300))
        assert info.value.errno == errno.EIO
        assert wal.flushed_lsn == flushed and wal.poisoned
        with pytest.raises(WALPoisonedError):
            await wal.commit(b"later")
        fail = False
    got = dict(await read_all(tmp_path, "sync"))
    assert {lsn: got.get(lsn) for lsn in acked} == acked


async def test_a_lone_commit_done_in_submit_still_yields(tmp_path: Path) -> None:
    # Done in the call, the commit awaits nothing else: it must still let other tasks run.
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with (
        WAL.open(tmp_path, driver="sync", segment_size=SEG, segments_ahead=0) as wal,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        start = ticks
        for i in range(20):
            await wal.commit(payload(f"y{i}", 100))
        done = True
        assert ticks - start >= 10, "lone commits on the sync driver starved the other tasks"
