"""A write-ahead log with group commit, recovery and a streaming reader (PostgreSQL's WAL).

See :mod:`aiopg_io.wal._wal` for how it works (it names the module of each part) and
:mod:`aiopg_io.wal._format` for the on-disk format.
"""

from __future__ import annotations

from ._flush import SyncMethod as SyncMethod
from ._format import PAGE_SIZE as PAGE_SIZE
from ._reader import WALEnd as WALEnd
from ._reader import WALEndKind as WALEndKind
from ._reader import WALReader as WALReader
from ._recovery import WALRecovery as WALRecovery
from ._wal import WAL as WAL
from ._wal import WALStatistics as WALStatistics
from .errors import NotAWALError as NotAWALError
from .errors import WALCorruptError as WALCorruptError
from .errors import WALError as WALError
from .errors import WALFormatError as WALFormatError
from .errors import WALLockedError as WALLockedError
from .errors import WALPoisonedError as WALPoisonedError

__all__ = [
    "PAGE_SIZE",
    "WAL",
    "NotAWALError",
    "SyncMethod",
    "WALCorruptError",
    "WALEnd",
    "WALEndKind",
    "WALError",
    "WALFormatError",
    "WALLockedError",
    "WALPoisonedError",
    "WALReader",
    "WALRecovery",
    "WALStatistics",
]
