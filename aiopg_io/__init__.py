"""aiopg_io: PostgreSQL's asynchronous I/O design for asyncio, uvloop and trio.

``aiopg_io.open`` gives awaitable files (a drop-in for ``aiofiles.open`` and
``anyio.open_file``) whose I/O goes through a driver: io_uring, POSIX AIO, a worker thread
pool, or inline. See the README and docs/ for the guide.
"""

from __future__ import annotations

from . import buffers as buffers
from . import os as os  # aiopg_io.os (aiofiles.os); not in __all__: a star-import must not shadow os
from . import tempfile as tempfile  # aiopg_io.tempfile (aiofiles.tempfile); not in __all__, as os
from . import wal as wal
from ._direct import Alignment as Alignment
from ._direct import aligned_buffer as aligned_buffer
from ._direct import dio_alignment as dio_alignment
from ._file import AsyncFile as AsyncFile
from ._open import open as open
from ._sendfile import SendfileResult as SendfileResult
from ._sendfile import sendfile as sendfile
from ._text import AsyncTextFile as AsyncTextFile
from ._wrap import WrappedFile as WrappedFile
from ._wrap import wrap as wrap
from .errors import AiopgIOError as AiopgIOError
from .errors import AlignmentError as AlignmentError
from .errors import ClosedError as ClosedError
from .errors import DirectIOUnsupportedError as DirectIOUnsupportedError
from .errors import DriverOptionError as DriverOptionError
from .errors import DriverUnavailableError as DriverUnavailableError
from .errors import InvalidOffsetError as InvalidOffsetError
from .errors import OpsStillHeldError as OpsStillHeldError
from .errors import SendfileError as SendfileError
from .errors import WrongLoopError as WrongLoopError
from .pathlib import Path as Path

__version__ = "0.1.0"

__all__ = [
    "AiopgIOError",
    "Alignment",
    "AlignmentError",
    "AsyncFile",
    "AsyncTextFile",
    "ClosedError",
    "DirectIOUnsupportedError",
    "DriverOptionError",
    "DriverUnavailableError",
    "InvalidOffsetError",
    "OpsStillHeldError",
    "Path",
    "SendfileError",
    "SendfileResult",
    "WrappedFile",
    "WrongLoopError",
    "aligned_buffer",
    "buffers",
    "dio_alignment",
    "open",
    "sendfile",
    "wal",
    "wrap",
]
