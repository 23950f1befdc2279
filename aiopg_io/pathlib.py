"""``aiopg_io.Path``: ``anyio.Path`` (pathlib's API, awaited where it touches the disk),
with the calls aiopg_io has routed through it.

It subclasses ``anyio.Path``, so every method exists and every path it returns (``/``,
``parent``, ``iterdir``, ``glob``, ``rename``...) is an ``aiopg_io.Path`` (anyio makes
them with ``type(self)``). These go through aiopg_io:

- ``open()`` is :func:`aiopg_io.open` (await it, or ``async with`` it); ``read_bytes``,
  ``read_text``, ``write_bytes``, ``write_text`` open an aiopg_io file, so their data
  moves through the loop's driver;
- ``rename``, ``replace``, ``unlink``, ``rmdir``, ``mkdir``, ``symlink_to``,
  ``hardlink_to`` are :mod:`aiopg_io.os`'s ops (RENAMEAT, UNLINKAT, MKDIRAT, SYMLINKAT,
  LINKAT through the driver); ``stat``, ``lstat``, ``exists``, ``is_file``, ``is_dir``,
  ``is_symlink`` are :mod:`aiopg_io.os` / ``aiopg_io.os.path`` calls (STATX ops).

The driver is the default one (``AIOPG_IO_DRIVER`` or ``auto``); a ``limiter`` given to
the path bounds its ``open`` (as :func:`aiopg_io.open`'s), its :mod:`aiopg_io.os` calls
(where they use a thread) and anyio's threads. Every other method (``iterdir``, ``glob``,
``touch``, ``chmod``, ``resolve``, ``readlink``, ``samefile``, ``walk``, ``copy``...) is
anyio's, unchanged: pathlib's call in a thread. Results and errors are pathlib's, by type and message.
"""

from __future__ import annotations

import os
import stat as stat_module
from typing import Any

import anyio

from . import os as aos
from . import ospath
from ._open import OpenCall
from ._open import open as aopen

__all__ = ["Path"]


class Path(anyio.Path):
    """``anyio.Path`` (pathlib's API, awaited where it touches the disk), with its file I/O
    and its entry calls through aiopg_io: ``open`` is :func:`aiopg_io.open`;
    ``read_bytes``/``read_text``/``write_bytes``/``write_text`` use an aiopg_io file;
    ``rename``/``replace``/``unlink``/``rmdir``/``mkdir``/``symlink_to``/``hardlink_to`` are
    :mod:`aiopg_io.os`'s ops, and ``stat``/``lstat``/``exists``/``is_file``/``is_dir``/
    ``is_symlink`` its calls. The other methods are
    anyio's, unchanged; returned paths are ``aiopg_io.Path``; errors are pathlib's."""

    __slots__ = ()

    def _lim(self) -> anyio.CapacityLimiter | None:
        lim: anyio.CapacityLimiter | None = getattr(self, "_limiter", None)
        return lim

    def open(
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> OpenCall:
        """:func:`aiopg_io.open` on this path: ``await`` it or ``async with`` it."""
        return aopen(self, mode, buffering, encoding, errors, newline, limiter=self._lim())

    async def read_bytes(self) -> bytes:
        """The file's bytes, read through an aiopg_io file."""
        async with self.open("rb") as f:
            data: bytes = await f.read()
            return data

    async def read_text(
        self, encoding: str | None = None, errors: str | None = None, newline: str | None = None
    ) -> str:
        """The file's text, read through an aiopg_io file (``newline`` as Python 3.13's)."""
        async with self.open("r", encoding=encoding, errors=errors, newline=newline) as f:
            text: str = await f.read()
            return text

    async def write_bytes(self, data: Any) -> int:
        """Write ``data`` (any bytes-like object) through an aiopg_io file, replacing the file."""
        view = memoryview(data)  # pathlib's check: a bytes-like object, before the file is made
        async with self.open("wb") as f:
            n: int = await f.write(view)
            return n

    async def write_text(
        self, data: str, encoding: str | None = None, errors: str | None = None, newline: str | None = None
    ) -> int:
        """Write ``data`` (a str) through an aiopg_io file, replacing the file."""
        if not isinstance(data, str):
            raise TypeError(f"data must be str, not {type(data).__name__}")
        async with self.open("w", encoding=encoding, errors=errors, newline=newline) as f:
            n: int = await f.write(data)
            return n

    async def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        """``aiopg_io.os.stat``."""
        return await aos.stat(self, follow_symlinks=follow_symlinks, limiter=self._lim())

    async def lstat(self) -> os.stat_result:
        """``aiopg_io.os.stat(follow_symlinks=False)``, as pathlib's ``lstat`` is (so its errors
        name ``stat``, as pathlib's do)."""
        return await aos.stat(self, follow_symlinks=False, limiter=self._lim())

    async def _mode_is(self, test: Any, follow_symlinks: bool) -> bool:
        try:
            st = await aos.stat(self, follow_symlinks=follow_symlinks, limiter=self._lim())
        except (OSError, ValueError):  # pathlib's predicates answer False, as os.path's
            return False
        return bool(test(st.st_mode))

    async def exists(self, *, follow_symlinks: bool = True) -> bool:
        """``aiopg_io.os.path.exists`` (or lstat, with ``follow_symlinks=False``)."""
        if follow_symlinks:
            return await ospath.exists(self, limiter=self._lim())
        return await self._mode_is(lambda m: True, False)

    async def is_file(self, *, follow_symlinks: bool = True) -> bool:
        """``aiopg_io.os.path.isfile`` (or lstat, with ``follow_symlinks=False``)."""
        if follow_symlinks:
            return await ospath.isfile(self, limiter=self._lim())
        return await self._mode_is(stat_module.S_ISREG, False)

    async def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        """``aiopg_io.os.path.isdir`` (or lstat, with ``follow_symlinks=False``)."""
        if follow_symlinks:
            return await ospath.isdir(self, limiter=self._lim())
        return await self._mode_is(stat_module.S_ISDIR, False)

    async def is_symlink(self) -> bool:
        """``aiopg_io.os.path.islink`` (a STATX op that does not follow the link)."""
        return await ospath.islink(self, limiter=self._lim())

    async def symlink_to(
        self, target: str | bytes | os.PathLike[str] | os.PathLike[bytes], target_is_directory: bool = False
    ) -> None:
        """``aiopg_io.os.symlink(target, self)`` (a SYMLINKAT op), as pathlib's."""
        await aos.symlink(target, self, target_is_directory, limiter=self._lim())

    async def hardlink_to(self, target: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
        """``aiopg_io.os.link(target, self)`` (a LINKAT op), as pathlib's."""
        await aos.link(target, self, limiter=self._lim())

    async def rename(self, target: str | os.PathLike[str]) -> Path:
        """``aiopg_io.os.rename`` (a RENAMEAT op); the new path."""
        await aos.rename(self, target, limiter=self._lim())
        return type(self)(target, limiter=self._lim())

    async def replace(self, target: str | os.PathLike[str]) -> Path:
        """``aiopg_io.os.replace`` (a RENAMEAT op); the new path."""
        await aos.replace(self, target, limiter=self._lim())
        return type(self)(target, limiter=self._lim())

    async def unlink(self, missing_ok: bool = False) -> None:
        """``aiopg_io.os.unlink`` (an UNLINKAT op); a missing file is fine with ``missing_ok``."""
        try:
            await aos.unlink(self, limiter=self._lim())
        except FileNotFoundError:
            if not missing_ok:
                raise

    async def rmdir(self) -> None:
        """``aiopg_io.os.rmdir`` (an UNLINKAT op)."""
        await aos.rmdir(self, limiter=self._lim())

    async def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        """``aiopg_io.os.mkdir`` (a MKDIRAT op), with pathlib's ``parents`` and ``exist_ok``."""
        # pathlib's steps: make it; missing parent -> make the parents first; exists -> fine
        # only for exist_ok on a directory.
        try:
            await aos.mkdir(self, mode, limiter=self._lim())
        except FileNotFoundError:
            if not parents or self.parent == self:
                raise
            await self.parent.mkdir(parents=True, exist_ok=True)
            await self.mkdir(mode, parents=False, exist_ok=exist_ok)
        except OSError:
            if not exist_ok or not await self.is_dir():
                raise
