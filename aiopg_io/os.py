"""``aiopg_io.os``: ``aiofiles.os``'s calls (``os``'s names and signatures, awaited).

Each runs as an op through the loop's driver where there is one: :func:`rename`,
:func:`replace`, :func:`remove`, :func:`unlink`, :func:`rmdir` and :func:`mkdir` (RENAMEAT,
UNLINKAT, MKDIRAT: io_uring's own opcodes where the kernel has them, the worker's or the
sync driver's blocking calls, or the fallback's threads on posix_aio); these take a
keyword-only ``driver`` (as :func:`aiopg_io.open` does). With a ``dir_fd`` they run in a
thread instead, as does everything else (stat, listdir, scandir, readlink, access...):
the ``os`` function itself, in ``anyio.to_thread.run_sync``, so arguments, results and
errors are ``os``'s. Either way a call raises what its ``os`` twin raises, by type and
message. See ``aiopg_io/_oscalls.py`` and docs/guide.md ("Files and directories").

Differences from ``aiofiles.os``: no ``loop=`` / ``executor=`` arguments (the running
loop and anyio's thread limiter are used), and :func:`scandir` reads the whole directory
in its thread and returns its entries, rather than an iterator that reads as it goes on
the caller's thread.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from types import TracebackType
from typing import cast

from . import ospath as path
from ._oscalls import PathArg, checked_path, in_thread, run_op
from ._paths import Driver
from .drivers.base import AT_FDCWD, AT_REMOVEDIR, Op, OpKind

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


# -- ops -----------------------------------------------------------------------------------------


async def _rename(
    fn: str, src: PathArg, dst: PathArg, src_dir_fd: int | None, dst_dir_fd: int | None, driver: Driver
) -> None:
    if src_dir_fd is not None or dst_dir_fd is not None:
        await in_thread(getattr(os, fn), src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    s, d = checked_path(fn, "src", src), checked_path(fn, "dst", dst)
    await run_op(Op(OpKind.RENAMEAT, AT_FDCWD, path=os.fsdecode(s), newpath=os.fsdecode(d)), driver, s, d)


async def rename(
    src: PathArg,
    dst: PathArg,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    driver: Driver = None,
) -> None:
    """``os.rename``: a RENAMEAT op (replaces ``dst`` atomically)."""
    await _rename("rename", src, dst, src_dir_fd, dst_dir_fd, driver)


async def replace(
    src: PathArg,
    dst: PathArg,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    driver: Driver = None,
) -> None:
    """``os.replace`` (on POSIX the same call as ``os.rename``): a RENAMEAT op."""
    await _rename("replace", src, dst, src_dir_fd, dst_dir_fd, driver)


async def _unlinkat(fn: str, path: PathArg, flags: int, dir_fd: int | None, driver: Driver) -> None:
    if dir_fd is not None:
        await in_thread(getattr(os, fn), path, dir_fd=dir_fd)
        return
    p = checked_path(fn, "path", path)
    await run_op(Op(OpKind.UNLINKAT, AT_FDCWD, path=os.fsdecode(p), flags=flags), driver, p)


async def remove(path: PathArg, *, dir_fd: int | None = None, driver: Driver = None) -> None:
    """``os.remove``: an UNLINKAT op."""
    await _unlinkat("remove", path, 0, dir_fd, driver)


async def unlink(path: PathArg, *, dir_fd: int | None = None, driver: Driver = None) -> None:
    """``os.unlink``: an UNLINKAT op."""
    await _unlinkat("unlink", path, 0, dir_fd, driver)


async def rmdir(path: PathArg, *, dir_fd: int | None = None, driver: Driver = None) -> None:
    """``os.rmdir``: an UNLINKAT op with AT_REMOVEDIR."""
    await _unlinkat("rmdir", path, AT_REMOVEDIR, dir_fd, driver)


async def mkdir(
    path: PathArg, mode: int = 0o777, *, dir_fd: int | None = None, driver: Driver = None
) -> None:
    """``os.mkdir``: a MKDIRAT op (``mode`` less the umask, as ``os.mkdir``)."""
    if dir_fd is not None:
        await in_thread(os.mkdir, path, mode, dir_fd=dir_fd)
        return
    p = checked_path("mkdir", "path", path)
    m = operator.index(mode)
    await run_op(Op(OpKind.MKDIRAT, AT_FDCWD, path=os.fsdecode(p), mode=m), driver, p)


# -- threads -------------------------------------------------------------------------------------


async def stat(path: FdOrPath, *, dir_fd: int | None = None, follow_symlinks: bool = True) -> os.stat_result:
    """``os.stat``, in a thread."""
    return await in_thread(os.stat, path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)


async def lstat(path: PathArg, *, dir_fd: int | None = None) -> os.stat_result:
    """``os.lstat``, in a thread."""
    return await in_thread(os.lstat, path, dir_fd=dir_fd)


async def renames(old: PathArg, new: PathArg) -> None:
    """``os.renames`` (makes ``new``'s parents, prunes ``old``'s), in a thread."""
    await in_thread(os.renames, old, new)


async def makedirs(name: PathArg, mode: int = 0o777, exist_ok: bool = False) -> None:
    """``os.makedirs``, in a thread."""
    await in_thread(os.makedirs, name, mode, exist_ok)


async def removedirs(name: PathArg) -> None:
    """``os.removedirs``, in a thread."""
    await in_thread(os.removedirs, name)


async def link(
    src: PathArg,
    dst: PathArg,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    follow_symlinks: bool = True,
) -> None:
    """``os.link``, in a thread."""
    await in_thread(
        os.link, src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=follow_symlinks
    )


async def symlink(
    src: PathArg, dst: PathArg, target_is_directory: bool = False, *, dir_fd: int | None = None
) -> None:
    """``os.symlink``, in a thread."""
    await in_thread(os.symlink, src, dst, target_is_directory, dir_fd=dir_fd)


async def readlink(path: PathArg, *, dir_fd: int | None = None) -> str | bytes:
    """``os.readlink``, in a thread (bytes for a bytes path)."""
    return await in_thread(os.readlink, path, dir_fd=dir_fd)


async def listdir(path: FdOrPath | None = None) -> list[str] | list[bytes]:
    """``os.listdir``, in a thread."""
    return await in_thread(os.listdir, path)


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


async def scandir(path: FdOrPath | None = None) -> ScandirEntries:
    """``os.scandir``, read whole in a thread. ``DirEntry.is_dir()`` and friends answer from
    what the directory read returned, which on Linux's common file systems is the type; a
    ``DirEntry.stat()`` still calls stat on the caller's thread, as ``os.DirEntry`` does."""
    return ScandirEntries(await in_thread(_read_dir, path))


async def access(
    path: FdOrPath,
    mode: int,
    *,
    dir_fd: int | None = None,
    effective_ids: bool = False,
    follow_symlinks: bool = True,
) -> bool:
    """``os.access``, in a thread."""
    return await in_thread(
        os.access, path, mode, dir_fd=dir_fd, effective_ids=effective_ids, follow_symlinks=follow_symlinks
    )


async def getcwd() -> str:
    """``os.getcwd``, in a thread."""
    return await in_thread(os.getcwd)


async def statvfs(path: FdOrPath) -> os.statvfs_result:
    """``os.statvfs``, in a thread."""
    return await in_thread(os.statvfs, path)


async def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
    """``os.sendfile`` (Linux's form), in a thread: the bytes sent. Not
    :func:`aiopg_io.sendfile`, which sends a whole aiopg_io file to a socket stream."""
    return await in_thread(os.sendfile, out_fd, in_fd, offset, count)
