"""The random path: a buffer pool with pins, clock-sweep eviction, write-back and read streams.

See ``_pool.py`` (the pool and its two read calls, after PostgreSQL's bufmgr.c),
``_writeback.py`` (write-back and checkpoints, after bufmgr.c's FlushBuffer and BufferSync),
``_descriptors.py`` (descriptors and the clock sweep, after freelist.c) and
``_read_stream.py`` (look-ahead, after read_stream.c).
"""

from __future__ import annotations

from ._pool import BufferPool as BufferPool
from ._pool import BufferPoolStatistics as BufferPoolStatistics
from ._pool import Page as Page
from ._pool import PageRun as PageRun
from ._pool import ReadBuffersOperation as ReadBuffersOperation
from ._pool import Relation as Relation
from ._read_stream import ReadStream as ReadStream
from .errors import BlockOutOfRangeError as BlockOutOfRangeError
from .errors import NoUnpinnedBuffersError as NoUnpinnedBuffersError
from .errors import RelationInUseError as RelationInUseError
from .errors import RelationSizeError as RelationSizeError

__all__ = [
    "BlockOutOfRangeError",
    "BufferPool",
    "BufferPoolStatistics",
    "NoUnpinnedBuffersError",
    "Page",
    "PageRun",
    "ReadBuffersOperation",
    "ReadStream",
    "Relation",
    "RelationInUseError",
    "RelationSizeError",
]
