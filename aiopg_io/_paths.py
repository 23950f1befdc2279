"""Directory entries, durably: the calls the WAL and the buffer pool make on paths.

PostgreSQL's ``durable_rename`` / ``durable_unlink`` / ``fsync_fname(dir)``
(src/backend/storage/file/fd.c), as ops run through the IOContext like file ops, so every
driver runs them (natively where it can, else in its threads: ``drivers/_fallback.py``) and
the testing wrappers see them (a power-loss simulator records them, a fault injector can
fail them). Facts relied on:

- A new, renamed or removed file's directory entry is durable only once the *directory* is
  fsynced (Linux fsync(2): "Calling fsync() does not necessarily ensure that the entry in
  the directory containing the file has also reached disk. For that an explicit fsync() on
  a file descriptor for the directory is also needed."). :func:`fsync_directory` does that:
  openat(O_DIRECTORY), fsync on that fd, close. The caller decides when, as PostgreSQL's
  callers do (one fsync after several entries in one directory is enough).
- ``rename(2)`` replaces its target atomically; ``renameat2(RENAME_NOREPLACE)`` fails with
  EEXIST instead, which is how :func:`rename` with ``replace=False`` installs a file only
  where none is (no check-then-rename race).
- A path with a NUL byte is refused with the ValueError ``os`` raises for it (the words
  depend on the Python version: :func:`aiopg_io._checks.nul_byte_error`): the kernel would
  read the path only up to the NUL.
- Cancelling one of these calls cancels its op (docs/guide.md, "Cancellation"): an op
  already handed to the kernel or a thread may still happen. A create whose open completed
  anyway closes the fd it got before the cancellation propagates.
"""

from __future__ import annotations

import errno
import os

import anyio

from ._checks import has_nul, nul_byte_error
from ._context import IOContext, get_context
from .drivers import DriverFactory
from .drivers.base import AT_FDCWD, RENAME_NOREPLACE, Op, OpKind

__all__ = ["create", "fsync_directory", "make_directories", "rename", "run_path_op", "unlink"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

Driver = str | DriverFactory | None
PathArg = str | os.PathLike[str]


def _checked(path: PathArg, fn: str, arg: str = "path") -> str:
    """``path`` as a str; a NUL byte is refused as ``os.<fn>`` refuses it in ``arg``."""
    p = os.fspath(path)
    if has_nul(p):
        raise nul_byte_error(fn, arg, isinstance(p, bytes))
    return os.fsdecode(p)


async def run_path_op(ctx: IOContext, op: Op) -> int:
    """``ctx.run(op)``; an OPENAT that opened its file although the call ended (cancelled
    once the op had gone out) closes the fd before the call's exception propagates. How
    this module and ``aiopg_io.os`` (``_oscalls``) run a path op."""
    try:
        return await ctx.run(op)
    except BaseException:
        if op.kind is OpKind.OPENAT and op.error is None and op.result is not None:
            os.close(op.result)  # opened after all (the cancel came too late): not ours to keep
        raise


class _Session:
    """The running loop's IOContext for ``driver``, held for a few ops."""

    def __init__(self, driver: Driver) -> None:
        self.ctx = get_context(driver)

    async def __aenter__(self) -> IOContext:
        self.ctx.acquire()
        return self.ctx

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.ctx.release()


async def fsync_directory(directory: PathArg, driver: Driver = None) -> None:
    """Make ``directory``'s entries durable: open it, fsync it, close it (three ops)."""
    d = _checked(directory, "open")
    async with _Session(driver) as ctx:
        await _fsync_directory(ctx, d)


async def _fsync_directory(ctx: IOContext, d: str) -> None:
    flags = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
    fd = await run_path_op(ctx, Op(OpKind.OPENAT, AT_FDCWD, path=d, flags=flags))
    try:
        await run_path_op(ctx, Op(OpKind.FSYNC, fd, path=d))
    finally:
        with anyio.CancelScope(shield=True):
            await run_path_op(ctx, Op(OpKind.CLOSE, fd, path=d))


async def make_directories(path: PathArg, driver: Driver = None, *, mode: int = 0o777) -> None:
    """Create the directory ``path`` and its missing parents (MKDIRAT ops), each durably:
    the parent of every directory made is fsynced once it holds the new entry, as
    PostgreSQL's callers fsync a directory's parent after making it. An existing directory
    is fine (nothing is made or synced); an existing non-directory raises FileExistsError
    naming it."""
    p = os.path.abspath(_checked(path, "mkdir"))
    async with _Session(driver) as ctx:
        await _make_directories(ctx, p, mode)


async def _make_directories(ctx: IOContext, p: str, mode: int) -> None:
    parent = os.path.dirname(p)
    mkdir = Op(OpKind.MKDIRAT, AT_FDCWD, path=p, mode=mode)
    try:
        await run_path_op(ctx, mkdir)
    except FileNotFoundError:
        if parent == p:
            raise
        await _make_directories(ctx, parent, mode)
        await run_path_op(ctx, Op(OpKind.MKDIRAT, AT_FDCWD, path=p, mode=mode))
    except FileExistsError:
        if os.path.isdir(p):
            return  # made meanwhile by someone else, who answers for its durability
        raise
    await _fsync_directory(ctx, parent)


async def create(path: PathArg, driver: Driver = None, *, exclusive: bool = True, mode: int = 0o666) -> None:
    """Create the file ``path`` (empty) and close it; with ``exclusive`` (O_EXCL), raise
    FileExistsError naming ``path`` when it exists. Its entry is durable once the caller
    fsyncs the directory."""
    p = _checked(path, "open")
    flags = os.O_WRONLY | os.O_CREAT | _O_CLOEXEC | (os.O_EXCL if exclusive else 0)
    async with _Session(driver) as ctx:
        fd = await run_path_op(ctx, Op(OpKind.OPENAT, AT_FDCWD, path=p, flags=flags, mode=mode))
        with anyio.CancelScope(shield=True):
            await run_path_op(ctx, Op(OpKind.CLOSE, fd, path=p))


async def rename(src: PathArg, dst: PathArg, driver: Driver = None, *, replace: bool = True) -> bool:
    """Rename ``src`` to ``dst`` (replacing it atomically). With ``replace=False`` an existing
    ``dst`` is left alone and False returned (RENAME_NOREPLACE). Durable once the caller
    fsyncs the directories of both."""
    s, d = _checked(src, "rename", "src"), _checked(dst, "rename", "dst")
    op = Op(OpKind.RENAMEAT, AT_FDCWD, path=s, newpath=d, flags=0 if replace else RENAME_NOREPLACE)
    async with _Session(driver) as ctx:
        try:
            await run_path_op(ctx, op)
        except FileExistsError:
            if replace:
                raise
            return False
    return True


async def unlink(path: PathArg, driver: Driver = None, *, missing_ok: bool = False) -> None:
    """Remove ``path`` (FileNotFoundError when missing, unless ``missing_ok``). Durable once
    the caller fsyncs the directory."""
    p = _checked(path, "unlink")
    async with _Session(driver) as ctx:
        try:
            await run_path_op(ctx, Op(OpKind.UNLINKAT, AT_FDCWD, path=p))
        except OSError as exc:
            if not (missing_ok and exc.errno == errno.ENOENT):
                raise
