"""The two ways an ``aiopg_io.os`` call runs: an op through the loop's IOContext, or a thread.

- An op (rename, unlink, rmdir, mkdir, stat, link, symlink): the path is checked the way ``os`` checks it (its
  ``path_converter`` in Modules/posixmodule.c: str, bytes or os.PathLike, else TypeError
  "``fn``: ``arg`` should be string, bytes or os.PathLike, not ``type``"; a NUL byte is
  the ValueError :func:`aiopg_io._checks.nul_byte_error` gives for the Python version), then
  it runs on the loop's context for ``driver``, natively where the driver has the kind,
  else in the fallback's threads (drivers/_fallback.py). The context is held until the loop ends
  (:meth:`IOContext.hold_for_loop`): a hundred calls share one driver instead of making
  and closing a ring or a thread pool each. An error names the paths as given (bytes stay
  bytes, a PathLike its ``fspath``), as ``os``'s errors do.
- A thread (everything the kernel has no op for here, and calls that take an fd or a
  ``dir_fd``): the ``os`` function itself in ``anyio.to_thread.run_sync``, so its
  arguments, results and errors are ``os``'s exactly.

``limiter`` (an ``anyio.CapacityLimiter``, or None for anyio's default one) means what it
means in anyio: it bounds the threads used on the call's behalf. A thread call runs in
``to_thread.run_sync(..., limiter=limiter)``; an op takes a token for its whole run when
its kind runs on a thread of this process (:attr:`Capabilities.threaded_kinds`: every kind
on the worker driver, the fallback's kinds on posix_aio and io_uring_c), and ignores it
where the op uses no thread (io_uring's own opcodes, the sync driver), as a file's ops do.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

from ._checks import has_nul, nul_byte_error
from ._context import get_context
from ._paths import Driver, run_path_op
from .drivers.base import Op

__all__ = ["Limiter", "PathArg", "checked_limiter", "checked_path", "in_thread", "run_op"]

T = TypeVar("T")
PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]
Limiter = anyio.CapacityLimiter | None


def checked_limiter(limiter: object) -> Limiter:
    """``limiter`` if it is a CapacityLimiter or None; else the TypeError ``open`` gives."""
    if limiter is not None and not isinstance(limiter, anyio.CapacityLimiter):
        raise TypeError(f"limiter must be a CapacityLimiter or None, not {type(limiter).__name__}")
    return limiter


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


async def run_op(
    op: Op, driver: Driver, path: str | bytes, newpath: str | bytes | None = None, limiter: Limiter = None
) -> int:
    """Run ``op`` on the loop's held context; an OSError names ``path`` (and ``newpath``).
    ``limiter`` bounds it where its kind runs on a thread (see the module docstring)."""
    checked_limiter(limiter)
    ctx = get_context(driver)
    ctx.hold_for_loop()
    ctx.acquire()  # for a loop that has ended already (no hold): closed again below
    if limiter is not None and op.kind not in ctx.driver.capabilities.threaded_kinds:
        limiter = None
    try:
        if limiter is not None:
            # The op is the borrower, as for a file's ops: a task holding a token of the
            # same limiter can still make the call.
            await limiter.acquire_on_behalf_of(op)
        try:
            return await run_path_op(ctx, op)
        finally:
            if limiter is not None:
                limiter.release_on_behalf_of(op)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, path, None, newpath) from None
    finally:
        with anyio.CancelScope(shield=True):
            await ctx.release()


async def in_thread(fn: Callable[..., T], *args: object, limiter: Limiter = None, **kwargs: object) -> T:
    """``fn(*args, **kwargs)`` in one of anyio's worker threads, bounded by ``limiter``
    (None: anyio's default limiter)."""
    call = functools.partial(fn, *args, **kwargs)
    return await anyio.to_thread.run_sync(call, limiter=checked_limiter(limiter))
