"""``aiopg_io.os.path``: ``aiofiles.os.path``'s calls (``os.path``'s, awaited), each the
``os.path`` function itself in a thread (``aiopg_io/_oscalls.py``): the predicates return
False where ``os.path``'s do (a missing path, a NUL byte), and the rest raise what
``os.path``'s raise."""

from __future__ import annotations

import os.path

from ._oscalls import PathArg, in_thread

__all__ = [
    "abspath",
    "exists",
    "getatime",
    "getctime",
    "getmtime",
    "getsize",
    "isdir",
    "isfile",
    "islink",
    "ismount",
    "samefile",
    "sameopenfile",
]

FdOrPath = int | PathArg


async def exists(path: FdOrPath) -> bool:
    """``os.path.exists``, in a thread."""
    return await in_thread(os.path.exists, path)


async def isfile(path: FdOrPath) -> bool:
    """``os.path.isfile``, in a thread."""
    return await in_thread(os.path.isfile, path)


async def isdir(s: FdOrPath) -> bool:
    """``os.path.isdir``, in a thread."""
    return await in_thread(os.path.isdir, s)


async def islink(path: PathArg) -> bool:
    """``os.path.islink``, in a thread."""
    return await in_thread(os.path.islink, path)


async def ismount(path: PathArg) -> bool:
    """``os.path.ismount``, in a thread."""
    return await in_thread(os.path.ismount, path)


async def getsize(filename: FdOrPath) -> int:
    """``os.path.getsize``, in a thread."""
    return await in_thread(os.path.getsize, filename)


async def getatime(filename: FdOrPath) -> float:
    """``os.path.getatime``, in a thread."""
    return await in_thread(os.path.getatime, filename)


async def getmtime(filename: FdOrPath) -> float:
    """``os.path.getmtime``, in a thread."""
    return await in_thread(os.path.getmtime, filename)


async def getctime(filename: FdOrPath) -> float:
    """``os.path.getctime``, in a thread."""
    return await in_thread(os.path.getctime, filename)


async def samefile(f1: FdOrPath, f2: FdOrPath) -> bool:
    """``os.path.samefile``, in a thread."""
    return await in_thread(os.path.samefile, f1, f2)


async def sameopenfile(fp1: int, fp2: int) -> bool:
    """``os.path.sameopenfile``, in a thread."""
    return await in_thread(os.path.sameopenfile, fp1, fp2)


async def abspath(path: PathArg) -> str | bytes:
    """``os.path.abspath`` (which may call ``os.getcwd``), in a thread."""
    return await in_thread(os.path.abspath, path)
