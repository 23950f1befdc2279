"""A pollable "completions are ready" flag that threads can raise cheaply.

Linux has eventfd(2): one fd, an 8-byte counter, readable while non-zero. Elsewhere a
non-blocking pipe does the same job. Either way a thread raises the flag at most once until
the reaper lowers it, so a burst of completions costs one system call, not one each.

Ordering (why :meth:`clear` reads the fd *before* lowering ``_raised``): a thread appends
its completion, then raises the flag if it is down. If the reaper lowered the flag first and
read the fd after, a thread could raise in between and have its wake-up eaten while the flag
stays up, and no later completion would ever signal again.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["Notifier"]


class Notifier:
    def __init__(self) -> None:
        self._raised = False
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._rfd = self._wfd = fd
        else:
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)
        self._closed = False
        #: Called (from the raising thread) each time the flag goes up, for an event loop
        #: that cannot watch the fd (see Driver.notify_with).
        self.on_raise: Callable[[], None] | None = None

    def fileno(self) -> int:
        return self._rfd

    def raise_flag(self) -> None:
        """Make the fd readable (from any thread); cheap when it already is."""
        if self._raised or self._closed:
            return
        self._raised = True
        try:
            os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except BlockingIOError:  # pipe full: it is readable already
            pass
        if self.on_raise is not None:
            self.on_raise()

    def clear(self) -> None:
        """Make the fd unreadable; call before collecting completions."""
        try:
            os.read(self._rfd, 4096)
        except BlockingIOError:
            # Raised but not written yet: a thread is between the two steps of raise_flag
            # (os.write lets go of the GIL). Its write is coming, so the flag stays up: were
            # it lowered here, the fd would be readable with the flag down, and
            # clear_if_raised would never read it (the loop would spin on it).
            if self._raised:
                return
        self._raised = False

    def clear_if_raised(self) -> bool:
        """:meth:`clear` where the flag is up; False, with no system call, where it is down.
        The fd is written only after the flag went up (:meth:`raise_flag`), so a flag seen
        down means nothing to clear; a raise after that look leaves the fd readable."""
        if not self._raised:
            return False
        self.clear()
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.close(self._rfd)
        if self._wfd != self._rfd:
            os.close(self._wfd)
