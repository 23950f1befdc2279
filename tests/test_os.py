"""aiopg_io.os and aiopg_io.os.path against os and os.path (issue 16, item 2).

Each call is made with the same arguments as its ``os`` twin: a success is checked by its
result (stat fields, listdir sets, scandir names and types, readlink text...) or by the
disk, a failure by the exception's type and message (a missing path, a directory where a
file is expected and the reverse, a non-empty directory, EPERM for a hard link to a
directory, which root gets too, a NUL byte, a wrong type, bytes and PathLike paths).
The calls built on ops (rename, replace, remove, unlink, rmdir, mkdir, stat, lstat, link,
symlink, and makedirs, renames, removedirs and the os.path predicates built from them) run
on every loop x driver; the rest run the ``os`` function in a thread whatever the driver.
The fd table is the same before and after (once the loop's context is open: it is held
until the loop ends), and after the loop ends nothing is left, with one context for a
hundred calls.
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
from aiopg_io._context import get_context, live_contexts
from aiopg_io.drivers import DRIVER_NAMES

from .conftest import check_limiter_wait, open_fds, raises_like, stdlib_error

pytestmark = pytest.mark.anyio

ASYNC_OS: Any = aiopg_io.os  # the calls by name, as the tests pass them around
ASYNC_PATH: Any = aiopg_io.os.path


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
    # The calls built from ops, and the link ops.
    await aiopg_io.os.makedirs(tree / "a" / "b" / "c", driver=driver)
    await aiopg_io.os.makedirs(tree / "a" / "b" / "c", exist_ok=True, driver=driver)
    (tree / "a" / "b" / "c" / "x").write_bytes(b"x")
    await aiopg_io.os.renames(tree / "a" / "b" / "c" / "x", tree / "p" / "q" / "x", driver=driver)
    assert not (tree / "a").exists() and (tree / "p" / "q" / "x").read_bytes() == b"x"
    await aiopg_io.os.link(tree / "p" / "q" / "x", tree / "hard", driver=driver)
    assert (tree / "hard").stat().st_ino == (tree / "p" / "q" / "x").stat().st_ino
    await aiopg_io.os.symlink("p", tree / "soft", target_is_directory=True, driver=driver)
    assert os.readlink(tree / "soft") == "p"
    (tree / "p" / "q" / "x").unlink()
    await aiopg_io.os.removedirs(tree / "p" / "q", driver=driver)
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
        # A mode past a C int: os's OverflowError, where an SQE's 32 bits would wrap 2**32 to 0.
        ("mkdir", (tree / "new", 2**32)),
        ("mkdir", (tree / "new", -(2**31) - 1)),
        ("mkdir", (tree / "new", 1.5)),
        # The path's text as given (io_uring once normalized it as pathlib does):
        ("unlink", (f"{f}/",)),  # ENOTDIR, where "f" would be removed
        ("remove", (f"{f}/.",)),
        ("rename", (f"{f}/", tree / "x")),
        ("rmdir", (f"{d}/.",)),  # EINVAL, where "d" would be tried
        ("rmdir", ("",)),  # ENOENT, where "" would be "."
        ("mkdir", ("",)),
        ("mkdir", (f"{d}/.",)),
    ]


async def test_entry_calls_fail_as_os_does(tree: Path, driver: str) -> None:
    await aiopg_io.os.rmdir(await _made(tree / "warm"), driver=driver)
    before = open_fds()
    for name, args in _entry_errors(tree):
        want = stdlib_error(functools.partial(getattr(os, name), *args))
        await raises_like(want, functools.partial(getattr(ASYNC_OS, name), *args, driver=driver))
    assert open_fds() == before
    assert sorted(os.listdir(tree)) == ["d", "dangling", "f", "link"]


@pytest.mark.parametrize("driver", DRIVER_NAMES, indirect=True)  # the pure io_uring's own MKDIRAT too
async def test_mkdir_takes_every_mode_os_mkdir_takes(tree: Path, driver: str) -> None:
    # A C int, as os.mkdir: a negative one is its 32 bits (-1: every permission bit, less the
    # umask), a bool is 0 or 1; each directory gets the permissions os.mkdir's gets.
    for mode in (-1, -(2**31), 2**31 - 1, True, 0o1755):
        mine, theirs = tree / f"aio{mode}", tree / f"os{mode}"
        await aiopg_io.os.mkdir(mine, mode, driver=driver)
        os.mkdir(theirs, mode)
        assert stat_module.S_IMODE(mine.stat().st_mode) == stat_module.S_IMODE(theirs.stat().st_mode), mode


async def _made(p: Path) -> Path:
    p.mkdir()
    return p


# -- threads: every loop ---------------------------------------------------------------------------


def _stat_fields(st: os.stat_result) -> tuple[object, ...]:
    """Every field os.stat gives here, by name, and the sequence itself."""
    return (tuple(st), *((n, getattr(st, n)) for n in dir(st) if n.startswith("st_")))


async def test_queries_answer_as_os_does(tree: Path, driver: str) -> None:
    f, d, link = tree / "f", tree / "d", tree / "link"
    await aiopg_io.os.stat(f, driver=driver)  # opens the loop's context
    before = open_fds()
    for p in (f, d, link, str(f), os.fsencode(f)):
        assert _stat_fields(await aiopg_io.os.stat(p, driver=driver)) == _stat_fields(os.stat(p))
        assert _stat_fields(await aiopg_io.os.lstat(p, driver=driver)) == _stat_fields(os.lstat(p))
    got = await aiopg_io.os.stat(link, follow_symlinks=False, driver=driver)
    assert _stat_fields(got) == _stat_fields(os.lstat(link))
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
    for p in (f, d, link, tree / "dangling", tree / "missing", "a\0b", "/", "", str(f) + "/"):
        for name in ("exists", "isfile", "isdir", "islink"):
            assert await getattr(ASYNC_PATH, name)(p, driver=driver) is getattr(os.path, name)(p), (name, p)
        assert await aiopg_io.os.path.ismount(p) is os.path.ismount(p)
    for name in ("getsize", "getatime", "getmtime", "getctime"):
        assert await getattr(ASYNC_PATH, name)(f, driver=driver) == getattr(os.path, name)(f)
    assert await aiopg_io.os.path.samefile(f, link) is True
    assert await aiopg_io.os.path.samefile(f, d) is False
    assert await aiopg_io.os.path.abspath("x/../y") == os.path.abspath("x/../y")
    assert await aiopg_io.os.path.abspath(b"y") == os.path.abspath(b"y")
    assert open_fds() == before


async def test_queries_fail_as_os_does(tree: Path, driver: str) -> None:
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
    await aiopg_io.os.stat(f, driver=driver)  # opens the loop's context
    before = open_fds()
    for twin, name, args in cases:
        want = stdlib_error(functools.partial(getattr(twin, name), *args))
        mine = ASYNC_OS if twin is os else ASYNC_PATH
        await raises_like(want, functools.partial(getattr(mine, name), *args))
    assert open_fds() == before


async def test_sendfile_copies_as_os_sendfile_does(tree: Path) -> None:
    (tree / "src").write_bytes(bytes(range(256)) * 64)
    src = os.open(tree / "src", os.O_RDONLY)
    dst = os.open(tree / "dst", os.O_WRONLY | os.O_CREAT)
    try:
        assert await aiopg_io.os.sendfile(dst, src, 100, 1000) == 1000
        assert await aiopg_io.os.sendfile(dst, src, None, 50) == 50  # from src's position: 0
        assert os.lseek(src, 0, os.SEEK_CUR) == 50
        want = stdlib_error(lambda: os.sendfile(src, dst, 0, 10))  # wrong way round: EBADF
        await raises_like(want, lambda: aiopg_io.os.sendfile(src, dst, 0, 10))
    finally:
        os.close(src)
        os.close(dst)
    data = (tree / "src").read_bytes()
    assert (tree / "dst").read_bytes() == data[100:1100] + data[:50]


# -- one context per loop, closed with the loop ----------------------------------------------------


def test_a_hundred_calls_share_one_context_closed_when_the_loop_ends(
    tmp_path: Path, anyio_backend: Any, driver: str, contexts_made: list[object]
) -> None:
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
    assert len(contexts_made) == 1
    assert live_contexts() == []
    assert open_fds() == before
    assert os.listdir(tmp_path) == ["f"]


# -- STATX, LINKAT, SYMLINKAT: every loop x driver, against os -----------------------------------


def _odd_paths(tree: Path) -> list[str | bytes | Path]:
    """Paths whose text matters to the kernel: a trailing slash or ``/.`` (a directory is
    required), ``//``, ``./``, the empty path, a name that is not UTF-8, bytes."""
    f, d = str(tree / "f"), str(tree / "d")
    return [
        tree / "f", d + "/", f + "/", d + "/.", f + "/.", str(tree) + "//f", "", ".",
        os.fsencode(tree) + b"/\xff", os.fsencode(f), tree / "fifo", "/dev/null", tree / "link",
        tree / "dangling", tree / "missing",
    ]  # fmt: skip


async def test_stat_gives_what_os_stat_gives(tree: Path, driver: str) -> None:
    os.mkfifo(tree / "fifo")
    (tree / os.fsdecode(b"\xff")).write_bytes(b"not utf-8")
    os.utime(tree / "f", ns=(1_234_567_891_234_567_891, 1_700_000_000_123_456_789))
    await aiopg_io.os.stat(tree, driver=driver)
    before = open_fds()
    for p in _odd_paths(tree):
        for mine, twin in ((aiopg_io.os.stat, os.stat), (aiopg_io.os.lstat, os.lstat)):
            try:
                want: Any = _stat_fields(twin(p))
            except OSError as exc:
                await raises_like(exc, functools.partial(mine, p, driver=driver))
            else:
                assert _stat_fields(await mine(p, driver=driver)) == want, (mine, p)
    assert (await aiopg_io.os.stat(tree / "f", driver=driver)).st_mtime_ns == 1_700_000_000_123_456_789
    assert open_fds() == before
    # STATX goes through the ring on both io_uring drivers (no fallback thread), threads on
    # posix_aio.
    extra = dict(get_context(driver).driver.statistics().extra)
    assert ("fallback_ops" in extra) == (driver == "posix_aio")


async def test_link_and_symlink_make_what_os_makes(tree: Path, driver: str) -> None:
    mine, theirs = tree / "mine", tree / "theirs"
    mine.mkdir()
    theirs.mkdir()
    targets: list[str | bytes] = ["f", "./x//y/", "../d/.", "/abs/path", "a" * 200, b"\xff\xfe", "d/"]
    for i, target in enumerate(targets):
        name = f"s{i}".encode() if isinstance(target, bytes) else f"s{i}"
        await aiopg_io.os.symlink(
            target, os.path.join(os.fsencode(mine) if isinstance(name, bytes) else mine, name), driver=driver
        )
        os.symlink(target, os.path.join(os.fsencode(theirs) if isinstance(name, bytes) else theirs, name))
    for name in os.listdir(theirs):
        assert os.readlink(mine / name) == os.readlink(theirs / name), name
    await aiopg_io.os.link(tree / "f", mine / "hard", driver=driver)
    assert os.stat(mine / "hard").st_ino == os.stat(tree / "f").st_ino
    # follow_symlinks, as os.link does it (Linux's link(2) links the symbolic link itself).
    for kwargs, name in (({}, "default"), ({"follow_symlinks": False}, "unfollowed")):
        await aiopg_io.os.link(tree / "link", mine / name, driver=driver, **kwargs)
        os.link(tree / "link", theirs / name, **kwargs)
        assert os.path.islink(mine / name) is os.path.islink(theirs / name)
        assert os.path.samefile(mine / name, theirs / name)


def _link_errors(tree: Path) -> list[tuple[str, tuple[object, ...]]]:
    f, d, missing = tree / "f", tree / "d", tree / "missing"
    return [
        ("link", (d, tree / "h")),  # EPERM: no hard link to a directory, not even for root
        ("link", (missing, tree / "h")),  # ENOENT, naming both
        ("link", (f, d)),  # EEXIST
        ("link", (f, str(missing / "h"))),
        ("link", (f, f"{f}/")),  # a trailing slash: ENOENT or ENOTDIR, as the kernel says
        ("link", (f, "h\0")),
        ("link", (1.5, "h")),
        ("symlink", (f, d)),  # EEXIST
        ("symlink", ("", tree / "e")),  # ENOENT: an empty target
        ("symlink", ("t", missing / "s")),
        ("symlink", ("t\0", tree / "s")),
        ("symlink", (b"t", None)),
        ("stat", (missing,)),
        ("stat", (f / "x",)),  # ENOTDIR
        ("stat", ("a\0",)),
        ("stat", (1.5,)),
        ("stat", (None,)),
        ("lstat", (3,)),  # an fd is no path for lstat
        ("lstat", (os.fsencode(missing),)),
    ]


async def test_stat_and_links_fail_as_os_does(tree: Path, driver: str) -> None:
    await aiopg_io.os.stat(tree, driver=driver)
    before = open_fds()
    for name, args in _link_errors(tree):
        want = stdlib_error(functools.partial(getattr(os, name), *args))
        await raises_like(want, functools.partial(getattr(ASYNC_OS, name), *args, driver=driver))
    assert open_fds() == before
    assert sorted(os.listdir(tree)) == ["d", "dangling", "f", "link"]


async def test_a_directory_without_permission_fails_as_os_does(tree: Path, driver: str) -> None:
    locked = tree / "locked"
    locked.mkdir()
    (locked / "in").write_bytes(b"")
    locked.chmod(0)
    try:
        if os.access(locked / "in", os.F_OK):
            pytest.skip("this process passes every permission check (root's CAP_DAC_OVERRIDE)")
        for name, args in [
            ("stat", (locked / "in",)),
            ("lstat", (locked / "in",)),
            ("link", (tree / "f", locked / "h")),
            ("symlink", ("t", locked / "s")),
            ("mkdir", (locked / "m",)),
            ("makedirs", (locked / "m" / "n",)),
        ]:
            want = stdlib_error(functools.partial(getattr(os, name), *args))
            assert isinstance(want, PermissionError)
            await raises_like(want, functools.partial(getattr(ASYNC_OS, name), *args, driver=driver))
        for name in ("exists", "isfile", "isdir", "islink"):
            assert await getattr(ASYNC_PATH, name)(locked / "in", driver=driver) is False
    finally:
        locked.chmod(0o700)


# -- makedirs, renames, removedirs: os's steps over the ops -------------------------------------------


async def test_makedirs_renames_removedirs_do_what_os_does(tmp_path: Path, driver: str) -> None:
    """The same calls on two twin trees, one through os, one through aiopg_io.os: the same
    trees after, and the same errors."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for root in (mine, theirs):
        (root / "d").mkdir(parents=True)
        (root / "f").write_bytes(b"f")
        (root / "old" / "deep").mkdir(parents=True)
        (root / "old" / "deep" / "x").write_bytes(b"x")
        (root / "full" / "empty").mkdir(parents=True)
        (root / "full" / "keep").write_bytes(b"")
    steps: list[tuple[str, tuple[str | bytes, ...], dict[str, object]]] = [
        ("makedirs", ("a/b/c",), {}),
        ("makedirs", ("a/b/c",), {}),  # EEXIST
        ("makedirs", ("a/b/c",), {"exist_ok": True}),
        ("makedirs", ("a/b/c/",), {"exist_ok": True}),  # a trailing slash
        ("makedirs", ("p/q/.",), {}),  # a "." tail: made up to q
        ("makedirs", ("f",), {"exist_ok": True}),  # a file there: EEXIST even with exist_ok
        ("makedirs", ("f/sub",), {}),  # ENOTDIR
        ("makedirs", ("m700/n",), {"mode": 0o700}),  # the mode is the leaf's
        ("makedirs", ("bytes/b",), {}),
        ("renames", ("old/deep/x", "new/place/x"), {}),  # old/deep and old are pruned
        ("renames", ("missing", "z/y"), {}),  # ENOENT after making z
        ("removedirs", ("a/b/c",), {}),  # all of a
        ("removedirs", ("full/empty",), {}),  # stops at full (not empty)
        ("removedirs", ("missing",), {}),
        ("removedirs", ("f",), {}),  # ENOTDIR
    ]
    for name, rel, kwargs in steps:
        paths_t = tuple(str(theirs / r) for r in rel)
        paths_m = tuple(str(mine / r) for r in rel)
        if rel == ("bytes/b",):
            paths_t, paths_m = tuple(map(os.fsencode, paths_t)), tuple(map(os.fsencode, paths_m))
        try:
            getattr(os, name)(*paths_t, **kwargs)
        except OSError as exc:
            with pytest.raises(type(exc)) as info:
                await getattr(ASYNC_OS, name)(*paths_m, driver=driver, **kwargs)
            assert str(info.value) == str(exc).replace(str(theirs), str(mine)), (name, rel)
        else:
            await getattr(ASYNC_OS, name)(*paths_m, driver=driver, **kwargs)

    def walk(root: Path) -> list[tuple[str, int]]:
        return sorted(
            (os.path.relpath(p, root), stat_module.S_IMODE(os.lstat(p).st_mode))
            for top, dirs, files in os.walk(root)
            for p in (os.path.join(top, n) for n in dirs + files)
        )

    assert walk(mine) == walk(theirs)
    assert ("m700/n", 0o700 & ~_umask()) in walk(mine)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_makedirs_family_refuses_bad_input_as_os_does(tree: Path, driver: str) -> None:
    for name, args in [
        ("makedirs", (1.5,)),
        ("makedirs", (None,)),
        ("makedirs", ("a\0b",)),
        ("makedirs", (str(tree / "x\0y" / "z"),)),
        ("renames", (tree / "f", "a\0/b")),
        ("renames", (1.5, tree / "g")),
        ("removedirs", (b"\0",)),
        ("removedirs", (3,)),
    ]:
        want = stdlib_error(functools.partial(getattr(os, name), *args))
        await raises_like(want, functools.partial(getattr(ASYNC_OS, name), *args, driver=driver))
    assert sorted(os.listdir(tree)) == ["d", "dangling", "f", "link"]


# -- limiter= ---------------------------------------------------------------------------------------


async def test_limiter_bounds_the_threads_an_os_call_uses(tree: Path, driver: str) -> None:
    """A CapacityLimiter of one token, held elsewhere: a call that needs a thread (the
    thread calls always; an op where its kind runs on a thread of this process) waits for
    the token; an op the driver runs without a thread ignores it."""
    limiter = anyio.CapacityLimiter(1)
    await aiopg_io.os.stat(tree, driver=driver)
    threaded = get_context(driver).driver.capabilities.threaded_kinds
    calls: list[tuple[Callable[[], Awaitable[object]], bool]] = [
        (lambda: aiopg_io.os.listdir(tree, limiter=limiter), True),
        (lambda: aiopg_io.os.path.samefile(tree, tree, limiter=limiter), True),
        (
            lambda: aiopg_io.os.mkdir(tree / "m", dir_fd=None, driver=driver, limiter=limiter),
            "mkdirat" in {k.value for k in threaded},
        ),
        (
            lambda: aiopg_io.os.stat(tree / "f", driver=driver, limiter=limiter),
            "statx" in {k.value for k in threaded},
        ),
        (
            lambda: aiopg_io.os.symlink("f", tree / "s", driver=driver, limiter=limiter),
            "symlinkat" in {k.value for k in threaded},
        ),
    ]
    for call, waits in calls:
        await check_limiter_wait(limiter, call, waits)
    assert (tree / "m").is_dir() and os.readlink(tree / "s") == "f"
    # The kinds run on threads, by driver: the worker's pool, the fallback's threads.
    if driver == "worker":
        assert {k.value for k in threaded} >= {"statx", "linkat", "symlinkat", "read"}
    elif driver in ("sync", "io_uring"):
        assert not threaded
    with pytest.raises(TypeError, match="limiter must be a CapacityLimiter or None, not int"):
        await aiopg_io.os.stat(tree, limiter=1)  # type: ignore[arg-type]
