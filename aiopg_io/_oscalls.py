"""The two ways an ``aiopg_io.os`` call runs: an op through the loop's IOContext, or a thread.

- An op (rename, unlink, rmdir, mkdir): the path is checked the way ``os`` checks it (its
  ``path_converter`` in Modules/posixmodule.c: str, bytes or os.PathLike, else TypeError
  "``fn``: ``arg`` should be string, bytes or os.PathLike, not ``type``"; a NUL byte is
  the ValueError :func:`aiopg_io._checks.nul_byte_error` gives for the Python version), then
  it runs on the loop's context for ``driver``, natively where the driver has the kind,
  else in the fallback's threads (drivers/_fallback.py). The context is held until the loop ends
  (:meth:`IOContext.hold_for_loop`): a hundred calls share one driver instead of making
  and closing a ring or a thread pool each. An error names the paths as given (bytes stay
  bytes, a PathLike its ``fspath``), as ``os``'s errors do.
- A thread (everything the kernel has no op for here, and calls that take an fd or a
  ``dir_fd``): the ``os`` function itself in ``anyio.to_thread.run_sync`` (anyio's
  default limiter), so its arguments, results and errors are ``os``'s exactly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

from ._checks import has_nul, nul_byte_error
from ._context import get_context
from ._paths import Driver, _run
from .drivers.base import Op

__all__ = ["PathArg", "checked_path", "in_thread", "run_op"]

T = TypeVar("T")
PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def checked_path(fn: str, arg: str, value: object) -> str | bytes:
    """``value`` as ``os`` takes it (its ``fspath``), refused as ``os`` refuses it."""
    if isinstance(value, (str, bytes)):
        p: str | bytes = value
    elif isinstance(value, os.PathLike):
        p = os.fspath(value)
    else:
        raise TypeError(f"{fn}: {arg} should be string, bytes or os.PathLike, not {type(value).__name__}")
    if has_nul(p):
        raise nul_byte_error(fn, arg, isinstance(p, bytes))
    return p


async def run_op(op: Op, driver: Driver, path: str | bytes, newpath: str | bytes | None = None) -> int:
    """Run ``op`` on the loop's held context; an OSError names ``path`` (and ``newpath``)."""
    ctx = get_context(driver)
    ctx.hold_for_loop()
    ctx.acquire()  # for a loop that has ended already (no hold): closed again below
    try:
        return await _run(ctx, op)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, path, None, newpath) from None
    finally:
        with anyio.CancelScope(shield=True):
            await ctx.release()


async def in_thread(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (anyio's, with its default limiter)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
