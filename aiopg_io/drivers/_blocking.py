"""Perform one op with blocking system calls: the body shared by ``sync`` and ``worker``.

Python retries EINTR itself (PEP 475), so a signal never surfaces here. ``os.preadv`` and
``os.pwritev`` release the GIL for the duration of the call, which is what lets a thread
pool overlap them. Where the platform lacks the vectored calls (macOS before 11), each
buffer goes out with ``pread``/``pwrite`` in turn, which the short-transfer loop in
:meth:`Op.advance` already handles.

A pipe, FIFO, socket or terminal has no file position: pread(2) fails there with ESPIPE.
io_uring reads and writes such a file as a stream, ignoring the offset (``FMODE_STREAM``),
and glibc's POSIX AIO retries with read(2)/write(2) on ESPIPE (sysdeps/pthread/aio_misc.c);
the blocking drivers do the same, so a pipe reads alike through every driver.

A linked write + sync (WRITE_SYNC) is the write, then the sync, in the same call: a write
that raises never reaches the sync, so the op fails with the write's error (drivers/base.py).

Path ops use the ``*at`` forms through ``os``'s ``dir_fd`` arguments (AT_FDCWD: none).
Python's ``os.rename`` has no flags; RENAME_NOREPLACE goes through glibc's ``renameat2``
(Linux 3.15, glibc 2.28) where the C library has it, else the target is checked and then
renamed, which a concurrent creator of the target can race (the only way there is without
renameat2; macOS's ``renameatx_np`` is not used). STATX is ``os.stat`` written into the op's
buffer as the ``struct statx`` the kernel would write (:func:`._statx.pack`), so every
driver hands back the same record; LINKAT and SYMLINKAT are ``os.link`` and ``os.symlink``.

Whatever goes wrong while an op runs ends that op, never the thread running it: a worker
thread that died would leave its op's task waiting forever.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from . import _statx
from .base import (
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    RENAME_NOREPLACE,
    SYNC_FSYNC,
    Op,
    OpKind,
)

__all__ = ["perform"]

_HAVE_VECTORED = hasattr(os, "preadv") and hasattr(os, "pwritev")
# Linux's fallocate(2) takes a mode (FALLOC_FL_*); os.posix_fallocate has none.
_libc_fallocate = None
if hasattr(os, "posix_fallocate"):
    _libc_path = ctypes.util.find_library("c")
    if _libc_path is not None:
        _fn = getattr(ctypes.CDLL(_libc_path, use_errno=True), "fallocate64", None)
        if _fn is not None:
            _fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            _fn.restype = ctypes.c_int
            _libc_fallocate = _fn
_libc_renameat2 = None
_libc_path = ctypes.util.find_library("c")
if _libc_path is not None:
    _fn = getattr(ctypes.CDLL(_libc_path, use_errno=True), "renameat2", None)
    if _fn is not None:
        _fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        _fn.restype = ctypes.c_int
        _libc_renameat2 = _fn


def _transfer(op: Op) -> None:
    is_read = op.kind in (OpKind.READ, OpKind.READV)
    while True:
        bufs = op.remaining()
        if not bufs:
            break
        pos = op.position()
        if _HAVE_VECTORED:
            try:
                n = os.preadv(op.fd, bufs, pos) if is_read else os.pwritev(op.fd, bufs, pos)
            except OSError as exc:
                if exc.errno != errno.ESPIPE:
                    raise
                n = os.readv(op.fd, bufs) if is_read else os.writev(op.fd, bufs)
        elif is_read:
            data = os.pread(op.fd, len(bufs[0]), pos)
            bufs[0][: len(data)] = data
            n = len(data)
        else:
            n = os.pwrite(op.fd, bufs[0], pos)
        if not op.advance(n):
            break


# macOS has no fdatasync; fsync is the closest (F_FULLFSYNC is stronger).
_fdatasync = os.fdatasync if hasattr(os, "fdatasync") else os.fsync


def _fallocate(op: Op) -> None:
    if op.mode == 0 and hasattr(os, "posix_fallocate"):
        os.posix_fallocate(op.fd, op.offset, op.length)
        return
    if _libc_fallocate is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate with a mode is Linux-only", op.path)
    if _libc_fallocate(op.fd, op.mode, op.offset, op.length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), op.path)


def _dir_fd(op: Op) -> int | None:
    return None if op.fd == AT_FDCWD else op.fd


def _openat(op: Op) -> int:
    assert op.path is not None
    return os.open(op.path, op.flags, op.mode, dir_fd=_dir_fd(op))


def _renameat(op: Op) -> None:
    assert op.path is not None and op.newpath is not None
    dfd = _dir_fd(op)
    if op.flags == 0:
        os.rename(op.path, op.newpath, src_dir_fd=dfd, dst_dir_fd=dfd)
    elif _libc_renameat2 is not None:
        src, dst = os.fsencode(op.path), os.fsencode(op.newpath)
        if _libc_renameat2(op.fd, src, op.fd, dst, op.flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), op.path, None, op.newpath)
    elif op.flags == RENAME_NOREPLACE:
        if os.path.lexists(op.newpath if dfd is None else os.path.join(f"/dev/fd/{dfd}", op.newpath)):
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), op.path, None, op.newpath)
        os.rename(op.path, op.newpath, src_dir_fd=dfd, dst_dir_fd=dfd)
    else:
        raise OSError(errno.EINVAL, f"renameat flags {op.flags:#x} need renameat2", op.path, None, op.newpath)


def _unlinkat(op: Op) -> None:
    assert op.path is not None
    if op.flags & ~AT_REMOVEDIR:
        raise OSError(errno.EINVAL, f"unlinkat flags {op.flags:#x}: only AT_REMOVEDIR", op.path)
    (os.rmdir if op.flags else os.unlink)(op.path, dir_fd=_dir_fd(op))


def _stat_into(op: Op) -> None:
    assert op.path is not None
    if op.flags & ~AT_SYMLINK_NOFOLLOW:
        raise OSError(errno.EINVAL, f"statx flags {op.flags:#x}: only AT_SYMLINK_NOFOLLOW", op.path)
    st = os.stat(op.path, dir_fd=_dir_fd(op), follow_symlinks=not op.flags)
    _statx.pack(st, op.buffers[0])


def _linkat(op: Op) -> None:
    assert op.path is not None and op.newpath is not None
    if op.flags & ~AT_SYMLINK_FOLLOW:
        msg = f"linkat flags {op.flags:#x}: only AT_SYMLINK_FOLLOW"
        raise OSError(errno.EINVAL, msg, op.path, None, op.newpath)
    dfd = _dir_fd(op)
    os.link(op.path, op.newpath, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=bool(op.flags))


def perform(op: Op) -> None:
    """Run ``op`` to completion in this thread and record the outcome on it."""
    try:
        kind = op.kind
        if kind in (OpKind.READ, OpKind.READV, OpKind.WRITE, OpKind.WRITEV):
            _transfer(op)
        elif kind is OpKind.FSYNC:
            os.fsync(op.fd)
        elif kind is OpKind.FDATASYNC:
            _fdatasync(op.fd)
        elif kind is OpKind.WRITE_SYNC:
            _transfer(op)  # raises on a failed write: the sync is never reached
            (os.fsync if op.flags & SYNC_FSYNC else _fdatasync)(op.fd)
        elif kind is OpKind.FALLOCATE:
            _fallocate(op)
        elif kind is OpKind.FTRUNCATE:
            os.ftruncate(op.fd, op.length)
        elif kind is OpKind.OPENAT:
            op.complete(_openat(op))
            return
        elif kind is OpKind.RENAMEAT:
            _renameat(op)
        elif kind is OpKind.UNLINKAT:
            _unlinkat(op)
        elif kind is OpKind.MKDIRAT:
            assert op.path is not None
            os.mkdir(op.path, op.mode, dir_fd=_dir_fd(op))
        elif kind is OpKind.STATX:
            _stat_into(op)
        elif kind is OpKind.LINKAT:
            _linkat(op)
        elif kind is OpKind.SYMLINKAT:
            assert op.path is not None and op.newpath is not None
            os.symlink(op.path, op.newpath, dir_fd=_dir_fd(op))
        elif kind is OpKind.CLOSE:
            os.close(op.fd)
        elif kind is OpKind.NOP:
            pass
        else:
            raise OSError(errno.EOPNOTSUPP, f"op kind {kind.value} is not supported by this driver")
    except OSError as exc:
        if exc.filename is None and op.path is not None:
            exc = OSError(exc.errno, exc.strerror, op.path, None, op.newpath)
        op.fail(exc)
        return
    except Exception as exc:  # OverflowError, TypeError...: the op's arguments, not the thread's
        err = OSError(errno.EINVAL, f"{op.kind.value} refused its arguments: {exc!r}", op.path)
        err.__cause__ = exc
        op.fail(err)
        return
    op.complete(0)
