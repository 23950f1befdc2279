"""``aiopg_io.os.path``: ``aiofiles.os.path``'s calls (``os.path``'s, awaited).

:func:`exists`, :func:`isfile`, :func:`isdir`, :func:`islink`, :func:`getsize` and the
``get*time`` calls are ``os.path``'s steps over :func:`aiopg_io.os.stat` /
:func:`aiopg_io.os.lstat` (a STATX op through the loop's driver, ``driver=`` as theirs):
the predicates return False where ``os.path``'s do (an OSError or a ValueError such as a NUL
byte; a wrong type still raises), the rest raise what ``os.path``'s raise. The others
(:func:`ismount`, :func:`samefile`, :func:`sameopenfile`, :func:`abspath`) are the
``os.path`` function itself in a thread (``aiopg_io/_oscalls.py``). ``limiter=`` is as in
:mod:`aiopg_io.os`.
"""

from __future__ import annotations

import os.path
import stat as stat_module

from . import os as aos
from ._oscalls import Limiter, PathArg, in_thread
from ._paths import Driver

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


async def _mode(path: FdOrPath, follow: bool, driver: Driver, limiter: Limiter) -> int | None:
    """The file's ``st_mode``, or None where ``os.path``'s predicates answer False."""
    try:
        if follow:
            st = await aos.stat(path, driver=driver, limiter=limiter)
        else:
            st = await aos.lstat(path, driver=driver, limiter=limiter)  # type: ignore[arg-type]
    except (OSError, ValueError):
        return None
    return st.st_mode


async def exists(path: FdOrPath, *, driver: Driver = None, limiter: Limiter = None) -> bool:
    """``os.path.exists``: a STATX op (False for a dangling link)."""
    return await _mode(path, True, driver, limiter) is not None


async def isfile(path: FdOrPath, *, driver: Driver = None, limiter: Limiter = None) -> bool:
    """``os.path.isfile``: a STATX op."""
    mode = await _mode(path, True, driver, limiter)
    return mode is not None and stat_module.S_ISREG(mode)


async def isdir(s: FdOrPath, *, driver: Driver = None, limiter: Limiter = None) -> bool:
    """``os.path.isdir``: a STATX op."""
    mode = await _mode(s, True, driver, limiter)
    return mode is not None and stat_module.S_ISDIR(mode)


async def islink(path: PathArg, *, driver: Driver = None, limiter: Limiter = None) -> bool:
    """``os.path.islink``: a STATX op that does not follow the link."""
    mode = await _mode(path, False, driver, limiter)
    return mode is not None and stat_module.S_ISLNK(mode)


async def ismount(path: PathArg, *, limiter: Limiter = None) -> bool:
    """``os.path.ismount``, in a thread."""
    return await in_thread(os.path.ismount, path, limiter=limiter)


async def getsize(filename: FdOrPath, *, driver: Driver = None, limiter: Limiter = None) -> int:
    """``os.path.getsize``: a STATX op's ``st_size``."""
    return (await aos.stat(filename, driver=driver, limiter=limiter)).st_size


async def getatime(filename: FdOrPath, *, driver: Driver = None, limiter: Limiter = None) -> float:
    """``os.path.getatime``: a STATX op's ``st_atime``."""
    return (await aos.stat(filename, driver=driver, limiter=limiter)).st_atime


async def getmtime(filename: FdOrPath, *, driver: Driver = None, limiter: Limiter = None) -> float:
    """``os.path.getmtime``: a STATX op's ``st_mtime``."""
    return (await aos.stat(filename, driver=driver, limiter=limiter)).st_mtime


async def getctime(filename: FdOrPath, *, driver: Driver = None, limiter: Limiter = None) -> float:
    """``os.path.getctime``: a STATX op's ``st_ctime``."""
    return (await aos.stat(filename, driver=driver, limiter=limiter)).st_ctime


async def samefile(f1: FdOrPath, f2: FdOrPath, *, limiter: Limiter = None) -> bool:
    """``os.path.samefile``, in a thread."""
    return await in_thread(os.path.samefile, f1, f2, limiter=limiter)


async def sameopenfile(fp1: int, fp2: int, *, limiter: Limiter = None) -> bool:
    """``os.path.sameopenfile``, in a thread."""
    return await in_thread(os.path.sameopenfile, fp1, fp2, limiter=limiter)


async def abspath(path: PathArg, *, limiter: Limiter = None) -> str | bytes:
    """``os.path.abspath`` (which may call ``os.getcwd``), in a thread."""
    return await in_thread(os.path.abspath, path, limiter=limiter)
