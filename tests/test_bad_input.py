"""Each class of bad input raises its documented exception and leaves the file intact."""

from __future__ import annotations

import errno
import io
import random
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io.errors import (
    ClosedError,
    DriverUnavailableError,
    InvalidOffsetError,
)
from tests.conftest import CONTENT, open_fds

pytestmark = pytest.mark.anyio


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


async def test_fallocate_mode_is_checked_before_the_kernel(driver: str, existing: Path) -> None:
    # fallocate(2)'s mode is a C int of FALLOC_FL_* bits, carried in a 32-bit SQE field on
    # io_uring: 2**32 used to wrap to 0 (a plain allocation that extended the file) on some
    # drivers and fail on others; a bool is no mode.
    async with aiopg_io.open(existing, "r+b", driver=driver) as f:
        for bad in (2**32, 2**31, -1, 2**70):
            with pytest.raises(ValueError, match=rf"^fallocate mode {bad} is not within 0 \.\. 2147483647 "):
                await f.fallocate(len(CONTENT), 4096, bad)
        for wrong in (True, 1.5, None, "1"):
            with pytest.raises(TypeError, match=f"^mode must be an integer, not {type(wrong).__name__}$"):
                await f.fallocate(len(CONTENT), 4096, wrong)  # type: ignore[arg-type]
    assert existing.read_bytes() == CONTENT  # nothing was allocated past the end


async def test_a_vector_past_iov_max_is_refused_alike_on_every_driver(driver: str, existing: Path) -> None:
    # readv(2) refuses more than IOV_MAX buffers (EINVAL); the drivers used to differ (a bare
    # EINVAL, their own words, or POSIX AIO splitting it): now one error names both numbers.
    from aiopg_io._checks import IOV_MAX

    want = rf"^\[Errno 22\] {IOV_MAX + 1} buffers: one vectored read or write takes at most IOV_MAX, "
    async with aiopg_io.open(existing, "r+b", driver=driver) as f:
        for call in (
            lambda: f.preadv([bytearray(1) for _ in range(IOV_MAX + 1)], 0),
            lambda: f.pwritev([b"x"] * (IOV_MAX + 1), 0),
            lambda: f.pwritev_sync([b"x"] * (IOV_MAX + 1), 0),
        ):
            with pytest.raises(OSError, match=want) as ei:
                await call()
            assert ei.value.errno == errno.EINVAL
        bufs = [bytearray(2) for _ in range(IOV_MAX)]  # the limit itself is fine
        assert await f.preadv(bufs, 0) == 2 * IOV_MAX
        assert b"".join(bufs) == CONTENT[: 2 * IOV_MAX]
    assert existing.read_bytes() == CONTENT


async def test_an_fd_past_a_c_int_or_a_bool_is_refused(driver: str, existing: Path) -> None:
    # A file descriptor is a C int: a larger number is none (os.fstat would overflow), and an
    # opener's True would be fd 1, stdout.
    before = open_fds()
    for fd in (2**31, 2**64):
        with pytest.raises(ValueError, match=f"^file descriptor {fd} is past the largest, 2147483647 "):
            await aiopg_io.open(fd, "rb", driver=driver)
    for result in (True, 2**31, -1):
        want = rf"^opener returned {result}; it must return a file descriptor \(an int from 0 to 2147483647\)"
        with pytest.raises(ValueError, match=want):
            await aiopg_io.open(existing, "rb", opener=lambda p, fl, r=result: r, driver=driver)
    assert open_fds() == before


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
