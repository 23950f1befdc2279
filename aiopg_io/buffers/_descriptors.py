"""Buffer descriptors and the clock sweep that picks a victim to reuse.

This is PostgreSQL's ``BufferDesc`` (src/include/storage/buf_internals.h) and
``StrategyGetBuffer`` (src/backend/storage/buffer/freelist.c), minus what one thread on one
event loop does not need (spinlocks, atomics, per-backend private refcounts):

- A descriptor names the page it holds (its *tag*: relation and block number), counts its
  pins (``refcount``) and how recently it was used (``usage_count``, capped at
  ``BM_MAX_USAGE_COUNT`` = 5), and carries the flags ``valid`` (the bytes are the page's),
  ``dirty`` (they differ from the file) and an I/O in progress (``io``, PostgreSQL's
  ``BM_IO_IN_PROGRESS``: a read filling it or a write draining it).
- ``checkpoint_needed`` is PostgreSQL's ``BM_CHECKPOINT_NEEDED``, one bit per checkpoint
  running (``_writeback.Checkpoint.bit``): the checkpoints that began while the page was
  dirty and still need a write of it that starts from now on. A write takes the bits along
  when it starts and, once it has completed, tells each checkpoint that the page is
  written; a write that fails gives them back. Bits in an int rather than a set of
  checkpoints: a checkpoint of N pages then makes no container per page, which the cyclic
  garbage collector would otherwise traverse again and again while the write-back runs.
- A buffer never used, or whose read failed, sits on the free list and is taken first.
- Otherwise the clock hand sweeps: a buffer that is pinned or under I/O is skipped; one
  with a usage count loses one and is passed over; the first unpinned, idle buffer with a
  usage count of zero is the victim. A pin raises the usage count, so a page used often
  survives several sweeps. As in freelist.c, the sweep gives up after passing every buffer
  once without finding one it could even decrement (``trycounter``): everything is pinned
  or busy, and sweeping again cannot help.

Nothing here awaits, so every check-then-claim sequence is atomic with respect to other
tasks on the loop; the pool (``_pool.py``, ``_writeback.py``) keeps its awaits outside
those sequences.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._glue import Park
    from ._pool import Relation

__all__ = ["BM_MAX_USAGE_COUNT", "BufferDesc", "ClockSweep", "InFlightIO", "InFlightWrite", "io_views"]

BM_MAX_USAGE_COUNT = 5


class InFlightIO:
    """A read filling, or a write draining, one or more buffers (``BM_IO_IN_PROGRESS``).

    ``done`` is set by :meth:`finish`, where the completion is reaped; tasks that need the
    buffers :meth:`wait`, each on a one-shot wake-up of the loop's glue (cheaper than an
    ``anyio.Event``, and nothing is made unless someone waits). The pool owns the glue of
    its loop and passes its ``park``, so no wait looks the running loop up again."""

    __slots__ = ("_parks", "done", "error", "kind")

    def __init__(self, kind: str = "read") -> None:
        self.kind = kind  # "read" or "write"
        self.done = False
        self.error: BaseException | None = None
        self._parks: list[Park] | None = None  # made by the first wait: most I/Os have none

    async def wait(self, park: Callable[[], Park]) -> None:
        """Return once the I/O has ended (at once if it has); ``park`` is the loop glue's."""
        if self.done:
            return
        p = park()
        if self._parks is None:
            self._parks = [p]
        else:
            self._parks.append(p)
        await p.wait()

    def finish(self) -> None:
        """The I/O ended: wake every task waiting for it (a cancelled wait takes no wake-up)."""
        self.done = True
        parks = self._parks
        if parks is not None:
            self._parks = None
            for park in parks:
                park.set()


class InFlightWrite(InFlightIO):
    """A write (:class:`InFlightIO` of kind ``"write"``) and the checkpoints it writes for:
    ``carries`` maps each of its buffers not written yet to the bits of the checkpoints
    (see ``_writeback.Checkpoint``) it is written for; what is left there when the write
    ends was not written. Its own class so that a read, one per miss, makes no dict."""

    __slots__ = ("carries",)

    def __init__(self) -> None:
        super().__init__("write")
        self.carries: dict[BufferDesc, int] = {}


class BufferDesc:
    """One buffer of the arena and what it holds."""

    __slots__ = (
        "blockno",
        "buf_id",
        "checkpoint_needed",
        "data",
        "dirty",
        "io",
        "refcount",
        "rel",
        "usage_count",
        "valid",
    )

    def __init__(self, buf_id: int, data: memoryview) -> None:
        self.buf_id = buf_id
        self.data = data  # this buffer's slice of the arena, for the whole life of the pool
        self.rel: Relation | None = None  # the tag: (rel, blockno); rel None = no page
        self.blockno = -1
        self.refcount = 0
        self.usage_count = 0
        self.valid = False
        self.dirty = False
        self.io: InFlightIO | None = None
        self.checkpoint_needed = 0  # bits of the checkpoints that need a write of it

    def __repr__(self) -> str:
        tag = f"{self.rel.path}:{self.blockno}" if self.rel is not None else "free"
        flags = "".join(
            f for f, on in (("V", self.valid), ("D", self.dirty), ("I", self.io is not None)) if on
        )
        return f"<BufferDesc {self.buf_id} {tag} pins={self.refcount} usage={self.usage_count} {flags}>"

    @property
    def reusable(self) -> bool:
        """Unpinned and idle: the sweep may take it once its usage count is zero."""
        return self.refcount == 0 and self.io is None

    def pin(self) -> None:
        self.refcount += 1
        if self.usage_count < BM_MAX_USAGE_COUNT:
            self.usage_count += 1


class ClockSweep:
    """The free list and the clock hand over a fixed array of descriptors."""

    def __init__(self, descs: list[BufferDesc]) -> None:
        self.descs = descs
        self.hand = 0
        self.free: deque[BufferDesc] = deque(descs)

    def release_to_freelist(self, desc: BufferDesc) -> None:
        """A buffer holding no page (never used, read failed, relation dropped)."""
        self.free.append(desc)

    def victim(self) -> BufferDesc | None:
        """An unpinned, idle buffer to reuse (clean or dirty), or None when there is none."""
        out: list[BufferDesc] = []
        dirty = self.clean_victims(1, out)
        if not out:
            return dirty
        out[0].refcount = 0
        return out[0]

    def clean_victims(self, n: int, out: list[BufferDesc]) -> BufferDesc | None:
        """Up to ``n`` clean victims appended to ``out`` in one sweep, in the order
        :meth:`victim` would find them, each pinned once (``refcount`` 1) so that the sweep
        cannot find it again: the caller's claim. Fewer when there is none, or at the first
        dirty victim, which is returned (unpinned: it must be written back before reuse; the
        hand has passed it). A read of ``n`` blocks takes its buffers with one call instead
        of ``n``: this loop runs once per page of every miss, so it spells ``reusable`` out
        and keeps the hand in a local."""
        got = 0
        free = self.free
        while free and got < n:
            desc = free.popleft()
            # A free-listed buffer may have been claimed again by a lookup since; skip it then.
            if desc.rel is None and desc.refcount == 0 and desc.io is None:
                desc.refcount = 1
                out.append(desc)
                got += 1
        if got == n:
            return None
        descs = self.descs
        size = len(descs)
        hand = self.hand
        trycounter = size
        try:
            while True:
                desc = descs[hand]
                hand += 1
                if hand == size:
                    hand = 0
                if desc.refcount == 0 and desc.io is None:
                    if desc.usage_count == 0:
                        if desc.dirty:
                            return desc
                        desc.refcount = 1
                        out.append(desc)
                        got += 1
                        if got == n:
                            return None
                    else:
                        desc.usage_count -= 1
                    trycounter = size
                else:
                    trycounter -= 1
                    if trycounter == 0:
                        return None
        finally:
            self.hand = hand

    def dirty_ahead(self, limit: int) -> Iterator[BufferDesc]:
        """Dirty buffers the hand will reach soon and could reuse at once if they were
        clean (unpinned, idle, usage count zero): what to write back in one batch.
        Looks at most one lap ahead, never moving the hand or touching usage counts."""
        descs = self.descs
        n = len(descs)
        found = 0
        for i in range(n):
            desc = descs[(self.hand + i) % n]
            if desc.dirty and desc.usage_count == 0 and desc.reusable:
                yield desc
                found += 1
                if found == limit:
                    return


def io_views(arena: memoryview, descs: list[BufferDesc], page_size: int) -> list[memoryview]:
    """The memory of ``descs`` (buffers of consecutive blocks) for one vectored I/O: one view
    when the buffers lie side by side in ``arena`` (as the clock hand and the free list tend
    to hand them out), which spares every layer below a step per page; else one per buffer."""
    first = descs[0].buf_id
    n = len(descs)
    if n > 1 and descs[-1].buf_id == first + n - 1:
        i = first
        for d in descs:
            if d.buf_id != i:
                break
            i += 1
        else:
            return [arena[first * page_size : (first + n) * page_size]]
    return [d.data for d in descs]
