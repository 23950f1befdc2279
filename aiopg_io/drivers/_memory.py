"""Aligned memory and O_DIRECT fd flags: what both the file layer and the drivers need.

Facts relied on:

- Python's ``bytearray`` and ``bytes`` storage is not aligned beyond 16 bytes;
  ``mmap.mmap(-1, n)`` is page-aligned, which satisfies every alignment up to the page size.
- ``ctypes.c_char.from_buffer`` needs a writable, non-empty buffer; ``PyObject_GetBuffer``
  with ``PyBUF_SIMPLE`` takes read-only ones too (the C API's buffer protocol), and the
  view must be released with ``PyBuffer_Release``.
- The O_DIRECT flag of an open fd reads back through ``fcntl(F_GETFL)`` (Linux, FreeBSD);
  macOS has no O_DIRECT (it uses ``F_NOCACHE``, which needs no alignment).
"""

from __future__ import annotations

import ctypes
import mmap
import os

__all__ = ["aligned_buffer", "buffer_address", "direct_open_flags", "fd_is_direct"]


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


def aligned_buffer(size: int, alignment: int | None = None) -> memoryview:
    """A zeroed, writable buffer of ``size`` bytes whose address is aligned for direct I/O.

    ``alignment`` defaults to the page size (which covers every device's requirement);
    it must be a power of two. The memory is an anonymous mmap, freed when the last view
    of it goes away.
    """
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size < 0:
        raise ValueError(f"size {size} is negative")
    page = mmap.PAGESIZE
    align = page if alignment is None else alignment
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise ValueError(f"alignment {alignment!r} is not a positive power of two")
    extra = 0 if align <= page else align
    length = max(size + extra, 1)
    m = mmap.mmap(-1, (length + page - 1) // page * page)
    view = memoryview(m)
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
