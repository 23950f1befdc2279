"""The ``posix_aio`` driver: aio_read / aio_write / aio_fsync / lio_listio through ctypes.

PostgreSQL's porting-branch ``io_method=posix_aio``. On FreeBSD this is kernel AIO and beats
a thread pool; on Linux glibc implements POSIX AIO with its own threads in user space, so the
driver is mostly a second opinion there (and what the whole suite also runs against).

One job per module, each opening with the kernel and C-library facts it relies on:

- ``_layouts``: the C structures (``struct aiocb``, ``struct sigevent``, ...) per system.
- ``_platforms``: what each system's AIO is (constants, limits, which notifier), and the
  one place that chooses this machine's (:func:`tested_here` says whether the tests run it).
- ``_libc``: the aio_* functions bound through ctypes, and the probe that tries them.
- ``_requests``: a request (one aiocb) and a run (the requests of one op's round).
- ``_notifiers``: how completions reach the loop: a thread in ``aio_suspend`` (Linux, and
  the macOS fallback) or a kqueue (FreeBSD).
- ``_driver``: :class:`PosixAioDriver`: building requests from ops, queueing, lio_listio,
  short transfers, cancellation, fd spreading.
"""

from __future__ import annotations

from ._driver import PosixAioDriver as PosixAioDriver
from ._platforms import DEFAULT_KERNEL_LIMIT as DEFAULT_KERNEL_LIMIT
from ._platforms import tested_here as tested_here

__all__ = ["DEFAULT_KERNEL_LIMIT", "PosixAioDriver", "tested_here"]

# The class reports the module users import it from, as it did before the split: `info`
# finds ``tested_here`` through it, and reprs and pickles keep their name.
PosixAioDriver.__module__ = __name__
