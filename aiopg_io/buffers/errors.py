"""The exceptions the buffer pool raises (each also a built-in a caller already catches)."""

from __future__ import annotations

import operator
from typing import SupportsIndex

from ..errors import AiopgIOError

__all__ = ["BlockOutOfRangeError", "NoUnpinnedBuffersError", "RelationInUseError", "RelationSizeError"]


class NoUnpinnedBuffersError(AiopgIOError, RuntimeError):
    """Every buffer is pinned and no task that could unpin one is able to run.

    PostgreSQL raises "no unpinned buffers available" in the same state; waiting would hang.
    Release pages (``with page:``), read fewer at once, or make the pool larger.
    """


class BlockOutOfRangeError(AiopgIOError, IndexError):
    """A block number at or past the end of the relation (or negative); ``extend`` first."""


class RelationSizeError(AiopgIOError, ValueError):
    """A relation file whose size is not a whole number of pages."""


class RelationInUseError(AiopgIOError, RuntimeError):
    """The file is open as a relation in another buffer pool of this process.

    Two pools would each cache their own copy of its pages, and neither sees the other's
    changes: one serves a stale page after the other's checkpoint. The file is recognised by
    its identity (``st_dev``, ``st_ino``), so another path to it (a symlink, a relative path,
    a hard link) is refused too. Share one pool, or close the relation in the other pool
    (``close_relation``, or leave its ``async with``) first.
    """


def at_least_one(name: str, value: SupportsIndex) -> int:
    """``value`` as an int (``operator.index``; a bool is TypeError), or ValueError naming it
    when below 1: the check of every count the pool and its read streams take."""
    if isinstance(value, bool):  # True would be a count of 1
        raise TypeError(f"{name} must be an integer, not bool")
    n = operator.index(value)
    if n < 1:
        raise ValueError(f"{name} {n} must be at least 1")
    return n


#: The bound on ``io_combine_limit`` and ``write_combine_limit``: PostgreSQL 18's bound on
#: io_combine_limit and io_max_combine_limit, PG_IOV_MAX (128 blocks, 1 MB of 8 KiB pages,
#: commit 06fb5612): an I/O is one iovec per block at most, well under IOV_MAX (1024 on
#: Linux), past which readv/writev fail with EINVAL (readv(2)).
MAX_COMBINE_LIMIT = 128


def combine_limit(name: str, value: SupportsIndex) -> int:
    """``value`` as a count of blocks one I/O combines, or ValueError naming it and the
    bound when below 1 or above :data:`MAX_COMBINE_LIMIT`: the check of ``io_combine_limit``
    (the pool's and a read stream's) and ``write_combine_limit``."""
    n = at_least_one(name, value)
    if n > MAX_COMBINE_LIMIT:
        raise ValueError(
            f"{name} {n} must be at most {MAX_COMBINE_LIMIT} "
            "(blocks in one I/O: PostgreSQL's bound on io_combine_limit, PG_IOV_MAX)"
        )
    return n
