"""openat2(2) with ``RESOLVE_CACHED``: open a file on the calling thread only where finding
it reads nothing from a disk, so an event loop can open a file with no thread hop (and fall
back to a thread where the kernel says it would have to wait).

Facts relied on (Linux openat2(2) and include/uapi/linux/openat2.h):

- ``openat2(dirfd, pathname, struct open_how *how, size)`` (Linux 5.6) has no glibc wrapper:
  it is called through ``syscall(2)``, number 437 in the unified syscall table that
  x86_64, aarch64, arm, riscv, powerpc, s390, loongarch and mips' n64 share (alpha and ia64
  number it otherwise: there it is left alone). ``struct open_how`` is three ``__u64``:
  ``flags``, ``mode``, ``resolve`` (24 bytes, ``OPEN_HOW_SIZE_VER0``).
- ``RESOLVE_CACHED`` (0x20, Linux 5.12): "Make the open operation fail unless all path
  components are already present in the kernel's lookup cache"; the failure is EAGAIN.
  A lookup that would read a directory block or an inode from a disk is never attempted,
  so the call does not wait for I/O. Opening a regular file once found does none either
  (its inode is in memory with its dentry); ``O_NONBLOCK`` keeps a FIFO's open from waiting
  for a writer. ``RESOLVE_CACHED`` with ``O_CREAT``, ``O_TRUNC`` or ``O_TMPFILE`` is EAGAIN
  always (they are never passed here).
- ``RESOLVE_NO_SYMLINKS`` (0x04): any symbolic link in any component (magic links
  included) fails the walk with ELOOP, so a path with no ``..`` segment opened this way
  names a file under its leading directories, by the letters of the path.
  (``RESOLVE_BENEATH`` would allow symlinks that stay beneath a ``dirfd``, but a cached
  walk does not follow links anyway: following one leaves RCU-walk mode, which
  ``RESOLVE_CACHED`` answers with EAGAIN; on 6.18 a path through any symlink gives EAGAIN
  on every try. So it would buy nothing, and it needs a directory fd held open.)
- The filesystem's own ``open`` still runs once the file is found: FUSE's asks its daemon
  (io_uring's inline OPENAT attempt has the same exposure); local filesystems' do no I/O.
- An unknown ``resolve`` bit is EINVAL (a kernel before 5.12 and ``RESOLVE_CACHED``); a
  kernel before 5.6 says ENOSYS, and a seccomp filter may say ENOSYS or EPERM. Those mean
  "not here": :func:`open_cached` stops trying for the life of the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import sys
from typing import Any

__all__ = ["RESOLVE_CACHED", "RESOLVE_NO_SYMLINKS", "available", "open_cached"]

RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_CACHED = 0x20

_SYS_OPENAT2 = 437
_UNIFIED = frozenset(
    {"x86_64", "aarch64", "arm64", "armv7l", "armv8l", "riscv64", "ppc64le", "ppc64", "s390x", "loongarch64"}
)
_NOT_HERE = frozenset({errno.ENOSYS, errno.EPERM, errno.EINVAL})


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _bind() -> Any:
    if not sys.platform.startswith("linux") or platform.machine() not in _UNIFIED:
        return None
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    fn = getattr(ctypes.CDLL(path, use_errno=True), "syscall", None)
    if fn is not None:  # syscall(2) is variadic: every argument passed as a full register
        fn.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        fn.restype = ctypes.c_long
    return fn


_syscall = _bind()
_works = _syscall is not None


def available() -> bool:
    """Whether :func:`open_cached` may still open anything here."""
    return _works


def open_cached(dirfd: int, path: str, flags: int, resolve: int) -> int | None:
    """``openat2(dirfd, path, {flags, 0, resolve | RESOLVE_CACHED})`` on this thread: the new
    fd, or None where the kernel would have to wait (EAGAIN) or cannot do it here (then
    never again in this process). Any other failure raises OSError as ``os.open`` does, and
    a path with a NUL ValueError."""
    global _works
    if not _works or _syscall is None:
        return None
    name = os.fsencode(path)
    if b"\0" in name:  # ctypes would pass the letters before it: another file's name
        raise ValueError(f"embedded null byte in path {path!r}")
    how = _OpenHow(flags, 0, resolve | RESOLVE_CACHED)
    fd = int(_syscall(_SYS_OPENAT2, dirfd, name, ctypes.addressof(how), ctypes.sizeof(how)))
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.EAGAIN:
        return None
    if err in _NOT_HERE:
        _works = False
        return None
    raise OSError(err, os.strerror(err), path)
