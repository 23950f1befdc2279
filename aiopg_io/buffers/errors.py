"""The exceptions the buffer pool raises (each also a built-in a caller already catches)."""

from __future__ import annotations

from ..errors import AiopgIOError

__all__ = ["BlockOutOfRangeError", "NoUnpinnedBuffersError", "RelationSizeError"]


class NoUnpinnedBuffersError(AiopgIOError, RuntimeError):
    """Every buffer is pinned and no task that could unpin one is able to run.

    PostgreSQL raises "no unpinned buffers available" in the same state; waiting would hang.
    Release pages (``with page:``), read fewer at once, or make the pool larger.
    """


class BlockOutOfRangeError(AiopgIOError, IndexError):
    """A block number at or past the end of the relation (or negative); ``extend`` first."""


class RelationSizeError(AiopgIOError, ValueError):
    """A relation file whose size is not a whole number of pages."""
