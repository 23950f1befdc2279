"""aiopg_io.os and aiopg_io.os.path against os and os.path (issue 16, item 2).

Each call is made with the same arguments as its ``os`` twin: a success is checked by its
result (stat fields, listdir sets, scandir names and types, readlink text...) or by the
disk, a failure by the exception's type and message (a missing path, a directory where a
file is expected and the reverse, a non-empty directory, EPERM for a hard link to a
directory, which root gets too, a NUL byte, a wrong type, bytes and PathLike paths).
The calls built on ops (rename, replace, remove, unlink, rmdir, mkdir) run on every loop x
driver; the rest run the ``os`` function in a thread whatever the driver, so they run on
every loop. The fd table is the same before and after (once the loop's context is open:
it is held until the loop ends), and after the loop ends nothing is left, with one
context for a hundred calls.
"""

from __future__ import annotations

import functools
import os
import stat as stat_module
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopg_io
import aiopg_io.os
from aiopg_io import _context
from aiopg_io._context import get_context, live_contexts

from .conftest import open_fds

pytestmark = pytest.mark.anyio

ASYNC_OS: Any = aiopg_io.os  # the calls by name, as the tests pass them around
ASYNC_PATH: Any = aiopg_io.os.path


def os_error(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except (OSError, ValueError, TypeError) as exc:
        return exc
    raise AssertionError(f"{fn} did not fail")


async def same_error(want: BaseException, call: Callable[[], Awaitable[object]]) -> None:
    with pytest.raises(type(want)) as info:
        await call()
    assert type(info.value) is type(want)
    assert str(info.value) == str(want)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/ f (4 bytes), d/ (with d/inner), link -> f, dangling -> missing."""
    (tmp_path / "f").write_bytes(b"data")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "inner").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    yield tmp_path


# -- ops: every loop x driver ---------------------------------------------------------------------


async def test_entry_calls_change_the_disk_as_os_does(tree: Path, driver: str) -> None:
    f, d = tree / "f", tree / "d"
    await aiopg_io.os.mkdir(tree / "new", driver=driver)  # opens the loop's context
    before = open_fds()
    assert (tree / "new").is_dir()
    await aiopg_io.os.mkdir(str(tree / "m700"), 0o700, driver=driver)
    umask = os.umask(0)
    os.umask(umask)
    assert stat_module.S_IMODE((tree / "m700").stat().st_mode) == 0o700 & ~umask
    await aiopg_io.os.rename(f, tree / "g", driver=driver)
    assert not f.exists() and (tree / "g").read_bytes() == b"data"
    await aiopg_io.os.replace(os.fsencode(tree / "g"), os.fsencode(tree / "new" / "g"), driver=driver)
    assert (tree / "new" / "g").read_bytes() == b"data"
    await aiopg_io.os.remove(tree / "new" / "g", driver=driver)
    await aiopg_io.os.unlink(str(tree / "link"), driver=driver)
    assert not os.path.lexists(tree / "link")
    await aiopg_io.os.rmdir(tree / "new", driver=driver)
    # With a dir_fd (a thread: os itself).
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        await aiopg_io.os.mkdir("sub", dir_fd=dfd, driver=driver)
        await aiopg_io.os.rename("sub", "sub2", src_dir_fd=dfd, dst_dir_fd=dfd, driver=driver)
        await aiopg_io.os.rmdir("sub2", dir_fd=dfd, driver=driver)
        await aiopg_io.os.unlink("inner", dir_fd=dfd, driver=driver)
    finally:
        os.close(dfd)
    # The thread-only entry calls.
    await aiopg_io.os.makedirs(tree / "a" / "b" / "c")
    await aiopg_io.os.makedirs(tree / "a" / "b" / "c", exist_ok=True)
    (tree / "a" / "b" / "c" / "x").write_bytes(b"x")
    await aiopg_io.os.renames(tree / "a" / "b" / "c" / "x", tree / "p" / "q" / "x")
    assert not (tree / "a").exists() and (tree / "p" / "q" / "x").read_bytes() == b"x"
    await aiopg_io.os.link(tree / "p" / "q" / "x", tree / "hard")
    assert (tree / "hard").stat().st_ino == (tree / "p" / "q" / "x").stat().st_ino
    await aiopg_io.os.symlink("p", tree / "soft", target_is_directory=True)
    assert os.readlink(tree / "soft") == "p"
    (tree / "p" / "q" / "x").unlink()
    await aiopg_io.os.removedirs(tree / "p" / "q")
    assert not (tree / "p").exists()
    assert sorted(os.listdir(tree)) == ["d", "dangling", "hard", "m700", "soft"]
    assert os.listdir(d) == []
    assert open_fds() == before
    # Native where the driver has the kinds: posix_aio has no path op (the fallback's threads).
    extra = dict(get_context(driver).driver.statistics().extra)
    assert ("fallback_ops" in extra) == (driver == "posix_aio")


def _entry_errors(tree: Path) -> list[tuple[str, tuple[object, ...]]]:
    f, d, missing = tree / "f", tree / "d", tree / "missing"
    return [
        ("rename", (missing, tree / "x")),  # ENOENT, naming both
        ("rename", (f, d)),  # EISDIR
        ("rename", (d, f)),  # ENOTDIR
        ("replace", (str(missing), str(f))),
        ("replace", (1.5, f)),
        ("rename", (f, "x\0")),
        ("remove", (missing,)),
        ("remove", (d,)),  # EISDIR
        ("unlink", (os.fsencode(missing),)),  # a bytes path is named as bytes
        ("unlink", (d,)),
        ("unlink", ("f\0",)),
        ("unlink", (3,)),  # an fd is no path here
        ("rmdir", (missing,)),
        ("rmdir", (f,)),  # ENOTDIR
        ("rmdir", (d,)),  # ENOTEMPTY
        ("rmdir", (None,)),
        ("mkdir", (d,)),  # EEXIST
        ("mkdir", (missing / "sub",)),
        ("mkdir", (f / "sub",)),  # ENOTDIR
        ("mkdir", (b"a\0",)),
        ("mkdir", (tree / "new", "0o777")),  # a mode that is no int
    ]


async def test_entry_calls_fail_as_os_does(tree: Path, driver: str) -> None:
    await aiopg_io.os.rmdir(await _made(tree / "warm"), driver=driver)
    before = open_fds()
    for name, args in _entry_errors(tree):
        want = os_error(functools.partial(getattr(os, name), *args))
        await same_error(want, functools.partial(getattr(ASYNC_OS, name), *args, driver=driver))
    assert open_fds() == before
    assert sorted(os.listdir(tree)) == ["d", "dangling", "f", "link"]


async def _made(p: Path) -> Path:
    p.mkdir()
    return p


# -- threads: every loop ---------------------------------------------------------------------------


def _stat_fields(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)


async def test_queries_answer_as_os_does(tree: Path) -> None:
    f, d, link = tree / "f", tree / "d", tree / "link"
    for p in (f, d, link, str(f), os.fsencode(f)):
        assert _stat_fields(await aiopg_io.os.stat(p)) == _stat_fields(os.stat(p))
        assert _stat_fields(await aiopg_io.os.lstat(p)) == _stat_fields(os.lstat(p))
    assert _stat_fields(await aiopg_io.os.stat(link, follow_symlinks=False)) == _stat_fields(os.lstat(link))
    fd = os.open(f, os.O_RDONLY)
    try:
        assert _stat_fields(await aiopg_io.os.stat(fd)) == _stat_fields(os.stat(fd))
        assert await aiopg_io.os.path.sameopenfile(fd, fd) is True
    finally:
        os.close(fd)
    assert set(await aiopg_io.os.listdir(tree)) == set(os.listdir(tree))
    assert set(await aiopg_io.os.listdir(os.fsencode(tree))) == set(os.listdir(os.fsencode(tree)))
    assert await aiopg_io.os.listdir() == os.listdir()
    with await aiopg_io.os.scandir(tree) as entries:
        got = sorted((e.name, e.is_dir(), e.is_file(), e.is_symlink()) for e in entries)
    with os.scandir(tree) as it:
        assert got == sorted((e.name, e.is_dir(), e.is_file(), e.is_symlink()) for e in it)
    assert await aiopg_io.os.readlink(link) == os.readlink(link) == str(f)
    assert await aiopg_io.os.readlink(os.fsencode(link)) == os.fsencode(f)
    assert await aiopg_io.os.access(f, os.R_OK | os.W_OK) is True
    assert await aiopg_io.os.access(tree / "missing", os.F_OK) is False
    assert await aiopg_io.os.getcwd() == os.getcwd()
    got_vfs, want_vfs = await aiopg_io.os.statvfs(tree), os.statvfs(tree)
    fixed = ("f_bsize", "f_frsize", "f_blocks", "f_files", "f_namemax")
    assert [getattr(got_vfs, k) for k in fixed] == [getattr(want_vfs, k) for k in fixed]
    # os.path: the predicates on a file, a directory, a link, a dangling link, a missing path,
    # a NUL byte (False, as os.path answers, never an error).
    for p in (f, d, link, tree / "dangling", tree / "missing", "a\0b", "/"):
        for name in ("exists", "isfile", "isdir", "islink", "ismount"):
            assert await getattr(ASYNC_PATH, name)(p) is getattr(os.path, name)(p), (name, p)
    for name in ("getsize", "getatime", "getmtime", "getctime"):
        assert await getattr(ASYNC_PATH, name)(f) == getattr(os.path, name)(f)
    assert await aiopg_io.os.path.samefile(f, link) is True
    assert await aiopg_io.os.path.samefile(f, d) is False
    assert await aiopg_io.os.path.abspath("x/../y") == os.path.abspath("x/../y")
    assert await aiopg_io.os.path.abspath(b"y") == os.path.abspath(b"y")


async def test_queries_fail_as_os_does(tree: Path) -> None:
    f, d, missing = tree / "f", tree / "d", tree / "missing"
    cases: list[tuple[Any, Any, tuple[object, ...]]] = [
        (os, "stat", (missing,)),
        (os, "stat", (1.5,)),
        (os, "lstat", ("a\0",)),
        (os, "renames", (missing, tree / "x" / "y")),
        (os, "makedirs", (d,)),  # exists
        (os, "makedirs", (f / "sub",)),  # ENOTDIR
        (os, "removedirs", (missing,)),
        (os, "link", (d, tree / "h")),  # EPERM: no hard link to a directory, not even for root
        (os, "link", (missing, tree / "h")),
        (os, "symlink", (f, d)),  # EEXIST
        (os, "readlink", (f,)),  # EINVAL: not a link
        (os, "readlink", (missing,)),
        (os, "listdir", (f,)),  # ENOTDIR
        (os, "listdir", (os.fsencode(missing),)),
        (os, "listdir", (1.5,)),
        (os, "scandir", (missing,)),
        (os, "access", ("a\0", os.F_OK)),
        (os, "statvfs", (missing,)),
        (os.path, "getsize", (missing,)),
        (os.path, "getmtime", ("a\0",)),
        (os.path, "samefile", (f, missing)),
        (os.path, "abspath", (1.5,)),
    ]
    before = open_fds()
    for twin, name, args in cases:
        want = os_error(functools.partial(getattr(twin, name), *args))
        mine = ASYNC_OS if twin is os else ASYNC_PATH
        await same_error(want, functools.partial(getattr(mine, name), *args))
    assert open_fds() == before


async def test_sendfile_copies_as_os_sendfile_does(tree: Path) -> None:
    (tree / "src").write_bytes(bytes(range(256)) * 64)
    src = os.open(tree / "src", os.O_RDONLY)
    dst = os.open(tree / "dst", os.O_WRONLY | os.O_CREAT)
    try:
        assert await aiopg_io.os.sendfile(dst, src, 100, 1000) == 1000
        assert await aiopg_io.os.sendfile(dst, src, None, 50) == 50  # from src's position: 0
        assert os.lseek(src, 0, os.SEEK_CUR) == 50
        want = os_error(lambda: os.sendfile(src, dst, 0, 10))  # wrong way round: EBADF
        await same_error(want, lambda: aiopg_io.os.sendfile(src, dst, 0, 10))
    finally:
        os.close(src)
        os.close(dst)
    data = (tree / "src").read_bytes()
    assert (tree / "dst").read_bytes() == data[100:1100] + data[:50]


# -- one context per loop, closed with the loop ----------------------------------------------------


def test_a_hundred_calls_share_one_context_closed_when_the_loop_ends(
    tmp_path: Path, anyio_backend: Any, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []
    real_init = _context.IOContext.__init__

    def counting_init(self: _context.IOContext, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(_context.IOContext, "__init__", counting_init)
    (tmp_path / "f").write_bytes(b"x")

    async def main() -> None:
        for i in range(100):
            assert (await aiopg_io.os.stat(tmp_path / "f")).st_size == 1
            await aiopg_io.os.mkdir(tmp_path / f"d{i}", driver=driver)
            await aiopg_io.os.rename(tmp_path / f"d{i}", tmp_path / "e", driver=driver)
            await aiopg_io.os.rmdir(tmp_path / "e", driver=driver)
        assert len(live_contexts()) == 1

    async def threads_only() -> None:
        await anyio.to_thread.run_sync(os.getpid)

    backend, options = anyio_backend
    # A first thread under uvloop leaves a pipe for the process (uvloop's, not ours).
    anyio.run(threads_only, backend=backend, backend_options=options)
    before = open_fds()
    anyio.run(main, backend=backend, backend_options=options)
    assert len(made) == 1
    assert live_contexts() == []
    assert open_fds() == before
    assert os.listdir(tmp_path) == ["f"]
