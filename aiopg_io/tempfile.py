"""``aiopg_io.tempfile``: ``aiofiles.tempfile``'s four makers, giving aiopg_io files.

The stdlib makes the name and the fd, safely (``tempfile.mkstemp``: O_CREAT | O_EXCL |
O_NOFOLLOW, mode 0600, a random name in ``dir`` or ``tempfile.gettempdir()``; ``mkdtemp``
for directories, mode 0700), in a thread; aiopg_io then takes that fd as the file
(``aiopg_io.open`` with an opener that returns it), so every read and write goes through
the loop's driver. The arguments are the stdlib's, in its positions, plus keyword-only
``errors`` and ``driver``:

- :func:`TemporaryFile`: the name is unlinked at once (the stdlib does so too where it
  cannot use O_TMPFILE); ``name`` is the path it had, not the fd as the stdlib's.
- :func:`NamedTemporaryFile`: a :class:`TemporaryFileWrapper` whose close unlinks the
  name (an UNLINKAT op) when ``delete`` and ``delete_on_close``; with
  ``delete_on_close=False`` leaving the ``async with`` does (the stdlib's 3.12 rules).
- :class:`SpooledTemporaryFile`: an ``io.BytesIO`` (or an ``io.TextIOWrapper`` over one)
  run through :func:`aiopg_io.wrap` until it grows past ``max_size``, then copied into a
  :func:`TemporaryFile` at the same position (:meth:`SpooledTemporaryFile.rollover`).
- :class:`TemporaryDirectory`: ``mkdtemp`` on entry, ``shutil.rmtree`` on exit (threads);
  awaited instead, it is the directory object (``name``, ``await cleanup()``), as
  ``aiofiles.tempfile.TemporaryDirectory``'s.

Each of the first two is awaitable and an async context manager (as ``aiofiles``'s);
the context closes the file on exit.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

from . import os as aos
from ._open import open as aopen
from ._paths import Driver
from ._wrap import AsyncFileProtocol, WrappedFile, wrap

__all__ = [
    "NamedTemporaryFile",
    "SpooledTemporaryFile",
    "TemporaryDirectory",
    "TemporaryFile",
    "TemporaryFileWrapper",
    "TemporaryMaker",
]

T = TypeVar("T")
PathArg = str | os.PathLike[str] | None


class TemporaryMaker(Generic[T]):
    """What :func:`TemporaryFile` and :func:`NamedTemporaryFile` return: await it for the
    file, or ``async with`` it to have the file closed (and so deleted) on exit."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._make = make
        self._file: Any = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._make().__await__()

    async def __aenter__(self) -> T:
        self._file = await self._make()
        return self._file  # type: ignore[no-any-return]

    async def __aexit__(self, *exc: object) -> None:
        await self._file.aclose()


async def _file_on_fd(
    delete_name: bool,
    mode: str,
    buffering: int,
    encoding: str | None,
    newline: str | None,
    suffix: str | None,
    prefix: str | None,
    dir: PathArg,
    errors: str | None,
    driver: Driver,
) -> tuple[Any, str]:
    """A new temporary file from ``mkstemp``, opened as an aiopg_io file on its fd."""
    fd, name = await anyio.to_thread.run_sync(tempfile.mkstemp, suffix, prefix, dir)
    taken = False
    name_left = True  # on disk and not ours to keep

    def opener(path: str, flags: int) -> int:
        # Called once aiopg_io.open has accepted the arguments: from here the file owns fd.
        nonlocal taken
        taken = True
        return fd

    try:
        if delete_name:
            await anyio.to_thread.run_sync(os.unlink, name)
            name_left = False
        f = await aopen(name, mode, buffering, encoding, errors, newline, opener=opener, driver=driver)
    except BaseException:
        # A bad argument, or a cancellation delivered after mkstemp's thread returned.
        with anyio.CancelScope(shield=True):
            if not taken:
                os.close(fd)
            if name_left:
                await anyio.to_thread.run_sync(_unlink_if_there, name)
        raise
    return f, name


def _unlink_if_there(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def TemporaryFile(
    mode: str = "w+b",
    buffering: int = -1,
    encoding: str | None = None,
    newline: str | None = None,
    suffix: str | None = None,
    prefix: str | None = None,
    dir: PathArg = None,
    *,
    errors: str | None = None,
    driver: Driver = None,
) -> TemporaryMaker[Any]:
    """``tempfile.TemporaryFile``: an aiopg_io file with no name left on disk (an
    :class:`~aiopg_io.AsyncFile`, or :class:`~aiopg_io.AsyncTextFile` in a text mode)."""

    async def make() -> Any:
        f, _ = await _file_on_fd(
            True, mode, buffering, encoding, newline, suffix, prefix, dir, errors, driver
        )
        return f

    return TemporaryMaker(make)


class TemporaryFileWrapper:
    """A named temporary aiopg_io file (``tempfile._TemporaryFileWrapper``'s role): every
    attribute is the file's (``file``), and closing it unlinks ``name`` when ``delete``
    and ``delete_on_close`` hold. Leaving ``async with`` closes it, and unlinks ``name``
    when ``delete`` holds, whatever ``delete_on_close``."""

    def __init__(self, file: Any, name: str, delete: bool, delete_on_close: bool, driver: Driver) -> None:
        self.file = file
        self.name = name
        self.delete = delete
        self._delete_on_close = delete_on_close
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __repr__(self) -> str:
        return f"<aiopg_io.tempfile.TemporaryFileWrapper {self.name!r} {self.file!r}>"

    async def _unlink(self) -> None:
        try:
            await aos.unlink(self.name, driver=self._driver)
        except FileNotFoundError:
            pass

    async def aclose(self) -> None:
        """Close the file, then unlink it when ``delete`` and ``delete_on_close``."""
        with anyio.CancelScope(shield=True):
            try:
                await self.file.aclose()
            finally:
                if self.delete and self._delete_on_close:
                    await self._unlink()

    async def close(self) -> None:
        """Same as :meth:`aclose` (aiofiles spells it ``close``)."""
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.file.__aiter__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> TemporaryFileWrapper:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
        if self.delete and not self._delete_on_close:
            with anyio.CancelScope(shield=True):
                await self._unlink()


class _NamedMaker(TemporaryMaker[TemporaryFileWrapper]):
    async def __aexit__(self, *exc: object) -> None:
        await self._file.__aexit__(*exc)


def NamedTemporaryFile(
    mode: str = "w+b",
    buffering: int = -1,
    encoding: str | None = None,
    newline: str | None = None,
    suffix: str | None = None,
    prefix: str | None = None,
    dir: PathArg = None,
    delete: bool = True,
    *,
    errors: str | None = None,
    delete_on_close: bool = True,
    driver: Driver = None,
) -> TemporaryMaker[TemporaryFileWrapper]:
    """``tempfile.NamedTemporaryFile``: a :class:`TemporaryFileWrapper` over an aiopg_io
    file at ``name``; deleted as the stdlib deletes (``delete``, ``delete_on_close``)."""

    async def make() -> TemporaryFileWrapper:
        f, name = await _file_on_fd(
            False, mode, buffering, encoding, newline, suffix, prefix, dir, errors, driver
        )
        return TemporaryFileWrapper(f, name, delete, delete_on_close, driver)

    return _NamedMaker(make)


class SpooledTemporaryFile(AsyncFileProtocol):
    """``tempfile.SpooledTemporaryFile``: in memory (an ``io.BytesIO``, or an
    ``io.TextIOWrapper`` over one in a text mode, each call in a thread as
    :func:`aiopg_io.wrap` runs it) until a write or a truncate takes it past ``max_size``
    (0: never), then an aiopg_io :func:`TemporaryFile` holding the same bytes at the same
    position. ``rolled`` says which; ``fileno()`` needs the real file (``await
    rollover()`` first: a property cannot await, so it raises ``io.UnsupportedOperation``
    in memory rather than roll over as the stdlib's does)."""

    def __init__(
        self,
        max_size: int = 0,
        mode: str = "w+b",
        buffering: int = -1,
        encoding: str | None = None,
        newline: str | None = None,
        suffix: str | None = None,
        prefix: str | None = None,
        dir: PathArg = None,
        *,
        errors: str | None = None,
        driver: Driver = None,
    ) -> None:
        mem: io.IOBase
        if "b" in mode:
            mem = io.BytesIO()
        else:
            mem = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors=errors, newline=newline)
        self._file: Any = wrap(mem)
        self._max_size = max_size
        self._mode = mode
        self._rolled = False
        self._args = (mode, buffering, encoding, newline, suffix, prefix, dir)
        self._errors = errors
        self._driver = driver

    @property
    def rolled(self) -> bool:
        """True once the data is in a file on disk."""
        return self._rolled

    @property
    def file(self) -> Any:
        """The file underneath: a :class:`~aiopg_io.WrappedFile` in memory, else an aiopg_io file."""
        return self._file

    async def rollover(self) -> None:
        """Move the data to an aiopg_io :func:`TemporaryFile` (once; later calls do nothing)."""
        if self._rolled:
            return
        mem: WrappedFile = self._file
        pos = await mem.tell()
        raw = mem.wrapped.buffer if isinstance(mem.wrapped, io.TextIOWrapper) else mem.wrapped
        data = raw.getvalue()
        new = await TemporaryFile(*self._args, errors=self._errors, driver=self._driver)
        try:
            binary = getattr(new, "buffer", None) or new
            await binary.write(data)
            await binary.flush()
            await new.seek(pos)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await new.aclose()
            raise
        self._file = new
        self._rolled = True
        await mem.aclose()

    async def _check(self) -> None:
        if not self._rolled and self._max_size and await self._file.tell() > self._max_size:
            await self.rollover()

    @property
    def name(self) -> str | int | None:
        """The file's name once rolled over; None in memory (as the stdlib's)."""
        return self._file.name if self._rolled else None

    @property
    def mode(self) -> str:
        """The mode given (in memory) or the file's."""
        return self._file.mode if self._rolled else self._mode

    @property
    def closed(self) -> bool:
        return self._file.closed  # type: ignore[no-any-return]

    # The text attributes, the stdlib's way: the file underneath answers (in a binary mode,
    # with its AttributeError).
    @property
    def encoding(self) -> str:
        return self._file.encoding  # type: ignore[no-any-return]

    @property
    def errors(self) -> str | None:
        return self._file.errors  # type: ignore[no-any-return]

    @property
    def newlines(self) -> str | tuple[str, ...] | None:
        """The newlines met so far in reading, as ``io.TextIOWrapper.newlines``."""
        return self._file.newlines  # type: ignore[no-any-return]

    def fileno(self) -> int:
        if not self._rolled:
            raise io.UnsupportedOperation("fileno: the spooled file is in memory; await rollover() first")
        return self._file.fileno()  # type: ignore[no-any-return]

    async def write(self, data: Any) -> int:
        n: int = await self._file.write(data)
        await self._check()
        return n

    async def writelines(self, lines: Iterable[Any]) -> None:
        await self._file.writelines(lines)
        await self._check()

    async def truncate(self, size: int | None = None) -> int:
        if size is not None and not self._rolled and self._max_size and size > self._max_size:
            await self.rollover()
        return await self._file.truncate(size)  # type: ignore[no-any-return]

    async def read(self, size: int | None = -1) -> Any:
        return await self._file.read(size)

    async def readline(self, size: int | None = -1) -> Any:
        return await self._file.readline(size)

    async def readlines(self, hint: int | None = -1) -> Any:
        return await self._file.readlines(hint)

    async def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return await self._file.seek(offset, whence)  # type: ignore[no-any-return]

    async def tell(self) -> int:
        return await self._file.tell()  # type: ignore[no-any-return]

    async def flush(self) -> None:
        await self._file.flush()

    async def aclose(self) -> None:
        """Close the memory or the file (whose name is gone already)."""
        await self._file.aclose()


class TemporaryDirectory:
    """``tempfile.TemporaryDirectory``: ``async with`` it for the new directory's name
    (``mkdtemp``, in a thread); on exit the tree is removed (``shutil.rmtree``, in a
    thread; errors ignored with ``ignore_cleanup_errors``) unless ``delete`` is False.

    Or ``await`` it, as ``aiofiles.tempfile.TemporaryDirectory``: that makes the directory
    and gives this object, whose ``name`` is its path; ``await cleanup()`` (or
    ``close()``) removes it. Awaiting again, or entering ``async with`` after, makes no
    second directory."""

    def __init__(
        self,
        suffix: str | None = None,
        prefix: str | None = None,
        dir: PathArg = None,
        ignore_cleanup_errors: bool = False,
        *,
        delete: bool = True,
    ) -> None:
        self._args = (suffix, prefix, dir)
        self._ignore = ignore_cleanup_errors
        self.delete = delete
        self.name: str | None = None

    async def cleanup(self) -> None:
        """Remove the directory and all in it (once made; later calls do nothing)."""
        if self.name is not None and os.path.lexists(self.name):
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, self.name, self._ignore)

    async def close(self) -> None:
        """:meth:`cleanup` (aiofiles' ``AsyncTemporaryDirectory.close``)."""
        await self.cleanup()

    async def _make(self) -> str:
        if self.name is None:
            self.name = await anyio.to_thread.run_sync(tempfile.mkdtemp, *self._args)
        return self.name

    async def _made(self) -> TemporaryDirectory:
        await self._make()
        return self

    def __await__(self) -> Generator[Any, None, TemporaryDirectory]:
        return self._made().__await__()

    async def __aenter__(self) -> str:
        return await self._make()

    async def __aexit__(self, *exc: object) -> None:
        if self.delete:
            await self.cleanup()
