"""Direct I/O: opening without the page cache, discovering alignment, aligned memory.

Facts relied on:

- Linux open(2), O_DIRECT: "the user buffer, the file offset and the length of the I/O must
  all be aligned"; the required alignment depends on the filesystem and device. Since
  Linux 6.1, statx(2) reports it: ``STATX_DIOALIGN`` (0x2000) fills ``stx_dio_mem_align``
  (buffer address) and ``stx_dio_offset_align`` (offset and length); both 0 means the file
  does not support direct I/O. Older kernels, and filesystems that do not implement it
  (tmpfs, checked on Linux 6.18), leave the bit out of ``stx_mask``: then 4096, PostgreSQL's
  ``PG_IO_ALIGN_SIZE``, is safe on every common device.
- A filesystem without O_DIRECT support fails open(2) with EINVAL (ext4, xfs, btrfs and,
  since Linux 6.6, tmpfs support it; ramfs, procfs and many FUSE filesystems do not).
- FreeBSD has O_DIRECT (advisory alignment); macOS has no O_DIRECT and uses
  ``fcntl(F_NOCACHE, 1)`` after open, which needs no alignment (Apple fcntl(2)).
- Aligned memory and "is this fd O_DIRECT?" live in :mod:`aiopg_io.drivers._memory`, since
  the drivers need them too and may not import from above their layer.

The glibc wrapper for statx(2) exists since glibc 2.28; it is reached through ctypes
because the ``os`` module gained ``statx`` only in Python 3.15.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from dataclasses import dataclass

from ._checks import fd_arg
from .drivers._memory import aligned_buffer as aligned_buffer
from .drivers._memory import buffer_address as buffer_address
from .drivers._memory import direct_open_flags as direct_open_flags
from .drivers._memory import fd_is_direct as fd_is_direct
from .drivers._memory import private_memory as private_memory
from .errors import AlignmentError, DirectIOUnsupportedError

__all__ = [
    "DEFAULT_ALIGNMENT",
    "Alignment",
    "aligned_buffer",
    "buffer_address",
    "check_aligned",
    "dio_alignment",
    "direct_open_flags",
    "enable_direct",
    "private_memory",
]

DEFAULT_ALIGNMENT = 4096
_STATX_DIOALIGN = 0x2000
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_STX_MASK_OFF = 0
_STX_DIO_MEM_OFF = 152  # struct statx in include/uapi/linux/stat.h
_STX_DIO_OFFSET_OFF = 156


@dataclass(frozen=True, slots=True)
class Alignment:
    """What direct I/O requires of a file: buffer addresses aligned to ``memory`` bytes,
    file offsets and lengths to ``offset`` bytes. ``source`` says where the numbers came
    from (``statx`` or ``default``)."""

    memory: int
    offset: int
    source: str = "default"

    @property
    def block(self) -> int:
        """The larger of the two: one alignment that satisfies both."""
        return max(self.memory, self.offset)


_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    _path = ctypes.util.find_library("c")
    if _path is not None:
        _libc = ctypes.CDLL(_path, use_errno=True)
_statx = getattr(_libc, "statx", None) if _libc is not None else None
if _statx is not None:
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    _statx.restype = ctypes.c_int


def dio_alignment(target: str | os.PathLike[str] | int) -> Alignment:
    """The direct-I/O alignment of a file or directory (a path, or an open fd).

    Asks statx(STATX_DIOALIGN) where the kernel answers; otherwise returns 4096 for both.
    A file the kernel says cannot do direct I/O at all raises DirectIOUnsupportedError. An
    fd must be one (0 to 2**31 - 1, not a bool), else TypeError or ValueError naming it.
    """
    if isinstance(target, int):  # never AT_FDCWD (-100: the working directory) or True (fd 1)
        fd_arg(target, "target")
    if _statx is None:
        return Alignment(DEFAULT_ALIGNMENT, DEFAULT_ALIGNMENT)
    buf = ctypes.create_string_buffer(256)
    if isinstance(target, int):
        rc = _statx(target, b"", _AT_EMPTY_PATH, _STATX_DIOALIGN, buf)
        name: str | int = target
    else:
        name = os.fspath(target)
        if os.path.isdir(name):
            # Directories often report no DIO alignment; a file made in them does.
            return _directory_alignment(name)
        rc = _statx(_AT_FDCWD, os.fsencode(name), 0, _STATX_DIOALIGN, buf)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    raw = buf.raw
    mask = int.from_bytes(raw[_STX_MASK_OFF : _STX_MASK_OFF + 4], sys.byteorder)
    if not mask & _STATX_DIOALIGN:
        return Alignment(DEFAULT_ALIGNMENT, DEFAULT_ALIGNMENT)
    mem = int.from_bytes(raw[_STX_DIO_MEM_OFF : _STX_DIO_MEM_OFF + 4], sys.byteorder)
    off = int.from_bytes(raw[_STX_DIO_OFFSET_OFF : _STX_DIO_OFFSET_OFF + 4], sys.byteorder)
    if mem == 0 or off == 0:
        raise DirectIOUnsupportedError(
            errno.EINVAL, f"the filesystem of {name!r} does not support direct I/O (statx)", name
        )
    return Alignment(mem, off, "statx")


def _directory_alignment(directory: str) -> Alignment:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".aiopg_io-dio-", dir=directory)
    try:
        os.unlink(tmp)
        return dio_alignment(fd)
    finally:
        os.close(fd)


def enable_direct(fd: int, path: str) -> None:
    """Make ``fd`` direct if open(2) did not: O_DIRECT through ``fcntl(F_SETFL)`` for an fd the
    caller opened (``aiopg_io.open(fd, direct=True)``) or an opener that dropped the flag;
    F_NOCACHE on macOS. A filesystem that refuses raises DirectIOUnsupportedError."""
    import fcntl

    odirect = direct_open_flags()
    if odirect:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if flags & odirect:
            return
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | odirect)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise DirectIOUnsupportedError(
                errno.EINVAL,
                f"the filesystem refuses O_DIRECT (fcntl(F_SETFL) returned EINVAL); open {path!r} with "
                "direct=False, or put it on a filesystem with direct I/O (ext4, xfs, btrfs)",
                path,
            ) from exc
        return
    nocache = getattr(fcntl, "F_NOCACHE", None)
    if nocache is None:
        raise DirectIOUnsupportedError(errno.EINVAL, "this platform has neither O_DIRECT nor F_NOCACHE", path)
    fcntl.fcntl(fd, nocache, 1)


def check_aligned(alignment: Alignment, offset: int, length: int, bufs: list[memoryview], path: str) -> None:
    """Raise AlignmentError unless offset, length and every buffer suit direct I/O."""
    if offset % alignment.offset:
        raise AlignmentError(
            f"{path}: offset {offset} is not a multiple of the direct-I/O alignment {alignment.offset}"
        )
    if length % alignment.offset:
        raise AlignmentError(
            f"{path}: length {length} is not a multiple of the direct-I/O alignment {alignment.offset}"
        )
    for b in bufs:
        if len(b) % alignment.offset:
            raise AlignmentError(
                f"{path}: a buffer of {len(b)} bytes is not a multiple of the direct-I/O alignment "
                f"{alignment.offset}"
            )
        addr = buffer_address(b)
        if addr % alignment.memory:
            raise AlignmentError(
                f"{path}: buffer address {addr:#x} is not aligned to {alignment.memory} bytes for "
                "direct I/O; use aiopg_io.aligned_buffer()"
            )
