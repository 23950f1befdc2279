"""The Nth-I/O sweep, and the file API under a full sweep with a simulated crash after
every run: only documented exceptions, no descriptor or context leaked, the file reopens,
and what was acknowledged durable before the fault survives the crash."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from aiopg_io.testing import (
    Fault,
    FaultInjector,
    PowerLossSimulator,
    SweepLimitError,
    SweepOutcome,
    sweep,
)

from ._util import fds

pytestmark = pytest.mark.anyio

PAGE = 8192
FAULTS = {
    "eio-before": Fault(errno=errno.EIO),
    "eio-after": Fault(errno=errno.EIO, when="after"),
    "short-writes": Fault(kind="writes", short=1000),
    "enospc-writes-after": Fault(kind="writes", errno=errno.ENOSPC, when="after"),
}


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
async def test_file_api_full_sweep_with_crash(driver: str, tmp_path: Path, fault: Fault) -> None:
    sim = PowerLossSimulator(driver)
    before = fds()
    runs: dict[int, tuple[Path, bytes]] = {}
    page1, page2 = os.urandom(PAGE), os.urandom(PAGE)

    async def scenario(inj: FaultInjector) -> None:
        path = tmp_path / f"run{len(runs)}.dat"
        runs[len(runs)] = (path, b"")
        async with aiopg_io.open(path, "w+b", driver=inj, opener=sim.opener) as f:
            sim.fsync_directory(tmp_path)
            await f.write(page1)  # buffered: goes out at fdatasync
            await f.fdatasync()
            runs[len(runs) - 1] = (path, page1)
            await f.pwrite(page2, PAGE)
            await f.fdatasync()
            runs[len(runs) - 1] = (path, page1 + page2)
            assert await f.pread(2 * PAGE, 0) == page1 + page2
            await f.seek(PAGE)
            assert await f.read() == page2

    async def check(outcome: SweepOutcome, inj: FaultInjector) -> None:
        if outcome.error is not None:
            (injection,) = outcome.log
            err = outcome.error
            assert isinstance(err, OSError), outcome.describe()
            assert err.errno == injection.errno, outcome.describe()
            assert f"(injected by aiopg_io.testing into op #{injection.op})" in str(err)
        assert not live_contexts() and inj.open_drivers == 0 and sim.open_drivers == 0
        report = sim.crash(seed=outcome.n)
        assert fds() == before, "a descriptor leaked"
        path, acked = runs[len(runs) - 1]
        async with aiopg_io.open(path, "rb", driver=driver) as f:
            data = await f.read()
        assert data[: len(acked)] == acked, f"durable data lost after {outcome.describe()}; {report}"

    report = await sweep(scenario, fault=fault, driver=sim, check=check, max_n=50)
    assert report.outcomes[-1].completed and not report.outcomes[-1].injected
    # Every op of the scenario was hit once: write, fdatasync, write, fdatasync, read, read...
    assert report.runs >= (4 if fault.kinds <= {aiopg_io.drivers.OpKind.WRITE} else 3)
    assert all(o.injected for o in report.outcomes[:-1])
    if fault.when == "before" and fault.short is None:
        assert all(not o.completed for o in report.outcomes[:-1])


async def test_sweep_reports_each_outcome(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    path.write_bytes(b"x" * 10)

    async def scenario(inj: FaultInjector) -> None:
        async with aiopg_io.open(path, "rb", driver=inj) as f:
            await f.pread(1, 0)
            with contextlib.suppress(OSError):  # this one is handled by the code under test
                await f.pread(1, 1)
            await f.pread(1, 2)

    report = await sweep(scenario, fault=Fault(kind="reads", errno=errno.EIO))
    assert [(o.n, o.describe()) for o in report.outcomes] == [
        (1, f"OSError: [Errno 5] Input/output error (injected by aiopg_io.testing into op #1): '{path}'"),
        (2, "completed"),
        (3, f"OSError: [Errno 5] Input/output error (injected by aiopg_io.testing into op #3): '{path}'"),
        (4, "completed"),
    ]
    assert [len(o.log) for o in report.outcomes] == [1, 1, 1, 0]
    assert [o.ops for o in report.outcomes] == [1, 3, 3, 3]
    assert len(report.failures) == 2
    assert "n=2: op #2 read" in str(report) and "n=4: nothing injected -> completed" in str(report)


async def test_sweep_gives_up_at_max_n(tmp_path: Path) -> None:
    path = tmp_path / "rel"
    path.write_bytes(b"x")

    async def scenario(inj: FaultInjector) -> None:
        async with aiopg_io.open(path, "rb", driver=inj) as f:
            for _ in range(5):
                await f.pread(1, 0)

    with pytest.raises(SweepLimitError, match="sweep reached max_n=3 and run 3 still injected") as ei:
        await sweep(scenario, driver="sync", max_n=3)
    assert ei.value.report.runs == 3


async def test_an_undocumented_exception_propagates_with_the_run_named(tmp_path: Path) -> None:
    path = tmp_path / "rel"
    path.write_bytes(b"x")

    async def scenario(inj: FaultInjector) -> None:
        async with aiopg_io.open(path, "rb", driver=inj) as f:
            try:
                await f.pread(1, 0)
            except OSError as exc:
                raise KeyError("converted") from exc

    with pytest.raises(KeyError, match="converted") as ei:
        await sweep(scenario, driver="sync")
    notes = getattr(ei.value, "__notes__", None)
    if notes is not None:  # Python >= 3.11
        assert any("sweep: run n=1 (op #1 read" in note for note in notes), notes


async def test_a_scenario_failing_on_its_own_propagates(tmp_path: Path) -> None:
    async def scenario(inj: FaultInjector) -> None:
        raise FileNotFoundError(errno.ENOENT, "no such file", str(tmp_path / "missing"))

    with pytest.raises(FileNotFoundError, match="no such file"):
        await sweep(scenario, driver="sync")


async def test_sync_check_and_expected_types(tmp_path: Path) -> None:
    path = tmp_path / "rel"
    path.write_bytes(b"x")
    seen: list[int] = []

    async def scenario(inj: FaultInjector) -> None:
        async with aiopg_io.open(path, "rb", driver=inj) as f:
            await f.pread(1, 0)

    def check(outcome: SweepOutcome, inj: FaultInjector) -> None:
        seen.append(outcome.n)

    report = await sweep(
        scenario, driver="sync", check=check, expected=(BlockingIOError,), fault=Fault(errno=errno.EAGAIN)
    )
    assert seen == [1, 2] and isinstance(report.outcomes[0].error, BlockingIOError)


async def test_direct_io_full_sweep_with_crash(direct_driver: str, data_dir: Path) -> None:
    sim = PowerLossSimulator(direct_driver, sector_size=4096, atomic_sectors=True)
    before = fds()
    acked: list[bytes] = []
    buf = aiopg_io.aligned_buffer(2 * PAGE)
    buf[:] = os.urandom(2 * PAGE)
    path = data_dir / "direct.dat"

    async def scenario(inj: FaultInjector) -> None:
        acked[:] = [b""]
        async with aiopg_io.open(path, "w+b", driver=inj, direct=True) as f:
            await f.pwrite(buf[:PAGE], 0)
            await f.fdatasync()
            acked[0] = bytes(buf[:PAGE])
            await f.pwritev([buf[PAGE:]], PAGE)
            await f.fdatasync()
            acked[0] = bytes(buf)
            back = aiopg_io.aligned_buffer(2 * PAGE)
            assert await f.preadinto(back, 0) == 2 * PAGE and back == buf

    async def check(outcome: SweepOutcome, inj: FaultInjector) -> None:
        assert outcome.error is None or getattr(outcome.error, "errno", None) == errno.EIO
        sim.crash(seed=outcome.n)
        assert fds() == before
        async with aiopg_io.open(path, "rb", driver=direct_driver) as f:
            assert (await f.read())[: len(acked[0])] == acked[0]

    report = await sweep(scenario, fault=Fault(errno=errno.EIO), driver=sim, check=check)
    assert report.runs == 6  # write, fdatasync, writev, fdatasync, read, and a clean run
