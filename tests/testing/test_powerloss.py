"""The power-loss simulator: what survives a crash, checked byte by byte against the model.

Most tests drive the simulator's driver directly (no event loop: drivers are loop-agnostic),
so every crash state can be built and checked quickly; the file API under the simulator is
covered in test_sweep.py.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopg_io.os
from aiopg_io.drivers import Op, OpKind
from aiopg_io.drivers.base import AT_FDCWD, AT_REMOVEDIR
from aiopg_io.testing import (
    CrashReport,
    Fault,
    FaultInjector,
    FileCrash,
    PowerLossSimulator,
    SimulatorBusyError,
    simulate,
)

from ._util import fds, read, run, sync, write

SS = 512


def expected(
    old: bytes, new: bytes, fc: FileCrash, ss: int, *, safe_append: bool = False
) -> list[int | None]:
    """The bytes the model allows after the crash (None: garbage allowed there)."""
    out: list[int | None] = []
    for i in range(fc.size_after):
        fate = fc.sectors.get(i // ss)
        if fate is None:
            out.append(new[i] if i < len(new) else old[i])
        elif fate == "garbled":
            out.append(None)
        elif fate == "kept":
            out.append(new[i] if i < len(new) else old[i])
        elif i < fc.durable_size:
            out.append(old[i])
        elif safe_append and i < len(new):
            out.append(new[i])
        else:
            out.append(0)
    return out


def check_file(path: Path, old: bytes, new: bytes, fc: FileCrash, ss: int = SS, **kw: bool) -> None:
    data = path.read_bytes()
    assert len(data) == fc.size_after
    want = expected(old, new, fc, ss, **kw)
    wrong = [i for i, (b, w) in enumerate(zip(data, want, strict=True)) if w is not None and b != w]
    assert not wrong, f"bytes differ from the model at {wrong[:10]}... (report {fc})"
    for s, fate in fc.sectors.items():
        if fate == "garbled":
            lo, hi = s * ss, min((s + 1) * ss, fc.size_after)
            if hi - lo >= 16:
                assert data[lo:hi] != new[lo:hi] and data[lo:hi] != old[lo:hi].ljust(hi - lo, b"\0")


class Scene:
    """A file with a durable part and unsynced changes, built through a simulator."""

    def __init__(self, tmp_path: Path, sim: PowerLossSimulator, name: str = "rel") -> None:
        self.path = tmp_path / name
        self.sim = sim
        self.driver = sim.create()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def write(self, data: bytes, offset: int) -> None:
        (op,) = run(self.driver, [write(self.fd, data, offset, str(self.path))])
        assert op.error is None and op.result == len(data)

    def sync(self) -> None:
        (op,) = run(self.driver, [sync(self.fd, str(self.path))])
        assert op.error is None

    def truncate(self, size: int) -> None:
        (op,) = run(self.driver, [Op(OpKind.FTRUNCATE, self.fd, length=size, path=str(self.path))])
        assert op.error is None

    def close(self) -> None:
        self.driver.close()
        os.close(self.fd)


def standard(tmp_path: Path, sim: PowerLossSimulator) -> tuple[Scene, bytes, bytes]:
    """Durable: 5 sectors of 'a'..'e' (2560 bytes). Unsynced: overwrites of sectors 0-1 and
    3 (partly), and an append of 3.5 sectors."""
    s = Scene(tmp_path, sim)
    old = b"".join(bytes([c]) * SS for c in b"abcde")
    s.write(old, 0)
    s.sync()
    s.write(b"X" * 1000, 0)
    s.write(b"Y" * 100, 3 * SS + 50)
    s.write(b"Z" * 1800, 5 * SS)
    new = (tmp_path / "rel").read_bytes()
    s.close()
    return s, old, new


def test_policy_keep_leaves_the_latest_data(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    _, _, new = standard(tmp_path, sim)
    report = sim.crash(policy="keep")
    assert (tmp_path / "rel").read_bytes() == new
    fc = report.file(tmp_path / "rel")
    assert (fc.durable_size, fc.size_before, fc.size_after) == (2560, 4360, 4360)
    assert set(fc.sectors) == {0, 1, 3, 5, 6, 7, 8}
    assert set(fc.sectors.values()) == {"kept"}


def test_policy_drop_leaves_exactly_the_durable_state(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    _, old, _ = standard(tmp_path, sim)
    report = sim.crash(policy="drop")
    assert (tmp_path / "rel").read_bytes() == old
    assert set(report.files[0].sectors.values()) == {"dropped"}


def test_policy_garble_trashes_every_unsynced_sector_and_nothing_else(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    _, old, new = standard(tmp_path, sim)
    fc = sim.crash(seed=1, policy="garble").files[0]
    data = (tmp_path / "rel").read_bytes()
    assert len(data) == 4360
    for s in (2, 4):  # untouched sectors
        assert data[s * SS : (s + 1) * SS] == old[s * SS : (s + 1) * SS]
    for s in (0, 1, 3, 5, 6, 7, 8):
        assert fc.sectors[s] == "garbled"
        assert data[s * SS : (s + 1) * SS] != new[s * SS : (s + 1) * SS]
    check_file(tmp_path / "rel", old, new, fc)


def test_random_crashes_follow_the_model_and_use_every_fate(tmp_path: Path) -> None:
    seen: set[str] = set()
    sizes: set[int] = set()
    for seed in range(12):
        d = tmp_path / str(seed)
        d.mkdir()
        sim = PowerLossSimulator("sync")
        _, old, new = standard(d, sim)
        fc = sim.crash(seed=seed).files[0]
        check_file(d / "rel", old, new, fc)
        seen |= set(fc.sectors.values())
        sizes.add(fc.size_after)
    assert seen == {"kept", "dropped", "garbled"}
    assert sizes == {2560, 4360}


def test_same_seed_same_crash(tmp_path: Path) -> None:
    results = []
    for run_no in range(2):
        d = tmp_path / str(run_no)
        d.mkdir()
        sim = PowerLossSimulator("sync")
        standard(d, sim)
        report = sim.crash(seed=42)
        results.append((report.files[0].sectors, report.files[0].size_after, (d / "rel").read_bytes()))
    assert results[0] == results[1]


def test_atomic_sectors_are_never_torn(tmp_path: Path) -> None:
    for seed in range(12):
        d = tmp_path / str(seed)
        d.mkdir()
        sim = PowerLossSimulator("sync", atomic_sectors=True)
        _, old, new = standard(d, sim)
        fc = sim.crash(seed=seed).files[0]
        assert "garbled" not in fc.sectors.values()
        check_file(d / "rel", old, new, fc)
    with pytest.raises(ValueError, match="contradicts atomic_sectors"):
        PowerLossSimulator("sync", atomic_sectors=True).crash(policy="garble")


def test_safe_append_never_exposes_garbage_past_the_durable_size(tmp_path: Path) -> None:
    sizes = set()
    for seed in range(16):
        d = tmp_path / str(seed)
        d.mkdir()
        sim = PowerLossSimulator("sync", safe_append=True)
        _, old, new = standard(d, sim)
        fc = sim.crash(seed=seed).files[0]
        data = (d / "rel").read_bytes()
        # The appended part that survived is exactly the data written, a prefix cut at a sector.
        assert data[2560:] == new[2560 : fc.size_after]
        assert fc.size_after in (2560, 3072, 3584, 4096, 4360)
        for s in (5, 6, 7, 8):
            assert fc.sectors[s] == ("kept" if s * SS < fc.size_after else "dropped")
        check_file(d / "rel", old, new, fc, safe_append=True)
        sizes.add(fc.size_after)
    assert len(sizes) >= 3


def test_a_sync_makes_the_writes_before_it_durable(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    s = Scene(tmp_path, sim)
    s.write(b"1" * 700, 0)
    s.sync()
    s.write(b"2" * 300, 100)  # overwrites part of sector 0 and 1
    s.sync()
    s.write(b"3" * 10, 600)
    assert sim.unsynced() == {str(s.path): 10}
    s.close()
    report = sim.crash(policy="drop")
    assert s.path.read_bytes() == b"1" * 100 + b"2" * 300 + b"1" * 300
    assert report.files[0].sectors == {1: "dropped"}


def test_fsync_and_fdatasync_both_make_data_durable(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    s = Scene(tmp_path, sim)
    s.write(b"a" * 600, 0)
    (op,) = run(s.driver, [sync(s.fd, str(s.path), OpKind.FSYNC)])
    assert op.error is None
    s.write(b"b" * 600, 600)
    s.sync()
    assert sim.unsynced() == {}
    s.close()
    sim.crash(policy="drop")
    assert s.path.read_bytes() == b"a" * 600 + b"b" * 600


def test_an_unsynced_truncation_can_be_undone(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    s = Scene(tmp_path, sim)
    s.write(bytes(range(256)) * 8, 0)
    s.sync()
    s.truncate(700)
    assert os.path.getsize(s.path) == 700
    s.close()
    sim.crash(policy="drop")
    assert s.path.read_bytes() == bytes(range(256)) * 8


def test_a_synced_truncation_stays(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    s = Scene(tmp_path, sim)
    s.write(b"q" * 2048, 0)
    s.sync()
    s.truncate(700)
    s.sync()
    s.write(b"r" * 10, 100)
    s.close()
    sim.crash(policy="drop")
    assert s.path.read_bytes() == b"q" * 700


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_failed_sync_makes_nothing_durable_unless_it_ran(tmp_path: Path, when: str) -> None:
    sim = PowerLossSimulator("sync")
    inj = FaultInjector(Fault(kind="fdatasync", errno=errno.EIO, when=when), driver=sim)  # type: ignore[arg-type]
    d = inj.create()
    path = tmp_path / "rel"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    run(d, [write(fd, b"w" * 1024, 0, str(path))])
    (op,) = run(d, [sync(fd, str(path))])
    assert isinstance(op.error, OSError) and op.error.errno == errno.EIO
    d.close()
    os.close(fd)
    sim.crash(policy="drop")
    # "before": the kernel dropped the pages, the data is gone; "after": it was flushed.
    assert path.read_bytes() == (b"" if when == "before" else b"w" * 1024)


def test_sector_size_option(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync", sector_size=4096)
    s = Scene(tmp_path, sim)
    s.write(b"o" * 8192, 0)
    s.sync()
    s.write(b"n", 5000)
    s.close()
    fc = sim.crash(policy="keep").files[0]
    assert fc.sectors == {1: "kept"}
    with pytest.raises(ValueError, match="sector_size=1000: a power of two"):
        PowerLossSimulator("sync", sector_size=1000)


def _write_through(sim: PowerLossSimulator, path: Path, flags: int, data: bytes, offset: int) -> None:
    """One write through a driver of ``sim`` on a descriptor opened with ``flags``."""
    fd = os.open(path, os.O_RDWR | flags)
    d = sim.create()
    try:
        (op,) = run(d, [write(fd, data, offset, str(path))])
        assert op.error is None and op.result == len(data)
    finally:
        d.close()
        os.close(fd)


SYNC_FLAGS = [pytest.param(os.O_DSYNC, id="O_DSYNC"), pytest.param(os.O_SYNC, id="O_SYNC")]


@pytest.mark.parametrize("flag", SYNC_FLAGS)
def test_a_completed_synchronous_write_survives_a_drop_crash(tmp_path: Path, flag: int) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"d" * 1024)  # durable: the simulator has seen no change to it yet
    sim = PowerLossSimulator("sync")
    _write_through(sim, path, 0, b"u" * 100, 0)  # a plain write, never synced
    _write_through(sim, path, flag, b"S" * 700, 700)  # over sectors 1-2, growing the file
    assert sim.unsynced() == {str(path): 100}
    sim.crash(policy="drop")
    # The synchronous write and the size it made are durable; the plain write is not.
    assert path.read_bytes() == b"d" * 700 + b"S" * 700


@pytest.mark.parametrize("flag", SYNC_FLAGS)
def test_a_synchronous_write_is_never_garbled(tmp_path: Path, flag: int) -> None:
    for seed in range(8):
        path = tmp_path / f"log{seed}"
        path.write_bytes(b"d" * 1024)
        sim = PowerLossSimulator("sync")
        _write_through(sim, path, flag, b"S" * 1024, 512)
        assert sim.crash(seed=seed, policy="garble").files[0].sectors == {}
        assert path.read_bytes() == b"d" * 512 + b"S" * 1024


def test_a_descriptor_number_reused_with_other_flags_is_seen(tmp_path: Path) -> None:
    # The flags are the op's descriptor's at that write, not the first one with that number.
    path = tmp_path / "log"
    path.write_bytes(bytes(2048))
    sim = PowerLossSimulator("sync")
    d = sim.create()
    try:
        for i, flags in enumerate([os.O_DSYNC, 0, os.O_DSYNC, 0]):
            fd = os.open(path, os.O_RDWR | flags)
            (op,) = run(d, [write(fd, bytes([65 + i]) * 512, 512 * i, str(path))])
            assert op.error is None
            os.close(fd)  # the next open gets the same number
    finally:
        d.close()
    assert sim.unsynced() == {str(path): 1024}
    sim.crash(policy="drop")
    assert path.read_bytes() == b"A" * 512 + bytes(512) + b"C" * 512 + bytes(512)


def test_a_short_synchronous_write_keeps_what_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"")
    sim = PowerLossSimulator("sync")
    inj = FaultInjector(Fault(kind="writes", short=600), driver=sim)
    fd = os.open(path, os.O_RDWR | os.O_DSYNC)
    d = inj.create()
    try:
        (op,) = run(d, [write(fd, b"S" * 1000, 0, str(path))])
        assert op.error is not None and op.error.errno == errno.ENOSPC and op.transferred == 600
    finally:
        d.close()
        os.close(fd)
    sim.crash(policy="drop")
    assert path.read_bytes() == b"S" * 600


def _direct_write(sim: PowerLossSimulator, path: Path, flags: int, fill: bytes, sync_after: bool) -> None:
    fd = os.open(path, os.O_RDWR | os.O_DIRECT | flags)
    buf = mmap.mmap(-1, 4096)
    buf.write(fill * 4096)
    d = sim.create()
    try:
        (op,) = run(d, [Op(OpKind.WRITE, fd, 0, (memoryview(buf),), path=str(path), keepalive=buf)])
        assert op.error is None and op.result == 4096
        if sync_after:
            (op,) = run(d, [sync(fd, str(path))])
            assert op.error is None
    finally:
        d.close()
        os.close(fd)


def test_a_completed_o_direct_write_without_a_sync_may_be_lost(data_dir: Path) -> None:
    # O_DIRECT skips the page cache, not the device's write cache: no durability of its own.
    path = data_dir / "direct"
    path.write_bytes(b"d" * 4096)
    sim = PowerLossSimulator("sync")
    _direct_write(sim, path, 0, b"N", sync_after=False)
    assert sim.unsynced() == {str(path): 4096}
    sim.crash(policy="drop")
    assert path.read_bytes() == b"d" * 4096
    fates = set()
    for seed in range(12):
        _direct_write(sim, path, 0, bytes([65 + seed]), sync_after=False)
        fc = sim.crash(seed=seed).files[0]
        fates |= set(fc.sectors.values())
    assert fates == {"kept", "dropped", "garbled"}


def test_an_o_direct_write_is_durable_after_a_sync_or_with_o_dsync(data_dir: Path) -> None:
    path = data_dir / "direct"
    path.write_bytes(b"d" * 4096)
    sim = PowerLossSimulator("sync")
    _direct_write(sim, path, 0, b"F", sync_after=True)
    sim.crash(policy="drop")
    assert path.read_bytes() == b"F" * 4096
    _direct_write(sim, path, os.O_DSYNC, b"D", sync_after=False)
    assert sim.unsynced() == {}
    sim.crash(policy="drop")
    assert path.read_bytes() == b"D" * 4096


def test_reads_see_the_new_data_before_the_crash(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    s = Scene(tmp_path, sim)
    s.write(b"new data", 0)
    (op,) = run(s.driver, [read(s.fd, 8, 0)])
    assert bytes(op.buffers[0]) == b"new data"
    s.close()
    sim.discard()
    assert s.path.read_bytes() == b"new data"


def test_crash_refuses_while_a_driver_is_open(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    d = sim.create()
    with pytest.raises(SimulatorBusyError, match=r"1 driver\(s\) of .* still open: close every file"):
        sim.crash()
    d.close()
    assert isinstance(sim.crash(), CrashReport)


def test_crash_closes_the_descriptors_it_held(tmp_path: Path) -> None:
    before = fds()
    sim = PowerLossSimulator("sync")
    s = Scene(tmp_path, sim)
    s.write(b"x", 0)
    s.close()
    assert len(fds()) == len(before) + 1  # the simulator's own descriptor on the file
    sim.crash()
    assert fds() == before


# -- directory entries ------------------------------------------------------------------------


def test_a_created_file_vanishes_unless_its_directory_was_synced(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    a, b = tmp_path / "a", tmp_path / "b"
    os.close(sim.opener(str(a), os.O_RDWR | os.O_CREAT))
    report = sim.crash(policy="drop")
    assert not a.exists()
    assert [(e.fate, e.path) for e in report.entries] == [("vanished", str(a))]

    os.close(sim.opener(str(b), os.O_RDWR | os.O_CREAT))
    sim.fsync_directory(tmp_path)
    assert sim.crash(policy="drop").entries == ()
    assert b.exists()


def test_opening_an_existing_file_creates_no_entry(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    p = tmp_path / "old"
    p.write_bytes(b"x")
    os.close(sim.opener(str(p), os.O_RDWR | os.O_CREAT))
    assert sim.crash(policy="drop").entries == ()
    assert p.read_bytes() == b"x"


def test_an_unsynced_rename_is_undone_and_the_replaced_file_comes_back(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    src, dst = tmp_path / "new.tmp", tmp_path / "control"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    sim.rename(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists()
    report = sim.crash(policy="drop")
    assert [(e.fate, e.path, e.source) for e in report.entries] == [("reverted", str(dst), str(src))]
    assert src.read_bytes() == b"new" and dst.read_bytes() == b"old"


def test_a_rename_op_is_recorded_and_undone(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    src, dst = tmp_path / "s", tmp_path / "d"
    src.write_bytes(b"1")
    dst.write_bytes(b"replaced")
    d = sim.create()
    try:
        (op,) = run(d, [Op(OpKind.RENAMEAT, AT_FDCWD, path=str(src), newpath=str(dst))])
        assert op.error is None and dst.read_bytes() == b"1"
        # A rename that failed changed nothing, and is not recorded.
        (op,) = run(d, [Op(OpKind.RENAMEAT, AT_FDCWD, path=str(src), newpath=str(dst))])
        assert isinstance(op.error, FileNotFoundError)
    finally:
        d.close()
    report = sim.crash(policy="drop")
    assert [(e.fate, e.path, e.source) for e in report.entries] == [("reverted", str(dst), str(src))]
    assert src.read_bytes() == b"1" and dst.read_bytes() == b"replaced"


def test_path_ops_through_the_driver_are_entries(tmp_path: Path) -> None:
    # Created with O_EXCL, unlinked, and a directory fsync: each from the op it is handed.
    sim = PowerLossSimulator("sync")
    new, old = tmp_path / "new", tmp_path / "old"
    old.write_bytes(b"old content")
    d = sim.create()
    try:
        (op,) = run(
            d, [Op(OpKind.OPENAT, AT_FDCWD, path=str(new), flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)]
        )
        run(d, [Op(OpKind.CLOSE, op.result or -1)])
        (op,) = run(d, [Op(OpKind.UNLINKAT, AT_FDCWD, path=str(old))])
        assert op.error is None and not old.exists()
    finally:
        d.close()
    report = sim.crash(policy="drop")
    assert [(e.fate, e.path) for e in report.entries] == [("vanished", str(new)), ("restored", str(old))]
    assert not new.exists() and old.read_bytes() == b"old content"

    d = sim.create()
    try:
        (op,) = run(d, [Op(OpKind.OPENAT, AT_FDCWD, path=str(new), flags=os.O_WRONLY | os.O_CREAT)])
        run(d, [Op(OpKind.CLOSE, op.result or -1)])
        dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        (op,) = run(d, [Op(OpKind.FSYNC, dfd)])  # no path given: the simulator finds it
        os.close(dfd)
        assert op.error is None
    finally:
        d.close()
    assert sim.crash(policy="drop").entries == ()
    assert new.exists()


def test_a_rename_is_durable_once_both_directories_are_synced(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    sim = PowerLossSimulator("sync")
    src, dst = tmp_path / "x" / "f", tmp_path / "y" / "f"
    src.write_bytes(b"1")
    sim.rename(src, dst)
    sim.fsync_directory(tmp_path / "y")
    assert sim.crash(policy="drop").entries[0].fate == "reverted"
    sim.rename(src, dst)
    sim.fsync_directory(tmp_path / "y")
    sim.fsync_directory(tmp_path / "x")
    assert sim.crash(policy="drop").entries == ()
    assert dst.read_bytes() == b"1"


def test_a_created_then_renamed_file_vanishes_at_its_new_name(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    tmp, final = tmp_path / "seg.tmp", tmp_path / "seg"
    os.close(sim.opener(str(tmp), os.O_WRONLY | os.O_CREAT))
    sim.rename(tmp, final)
    report = sim.crash(policy="drop")
    assert [(e.fate, e.path) for e in report.entries] == [("vanished", str(final))]
    assert not tmp.exists() and not final.exists()


def test_a_directory_fsync_through_the_driver_is_seen(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    p = tmp_path / "f"
    os.close(sim.opener(str(p), os.O_WRONLY | os.O_CREAT))
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    d = sim.create()
    try:
        (op,) = run(d, [sync(dfd, str(tmp_path), OpKind.FSYNC)])
        assert op.error is None
    finally:
        d.close()
        os.close(dfd)
    assert sim.crash(policy="drop").entries == ()
    assert p.exists()


def test_random_entry_fates_are_seeded(tmp_path: Path) -> None:
    fates = []
    for seed in range(8):
        sim = PowerLossSimulator("sync")
        p = tmp_path / f"f{seed}"
        os.close(sim.opener(str(p), os.O_WRONLY | os.O_CREAT))
        (e,) = sim.crash(seed=seed).entries
        assert p.exists() == (e.fate == "kept")
        fates.append(e.fate)
    assert set(fates) == {"kept", "vanished"}


def test_a_write_that_failed_before_changing_anything_cannot_tear_a_sector(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.write_bytes(b"r" * 1024)
    sim = PowerLossSimulator("sync")
    fd = os.open(path, os.O_RDONLY)
    d = sim.create()
    try:
        (op,) = run(d, [write(fd, b"w" * 600, 0, str(path))])
    finally:
        d.close()
        os.close(fd)
    assert isinstance(op.error, OSError) and op.error.errno == errno.EBADF
    report = sim.crash(policy="garble")
    assert report.files[0].sectors == {}
    assert path.read_bytes() == b"r" * 1024


def test_a_tracked_file_is_reported_under_its_new_name(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    s = Scene(tmp_path, sim)
    s.write(b"z", 0)
    s.close()
    sim.rename(s.path, tmp_path / "renamed")
    report = sim.crash(policy="keep")
    assert report.file(tmp_path / "renamed").sectors == {0: "kept"}
    with pytest.raises(KeyError, match="the crash touched no file at"):
        report.file(s.path)


def test_an_injector_passes_path_ops_down(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    inj = FaultInjector(Fault(kind="renameat", errno=errno.EIO, nth=2), driver=sim)
    a, b = tmp_path / "a", tmp_path / "b"
    create = Op(OpKind.OPENAT, AT_FDCWD, path=str(a), flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    d = inj.create()
    try:
        (op,) = run(d, [create])
        run(d, [Op(OpKind.CLOSE, op.result or -1)])
        (op,) = run(d, [Op(OpKind.RENAMEAT, AT_FDCWD, path=str(a), newpath=str(b))])
        assert op.error is None
        # The second rename is failed before it reaches the simulator: nothing to record.
        (op,) = run(d, [Op(OpKind.RENAMEAT, AT_FDCWD, path=str(b), newpath=str(a))])
        assert isinstance(op.error, OSError) and op.error.errno == errno.EIO
    finally:
        d.close()
    report = sim.crash(policy="drop")
    assert [(e.fate, e.path) for e in report.entries] == [("vanished", str(b))]
    assert not a.exists() and not b.exists()


def test_simulate_discards_what_was_not_crashed(tmp_path: Path) -> None:
    before = fds()
    with simulate("sync", sector_size=4096, safe_append=True) as sim:
        assert (sim.sector_size, sim.safe_append, sim.atomic_sectors) == (4096, True, False)
        s = Scene(tmp_path, sim)
        s.write(b"kept as written", 0)
        s.close()
        assert sim.unsynced()
    assert fds() == before and sim.unsynced() == {}
    assert s.path.read_bytes() == b"kept as written"
    assert sim.crash().files == ()


def test_an_undone_truncation_with_a_kept_write_below_the_cut(tmp_path: Path) -> None:
    hit = False
    for seed in range(40):
        d = tmp_path / str(seed)
        d.mkdir()
        sim = PowerLossSimulator("sync", atomic_sectors=True)
        s = Scene(d, sim)
        old = b"a" * 2048
        s.write(old, 0)
        s.sync()
        s.write(b"b" * 100, 600)
        s.truncate(650)
        new = s.path.read_bytes()
        s.close()
        fc = sim.crash(seed=seed).files[0]
        check_file(s.path, old, new, fc)
        hit |= fc.size_after == 2048 and fc.sectors[1] == "kept"
    assert hit


def test_an_unsynced_unlink_is_undone_with_the_content(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    p = tmp_path / "segment"
    p.write_bytes(b"old segment")
    os.chmod(p, 0o600)
    sim.unlink(p)
    assert not p.exists()
    report = sim.crash(policy="drop")
    assert [(e.fate, e.path) for e in report.entries] == [("restored", str(p))]
    assert p.read_bytes() == b"old segment" and (os.stat(p).st_mode & 0o777) == 0o600


def test_an_unlink_is_durable_once_its_directory_is_synced(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    p = tmp_path / "f"
    p.write_bytes(b"x")
    sim.unlink(p)
    sim.fsync_directory(tmp_path)
    assert sim.crash(policy="drop").entries == ()
    assert not p.exists()


def test_a_file_created_and_unlinked_before_a_sync_stays_gone(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    p = tmp_path / "tmp"
    os.close(sim.opener(str(p), os.O_WRONLY | os.O_CREAT))
    sim.unlink(p)
    assert sim.crash(policy="drop").entries == ()
    assert not p.exists()


def test_a_rename_and_an_unlink_are_undone_independently(tmp_path: Path) -> None:
    # No order between entries not made durable: the rename may be undone and the later
    # unlink kept (issue 20's state), or the other way round.
    seen = set()
    for seed in range(16):
        d = tmp_path / str(seed)
        d.mkdir()
        sim = PowerLossSimulator("sync")
        (d / "6").write_bytes(b"six")
        (d / "7").write_bytes(b"seven")
        sim.rename(d / "6", d / "9")
        sim.unlink(d / "7")
        fates = tuple(e.fate for e in sim.crash(seed=seed).entries)
        assert (d / "6").exists() == (fates[0] == "reverted") != (d / "9").exists()
        assert (d / "7").exists() == (fates[1] == "restored")
        seen.add(fates)
    assert seen == {("kept", "kept"), ("reverted", "kept"), ("kept", "restored"), ("reverted", "restored")}


# -- directories and links (MKDIRAT, LINKAT, SYMLINKAT) -----------------------------------------


def test_a_made_directory_is_lost_with_its_contents_unless_its_parent_was_synced(tmp_path: Path) -> None:
    sim = PowerLossSimulator("sync")
    d = tmp_path / "d"
    drv = sim.create()
    try:
        (op,) = run(drv, [Op(OpKind.MKDIRAT, AT_FDCWD, path=str(d), mode=0o755)])
        assert op.error is None and d.is_dir()
        (op,) = run(drv, [Op(OpKind.OPENAT, AT_FDCWD, path=str(d / "f"), flags=os.O_WRONLY | os.O_CREAT)])
        run(drv, [Op(OpKind.CLOSE, op.result or -1)])
    finally:
        drv.close()
    sim.fsync_directory(d)  # makes d/f durable *in d*; d itself is an entry of tmp_path
    report = sim.crash(policy="drop")
    assert [(e.fate, e.path) for e in report.entries] == [("vanished", str(d))]
    assert not d.exists()

    drv = sim.create()
    try:
        run(drv, [Op(OpKind.MKDIRAT, AT_FDCWD, path=str(d), mode=0o755)])
    finally:
        drv.close()
    sim.fsync_directory(tmp_path)
    assert sim.crash(policy="drop").entries == ()
    assert d.is_dir()


def test_links_vanish_unless_their_directory_was_synced(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"data")
    sim = PowerLossSimulator("sync")
    hard, soft, failed = tmp_path / "hard", tmp_path / "soft", tmp_path / "f"
    drv = sim.create()
    try:
        ops = run(
            drv,
            [
                Op(OpKind.LINKAT, AT_FDCWD, path=str(f), newpath=str(hard)),
                Op(OpKind.SYMLINKAT, AT_FDCWD, path="./f", newpath=str(soft)),
                Op(OpKind.SYMLINKAT, AT_FDCWD, path="x", newpath=str(failed)),  # EEXIST: no entry
            ],
        )
        assert [op.error is None for op in ops] == [True, True, False]
    finally:
        drv.close()
    report = sim.crash(policy="drop")
    assert sorted((e.fate, e.path) for e in report.entries) == [("vanished", str(p)) for p in (hard, soft)]
    assert os.listdir(tmp_path) == ["f"] and f.read_bytes() == b"data" and os.stat(f).st_nlink == 1

    drv = sim.create()
    try:
        run(drv, [Op(OpKind.SYMLINKAT, AT_FDCWD, path="./f", newpath=str(soft))])
    finally:
        drv.close()
    sim.fsync_directory(tmp_path)
    assert sim.crash(policy="drop").entries == ()
    assert os.readlink(soft) == "./f"


def test_a_removed_directory_or_link_comes_back_as_it_was(tmp_path: Path) -> None:
    d, soft = tmp_path / "d", tmp_path / "soft"
    d.mkdir(mode=0o750)
    os.chmod(d, 0o750)
    soft.symlink_to("somewhere/else")
    (tmp_path / "target").write_bytes(b"t")
    sim = PowerLossSimulator("sync")
    drv = sim.create()
    try:
        run(drv, [Op(OpKind.UNLINKAT, AT_FDCWD, path=str(d), flags=AT_REMOVEDIR)])
        run(drv, [Op(OpKind.UNLINKAT, AT_FDCWD, path=str(soft))])
    finally:
        drv.close()
    assert not d.exists() and not os.path.lexists(soft)
    report = sim.crash(policy="drop")
    assert sorted((e.fate, e.path) for e in report.entries) == [("restored", str(d)), ("restored", str(soft))]
    assert d.is_dir() and stat.S_IMODE(d.stat().st_mode) == 0o750
    assert os.readlink(soft) == "somewhere/else"


def test_os_calls_under_the_simulator_on_every_loop_and_driver(
    tmp_path: Path, anyio_backend: Any, driver: str
) -> None:
    """``aiopg_io.os``'s makedirs, link and symlink are ops the simulator sees; a durable
    parent keeps what is in it only once it is fsynced itself."""
    (tmp_path / "f").write_bytes(b"data")
    sim = PowerLossSimulator(driver)

    async def main() -> None:
        await aiopg_io.os.makedirs(tmp_path / "a" / "b", driver=sim)
        await aiopg_io.os.symlink("../f", tmp_path / "a" / "s", driver=sim)
        await aiopg_io.os.link(tmp_path / "f", tmp_path / "a" / "h", driver=sim)
        assert await aiopg_io.os.path.isdir(tmp_path / "a" / "b", driver=sim)

    backend, options = anyio_backend
    anyio.run(main, backend=backend, backend_options=options)  # the loop's context closes with it
    sim.fsync_directory(tmp_path)
    report = sim.crash(policy="drop")
    a = tmp_path / "a"
    assert sorted((e.fate, e.path) for e in report.entries) == [
        ("vanished", str(a / "b")), ("vanished", str(a / "h")), ("vanished", str(a / "s")),
    ]  # fmt: skip
    assert os.listdir(a) == [] and os.stat(tmp_path / "f").st_nlink == 1
