"""``aiopg_io.os``: ``aiofiles.os``'s calls (``os``'s names and signatures, awaited).

Each runs as an op through the loop's driver where there is one: :func:`rename`,
:func:`replace`, :func:`remove`, :func:`unlink`, :func:`rmdir`, :func:`mkdir`,
:func:`stat`, :func:`lstat`, :func:`link` and :func:`symlink` (RENAMEAT, UNLINKAT, MKDIRAT,
STATX, LINKAT, SYMLINKAT: io_uring's own opcodes where the kernel has them, the worker's or
the sync driver's blocking calls, or the fallback's threads on posix_aio); these take a
keyword-only ``driver`` (as :func:`aiopg_io.open` does). :func:`makedirs`, :func:`renames`
and :func:`removedirs` are built from those ops as ``os``'s own are built from ``mkdir``,
``rename``, ``rmdir`` and ``path.exists`` (the same steps, so the same results and errors).
With a ``dir_fd``, or an fd where a path may be one, they run in a thread instead, as
does everything else (listdir, scandir, readlink, access...): the ``os`` function itself,
in ``anyio.to_thread.run_sync``, so arguments, results and errors are ``os``'s. Either way
a call raises what its ``os`` twin raises, by type and message. Every call takes a
keyword-only ``limiter`` (an ``anyio.CapacityLimiter``): it bounds the threads the call
uses, and is ignored where an op uses none (``aiopg_io/_oscalls.py``). See
docs/guide.md ("Files and directories").

:func:`stat` through STATX gives the ``os.stat_result`` ``os.stat`` gives, field for field
(``aiopg_io/drivers/_statx.py`` says how the ``struct statx`` is read, and what statx has
that it drops).

Differences from ``aiofiles.os``: no ``loop=`` / ``executor=`` arguments (the running
loop and anyio's threads are used), and :func:`scandir` reads the whole directory in its
thread and returns its entries, rather than an iterator that reads as it goes on the
caller's thread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import cast

from . import ospath as path
from ._checks import c_int_mode
from ._oscalls import Limiter, PathArg, checked_path, in_thread, run_op
from ._paths import Driver
from .drivers import _statx
from .drivers.base import AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_FOLLOW, AT_SYMLINK_NOFOLLOW, Op, OpKind

__all__ = [
    "ScandirEntries",
    "access",
    "getcwd",
    "link",
    "listdir",
    "lstat",
    "makedirs",
    "mkdir",
    "path",
    "readlink",
    "remove",
    "removedirs",
    "rename",
    "renames",
    "replace",
    "rmdir",
    "scandir",
    "sendfile",
    "stat",
    "statvfs",
    "symlink",
    "unlink",
]

FdOrPath = int | PathArg

#: ``os.link`` with ``follow_symlinks`` and no dir_fd calls link(2), whatever the platform's
#: link(2) does with a symbolic link; Linux's never follows one (link(2): "since kernel 2.0,
#: Linux does not do so"), which is linkat(2) without AT_SYMLINK_FOLLOW. Elsewhere the flag
#: reaches the blocking driver's ``os.link(follow_symlinks=True)``, which is link(2) again.
_LINK_FOLLOW = 0 if sys.platform.startswith("linux") else AT_SYMLINK_FOLLOW


# -- ops -----------------------------------------------------------------------------------------


async def _rename(
    fn: str,
    src: PathArg,
    dst: PathArg,
    src_dir_fd: int | None,
    dst_dir_fd: int | None,
    driver: Driver,
    limiter: Limiter,
) -> None:
    if src_dir_fd is not None or dst_dir_fd is not None:
        twin = getattr(os, fn)
        await in_thread(twin, src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, limiter=limiter)
        return
    s, d = checked_path(fn, "src", src), checked_path(fn, "dst", dst)
    op = Op(OpKind.RENAMEAT, AT_FDCWD, path=os.fsdecode(s), newpath=os.fsdecode(d))
    await run_op(op, driver, s, d, limiter)


async def rename(
    src: PathArg,
    dst: PathArg,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    driver: Driver = None,
    limiter: Limiter = None,
) -> None:
    """``os.rename``: a RENAMEAT op (replaces ``dst`` atomically)."""
    await _rename("rename", src, dst, src_dir_fd, dst_dir_fd, driver, limiter)


async def replace(
    src: PathArg,
    dst: PathArg,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    driver: Driver = None,
    limiter: Limiter = None,
) -> None:
    """``os.replace`` (on POSIX the same call as ``os.rename``): a RENAMEAT op."""
    await _rename("replace", src, dst, src_dir_fd, dst_dir_fd, driver, limiter)


async def _unlinkat(
    fn: str, path: PathArg, flags: int, dir_fd: int | None, driver: Driver, limiter: Limiter
) -> None:
    if dir_fd is not None:
        await in_thread(getattr(os, fn), path, dir_fd=dir_fd, limiter=limiter)
        return
    p = checked_path(fn, "path", path)
    await run_op(Op(OpKind.UNLINKAT, AT_FDCWD, path=os.fsdecode(p), flags=flags), driver, p, limiter=limiter)


async def remove(
    path: PathArg, *, dir_fd: int | None = None, driver: Driver = None, limiter: Limiter = None
) -> None:
    """``os.remove``: an UNLINKAT op."""
    await _unlinkat("remove", path, 0, dir_fd, driver, limiter)


async def unlink(
    path: PathArg, *, dir_fd: int | None = None, driver: Driver = None, limiter: Limiter = None
) -> None:
    """``os.unlink``: an UNLINKAT op."""
    await _unlinkat("unlink", path, 0, dir_fd, driver, limiter)


async def rmdir(
    path: PathArg, *, dir_fd: int | None = None, driver: Driver = None, limiter: Limiter = None
) -> None:
    """``os.rmdir``: an UNLINKAT op with AT_REMOVEDIR."""
    await _unlinkat("rmdir", path, AT_REMOVEDIR, dir_fd, driver, limiter)


async def mkdir(
    path: PathArg,
    mode: int = 0o777,
    *,
    dir_fd: int | None = None,
    driver: Driver = None,
    limiter: Limiter = None,
) -> None:
    """``os.mkdir``: a MKDIRAT op (``mode`` less the umask, as ``os.mkdir``)."""
    if dir_fd is not None:
        await in_thread(os.mkdir, path, mode, dir_fd=dir_fd, limiter=limiter)
        return
    p = checked_path("mkdir", "path", path)
    m = c_int_mode(mode)  # os.mkdir's range and errors: a larger one would wrap in an SQE
    await run_op(Op(OpKind.MKDIRAT, AT_FDCWD, path=os.fsdecode(p), mode=m), driver, p, limiter=limiter)


async def _statx_op(
    fn: str, path: object, dir_fd: int | None, follow_symlinks: bool, driver: Driver, limiter: Limiter
) -> os.stat_result:
    if dir_fd is not None or not _statx.CARRIES_STAT or not isinstance(path, (str, bytes, os.PathLike)):
        # An fd (fstat), a wrong type (os's own TypeError), a dir_fd: os itself, in a thread.
        twin = os.stat if fn == "stat" else os.lstat
        kwargs = {"follow_symlinks": follow_symlinks} if fn == "stat" else {}
        return await in_thread(twin, path, dir_fd=dir_fd, limiter=limiter, **kwargs)
    p = checked_path(fn, "path", path)
    buf = _statx.new_buffer()
    flags = 0 if follow_symlinks else AT_SYMLINK_NOFOLLOW
    op = Op(OpKind.STATX, AT_FDCWD, buffers=(buf,), path=os.fsdecode(p), flags=flags)
    await run_op(op, driver, p, limiter=limiter)
    return _statx.to_stat_result(buf)


async def stat(
    path: FdOrPath,
    *,
    dir_fd: int | None = None,
    follow_symlinks: bool = True,
    driver: Driver = None,
    limiter: Limiter = None,
) -> os.stat_result:
    """``os.stat``: a STATX op (an fd or a ``dir_fd``: ``os.stat`` in a thread)."""
    return await _statx_op("stat", path, dir_fd, bool(follow_symlinks), driver, limiter)


async def lstat(
    path: PathArg, *, dir_fd: int | None = None, driver: Driver = None, limiter: Limiter = None
) -> os.stat_result:
    """``os.lstat``: a STATX op with AT_SYMLINK_NOFOLLOW (a ``dir_fd``: a thread)."""
    return await _statx_op("lstat", path, dir_fd, False, driver, limiter)


async def link(
    src: PathArg,
    dst: PathArg,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    follow_symlinks: bool = True,
    driver: Driver = None,
    limiter: Limiter = None,
) -> None:
    """``os.link``: a LINKAT op. With ``follow_symlinks`` (the default) it does what
    ``os.link`` does, which is link(2): on Linux a link to a symbolic link itself."""
    if src_dir_fd is not None or dst_dir_fd is not None:
        await in_thread(
            os.link,
            src,
            dst,
            src_dir_fd=src_dir_fd,
            dst_dir_fd=dst_dir_fd,
            follow_symlinks=follow_symlinks,
            limiter=limiter,
        )
        return
    s, d = checked_path("link", "src", src), checked_path("link", "dst", dst)
    flags = _LINK_FOLLOW if follow_symlinks else 0
    op = Op(OpKind.LINKAT, AT_FDCWD, path=os.fsdecode(s), newpath=os.fsdecode(d), flags=flags)
    await run_op(op, driver, s, d, limiter)


async def symlink(
    src: PathArg,
    dst: PathArg,
    target_is_directory: bool = False,
    *,
    dir_fd: int | None = None,
    driver: Driver = None,
    limiter: Limiter = None,
) -> None:
    """``os.symlink``: a SYMLINKAT op making ``dst`` a link that holds ``src`` as given
    (``target_is_directory`` matters on Windows only, as in ``os``)."""
    if dir_fd is not None:
        await in_thread(os.symlink, src, dst, target_is_directory, dir_fd=dir_fd, limiter=limiter)
        return
    s, d = checked_path("symlink", "src", src), checked_path("symlink", "dst", dst)
    op = Op(OpKind.SYMLINKAT, AT_FDCWD, path=os.fsdecode(s), newpath=os.fsdecode(d))
    await run_op(op, driver, s, d, limiter)


# -- built from the ops, as os builds them -----------------------------------------------------------


async def makedirs(
    name: PathArg,
    mode: int = 0o777,
    exist_ok: bool = False,
    *,
    driver: Driver = None,
    limiter: Limiter = None,
) -> None:
    """``os.makedirs``: ``os``'s steps (make the missing parents, then ``name``; with
    ``exist_ok`` an existing directory is fine), each a STATX or MKDIRAT op."""
    head, tail = os.path.split(name)
    if not tail:
        head, tail = os.path.split(head)
    if head and tail and not await path.exists(head, driver=driver, limiter=limiter):
        try:
            await makedirs(head, exist_ok=exist_ok, driver=driver, limiter=limiter)
        except FileExistsError:
            pass  # made meanwhile by someone else: what was wanted
        cdir: str | bytes = bytes(os.curdir, "ASCII") if isinstance(tail, bytes) else os.curdir
        if tail == cdir:  # xxx/newdir/. exists if xxx/newdir exists
            return
    try:
        await mkdir(name, mode, driver=driver, limiter=limiter)
    except OSError:
        # Not only EEXIST: the system may report EACCES or EROFS first (as os.makedirs says).
        if not exist_ok or not await path.isdir(name, driver=driver, limiter=limiter):
            raise


async def removedirs(name: PathArg, *, driver: Driver = None, limiter: Limiter = None) -> None:
    """``os.removedirs``: ``rmdir`` of ``name``, then of each parent until one fails
    (UNLINKAT ops)."""
    await rmdir(name, driver=driver, limiter=limiter)
    head, tail = os.path.split(name)
    if not tail:
        head, tail = os.path.split(head)
    while head and tail:
        try:
            await rmdir(head, driver=driver, limiter=limiter)
        except OSError:
            break
        head, tail = os.path.split(head)


async def renames(old: PathArg, new: PathArg, *, driver: Driver = None, limiter: Limiter = None) -> None:
    """``os.renames``: make ``new``'s missing parents, rename, then prune ``old``'s empty
    parents (ops, as in :func:`makedirs` and :func:`removedirs`)."""
    head, tail = os.path.split(new)
    if head and tail and not await path.exists(head, driver=driver, limiter=limiter):
        await makedirs(head, driver=driver, limiter=limiter)
    await rename(old, new, driver=driver, limiter=limiter)
    head, tail = os.path.split(old)
    if head and tail:
        try:
            await removedirs(head, driver=driver, limiter=limiter)
        except OSError:
            pass


# -- threads -------------------------------------------------------------------------------------


async def readlink(path: PathArg, *, dir_fd: int | None = None, limiter: Limiter = None) -> str | bytes:
    """``os.readlink``, in a thread (bytes for a bytes path)."""
    return await in_thread(os.readlink, path, dir_fd=dir_fd, limiter=limiter)


async def listdir(path: FdOrPath | None = None, *, limiter: Limiter = None) -> list[str] | list[bytes]:
    """``os.listdir``, in a thread."""
    return await in_thread(os.listdir, path, limiter=limiter)


class ScandirEntries:
    """What :func:`scandir` returns: the directory's ``os.DirEntry`` objects, read whole,
    as an iterator that is also a context manager (as ``os.scandir``'s iterator is)."""

    def __init__(self, entries: list[os.DirEntry[str]] | list[os.DirEntry[bytes]]) -> None:
        self._entries: Iterator[os.DirEntry[str] | os.DirEntry[bytes]] = iter(entries)

    def __iter__(self) -> ScandirEntries:
        return self

    def __next__(self) -> os.DirEntry[str] | os.DirEntry[bytes]:
        return next(self._entries)

    def close(self) -> None:
        """Drop the entries not iterated yet (the directory is closed already)."""
        self._entries = iter(())

    def __enter__(self) -> ScandirEntries:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _read_dir(path: FdOrPath | None) -> list[os.DirEntry[str]] | list[os.DirEntry[bytes]]:
    # os.scandir's overloads take one kind of path each: the entries' type is the path's.
    with os.scandir(path) as entries:
        return cast("list[os.DirEntry[str]] | list[os.DirEntry[bytes]]", list(entries))


async def scandir(path: FdOrPath | None = None, *, limiter: Limiter = None) -> ScandirEntries:
    """``os.scandir``, read whole in a thread. ``DirEntry.is_dir()`` and friends answer from
    what the directory read returned, which on Linux's common file systems is the type; a
    ``DirEntry.stat()`` still calls stat on the caller's thread, as ``os.DirEntry`` does."""
    return ScandirEntries(await in_thread(_read_dir, path, limiter=limiter))


async def access(
    path: FdOrPath,
    mode: int,
    *,
    dir_fd: int | None = None,
    effective_ids: bool = False,
    follow_symlinks: bool = True,
    limiter: Limiter = None,
) -> bool:
    """``os.access``, in a thread."""
    return await in_thread(
        os.access,
        path,
        mode,
        dir_fd=dir_fd,
        effective_ids=effective_ids,
        follow_symlinks=follow_symlinks,
        limiter=limiter,
    )


async def getcwd(*, limiter: Limiter = None) -> str:
    """``os.getcwd``, in a thread."""
    return await in_thread(os.getcwd, limiter=limiter)


async def statvfs(path: FdOrPath, *, limiter: Limiter = None) -> os.statvfs_result:
    """``os.statvfs``, in a thread."""
    return await in_thread(os.statvfs, path, limiter=limiter)


async def sendfile(
    out_fd: int, in_fd: int, offset: int | None, count: int, *, limiter: Limiter = None
) -> int:
    """``os.sendfile`` (Linux's form), in a thread: the bytes sent. Not
    :func:`aiopg_io.sendfile`, which sends a whole aiopg_io file to a socket stream."""
    return await in_thread(os.sendfile, out_fd, in_fd, offset, count, limiter=limiter)
