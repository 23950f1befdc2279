"""Each class of bad input raises its documented exception and leaves the file intact."""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io.errors import (
    AlignmentError,
    ClosedError,
    DirectIOUnsupportedError,
    DriverUnavailableError,
    InvalidOffsetError,
)
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio

CONTENT = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    p = tmp_path / "keep.bin"
    p.write_bytes(CONTENT)
    return p


async def test_closed_file(driver: str, existing: Path) -> None:
    f = await aiopg_io.open(existing, "r+b", driver=driver)
    await f.aclose()
    for call in (f.read(1), f.pread(1, 0), f.write(b"x"), f.pwrite(b"x", 0), f.seek(0), f.tell(), f.fsync()):
        with pytest.raises(ClosedError, match=r"I/O operation on closed file '.*keep\.bin'"):
            await call
    with pytest.raises(ValueError, match="closed file"):  # ClosedError is a ValueError, as in Python
        f.fileno()
    assert existing.read_bytes() == CONTENT


async def test_wrong_mode(driver: str, existing: Path) -> None:
    async with aiopg_io.open(existing, "rb", driver=driver) as f:
        for call in (f.write(b"x"), f.pwrite(b"x", 0), f.truncate(0), f.fallocate(0, 10)):
            with pytest.raises(io.UnsupportedOperation, match=r"is not open for writing \(mode 'rb'\)"):
                await call
    async with aiopg_io.open(existing, "ab", driver=driver) as f:
        with pytest.raises(io.UnsupportedOperation, match=r"is not open for reading \(mode 'ab'\)"):
            await f.read()
    assert existing.read_bytes() == CONTENT


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("rz", "invalid mode: 'rz'"),
        ("rr", "invalid mode: 'rr'"),
        ("rw", "must have exactly one of create/read/write/append mode"),
        ("rbt", "can't have text and binary mode at once"),
        ("b", "Must have exactly one of create/read/write/append mode"),
    ],
)
async def test_invalid_mode_matches_python(mode: str, message: str, existing: Path) -> None:
    with pytest.raises(ValueError, match=message):
        open(existing, mode)  # noqa: SIM115 - the reference
    with pytest.raises(ValueError, match=message):
        await aiopg_io.open(existing, mode)


async def test_negative_offsets_and_sizes(driver: str, existing: Path) -> None:
    async with aiopg_io.open(existing, "r+b", driver=driver) as f:
        with pytest.raises(InvalidOffsetError, match="offset -1 is negative; file offsets start at 0"):
            await f.pread(10, -1)
        with pytest.raises(InvalidOffsetError, match="offset -4096 is negative"):
            await f.pwrite(b"x", -4096)
        with pytest.raises(InvalidOffsetError, match="read length -2 is negative"):
            await f.pread(-2, 0)
        with pytest.raises(OSError, match="seek to -1 is before the start of the file") as ei:
            await f.seek(-1)
        assert ei.value.errno == errno.EINVAL
        with pytest.raises(ValueError, match="negative size value -5"):
            await f.truncate(-5)
        with pytest.raises(ValueError, match="fallocate length 0 must be positive"):
            await f.fallocate(0, 0)
        with pytest.raises(ValueError, match="whence value 7 unsupported"):
            await f.seek(0, 7)
        assert await f.tell() == 0
    assert existing.read_bytes() == CONTENT


async def test_wrong_types(driver: str, existing: Path) -> None:
    async with aiopg_io.open(existing, "r+b", driver=driver) as f:
        with pytest.raises(TypeError, match="data must be a bytes-like object, not 'str'"):
            await f.write("text")
        with pytest.raises(TypeError, match="data must be a bytes-like object, not int"):
            await f.pwrite(5, 0)
        with pytest.raises(TypeError, match="buffer must be writable; bytes is read-only"):
            await f.preadinto(b"immutable", 0)
        with pytest.raises(TypeError, match="offset must be an integer, not str"):
            await f.pread(1, "0")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="offset must be an integer, not float"):
            await f.pwrite(b"x", 1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="bufs must be an iterable of buffers, not a single buffer"):
            await f.preadv(bytearray(10), 0)
        with pytest.raises(TypeError, match="size must be an integer, not str"):
            await f.read("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expected str, bytes, os\.PathLike or int for the file, not float"):
        await aiopg_io.open(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="binary mode doesn't take an encoding argument"):
        await aiopg_io.open(existing, "rb", encoding="utf-8")
    assert existing.read_bytes() == CONTENT


async def test_missing_path_and_directory(driver: str, tmp_path: Path) -> None:
    before = open_fds()
    missing = tmp_path / "nope" / "x.bin"
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: '.*nope/x\.bin'"):
        await aiopg_io.open(missing, "rb", driver=driver)
    with pytest.raises(IsADirectoryError, match=r"Is a directory: '.*'"):
        await aiopg_io.open(tmp_path, "rb", driver=driver)
    with pytest.raises(IsADirectoryError):
        await aiopg_io.open(tmp_path, "wb", driver=driver)
    (tmp_path / "e").write_bytes(b"kept")
    with pytest.raises(FileExistsError, match=r"File exists: '.*/e'"):
        await aiopg_io.open(tmp_path / "e", "xb", driver=driver)
    assert (tmp_path / "e").read_bytes() == b"kept"
    assert open_fds() == before


async def test_bad_fd(driver: str, tmp_path: Path) -> None:
    unused = 1 << 20  # above any fd this process has (a closed fd number may be reused at once)
    before = open_fds()
    with pytest.raises(OSError, match=r"\[Errno 9\] Bad file descriptor") as ei:
        await aiopg_io.open(unused, "rb", driver=driver)
    assert ei.value.errno == errno.EBADF
    assert open_fds() == before
    with pytest.raises(ValueError, match="negative file descriptor -3"):
        await aiopg_io.open(-3, "rb", driver=driver)


async def test_misaligned_direct_io(direct_driver: str, data_dir: Path) -> None:
    p = data_dir / "d.bin"
    p.write_bytes(CONTENT)
    async with aiopg_io.open(p, "r+b", direct=True, driver=direct_driver) as f:
        a = f.alignment
        assert a is not None
        good = aiopg_io.aligned_buffer(4096)
        msg = "is not a multiple of the direct-I/O alignment"
        with pytest.raises(AlignmentError, match=rf"offset 100 {msg} {a.offset}"):
            await f.preadinto(good, 100)
        with pytest.raises(AlignmentError, match=rf"length 100 {msg} {a.offset}"):
            await f.preadinto(aiopg_io.aligned_buffer(100), 0)
        misaligned = aiopg_io.aligned_buffer(4096 + 8)[8:]
        with pytest.raises(AlignmentError, match=r"buffer address 0x[0-9a-f]+ is not aligned to \d+ bytes"):
            await f.preadinto(misaligned, 0)
        with pytest.raises(AlignmentError, match="not aligned"):
            await f.pwrite(misaligned, 0)
        with pytest.raises(AlignmentError, match="must start at a multiple of"):
            await f.write(b"abc")
        assert isinstance(AlignmentError("x"), ValueError)
    assert p.read_bytes() == CONTENT


async def test_direct_text_mode_is_refused(existing: Path) -> None:
    with pytest.raises(ValueError, match="direct I/O needs binary mode"):
        await aiopg_io.open(existing, "r", direct=True)


def _mount(fstype: str, options: str = "") -> Iterator[Path]:
    """A fresh ``fstype`` mount in a temporary directory, unmounted afterwards (needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(f"mounting a {fstype} needs root and mount(8)")
    d = Path(tempfile.mkdtemp(prefix=f"aiopg-{fstype}-"))
    args = ["mount", "-t", fstype, *(["-o", options] if options else []), fstype, str(d)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        d.rmdir()
        pytest.skip(f"cannot mount a {fstype} here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)
        d.rmdir()


@pytest.fixture
def ramfs() -> Iterator[Path]:
    """A ramfs mount: a filesystem that refuses O_DIRECT (tmpfs accepts it since Linux 6.6)."""
    yield from _mount("ramfs")


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A small tmpfs mount (256 KiB): a disk that fills up."""
    yield from _mount("tmpfs", "size=256k")


def _accepts_o_direct(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT)
    except OSError as exc:
        assert exc.errno == errno.EINVAL, exc
        return False
    os.close(fd)
    probe.unlink()
    return True


async def test_direct_io_on_a_filesystem_that_refuses_it(driver: str, ramfs: Path) -> None:
    p = ramfs / "r.bin"
    p.write_bytes(b"data")
    before = open_fds()
    with pytest.raises(DirectIOUnsupportedError, match=r"the filesystem refuses O_DIRECT .*r\.bin") as ei:
        await aiopg_io.open(p, "rb", direct=True, driver=driver)
    assert ei.value.errno == errno.EINVAL and ei.value.filename == str(p)
    assert isinstance(ei.value, OSError)
    assert open_fds() == before
    assert p.read_bytes() == b"data"


async def test_unknown_and_unavailable_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"")
    with pytest.raises(
        DriverUnavailableError, match=r"unknown driver 'nosuch': the drivers are .*available here: .*worker"
    ):
        await aiopg_io.open(p, "rb", driver="nosuch")
    monkeypatch.setenv("AIOPG_IO_DRIVER", "bogus")
    with pytest.raises(DriverUnavailableError, match="unknown driver 'bogus'"):
        await aiopg_io.open(p, "rb")
    from aiopg_io import drivers

    monkeypatch.setitem(drivers._reasons, ("sync", False), "kernel says no (test)")
    with pytest.raises(
        DriverUnavailableError,
        match=r"driver 'sync' cannot run here: kernel says no \(test\); available here:",
    ):
        await aiopg_io.open(p, "rb", driver="sync")


@pytest.fixture
def shm() -> Iterator[Path]:
    """A directory in /dev/shm when that is a tmpfs (no root needed)."""
    try:
        with open("/proc/mounts") as mounts:
            tmpfs_mounts = {line.split()[1] for line in mounts if line.split()[2] == "tmpfs"}
    except OSError:
        tmpfs_mounts = set()
    if "/dev/shm" not in tmpfs_mounts:
        pytest.skip("/dev/shm is not a tmpfs here")
    d = Path(tempfile.mkdtemp(prefix="aiopg-shm-", dir="/dev/shm"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


async def test_direct_io_on_tmpfs(driver: str, shm: Path) -> None:
    """tmpfs refused O_DIRECT before Linux 6.6 and accepts it since: either way the caller
    gets what the guide says, a working direct file or DirectIOUnsupportedError naming it."""
    tmpfs = shm
    p = tmpfs / "t.bin"
    p.write_bytes(CONTENT)
    before = open_fds()
    if not _accepts_o_direct(tmpfs):
        with pytest.raises(DirectIOUnsupportedError, match=r"the filesystem refuses O_DIRECT .*t\.bin"):
            await aiopg_io.open(p, "r+b", direct=True, driver=driver)
    else:
        async with aiopg_io.open(p, "r+b", direct=True, driver=driver) as f:
            a = f.alignment
            assert a is not None and a.offset >= 512  # tmpfs reports none through statx: 4096
            buf = aiopg_io.aligned_buffer(4096)
            assert await f.preadinto(buf, 4096) == 4096 and bytes(buf) == CONTENT[4096:8192]
            assert await f.pwrite(buf, 8192) == 4096
            with pytest.raises(AlignmentError, match=rf"offset 1 is not a multiple of .* {a.offset}"):
                await f.preadinto(buf, 1)
        assert p.read_bytes() == CONTENT[:8192] + CONTENT[4096:8192] + CONTENT[12288:]
        p.write_bytes(CONTENT)
    assert open_fds() == before
    assert p.read_bytes() == CONTENT


async def test_full_disk(driver: str, tmpfs: Path) -> None:
    """A real ENOSPC (a 256 KiB tmpfs): a positional write raises OSError(ENOSPC) naming the
    file after writing what fitted; a buffered write failing at flush keeps its bytes (as
    io.BufferedWriter does) and a later flush writes them; close raises ENOSPC yet closes."""
    before = open_fds()
    hog = tmpfs / "hog"
    hog.write_bytes(bytes(200 * 1024))
    p = tmpfs / "full.bin"
    async with aiopg_io.open(p, "w+b", driver=driver, buffering=1 << 20) as f:
        with pytest.raises(OSError, match=r"\[Errno 28\] No space left on device: '.*full\.bin'") as ei:
            await f.pwrite(b"x" * (1 << 20), 0)
        assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(p)
        fitted = p.stat().st_size
        assert 0 < fitted < 100_000
        assert await f.pread(16, fitted - 16) == b"x" * 16
        await f.fdatasync()  # what fitted is written back: the sync succeeds
        assert await f.truncate(0) == 0
        data = random.Random(7).randbytes(100_000)
        assert await f.write(data) == len(data)  # buffered
        with pytest.raises(OSError, match="No space left on device") as ei:
            await f.flush()
        assert ei.value.errno == errno.ENOSPC
        hog.unlink()
        await f.flush()  # the bytes stayed buffered; now they fit
        await f.fsync()
        assert await f.pread(len(data) + 1, 0) == data
    assert p.read_bytes() == data
    f = await aiopg_io.open(p, "wb", driver=driver, buffering=1 << 20)
    await f.write(b"z" * (1 << 20))
    with pytest.raises(OSError, match="No space left on device"):
        await f.aclose()
    assert f.closed and open_fds() == before


async def test_direct_io_by_fd_on_a_filesystem_that_refuses_it(driver: str, ramfs: Path) -> None:
    """An fd the caller opened gets O_DIRECT through fcntl(F_SETFL); ramfs refuses that too."""
    p = ramfs / "fd.bin"
    p.write_bytes(b"data")
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(
            DirectIOUnsupportedError, match=r"refuses O_DIRECT \(fcntl\(F_SETFL\) returned EINVAL\)"
        ) as ei:
            await aiopg_io.open(fd, "rb", direct=True, driver=driver)
        assert ei.value.errno == errno.EINVAL and ei.value.filename == str(fd)
        assert os.read(fd, 10) == b"data"  # the caller's fd is left to the caller, untouched
    finally:
        os.close(fd)
