"""One pollable fd for a wrapper driver: readable when its own flag is raised *or* the
wrapped driver's completion fd is readable.

An IOContext watches exactly one fd per driver. A wrapper that completes some ops itself
(an injected failure never reaches the real driver; a delayed completion is released by a
timer; the thread fallback, :mod:`aiopg_io.drivers._fallback`, runs kinds the driver lacks)
needs its own :class:`~aiopg_io.drivers._notify.Notifier`, yet the real driver keeps
signalling on its fd. Both are registered, level-triggered, in an epoll (Linux) or kqueue
(BSD, macOS) instance, and the instance's own fd is what the context watches: an epoll or
kqueue fd polls readable while any registered event is pending (epoll(7), "Q: Can an epoll
file descriptor itself be polled/epolled/selected? A: Yes."; kqueue(2) likewise). Nothing
is ever read from the multiplexer: readiness is cleared at the sources (the notifier and the
wrapped driver's ``reap``), which level-triggering then reflects.
"""

from __future__ import annotations

import select

from ._notify import Notifier

__all__ = ["Mux"]


class Mux:
    def __init__(self, inner_fd: int | None) -> None:
        self.notifier = Notifier()
        self._poller: object = None
        self._fd = self.notifier.fileno()
        if inner_fd is None:
            return
        fds = (self.notifier.fileno(), inner_fd)
        if hasattr(select, "epoll"):
            ep = select.epoll()
            for fd in fds:
                ep.register(fd, select.EPOLLIN)
            self._poller, self._fd = ep, ep.fileno()
        elif hasattr(select, "kqueue"):
            # getattr: typeshed declares the kqueue names only for the BSDs and macOS.
            kevent, read, add = (getattr(select, n) for n in ("kevent", "KQ_FILTER_READ", "KQ_EV_ADD"))
            kq = select.kqueue()
            kq.control([kevent(fd, read, add) for fd in fds], 0, 0)
            self._poller, self._fd = kq, kq.fileno()
        else:  # pragma: no cover - every platform aiopg_io supports has one of the two
            self.notifier.close()
            raise OSError("neither epoll nor kqueue is available to wrap a driver's completion fd")

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        closer = getattr(self._poller, "close", None)
        if closer is not None:
            closer()
        self.notifier.close()
