"""Argument checks shared by ``open()``, the binary file, the text file and the calls beside
them (``sendfile``, ``dio_alignment``, ``aiopg_io.os``).

Each raises what CPython's ``io`` raises for the same mistake (same type, same message), so
code moving from ``open`` keeps its error handling, or, where ``io`` has no equivalent (file
offsets past ``off_t``), the documented error that names the value and the limit. Where
``io`` itself words one mistake two ways (``BufferedReader.read("x")`` and
``TextIOWrapper.read("x")`` differ), there are two checks, each named for its caller.

File descriptors are C ``int`` (open(2) returns one, every call takes one): one past
``2**31 - 1`` cannot name an fd, a negative one names none (and AT_FDCWD, -100, would name the
working directory to an ``*at`` call), and a bool is no fd (True would be fd 1, stdout): each
is refused before a system call sees it. A ``mode`` the kernel takes is a C ``int`` too
(fallocate(2), mkdir(2)); io_uring carries it in a 32-bit SQE field, where a larger one would
wrap to another mode (2**32 to 0: a plain allocation) instead of failing. One vectored
read or write takes at most ``IOV_MAX`` buffers (readv(2): EINVAL past it; 1024 on Linux,
macOS and FreeBSD); the drivers used to disagree past it (EINVAL, or split by POSIX AIO).

Offsets: ``off_t`` is 64 bits on every platform aiopg_io runs on (CPython is built with
large-file support), and Linux refuses a transfer whose end passes ``2**63 - 1``
(``rw_verify_area`` in fs/read_write.c); see :mod:`aiopg_io._file` for why every offset is
checked before a driver sees it.
"""

from __future__ import annotations

import errno
import operator
import os
import sys
from collections.abc import Callable, Iterable
from typing import SupportsIndex

from .drivers.base import offset_error

__all__ = [
    "C_INT_MAX",
    "FALLOCATE_MODE_MAX",
    "IOV_MAX",
    "FD_MAX",
    "NEWLINES",
    "as_int",
    "c_int_mode",
    "check_end",
    "check_newline",
    "check_text_arg_types",
    "exact_int",
    "fd_arg",
    "file_offset",
    "optional_int",
    "readable_view",
    "text_size",
    "vector_views",
    "writable_view",
]

#: The ``newline`` values ``open()`` accepts in text mode.
NEWLINES = (None, "", "\n", "\r", "\r\n")


def as_int(value: object, what: str) -> int:
    """``value`` as an int: anything with ``__index__`` except bool, else TypeError."""
    if type(value) is int:  # the common case; a Protocol isinstance check costs microseconds
        return value
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    return operator.index(value)


def optional_int(value: object, what: str) -> int:
    """A size of the binary file's calls: None means -1 ("all"), else :func:`as_int`."""
    return -1 if value is None else as_int(value, what)


def text_size(size: object) -> int:
    """A size of the text file's calls, worded as ``io.TextIOWrapper`` words it: None means
    -1; anything with ``__index__`` (bool too, as there) is taken."""
    if size is None:
        return -1
    try:
        return operator.index(size)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"argument should be integer or None, not '{type(size).__name__}'") from None


def exact_int(name: str, value: object, minimum: int | None = None) -> int:
    """A configuration number that must be a plain int (not bool, not another ``__index__``
    type), at least ``minimum`` when one is given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} {value} is below the minimum {minimum}")
    return value


#: The largest C ``int`` (32 bits on every platform aiopg_io runs on).
C_INT_MAX = 2**31 - 1
#: The largest file descriptor: fds are C ints.
FD_MAX = C_INT_MAX
#: The largest fallocate(2) mode: its flags (``FALLOC_FL_*``) are bits of a non-negative C int.
FALLOCATE_MODE_MAX = C_INT_MAX


def fd_arg(value: object, what: str) -> int:
    """A file descriptor a caller passed: an int (not a bool) from 0 to :data:`FD_MAX`, else
    TypeError, or ValueError naming the value (and the limit it passed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a file descriptor (an int), not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"negative file descriptor {value}")  # io.open's words
    if value > FD_MAX:
        raise ValueError(f"file descriptor {value} is past the largest, {FD_MAX} (2**31 - 1: fds are C ints)")
    return value


def c_int_mode(value: object) -> int:
    """A ``mode`` as ``os.mkdir`` takes it: anything with ``__index__`` (bool too, as there)
    within a C int, else its TypeError or OverflowError, in its words. A negative one is
    taken as ``os`` takes it (the kernel reads the same 32 bits: -1 is every bit)."""
    m = operator.index(value)  # type: ignore[arg-type]
    if not -C_INT_MAX - 1 <= m <= C_INT_MAX:
        raise OverflowError("Python int too large to convert to C int")  # os.mkdir's words
    return m


def file_offset(value: object, path: str) -> int:
    """A file offset: an integer from 0 to ``OFF_T_MAX``, else InvalidOffsetError naming ``path``."""
    off = as_int(value, "offset")
    err = offset_error(off, 0, path)
    if err is not None:
        raise err
    return off


def check_end(offset: int, nbytes: int, path: str | None) -> None:
    """InvalidOffsetError when ``nbytes`` at ``offset`` would end past ``OFF_T_MAX``."""
    err = offset_error(offset, nbytes, path)
    if err is not None:
        raise err


def writable_view(buf: object, what: str = "buffer") -> memoryview:
    """A flat byte view of a writable, C-contiguous buffer (what a read fills), else TypeError."""
    try:
        mv = memoryview(buf)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a writable bytes-like object, not {type(buf).__name__}") from None
    if mv.readonly:
        raise TypeError(f"{what} must be writable; {type(buf).__name__} is read-only")
    if not mv.c_contiguous:
        raise TypeError(f"{what} must be C-contiguous")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def readable_view(
    data: object, what: str = "data", str_hint: str = "open the file in text mode for str"
) -> memoryview:
    """A flat byte view of a C-contiguous bytes-like object (what a write sends), else
    TypeError; a str gets ``str_hint`` (what to do instead) in its message."""
    if isinstance(data, str):
        raise TypeError(f"{what} must be a bytes-like object, not 'str' ({str_hint})")
    try:
        mv = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {type(data).__name__}") from None
    if not mv.c_contiguous:
        raise TypeError(f"{what} must be C-contiguous")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def _iov_max() -> int:
    try:
        n = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        n = -1
    return n if n > 0 else 1024  # -1: "no limit" reported; 1024 is every ring's IOV_MAX


#: The most buffers one vectored read or write takes.
IOV_MAX = _iov_max()


def vector_views(
    bufs: Iterable[object], view: Callable[[object, str], memoryview], path: str
) -> list[memoryview]:
    """The views of a vectored call's ``bufs`` (``view`` is :func:`writable_view` or
    :func:`readable_view`), or OSError EINVAL naming their count and :data:`IOV_MAX`."""
    views = [view(b, "each buffer") for b in bufs]
    if len(views) > IOV_MAX:
        raise OSError(
            errno.EINVAL,
            f"{len(views)} buffers: one vectored read or write takes at most IOV_MAX, {IOV_MAX}",
            path,
        )
    return views


def check_text_arg_types(encoding: object, errors: object, newline: object) -> None:
    """``open()``'s TypeError for a text argument that is neither str nor None."""
    for argname, value in (("encoding", encoding), ("errors", errors), ("newline", newline)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"open() argument '{argname}' must be str or None, not {type(value).__name__}")


def check_newline(newline: str | None) -> None:
    """``open()``'s ValueError for a ``newline`` it does not know."""
    if newline not in NEWLINES:
        raise ValueError(f"illegal newline value: {newline}")  # io's words: the value unquoted


def has_nul(path: str | bytes) -> bool:
    """Whether a path holds a NUL byte (which the kernel would take as its end)."""
    return "\0" in path if isinstance(path, str) else b"\0" in path


def nul_byte_error(fn: str, arg: str, is_bytes: bool) -> ValueError:
    """What ``os.<fn>`` raises for a path argument ``arg`` holding a NUL byte (its
    ``path_converter``, Modules/posixmodule.c): "fn: embedded null character in arg" for a
    bytes path, and since Python 3.13 for a str one too; before 3.13 a str path got its
    encoder's "embedded null byte"."""
    if is_bytes or sys.version_info >= (3, 13):
        return ValueError(f"{fn}: embedded null character in {arg}")
    return ValueError("embedded null byte")
