"""``aiopg_io.open``: Python's ``open()`` rules, an async file underneath.

The mode, buffering, encoding and newline arguments are validated exactly as ``io.open``
validates them (same exception types and messages), so code moving from ``open``,
aiofiles or ``anyio.open_file`` keeps its error handling. The open(2) call itself runs in
a thread through anyio (it can block on a slow filesystem; there is no async open on
every driver); all data then moves through the driver.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import anyio
import anyio.to_thread

from ._checks import FD_MAX, check_newline, check_text_arg_types, exact_int, fd_arg, has_nul
from ._context import get_context
from ._direct import Alignment, dio_alignment, direct_open_flags, enable_direct
from ._file import DEFAULT_BUFFER_SIZE, AsyncFile, is_directory
from .drivers import DriverFactory
from .errors import DirectIOUnsupportedError

__all__ = ["OpenCall", "open"]

Opener = Callable[[str, int], int]


class _Mode:
    __slots__ = ("appending", "binary", "creating", "flags", "raw_mode", "readable", "writable")

    def __init__(self, mode: str) -> None:
        if not isinstance(mode, str):
            raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
        chars = set(mode)
        if not chars <= set("axrwb+t") or len(mode) > len(chars):
            raise ValueError(f"invalid mode: {mode!r}")
        creating, reading, writing, appending = ("x" in chars, "r" in chars, "w" in chars, "a" in chars)
        updating, text, binary = "+" in chars, "t" in chars, "b" in chars
        if text and binary:
            raise ValueError("can't have text and binary mode at once")
        if creating + reading + writing + appending > 1:
            raise ValueError("must have exactly one of create/read/write/append mode")
        if not (creating or reading or writing or appending):
            raise ValueError("Must have exactly one of create/read/write/append mode and at most one plus")
        self.binary = binary
        self.appending = appending
        self.creating = creating
        self.readable = reading or updating
        self.writable = writing or appending or creating or updating
        flags = os.O_CLOEXEC
        flags |= os.O_RDWR if updating else (os.O_RDONLY if reading else os.O_WRONLY)
        if writing:
            flags |= os.O_CREAT | os.O_TRUNC
        elif appending:
            flags |= os.O_CREAT | os.O_APPEND
        elif creating:
            flags |= os.O_CREAT | os.O_EXCL
        self.flags = flags
        # What io.FileIO reports as .mode (and so aiofiles/anyio for binary files).
        plus = "+" if updating else ""
        if creating:
            self.raw_mode = "xb" + plus
        elif appending:
            self.raw_mode = "ab" + plus
        elif reading or updating:
            self.raw_mode = "rb+" if updating else "rb"
        else:
            self.raw_mode = "wb"


def _open_fd(path: str | int, m: _Mode, direct: bool, opener: Opener | None) -> tuple[int, Alignment | None]:
    """The blocking part of opening (run in a thread): the fd and its direct-I/O alignment."""
    flags = m.flags | (direct_open_flags() if direct else 0)
    if isinstance(path, int):
        fd = path
    else:
        try:
            fd = opener(path, flags) if opener is not None else os.open(path, flags, 0o666)
        except OSError as exc:
            if direct and exc.errno == errno.EINVAL:
                raise DirectIOUnsupportedError(
                    errno.EINVAL,
                    f"the filesystem refuses O_DIRECT (open(2) returned EINVAL); open {path!r} with "
                    "direct=False, or put it on a filesystem with direct I/O (ext4, xfs, btrfs)",
                    path,
                ) from exc
            raise
        if isinstance(fd, bool) or not isinstance(fd, int) or not 0 <= fd <= FD_MAX:
            raise ValueError(
                f"opener returned {fd!r}; it must return a file descriptor (an int from 0 to {FD_MAX})"
            )
    try:
        if is_directory(fd):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        alignment = None
        if direct:
            enable_direct(fd, str(path))
            alignment = dio_alignment(fd)
        return fd, alignment
    except BaseException:
        if not isinstance(path, int):
            os.close(fd)
        raise


async def _open(
    file: str | bytes | os.PathLike[str] | os.PathLike[bytes] | int,
    mode: str,
    *,
    direct: bool,
    driver: str | DriverFactory | None,
    buffering: int,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
    closefd: bool,
    opener: Opener | None,
    limiter: anyio.CapacityLimiter | None,
) -> Any:
    m = _Mode(mode)
    if isinstance(file, bool) or not isinstance(file, (str, bytes, os.PathLike, int)):
        raise TypeError(f"expected str, bytes, os.PathLike or int for the file, not {type(file).__name__}")
    if isinstance(file, int):
        fd_arg(file, "file")
    if limiter is not None and not isinstance(limiter, anyio.CapacityLimiter):
        raise TypeError(f"limiter must be a CapacityLimiter or None, not {type(limiter).__name__}")
    if not closefd and not isinstance(file, int):
        raise ValueError("Cannot use closefd=False with file name")
    if not isinstance(file, int) and has_nul(os.fspath(file)):
        raise ValueError("embedded null byte")  # io.open's words on every version (os.open's differ)
    path: str | int = file if isinstance(file, int) else os.fsdecode(os.fspath(file))
    buffering = exact_int("buffering", buffering)
    if m.binary:
        for argname, value in (("encoding", encoding), ("errors", errors), ("newline", newline)):
            if value is not None:
                raise ValueError(f"binary mode doesn't take an {argname} argument")
        if buffering == 1:
            warnings.warn(
                "line buffering (buffering=1) isn't supported in binary mode, the default buffer size "
                "will be used",
                RuntimeWarning,
                stacklevel=3,
            )
    else:
        check_text_arg_types(encoding, errors, newline)
        if buffering == 0:
            raise ValueError("can't have unbuffered text I/O")
        check_newline(newline)
        if direct:
            raise ValueError("direct I/O needs binary mode: open with 'b' in the mode and aligned buffers")
    ctx = get_context(driver, direct=direct)
    ctx.acquire()
    try:
        fd, alignment = await anyio.to_thread.run_sync(_open_fd, path, m, direct, opener, limiter=limiter)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await ctx.release()
        raise
    if buffering == 0:
        size = 0
    elif buffering > 1:
        size = buffering
    else:
        size = DEFAULT_BUFFER_SIZE
    raw = AsyncFile(
        fd,
        path,
        m.raw_mode,
        ctx,
        readable=m.readable,
        writable=m.writable,
        appending=m.appending,
        direct=direct,
        alignment=alignment,
        buffer_size=size,
        closefd=bool(closefd),
        limiter=limiter,
    )
    if m.binary:
        return raw
    from ._text import AsyncTextFile

    try:
        return AsyncTextFile(
            raw, mode, encoding=encoding, errors=errors, newline=newline, line_buffering=buffering == 1
        )
    except BaseException:  # an unknown encoding: io.open also closes the file it opened
        with anyio.CancelScope(shield=True):
            await raw.aclose()
        raise


class OpenCall(Coroutine[Any, Any, Any]):
    """What :func:`open` returns: await it for the file, or use it as an async context
    manager that closes the file on exit (the file is created only when awaited).

    It is a coroutine too (``collections.abc.Coroutine``), so it goes wherever one does:
    ``asyncio.run(aiopg_io.open(...))``, ``asyncio.create_task``, ``trio.run(aiopg_io.open,
    path)``; like any coroutine it runs once."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._file: Any = None
        self._coro: Coroutine[Any, Any, Any] | None = None

    def _started(self) -> Coroutine[Any, Any, Any]:
        if self._coro is None:
            self._coro = _open(**self._kwargs)
        return self._coro

    def __await__(self) -> Generator[Any, None, Any]:
        return self._started().__await__()

    def send(self, value: Any) -> Any:
        return self._started().send(value)

    def throw(self, *args: Any) -> Any:
        return self._started().throw(*args)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    async def __aenter__(self) -> Any:
        self._file = await _open(**self._kwargs)
        return self._file

    async def __aexit__(self, *exc: object) -> None:
        await self._file.aclose()


def open(
    file: str | bytes | os.PathLike[str] | os.PathLike[bytes] | int,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    driver: str | DriverFactory | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> OpenCall:
    """Open a file for asynchronous I/O; ``await`` the result or ``async with`` it.

    The arguments are ``open()``'s, in its positions and with its meanings (``closefd=False``
    leaves an fd open when the file closes), plus keyword-only ones: ``direct`` (O_DIRECT /
    F_NOCACHE; binary mode, aligned I/O), ``driver`` (a name such as ``"io_uring"``,
    ``"worker"``, ``"sync"``, ``"worker:threads=4"``, or a
    :class:`~aiopg_io.drivers.DriverFactory`; default:
    ``AIOPG_IO_DRIVER`` or ``auto``) and ``limiter`` (an ``anyio.CapacityLimiter``, as in
    ``anyio.open_file``: it bounds the threads used for this file, which are the thread
    that runs open(2) and, on the worker driver, those that run its ops; other drivers
    use no thread of this process for ops, and there it bounds only the open). Binary
    modes give an :class:`AsyncFile`, text modes an :class:`AsyncTextFile`.
    """
    return OpenCall(
        file=file,
        mode=mode,
        direct=direct,
        driver=driver,
        buffering=buffering,
        encoding=encoding,
        errors=errors,
        newline=newline,
        closefd=closefd,
        opener=opener,
        limiter=limiter,
    )
