"""Direct I/O (aiopg_io/_direct.py) through the file: alignment discovered and enforced,
O_DIRECT set however the fd was opened, and a filesystem that refuses it named in a
DirectIOUnsupportedError that leaves nothing open."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io.errors import AlignmentError, DirectIOUnsupportedError
from tests.conftest import CONTENT, in_child, open_fds, rand

pytestmark = pytest.mark.anyio


async def test_direct_io_round_trip(direct_driver: str, data_dir: Path) -> None:
    p = data_dir / "d.bin"
    data = rand(1 << 20, 4)
    p.write_bytes(data)
    async with aiopg_io.open(p, "r+b", direct=True, driver=direct_driver) as f:
        a = f.alignment
        assert a is not None and a.offset in (512, 1024, 2048, 4096) and f.direct
        buf = aiopg_io.aligned_buffer(8192)
        assert await f.preadinto(buf, 8192 * 7) == 8192
        assert bytes(buf) == data[8192 * 7 : 8192 * 8]
        assert await f.pread(4096, 4096) == data[4096:8192]
        bufs = [aiopg_io.aligned_buffer(4096), aiopg_io.aligned_buffer(a.block)]
        assert await f.preadv(bufs, 0) == 4096 + a.block
        assert bytes(bufs[0]) + bytes(bufs[1]) == data[: 4096 + a.block]
        new = aiopg_io.aligned_buffer(8192)
        new[:] = rand(8192, 5)
        assert await f.pwrite(new, 0) == 8192
        await f.fdatasync()
        # Cursor reads bounce: any position, any size.
        await f.seek(9001)
        assert await f.read(5) == data[9001:9006]
        assert await f.readline() == data[9006:].split(b"\n", 1)[0] + b"\n"
        # Cursor writes: aligned position and length; the data may live anywhere.
        await f.seek(16384)
        assert await f.write(b"z" * a.offset) == a.offset
    out = p.read_bytes()
    assert out[:8192] == bytes(new)
    assert out[16384 : 16384 + a.offset] == b"z" * a.offset
    assert len(out) == len(data)


async def test_direct_short_read_at_eof(direct_driver: str, data_dir: Path) -> None:
    p = data_dir / "eof.bin"
    p.write_bytes(b"q" * 5000)
    async with aiopg_io.open(p, "rb", direct=True, driver=direct_driver) as f:
        buf = aiopg_io.aligned_buffer(8192)
        assert await f.preadinto(buf, 0) == 5000
        assert await f.read() == b"q" * 5000


async def test_direct_by_fd_and_through_an_opener_that_drops_the_flag(
    direct_driver: str, data_dir: Path
) -> None:
    """direct=True means O_DIRECT on the fd however it was opened: an fd passed in, or an
    opener that leaves the flag out, gets it through fcntl(F_SETFL)."""
    import fcntl

    p = data_dir / "byfd.bin"
    data = rand(16384, 11)
    p.write_bytes(data)

    def is_direct(fd: int) -> bool:
        return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)

    fd = os.open(p, os.O_RDWR)
    assert not is_direct(fd)
    async with aiopg_io.open(fd, "r+b", direct=True, driver=direct_driver) as f:
        assert is_direct(f.fileno()) and f.alignment is not None
        buf = aiopg_io.aligned_buffer(4096)
        assert await f.preadinto(buf, 4096) == 4096 and bytes(buf) == data[4096:8192]

    def opener(path: str, flags: int) -> int:
        return os.open(path, flags & ~os.O_DIRECT)

    async with aiopg_io.open(p, "rb", direct=True, driver=direct_driver, opener=opener) as f:
        assert is_direct(f.fileno())
        assert await f.pread(8192, 8192) == data[8192:]


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


async def test_a_fork_child_writing_an_inherited_aligned_buffer_leaves_the_parents_bytes(
    driver: str, tmp_path: Path
) -> None:
    # aligned_buffer is private memory, as a bytearray is: a fork child gets a copy-on-write
    # copy (not a share, as mmap.mmap(-1, n) gives; not nothing, as MADV_DONTFORK gives), so
    # what the child writes into it, itself or through a read(2), lands in its copy alone.
    p = tmp_path / "f.bin"
    p.write_bytes(rand(8192, 1))
    buf = aiopg_io.aligned_buffer(8192)
    buf[:] = rand(8192, 2)
    before = bytes(buf)

    def child() -> str:
        inherited = bytes(buf) == before  # readable (not DONTFORK) and the parent's bytes
        buf[:4096] = b"x" * 4096
        fd = os.open(p, os.O_RDONLY)
        try:
            n = os.preadv(fd, [buf[4096:]], 0)
        finally:
            os.close(fd)
        own = bytes(buf) == b"x" * 4096 + rand(8192, 1)[:4096]
        return f"{inherited} {n} {own}"

    assert in_child(child) == "True 4096 True"
    assert bytes(buf) == before
    async with aiopg_io.open(p, "rb", driver=driver) as f:  # still the parent's to use
        assert await f.preadinto(buf[:4096], 4096) == 4096
    assert bytes(buf) == rand(8192, 1)[4096:] + before[4096:]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((-1,), ValueError, r"^size -1 is negative$"),
        ((True,), TypeError, r"^size must be an int, not bool$"),
        ((10, True), ValueError, r"^alignment True is not a positive power of two$"),
        ((10, 3), ValueError, r"^alignment 3 is not a positive power of two$"),
        (
            (2**70,),
            ValueError,
            rf"^size {2**70} with alignment \d+ is more than the largest buffer, {sys.maxsize} bytes$",
        ),
        ((10, 2**63), ValueError, rf"^size 10 with alignment {2**63} is more than the largest buffer"),
    ],
)
def test_aligned_buffer_arguments_are_checked(
    args: tuple[int, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        aiopg_io.aligned_buffer(*args)


@pytest.mark.parametrize("missing", ["MAP_PRIVATE", "MADV_DONTFORK"])
def test_aligned_memory_where_the_mmap_module_lacks_a_flag(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    # Windows' mmap has no flags (MAP_PRIVATE), macOS and FreeBSD no MADV_DONTFORK or
    # MADV_HUGEPAGE: the buffer and the pool's arena are made all the same.
    from aiopg_io.drivers._memory import buffer_address, private_memory

    monkeypatch.delattr(mmap, missing, raising=False)
    buf = aiopg_io.aligned_buffer(5000, 8192)
    assert len(buf) == 5000 and buffer_address(buf) % 8192 == 0 and bytes(buf) == bytes(5000)
    buf[:] = b"z" * 5000
    arena = private_memory(3 * mmap.PAGESIZE, "MADV_DONTFORK", "MADV_HUGEPAGE")
    assert len(arena) == 3 * mmap.PAGESIZE and arena[:] == bytes(3 * mmap.PAGESIZE)


def test_dio_alignment_of_an_fd_that_is_none(tmp_path: Path) -> None:
    # AT_FDCWD (-100) with AT_EMPTY_PATH would answer for the working directory, True for
    # stdout: each is refused before statx sees it.
    with pytest.raises(ValueError, match=r"^negative file descriptor -100$"):
        aiopg_io.dio_alignment(-100)
    with pytest.raises(TypeError, match=r"^target must be a file descriptor \(an int\), not bool$"):
        aiopg_io.dio_alignment(True)
    with pytest.raises(ValueError, match=f"^file descriptor {2**31} is past the largest, 2147483647"):
        aiopg_io.dio_alignment(2**31)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert aiopg_io.dio_alignment(fd).offset > 0
    finally:
        os.close(fd)


async def test_direct_text_mode_is_refused(existing: Path) -> None:
    with pytest.raises(ValueError, match="direct I/O needs binary mode"):
        await aiopg_io.open(existing, "r", direct=True)


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
