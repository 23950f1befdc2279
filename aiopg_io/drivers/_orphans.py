"""Rings collected without ``close()`` whose ops the kernel has not returned: kept, not freed.

An io_uring op names its buffers by address. The kernel writes into them until it posts the
op's CQE, whatever became of the Python objects: closing the ring fd does not wait for that
(the kernel tears a ring down in a work item, ``io_ring_exit_work`` in io_uring/io_uring.c,
after the close has returned), a read an io-wq worker is running finishes its copy, and an
O_DIRECT read's pages stay pinned for the device. So a ring whose owner is collected with
ops in flight must not drop the references that keep those buffers alive before their CQEs:
the driver's finalizer cancels everything and waits a little (``IoUringDriver.__del__``);
what the kernel still holds after that is parked here, the driver with its ring, ops and
buffers kept alive on purpose, and one daemon thread waits on the parked drivers'
completion fds and releases each (ring fd, eventfd, buffers) once its last CQE is in.

A forked child inherits the list but not the rings (their mappings are ``MADV_DONTFORK``)
nor the thread: the child forgets them, and never touches their rings.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Protocol

__all__ = ["Orphan", "park", "parked"]

#: How long the thread sleeps between looks when no completion fd wakes it (a cancel that
#: found no SQ slot is retried on the next look).
_POLL_SECONDS = 0.5


class Orphan(Protocol):
    def orphan_fd(self) -> int:
        """The fd that turns readable when the kernel posts a CQE."""
        ...

    def orphan_step(self) -> bool:
        """Reap what came back (and re-send the cancel where it found no room); True once
        the kernel holds nothing more and ring and fds are released."""
        ...


_lock = threading.Lock()
_parked: list[Orphan] = []
_thread: list[threading.Thread] = []


def park(orphan: Orphan) -> None:
    """Keep ``orphan`` alive until its ``orphan_step`` says it is released."""
    with _lock:
        _parked.append(orphan)
        if not _thread:
            t = threading.Thread(target=_run, name="aiopg_io-uring-orphans", daemon=True)
            _thread.append(t)
            t.start()


def parked() -> int:
    """How many rings are kept alive here for the kernel (tests and ``info`` read it)."""
    with _lock:
        return len(_parked)


def _run() -> None:
    while True:
        with _lock:
            items = list(_parked)
            if not items:
                _thread.clear()
                return
        try:
            select.select([o.orphan_fd() for o in items], [], [], _POLL_SECONDS)
        except (OSError, ValueError):
            pass  # a released fd raced with the list: the steps below sort it out
        for o in items:
            try:
                done = o.orphan_step()
            except Exception:  # a ring that cannot be reaped stays parked: safe
                done = False
            if done:
                with _lock:
                    _parked.remove(o)


def _after_fork_in_child() -> None:
    # The rings are the parent's: the child keeps no claim on them and runs no thread (and
    # the lock may have been held by that thread when the parent forked).
    global _lock
    _lock = threading.Lock()
    _parked.clear()
    _thread.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
