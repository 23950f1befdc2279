"""The WAL directory: the lock, the listing, creating, recycling and removing segments.

Facts relied on:

- A new file's directory entry is durable only once the *directory* is fsynced, as
  PostgreSQL's ``durable_rename`` does after creating or renaming a segment
  (:mod:`aiopg_io._paths` has the fsync(2) facts and the one way this package does it).
- ``rename(2)`` replaces atomically: a crash leaves either the old name or the new one;
  ``RENAME_NOREPLACE`` (renameat2(2)) installs a segment only where none is.
  A segment is therefore built under a temporary name (allocated, zero-filled, fsynced)
  and only then renamed into place, as PostgreSQL's ``XLogFileInit`` does, so a segment
  name never refers to a half-made file.
- ``fallocate(2)`` mode 0 reserves blocks as *unwritten extents* on ext4/xfs; the first
  write into one converts it, a metadata change that makes the next ``fdatasync`` commit
  the journal. Writing zeros over the new segment up front (PostgreSQL's
  ``wal_init_zero = on``, its default) keeps commits to pure data syncs. Filesystems
  without fallocate (EOPNOTSUPP) get the zero fill alone.
- ``flock(2)`` locks belong to the open file description: a second ``open`` of the lock
  file, in this process or another, fails ``LOCK_NB`` with EWOULDBLOCK, and the lock goes
  away with the process (no stale lock after a crash, unlike a pid file).

- Recycling or removing a segment is one rename or one unlink followed by a directory
  fsync, one segment at a time, oldest first (PostgreSQL's ``RemoveOldXlogFiles`` goes
  through ``durable_rename`` / ``durable_unlink`` per file). Without the fsync between
  them, nothing promises that an earlier step reaches the disk before a later one
  (fsync(2) makes the directory's entries durable; it says nothing of their order before
  that, and whether one file system happens to keep it is not something to depend on): a
  power cut could then leave an old segment back with a gap after it (issue 20). Done
  in order, what survives a cut is always the log's segments from some point on, plus
  recycled segments under future numbers (their pages carry their old addresses).

Every create, rename, unlink and directory fsync is an op (:mod:`aiopg_io._paths`), run
through the IOContext like file I/O: the power-loss simulator records them from the ops it
is handed, which is how its tests check the directory fsyncs above.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable

import anyio
import anyio.to_thread

import aiopg_io
from aiopg_io import _paths
from aiopg_io._direct import aligned_buffer
from aiopg_io.drivers import DriverFactory

from ._format import segment_name, segment_number
from .errors import NotAWALError, WALLockedError

__all__ = [
    "CONTROL_NAME",
    "LOCK_NAME",
    "TEMP_PREFIX",
    "DirectoryLock",
    "create_segment",
    "list_segments",
    "recycle_or_remove",
    "remove_file",
]

LOCK_NAME = "wal.lock"
CONTROL_NAME = "wal.control"
TEMP_PREFIX = "xlogtemp."
_ZERO_CHUNK = 1024 * 1024


class DirectoryLock:
    """An exclusive flock on ``<directory>/wal.lock``, held while a WAL object is open."""

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                if pid:
                    holder = f" (last locked by pid {pid})"
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WALLockedError(
                    errno.EWOULDBLOCK,
                    f"the WAL in {directory!r} is already open in another WAL object or process{holder}; "
                    "close it first",
                    path,
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the last fd of the description drops the flock


def list_segments(directory: str) -> dict[int, str]:
    """The segments in ``directory`` by number; stale temporary files are removed.

    Raises NotAWALError naming the first entry that belongs to no WAL.
    """
    out: dict[int, str] = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        name = entry.name
        if name in (LOCK_NAME, CONTROL_NAME):
            continue
        if name.startswith(TEMP_PREFIX):
            # A segment under construction when a process died; we hold the lock now.
            os.unlink(entry.path)
            continue
        segno = segment_number(name)
        if segno is None or not entry.is_file(follow_symlinks=False):
            raise NotAWALError(
                f"{entry.path!r} is not part of a WAL (a WAL directory holds only segments named by "
                f"16 hex digits, {CONTROL_NAME} and {LOCK_NAME}); point WAL.open at an empty or WAL-only "
                "directory"
            )
        out[segno] = entry.path
    return out


async def create_segment(
    directory: str,
    segno: int,
    size: int,
    *,
    init_zero: bool,
    direct: bool,
    driver: str | DriverFactory | None,
    opener: Callable[[str, int], int] | None = None,
) -> bool:
    """Build segment ``segno`` (allocated, zero-filled if asked, fsynced) and rename it into
    place, then fsync the directory. False when it already existed (nothing changed)."""
    final = os.path.join(directory, segment_name(segno))
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}.{segment_name(segno)}")
    try:
        await _paths.create(tmp, driver, exclusive=False)
        async with aiopg_io.open(tmp, "w+b", direct=direct, driver=driver, opener=opener) as f:
            zero_fill = init_zero
            try:
                await f.fallocate(0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                zero_fill = True
            if zero_fill:
                zeros = aligned_buffer(min(_ZERO_CHUNK, size))
                off = 0
                while off < size:
                    n = min(len(zeros), size - off)
                    await f.pwrite(zeros[:n], off)
                    off += n
            await f.fsync()
        created = await _paths.rename(tmp, final, driver, replace=False)
        if not created:
            await _paths.unlink(tmp, driver)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _paths.unlink(tmp, driver, missing_ok=True)
        raise
    if created:
        await _paths.fsync_directory(directory, driver)
    return created


async def recycle_or_remove(
    directory: str, old: int, new: int | None, driver: str | DriverFactory | None
) -> bool:
    """Rename segment ``old`` to ``new`` (recycling it) or unlink it (``new`` None, or
    taken), then fsync the directory: the step is durable when this returns. True when
    recycled."""
    path = os.path.join(directory, segment_name(old))
    target = None if new is None else os.path.join(directory, segment_name(new))
    if target is not None and await _paths.rename(path, target, driver, replace=False):
        recycled = True
    else:
        await remove_file(path, driver)
        recycled = False
    await _paths.fsync_directory(directory, driver)
    return recycled


async def remove_file(path: str, driver: str | DriverFactory | None) -> None:
    """Unlink ``path`` (the caller fsyncs the directory)."""
    await _paths.unlink(path, driver)
