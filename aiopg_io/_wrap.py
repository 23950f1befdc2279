"""``aiopg_io.wrap``: an async file over a Python file object that is already open.

``anyio.wrap_file`` and ``aiofiles.wrap`` do this by running the object's own methods in
worker threads. So does this module, and not aiopg_io's ops on the object's fd, because a
Python file object keeps state above its fd that positional ops would go around:

- ``io.BufferedReader`` has read ahead, so the fd offset is past the object's position, and
  the bytes in between live only in its buffer; ``io.BufferedWriter`` holds bytes not yet
  written; ``io.TextIOWrapper`` holds a decoder's state and decoded text.
- aiopg_io's ops read and write at a cursor aiopg_io keeps (``pread``/``pwrite``; no
  ``lseek``), so the object would not see them move its position, nor they its buffers.
- Many file objects have no fd at all (``io.BytesIO``, ``gzip.GzipFile``, a socket's
  ``makefile()``), and ``wrap`` serves them the same way.

So the object stays the one source of truth: each I/O method runs on it in a thread
(``anyio.to_thread.run_sync``, bounded by ``limiter`` when given, else by anyio's default
limiter), and using the object directly between
awaits stays coherent. The cost is a thread hand-off per call, as in anyio and aiofiles;
for aiopg_io's drivers on a file that is already open, ``flush()`` it and open its fd anew:
``aiopg_io.open(f.fileno(), mode, closefd=False)`` (that file's cursor starts at 0).
"""

from __future__ import annotations

import abc
import io
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ["WrappedFile", "wrap"]


_F = TypeVar("_F", bound="AsyncFileProtocol")


class AsyncFileProtocol(abc.ABC):
    """What every async file object here offers on top of its own ``aclose`` and
    ``readline``: ``close`` (aiofiles' spelling of ``aclose``), line iteration with
    ``async for``, and ``async with`` closing the file."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the file."""

    @abc.abstractmethod
    async def readline(self, size: int = -1) -> Any:
        """One line (empty at the end)."""

    async def close(self) -> None:
        """Same as :meth:`aclose` (aiofiles spells it ``close``)."""
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def __aenter__(self: _F) -> _F:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class WrappedFile(AsyncFileProtocol):
    """A Python file object made awaitable (what :func:`wrap` returns).

    Reads, writes, ``seek``, ``tell``, ``truncate``, ``flush``, ``peek`` and closing are
    coroutines run in a worker thread; every other attribute (``name``, ``mode``,
    ``closed``, ``fileno()``, ``detach()``, ...) is the object's own, used directly, as in
    ``anyio.AsyncFile``. A method the object lacks (``peek`` on a text file) raises its
    AttributeError at once, before any thread is used.
    """

    def __init__(self, fileobj: Any, *, limiter: anyio.CapacityLimiter | None = None) -> None:
        self._fp = fileobj
        self._limiter = limiter

    @property
    def wrapped(self) -> Any:
        """The file object underneath (anyio's ``AsyncFile.wrapped``)."""
        return self._fp

    @property
    def limiter(self) -> anyio.CapacityLimiter | None:
        """The limiter given to :func:`wrap`; None means anyio's default thread limiter."""
        return self._limiter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def __repr__(self) -> str:
        return f"<aiopg_io.WrappedFile {self._fp!r}>"

    async def _call(self, method: str, *args: Any) -> Any:
        fn = getattr(self._fp, method)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def read(self, size: int | None = -1) -> Any:
        return await self._call("read", size)

    async def read1(self, size: int = -1) -> Any:
        return await self._call("read1", size)

    async def readall(self) -> Any:
        return await self._call("readall")

    async def readinto(self, b: Any) -> Any:
        return await self._call("readinto", b)

    async def readinto1(self, b: Any) -> Any:
        return await self._call("readinto1", b)

    async def peek(self, size: int = 0) -> Any:
        return await self._call("peek", size)

    async def readline(self, size: int | None = -1) -> Any:
        return await self._call("readline", size)

    async def readlines(self, hint: int | None = -1) -> Any:
        return await self._call("readlines", hint)

    async def write(self, data: Any) -> Any:
        return await self._call("write", data)

    async def writelines(self, lines: Iterable[Any]) -> None:
        await self._call("writelines", lines)

    async def seek(self, offset: int, whence: int = io.SEEK_SET) -> Any:
        return await self._call("seek", offset, whence)

    async def tell(self) -> Any:
        return await self._call("tell")

    async def truncate(self, size: int | None = None) -> Any:
        return await self._call("truncate", size)

    async def flush(self) -> None:
        await self._call("flush")

    async def aclose(self) -> None:
        """Close the object (in a thread: closing flushes), even when the task is cancelled."""
        with anyio.CancelScope(shield=True):
            await self._call("close")


def wrap(fileobj: Any, *, limiter: anyio.CapacityLimiter | None = None) -> WrappedFile:
    """An async file over ``fileobj``, an open Python file object, binary or text
    (``anyio.wrap_file`` / ``aiofiles.wrap``). Its methods run in worker threads, bounded
    by ``limiter`` (an ``anyio.CapacityLimiter``) when given; see the module docstring
    for why not aiopg_io's drivers, and docs/guide.md for the differences from anyio's."""
    # A class (io.FileIO itself) has read and write too, as unbound functions: refused, as
    # aiofiles' wrap refuses it.
    if isinstance(fileobj, type) or (
        not isinstance(fileobj, io.IOBase)
        and not any(callable(getattr(fileobj, m, None)) for m in ("read", "write"))
    ):
        what = f"the class {fileobj.__name__}" if isinstance(fileobj, type) else type(fileobj).__name__
        raise TypeError(
            f"wrap() needs an open file object (an io.IOBase, or one with read or write methods), not {what}"
        )
    if limiter is not None and not isinstance(limiter, anyio.CapacityLimiter):
        raise TypeError(f"limiter must be a CapacityLimiter or None, not {type(limiter).__name__}")
    return WrappedFile(fileobj, limiter=limiter)
