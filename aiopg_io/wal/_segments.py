"""The WAL directory: the lock, the listing, and the segments' lifecycle (create, recycle,
truncate, remove).

What it owns: which segments exist (:class:`WALSegments`), the segments being made, the
background preallocation, and ``oldest`` and ``control`` of :class:`~._xlogctl.XLogCtl`
(moved by truncation).

How it works, in PostgreSQL's terms (src/backend/access/transam/xlog.c): a missing segment
is created before the first write into it (``XLogFileInit``); with ``async with``, a
background task keeps ``segments_ahead`` segments ready beyond the current one
(``PreallocXlogFiles``). ``truncate_before(lsn)`` renames segments wholly before ``lsn``'s
segment to future numbers (recycling, as ``RemoveOldXlogFiles``) while fewer than
``segments_ahead`` are ready, and unlinks the rest. The log's new start is made durable in
the control file first (:mod:`aiopg_io.wal._control`); then each rename or unlink is
followed by a directory fsync, oldest segment first, so a crash at any point leaves the log
from some segment on, and recycled segments.

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

Stale temporary files: a process that died while building a segment or the control file
leaves ``xlogtemp.*`` behind; opening removes them (PostgreSQL's ``RemoveTempXlogFiles``)
once the whole directory was checked (a directory that is no WAL is left untouched). Each
removal is an unlink op and nothing more: no directory fsync of its own, because nothing
depends on it being durable. A temporary name is never a segment's or the control file's,
recovery ignores it, and a builder truncates its temporary file before writing; so a crash
that brings one back (before a later directory fsync, such as recovery's, made the removal
durable) leaves a WAL that opens as it would have, and that open removes the file again. A removal that fails
(EIO...) fails the open with that OSError, before anything else was changed: the WAL is
as it was and opens once the cause is gone (PostgreSQL ignores the error; here an error is
never swallowed).

Every create, rename, unlink and directory fsync is an op (:mod:`aiopg_io._paths`), run
through the IOContext like file I/O: the power-loss simulator records them from the ops it
is handed, which is how its tests check the directory fsyncs above, and the fault injector
can fail each of them. The one exception is the lock file, ``wal.lock``: the flock needs
a descriptor held for the WAL object's life, taken synchronously when the object is made,
and the file holds no data, so whether its entry survives a crash does not matter (the
next open makes it again).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from dataclasses import replace

import anyio
import anyio.lowlevel
import anyio.to_thread

import aiopg_io
from aiopg_io import _paths
from aiopg_io._direct import aligned_buffer
from aiopg_io.drivers import DriverFactory

from ._control import write_control
from ._format import CONTROL_NAME, LOCK_NAME, TEMP_PREFIX, segment_name, segment_number
from ._xlogctl import XLogCtl
from .errors import NotAWALError, WALLockedError

__all__ = [
    "CONTROL_NAME",
    "LOCK_NAME",
    "TEMP_PREFIX",
    "DirectoryLock",
    "WALSegments",
    "create_segment",
    "list_segments",
    "recycle_or_remove",
    "remove_file",
]

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


async def list_segments(directory: str, driver: str | DriverFactory | None) -> dict[int, str]:
    """The segments in ``directory`` by number, once the stale temporary files are removed
    (module docstring, "Stale temporary files").

    Raises NotAWALError naming the first entry that belongs to no WAL, before removing
    anything; an OSError of a removal propagates (nothing else was changed).
    """
    segments, stale = await anyio.to_thread.run_sync(_scan, directory)
    for path in stale:
        await _paths.unlink(path, driver, missing_ok=True)
    return segments


def _scan(directory: str) -> tuple[dict[int, str], list[str]]:
    """The segments by number and the stale temporary files of ``directory`` (a blocking
    listing, run in a thread: a listing changes nothing, so it is no op of its own)."""
    segments: dict[int, str] = {}
    stale: list[str] = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        name = entry.name
        if name in (LOCK_NAME, CONTROL_NAME):
            continue
        if name.startswith(TEMP_PREFIX):
            # A segment or control file under construction when a process died; we hold
            # the lock now, so no live WAL object is building it.
            stale.append(entry.path)
            continue
        segno = segment_number(name)
        if segno is None or not entry.is_file(follow_symlinks=False):
            raise NotAWALError(
                f"{entry.path!r} is not part of a WAL (a WAL directory holds only segments named by "
                f"16 hex digits, {CONTROL_NAME} and {LOCK_NAME}); point WAL.open at an empty or WAL-only "
                "directory"
            )
        segments[segno] = entry.path
    return segments, stale


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


class WALSegments:
    """The segments of one WAL object's log: which exist, making them (on demand and ahead),
    truncating the log (module docstring)."""

    def __init__(self, ctl: XLogCtl, *, init_zero: bool, segments_ahead: int) -> None:
        self._ctl = ctl
        self.init_zero = init_zero
        self.segments_ahead = segments_ahead
        self.segments: set[int] = set()  # set by recovery, then kept up to date here
        self._creating: dict[int, anyio.Event] = {}
        self._prealloc_wanted: anyio.Event | None = None
        self._prealloc_error: BaseException | None = None
        self._truncating: anyio.Event | None = None  # set when the running truncate_before ends
        self.created = 0
        self.recycled = 0
        self.removed = 0

    async def ensure(self, segno: int) -> None:
        """Make segment ``segno`` if it does not exist (or wait while another task does)."""
        ctl = self._ctl
        while segno not in self.segments:
            ev = self._creating.get(segno)
            if ev is not None:
                await ev.wait()
                if segno not in self.segments and self._prealloc_error is not None:
                    err, self._prealloc_error = self._prealloc_error, None
                    raise err
                continue
            ev = self._creating[segno] = anyio.Event()
            try:
                if await create_segment(
                    ctl.directory,
                    segno,
                    ctl.segment_size,
                    init_zero=self.init_zero,
                    direct=ctl.direct,
                    driver=ctl.driver,
                ):
                    self.created += 1
                self.segments.add(segno)
            finally:
                del self._creating[segno]
                ev.set()

    # -- background preallocation -----------------------------------------------------------

    def start_preallocating(self) -> None:
        """Get ready for :meth:`preallocate`, with a first round wanted at once."""
        self._prealloc_wanted = anyio.Event()
        self._prealloc_wanted.set()

    def want_ahead(self) -> None:
        """Wake :meth:`preallocate` (the writer moved on, or the WAL is closing)."""
        if self._prealloc_wanted is not None:
            self._prealloc_wanted.set()

    async def preallocate(self) -> None:
        """Keep ``segments_ahead`` segments ready beyond the current one, until closed."""
        ctl = self._ctl
        while not ctl.closed:
            wanted = self._prealloc_wanted
            assert wanted is not None
            await wanted.wait()
            self._prealloc_wanted = anyio.Event()
            base = ctl.current_segno()
            for segno in range(base + 1, base + 1 + self.segments_ahead):
                if segno in self.segments or segno in self._creating:
                    continue
                try:
                    await self.ensure(segno)
                except OSError as exc:
                    # Not fatal here: the writer makes the segment itself and fails then.
                    self._prealloc_error = exc
                    break

    # -- truncation ---------------------------------------------------------------------------

    async def truncate_before(self, lsn: int) -> int:
        """:meth:`aiopg_io.wal.WAL.truncate_before` once its argument is checked: one at a
        time, shielded, each step durable before the next."""
        while self._truncating is not None:
            await self._truncating.wait()
            self._ctl.check_usable()
        # Claimed without an await when no truncation runs, so the segments it chooses are
        # those the caller saw (the preallocator gets no turn in between).
        done = self._truncating = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                gone = await self._truncate(lsn)
        finally:
            self._truncating = None
            done.set()
        await anyio.lowlevel.checkpoint_if_cancelled()
        return gone

    async def _truncate(self, lsn: int) -> int:
        ctl = self._ctl
        current = ctl.current_segno()
        cutoff = min(min(lsn, ctl.flushed) // ctl.segment_size, current)
        old = sorted(s for s in self.segments if s < cutoff)
        if not old:
            return 0
        ready = sorted(s for s in self.segments if s > current)
        nxt = max([current, *ready]) + 1
        moves: list[tuple[int, int | None]] = []
        for segno in old:
            if len(ready) < self.segments_ahead and nxt not in self._creating:
                moves.append((segno, nxt))
                ready.append(nxt)
                nxt += 1
            else:
                moves.append((segno, None))
        assert ctl.control is not None
        # The recycling targets count as being made, so the preallocator (which runs while
        # this awaits) waits for them instead of creating them first.
        targets = {n: anyio.Event() for _, n in moves if n is not None}
        self._creating.update(targets)
        try:
            # The new start first (PostgreSQL updates pg_control before RemoveOldXlogFiles):
            # from then on a segment before it that a crash leaves behind is a leftover.
            ctl.control = await write_control(ctl.directory, replace(ctl.control, oldest=cutoff), ctl.driver)
            ctl.oldest = cutoff * ctl.segment_size
            for o, n in moves:  # oldest first, each step durable before the next
                recycled = await recycle_or_remove(ctl.directory, o, n, ctl.driver)
                self.segments.discard(o)
                if recycled and n is not None:
                    self.segments.add(n)
                    self.recycled += 1
                else:
                    self.removed += 1
                if n is not None:
                    del self._creating[n]
                    targets.pop(n).set()
        except OSError as exc:
            raise ctl.poisoned_by(exc) from exc
        finally:
            for n, ev in targets.items():
                del self._creating[n]
                ev.set()
        return len(moves)

    async def remove_leftovers(self, segnos: list[int]) -> list[int]:
        """Remove segments older than the log's start (left by a truncate_before that a
        crash cut short: the start moved first), durably. Returns their numbers."""
        for segno in segnos:
            await remove_file(self._ctl.segment_path(segno), self._ctl.driver)
        if segnos:
            await _paths.fsync_directory(self._ctl.directory, self._ctl.driver)
        return segnos
