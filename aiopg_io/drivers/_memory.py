"""Aligned memory and O_DIRECT fd flags: what both the file layer and the drivers need.

Facts relied on:

- Python's ``bytearray`` and ``bytes`` storage is not aligned beyond 16 bytes; an mmap is
  page-aligned, which satisfies every alignment up to the page size.
- ``mmap.mmap(-1, n)`` is ``MAP_SHARED`` on Unix (the mmap module's docs: flags default to
  ``MAP_SHARED``): after fork(2) the parent and the child map the same pages, so a child
  writing into a buffer it inherited changes the parent's bytes, where a ``bytearray`` is
  copy-on-write. :func:`private_memory` passes ``MAP_PRIVATE | MAP_ANONYMOUS`` instead ("a
  private copy-on-write mapping", mmap(2)). Windows' mmap takes no flags (its ``-1`` map is
  the process's own: there is no fork to share it with); macOS and FreeBSD have both flags.
- A direct read (O_DIRECT, or an io_uring read) pins the pages of the buffer it reads into
  for as long as the device writes them (Documentation/core-api/pin_user_pages.rst). A fork
  while it is in flight makes a private page copy-on-write in both processes; if the parent
  then writes to that page, it gets a new copy and the read lands in the old page, which is
  the child's alone (madvise(2), MADV_DONTFORK: "page relocations cause problems for
  hardware that DMAs into the page"; commit f822566165dd, which added it). Linux 5.19 keeps a
  page pinned for I/O the parent's (PageAnonExclusive); before it, a read's bytes can be
  lost to the parent this way. So, for private memory around a fork: let the direct reads
  into it end before forking, or do not write to the pages of a read in flight until it
  ends. Shared memory has no such hazard (nothing is copied), but sharing is the bug above.
- ``MADV_DONTFORK`` removes the hazard by not mapping the range in the child at all: the
  child's addresses are invalid, and touching them ends it with SIGSEGV (commit
  d2cd9ede6e19, MADV_WIPEONFORK: "If a child process accesses memory that was
  MADV_DONTFORK, it will get a segmentation fault"). The buffer pool's arena takes it (the
  pool is unusable in a child anyway); :func:`aligned_buffer` does not, because a user's
  buffer is a plain object a child may well read (the bytes a parent prepared), and a
  bytearray there would not crash it.
- ``ctypes.c_char.from_buffer`` needs a writable, non-empty buffer; ``PyObject_GetBuffer``
  with ``PyBUF_SIMPLE`` takes read-only ones too (the C API's buffer protocol), and the
  view must be released with ``PyBuffer_Release``.
- The O_DIRECT flag of an open fd reads back through ``fcntl(F_GETFL)`` (Linux, FreeBSD);
  macOS has no O_DIRECT (it uses ``F_NOCACHE``, which needs no alignment).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys

__all__ = ["aligned_buffer", "buffer_address", "direct_open_flags", "fd_is_direct", "private_memory"]


def direct_open_flags() -> int:
    """The open(2) flag for direct I/O here (0 where it is set after open instead)."""
    return getattr(os, "O_DIRECT", 0)


def fd_is_direct(fd: int) -> bool:
    """Whether ``fd`` was opened O_DIRECT (True for a bad fd: callers then skip fast paths
    that would block on a direct file, and the real op reports the error)."""
    flag = direct_open_flags()
    if not flag:
        return False
    import fcntl

    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & flag)
    except OSError:
        return True


def private_memory(size: int, *advice: str) -> mmap.mmap:
    """``size`` bytes (at least 1) of zeroed, page-aligned anonymous memory that a fork child
    gets a copy-on-write copy of, never a share (see the module doc).

    ``advice`` names ``madvise`` constants (``"MADV_DONTFORK"``); each is applied where the
    platform has it, and one the kernel refuses (EINVAL: a kernel built without THP) is
    skipped: advice changes how the memory behaves, never what it holds."""
    if not hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, size)  # Windows: no flags, no madvise, no fork
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for name in advice:
        value = getattr(mmap, name, None)
        if value is not None:
            with contextlib.suppress(OSError):
                m.madvise(value)
    return m


def aligned_buffer(size: int, alignment: int | None = None) -> memoryview:
    """A zeroed, writable buffer of ``size`` bytes whose address is aligned for direct I/O.

    ``alignment`` defaults to the page size (which covers every device's requirement);
    it must be a power of two (else ValueError, as for a negative ``size`` or one that with
    the alignment is more than ``sys.maxsize`` bytes). The memory is private anonymous memory
    (:func:`private_memory`), freed when the last view of it goes away: a fork child gets a
    copy-on-write copy, as of a ``bytearray`` (the module doc says what a direct read in
    flight across a fork needs).
    """
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size < 0:
        raise ValueError(f"size {size} is negative")
    page = mmap.PAGESIZE
    align = page if alignment is None else alignment
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
        raise ValueError(f"alignment {alignment!r} is not a positive power of two")
    extra = 0 if align <= page else align
    length = max(size + extra, 1)
    if length > sys.maxsize:  # mmap would raise OverflowError, naming neither
        raise ValueError(
            f"size {size} with alignment {align} is more than the largest buffer, {sys.maxsize} bytes"
        )
    view = memoryview(private_memory((length + page - 1) // page * page))
    start = 0
    if extra:
        start = (-buffer_address(view)) % align
    return view[start : start + size]


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def buffer_address(buf: object) -> int:
    """The address of the first byte of a C-contiguous buffer (read-only ones too)."""
    if not (type(buf) is memoryview and buf.readonly):  # would only raise (and raising costs)
        try:
            # A third of the cost of the general path; needs a writable, non-empty buffer,
            # which is what direct I/O nearly always gets (aligned_buffer views).
            return _addressof(_from_buffer(buf))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    view = _PyBuffer()
    _get_buffer(buf, ctypes.byref(view), 0)  # PyBUF_SIMPLE; raises TypeError/BufferError
    try:
        return view.buf or 0
    finally:
        _release_buffer(ctypes.byref(view))
