"""The power-loss model: a simulated disk that knows what is durable and what is not, and
a crash that leaves the files as a power cut could. The driver wrapper that feeds it the
ops (:class:`~aiopg_io.testing.PowerLossSimulator`) is in :mod:`._powerloss`.

The model is SQLite's crash-test layer (src/test6.c), moved from the write list it keeps in
memory to the page cache the kernel keeps for us:

- Writes go through to the real driver at once (reads see them, as after a real write(2)).
  Before a write (or a truncation, or a hole punch) is forwarded, the wrapper reads, with a
  plain blocking ``os.pread`` on a descriptor of its own, the *durable* content of every
  sector it will touch that no unsynced write touched yet, and keeps a copy of the data
  written. Sectors are ``sector_size`` bytes (default 512, the logical block of most disks).
- A successful fsync or fdatasync (the same thing for data) makes durable the writes that
  had *completed* when it was submitted; a write still in flight is not covered (POSIX:
  fsync covers data written before it was called). A failed sync makes nothing durable.
- A linked write + sync (``OpKind.WRITE_SYNC``) is a write, then a sync issued once the
  write completed: the write is recorded as any write, and when the op succeeds its sync
  makes durable that write and the writes that had completed when the op was submitted
  (later ones may be covered too on a real disk; the model credits only what it knows). A
  failed op makes nothing durable, whichever half failed.
- A write on a descriptor opened ``O_DSYNC`` or ``O_SYNC`` is durable when it completes,
  for the bytes it reports written, error or not (Linux open(2), O_DSYNC: "By the time
  write(2) (and similar) return, the output data has been transferred to the underlying
  hardware, along with any file metadata that would be required to retrieve that data";
  O_SYNC adds the file's other metadata, which is not modelled). Only that write's bytes:
  earlier unsynced writes to the file stay unsynced, and so does the file's directory
  entry. The flags are read with ``fcntl(F_GETFL)`` on the op's descriptor at every
  write's submission, not cached: a descriptor number is reused after a close, while
  Linux's F_SETFL cannot change O_DSYNC or O_SYNC on an open descriptor (fcntl(2)).
- ``O_DIRECT`` alone makes nothing durable (open(2): "The O_DIRECT flag on its own makes an
  effort to transfer data synchronously, but does not give the guarantees of the O_SYNC
  flag"; the device's volatile write cache may hold the data): an O_DIRECT write stays
  unsynced until an fsync or fdatasync, unless the descriptor is O_DSYNC or O_SYNC too.
- :meth:`~PowerLossSimulator.crash` decides, seeded, for each sector with unsynced writes,
  as test6.c does for each buffered write: *kept* (the new data reached the platter, 3/8),
  *dropped* (the old data is still there, 3/8; zeros where the file had no data before),
  *garbled* (random bytes: a torn or half-written sector, 1/4). The file size is the durable
  one or the latest one. Options:

  - ``atomic_sectors=True`` (test6.c's SQLITE_IOCAP_ATOMIC512...): a sector is all old or
    all new, never garbled.
  - ``safe_append=True`` (SQLITE_IOCAP_SAFE_APPEND): data appended past the durable size is
    never garbage: the size grows only as far as the appended data really got (a prefix,
    cut at a sector boundary), as with ext4's ``data=ordered``.

- Directory entries: a file created (an openat op with O_CREAT that made it, or a file
  opened through :meth:`~SimulatedDisk.opener`), a directory made (a mkdirat op), a hard or
  symbolic link made (a linkat or symlinkat op), an entry renamed (a renameat op, or
  :meth:`~SimulatedDisk.rename`) or removed (an unlinkat op, or
  :meth:`~SimulatedDisk.unlink`) is durable only once its directory was fsynced (an fsync op
  on a directory fd, or :meth:`~SimulatedDisk.fsync_directory`); until then, a crash may
  make it vanish, undo the rename or bring the removed entry back, each entry on its own
  draw, in no order (POSIX fsync(2): "It does not necessarily ensure that the entry in the
  directory containing the file has also reached disk. For that an explicit fsync() on a
  file descriptor for the directory is also needed."). A new directory is an entry in its
  parent like any other: fsyncing the directory itself makes what is *in* it durable, not
  the directory, and a directory that vanishes takes everything in it along (nothing
  reaches it any more). A rename's replaced entry and a removed one are read before the
  op goes, while they can be (a file's content, for test-sized files; a symbolic link's
  text; a directory's mode), and come back as what they were.

What it cannot see: I/O that does not go through its drivers (``os.write`` on another fd,
mmap), metadata other than the directory entries named above (permissions, times, xattrs),
a disk that lies about its cache or reorders writes inside the device. It sits above the
kernel and models what the kernel promises, nothing below.

It keeps one descriptor open per file written through it (opened anew on
``/proc/self/fd/N``, so it has no O_DIRECT and shares no file offset), until
:meth:`~SimulatedDisk.crash` or :meth:`~SimulatedDisk.discard`. Its own changes (reading
old content, the crash putting files and entries back, the direct helpers) are plain ``os``
calls, not ops: it is the disk the ops act on, and a wrapper that saw them would record the
model's own work as the user's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import stat
from dataclasses import dataclass, field
from typing import Literal

from ..drivers.base import AT_FDCWD, WRITE_KINDS, Op, OpKind

__all__ = [
    "CrashReport",
    "EntryCrash",
    "FileCrash",
    "Note",
    "Policy",
    "SimulatedDisk",
    "after_op",
    "before_op",
]

Policy = Literal["random", "keep", "drop", "garble"]
SectorFate = Literal["kept", "dropped", "garbled"]

# Linux fallocate(2) mode bits the simulator understands.
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FALLOC_FL_ZERO_RANGE = 0x10
_FALLOC_MODELLED = _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_ZERO_RANGE
# Open flags that make each write durable on its own (on Linux O_SYNC includes O_DSYNC's bit;
# elsewhere they may be distinct bits, so both are tested).
_SYNC_WRITE_FLAGS = getattr(os, "O_DSYNC", 0) | getattr(os, "O_SYNC", 0)


@dataclass(frozen=True, slots=True)
class FileCrash:
    """What :meth:`PowerLossSimulator.crash` did to one file."""

    path: str | None
    identity: tuple[int, int]  # (st_dev, st_ino)
    durable_size: int
    size_before: int
    size_after: int
    #: sector index -> "kept" | "dropped" | "garbled", for every sector with unsynced changes
    sectors: dict[int, SectorFate]


@dataclass(frozen=True, slots=True)
class EntryCrash:
    """What :meth:`PowerLossSimulator.crash` did to a directory entry not made durable:
    ``"kept"``, ``"vanished"`` (a created file, directory or link), ``"reverted"`` (a rename
    undone: ``path`` is back at ``source``) or ``"restored"`` (an unlink undone: ``path``
    is back)."""

    fate: Literal["kept", "vanished", "reverted", "restored"]
    path: str
    source: str | None = None


@dataclass(frozen=True, slots=True)
class CrashReport:
    seed: int
    policy: Policy
    sector_size: int
    files: tuple[FileCrash, ...]
    entries: tuple[EntryCrash, ...]

    def file(self, path: str | os.PathLike[str]) -> FileCrash:
        """The record of the file last known at ``path``."""
        want = os.path.abspath(os.fspath(path))
        for f in self.files:
            if f.path is not None and os.path.abspath(f.path) == want:
                return f
        raise KeyError(f"the crash touched no file at {want}; it touched {[f.path for f in self.files]}")


@dataclass(eq=False, slots=True)
class _Change:
    """One unsynced change to a file: a write (``data``), a truncation or an fallocate."""

    kind: OpKind
    offset: int
    data: bytes = b""
    length: int = 0
    mode: int = 0
    done: bool = False
    ok: bool = False
    transferred: int = 0
    #: A write on an O_DSYNC/O_SYNC descriptor: durable at its completion, in this file.
    synchronous: _File | None = None


@dataclass(eq=False, slots=True)
class _File:
    identity: tuple[int, int]
    fd: int
    path: str | None
    durable_size: int
    #: sector -> its durable content (only the part below ``durable_size``)
    old: dict[int, bytes] = field(default_factory=dict)
    pending: list[_Change] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Saved:
    """An entry a rename replaced or an unlink removed, as a crash would bring it back."""

    what: Literal["file", "dir", "symlink"]
    data: bytes = b""  # a file's content, a symbolic link's text
    mode: int = 0o644

    def restore(self, path: str) -> None:
        """Bring it back at ``path`` (never over an entry that is there now)."""
        with contextlib.suppress(FileExistsError):
            if self.what == "dir":
                os.mkdir(path, self.mode)
            elif self.what == "symlink":
                os.symlink(self.data, os.fsencode(path))
            else:
                _restore(path, self.data, self.mode)


#: The entries that give a new name (a crash that undoes one removes the name).
_NEW_NAMES = frozenset({"create", "mkdir", "link", "symlink"})
EntryKind = Literal["create", "mkdir", "link", "symlink", "rename", "unlink"]


@dataclass(eq=False, slots=True)
class _Entry:
    kind: EntryKind
    path: str  # where the entry is now (an unlink: where it was)
    source: str | None = None  # a rename's old name
    replaced: _Saved | None = None  # what a rename replaced, or an unlink removed, when known
    unsynced_dirs: set[str] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class _PathNote:
    """What a path op (or an fsync of a directory) will change, kept until it completed."""

    kind: OpKind
    path: str  # absolute; for a directory fsync, the directory
    newpath: str | None = None
    saved: _Saved | None = None  # what a rename replaces / an unlink removes
    created: bool = False  # an openat that creates the file (it was not there)


@dataclass(eq=False, slots=True)
class _LinkNote:
    """A linked write + sync: its write, and what its sync covers besides."""

    change: _Change
    file: _File
    covered: list[_Change]


#: What :func:`before_op` learnt of an op, handed back to :func:`after_op` once the op
#: completed; opaque to the driver wrapper that carries it.
Note = _Change | tuple[_File, list[_Change]] | _PathNote | _LinkNote | None


#: The path ops whose success is a new name, and the entry each records.
_NEW_ENTRY_KINDS: dict[OpKind, EntryKind] = {
    OpKind.MKDIRAT: "mkdir",
    OpKind.LINKAT: "link",
    OpKind.SYMLINKAT: "symlink",
}


def _abs(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


def _fd_path(fd: int, fallback: str | None) -> str:
    """The path of the file behind ``fd`` (Linux's /proc/self/fd), else ``fallback``."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        if fallback is None:
            raise
        return _abs(fallback)


def _at(dirfd: int, path: str | None) -> str:
    """The absolute path a path op's ``path`` names, relative to ``dirfd``."""
    if path is None:
        raise ValueError("a path op without a path")
    if dirfd == AT_FDCWD or os.path.isabs(path):
        return _abs(path)
    return os.path.join(_fd_path(dirfd, None), path)


class SimulatedDisk:
    """The state a power cut acts on: the files' durable content beside what was written
    since, and the directory entries not made durable yet. It learns what happens from the
    ops it is shown (:func:`before_op` before they go to the kernel, :func:`after_op` once
    they completed); the direct helpers (:meth:`opener`, :meth:`rename`, :meth:`unlink`,
    :meth:`fsync_directory`) record through the same code."""

    def __init__(
        self, *, sector_size: int = 512, atomic_sectors: bool = False, safe_append: bool = False
    ) -> None:
        if sector_size < 1 or sector_size & (sector_size - 1):
            raise ValueError(f"sector_size={sector_size}: a power of two, like 512 or 4096")
        self.sector_size = sector_size
        self.atomic_sectors = atomic_sectors
        self.safe_append = safe_append
        self._files: dict[tuple[int, int], _File] = {}
        self._entries: list[_Entry] = []

    # -- what is not durable ----------------------------------------------------------------

    def unsynced(self) -> dict[str, int]:
        """Bytes not durable yet (data written and not synced), by file path."""
        out: dict[str, int] = {}
        for f in self._files.values():
            n = sum(len(c.data) for c in f.pending if c.kind in WRITE_KINDS)
            if n:
                out[f.path or f"<inode {f.identity[1]}>"] = n
        return out

    # -- directory entries ------------------------------------------------------------------

    def opener(self, path: str, flags: int) -> int:
        """An ``opener`` for ``aiopg_io.open`` (and ``open``): opens as ``os.open`` does and
        records a file it created (O_CREAT of a path that did not exist)."""
        existed = os.path.lexists(path)
        fd = os.open(path, flags, 0o666)
        if flags & os.O_CREAT and not existed:
            self._record_new("create", _abs(path))
        return fd

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        """``os.replace(src, dst)``, recorded as a renameat op is, so a crash can undo it,
        bringing back the file ``dst`` replaced too."""
        s, d = _abs(src), _abs(dst)
        replaced = self._content_of(d)
        os.replace(s, d)
        self._record_rename(s, d, replaced)

    def unlink(self, path: str | os.PathLike[str]) -> None:
        """``os.unlink(path)``, recorded as an unlinkat op is, so a crash can undo it."""
        p = _abs(path)
        content = self._content_of(p)
        os.unlink(p)
        self._record_unlink(p, content)

    def fsync_directory(self, directory: str | os.PathLike[str]) -> None:
        """fsync ``directory``, recorded as an fsync op on its fd is: the entries created,
        renamed or unlinked in it so far are durable."""
        d = _abs(directory)
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._record_dir_fsync(d)

    def _content_of(self, path: str) -> _Saved | None:
        """What a crash would bring back at ``path`` if it undid its removal (a rename over it,
        an unlink): a file's content and mode, a symbolic link's text, a directory's mode;
        None when there is nothing to bring back (nothing there, something else, or an
        entry made and not durable yet)."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if self._created_unsynced(path):
            return None
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            return _Saved("symlink", os.fsencode(os.readlink(path)))
        if stat.S_ISDIR(st.st_mode):
            return _Saved("dir", mode=mode)
        if not stat.S_ISREG(st.st_mode):
            return None
        with open(path, "rb") as fh:
            return _Saved("file", fh.read(), mode)

    def _record_new(self, kind: EntryKind, p: str) -> None:
        """A new name ``p`` (a created file, a directory, a link): gone in a crash unless
        its directory is fsynced first."""
        self._entries.append(_Entry(kind, p, unsynced_dirs={os.path.dirname(p)}))

    def _record_rename(self, s: str, d: str, replaced: _Saved | None) -> None:
        for f in self._files.values():
            if f.path is not None and _abs(f.path) == s:
                f.path = d
        for e in self._entries:
            if e.kind in _NEW_NAMES and e.path == s:
                # Never durable under its first name: it is a new entry at its new name.
                e.path = d
                e.unsynced_dirs.add(os.path.dirname(d))
                return
        self._entries.append(
            _Entry("rename", d, s, replaced, unsynced_dirs={os.path.dirname(s), os.path.dirname(d)})
        )

    def _record_unlink(self, p: str, content: _Saved | None) -> None:
        """Until its directory is fsynced, a crash may bring the entry back as ``content``
        (a file's own unsynced writes are not crashed separately). An entry made and not
        yet durable just stays gone."""
        for e in self._entries:
            if e.kind in _NEW_NAMES and e.path == p:
                self._entries.remove(e)  # never durable: gone whether the unlink is or not
                return
        self._entries.append(_Entry("unlink", p, None, content, unsynced_dirs={os.path.dirname(p)}))

    def _created_unsynced(self, path: str) -> bool:
        return any(e.kind in _NEW_NAMES and e.path == path for e in self._entries)

    def _record_dir_fsync(self, d: str) -> None:
        keep = []
        for e in self._entries:
            e.unsynced_dirs.discard(d)
            if e.unsynced_dirs:
                keep.append(e)
        self._entries = keep

    # -- what before_op / after_op use --------------------------------------------------------

    def _file_for(self, op: Op) -> _File:
        st = os.fstat(op.fd)
        ident = (st.st_dev, st.st_ino)
        f = self._files.get(ident)
        if f is None:
            fd = _reopen(op.fd, op.path)
            f = self._files[ident] = _File(ident, fd, op.path, st.st_size)
        elif op.path is not None:
            f.path = op.path
        return f

    def _capture(self, f: _File, start: int, end: int) -> None:
        """Keep the durable content of the sectors over [start, end) not kept yet."""
        ss = self.sector_size
        if end <= start:
            return
        for s in range(start // ss, (end - 1) // ss + 1):
            if s in f.old:
                continue
            base = s * ss
            n = min(ss, f.durable_size - base)
            f.old[s] = os.pread(f.fd, n, base) if n > 0 else b""

    def _make_durable(self, f: _File, changes: list[_Change]) -> None:
        ss = self.sector_size
        synced = {id(c) for c in changes}
        for c in changes:
            if c.kind in WRITE_KINDS:
                data = c.data[: c.transferred]
                if not data:
                    continue
                end = c.offset + len(data)
                for s in range(c.offset // ss, (end - 1) // ss + 1):
                    base = s * ss
                    sector = bytearray(f.old.get(s, b""))
                    lo, hi = max(c.offset, base), min(end, base + ss)
                    if len(sector) < hi - base:
                        sector.extend(bytes(hi - base - len(sector)))
                    sector[lo - base : hi - base] = data[lo - c.offset : hi - c.offset]
                    f.old[s] = bytes(sector)
                f.durable_size = max(f.durable_size, end)
            elif not c.ok:
                continue
            elif c.kind is OpKind.FTRUNCATE:
                f.durable_size = c.length
                for s, content in list(f.old.items()):
                    f.old[s] = content[: max(0, c.length - s * ss)]
            elif c.kind is OpKind.FALLOCATE:
                end = c.offset + c.length
                if c.mode & (_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_ZERO_RANGE):
                    for s, content in list(f.old.items()):
                        base = s * ss
                        lo, hi = max(c.offset, base), min(end, base + len(content))
                        if lo < hi:
                            f.old[s] = content[: lo - base] + bytes(hi - lo) + content[hi - base :]
                if not c.mode & _FALLOC_FL_KEEP_SIZE:
                    f.durable_size = max(f.durable_size, end)
        f.pending = [c for c in f.pending if id(c) not in synced]
        # A sector no unsynced change touches holds its durable content again.
        touched: set[int] = set()
        for c in f.pending:
            touched |= self._sectors_of(f, c)
        for s in list(f.old):
            if s not in touched:
                del f.old[s]

    def _sectors_of(self, f: _File, c: _Change) -> set[int]:
        """The sectors ``c`` changed (or may still change, while in flight)."""
        ss = self.sector_size
        if c.done and not c.ok and not c.transferred:
            return set()  # failed before it changed anything
        if c.kind in WRITE_KINDS:
            start, end = c.offset, c.offset + (c.transferred if c.done else len(c.data))
        elif c.kind is OpKind.FTRUNCATE:
            start, end = c.length, max(c.length, f.durable_size)
        else:
            start, end = c.offset, c.offset + c.length
        return set(range(start // ss, (end - 1) // ss + 1)) if end > start else set()

    # -- the crash --------------------------------------------------------------------------

    def crash(self, seed: int = 0, *, policy: Policy = "random") -> CrashReport:
        """Leave every file written through the simulator, and every directory entry it saw
        made, in a state a power cut at this instant could leave; then forget them.

        ``policy``: ``"random"`` (seeded, see the module documentation), ``"keep"`` (every
        unsynced change survived), ``"drop"`` (none did: the durable state exactly),
        ``"garble"`` (every unsynced sector is garbage; not with ``atomic_sectors``).
        """
        if policy not in ("random", "keep", "drop", "garble"):
            raise ValueError(f"policy={policy!r}: 'random', 'keep', 'drop' or 'garble'")
        if policy == "garble" and self.atomic_sectors:
            raise ValueError("policy='garble' contradicts atomic_sectors=True (a sector is never torn)")
        rng = random.Random(seed)
        files = []
        try:
            for f in self._files.values():
                files.append(self._crash_file(f, rng, policy))
            entries = self._crash_entries(rng, policy)
        finally:
            self.discard()
        return CrashReport(seed, policy, self.sector_size, tuple(files), tuple(entries))

    def _fate(self, rng: random.Random, policy: Policy) -> SectorFate:
        if policy == "keep":
            return "kept"
        if policy == "drop":
            return "dropped"
        if policy == "garble":
            return "garbled"
        # test6.c draws one random byte per write: garbled 1/4, dropped 3/8, kept 3/8.
        r = rng.random()
        if r < 0.25 and not self.atomic_sectors:
            return "garbled"
        return "dropped" if rng.random() < 0.5 else "kept"

    def _crash_file(self, f: _File, rng: random.Random, policy: Policy) -> FileCrash:
        ss = self.sector_size
        durable = f.durable_size
        current = os.fstat(f.fd).st_size
        fates: dict[int, SectorFate] = {}
        # Sectors whose capture was for a write that failed before changing them hold their
        # durable content: a power cut cannot tear what was never written.
        dirty: set[int] = set()
        for c in f.pending:
            dirty |= self._sectors_of(f, c)
        appended = sorted(s for s in f.old if s * ss >= durable and s in dirty)
        if current == durable or policy in ("keep", "garble"):
            final = current
        elif policy == "drop":
            final = durable
        elif self.safe_append and current > durable:
            cuts = sorted({durable, current} | {s * ss for s in appended if durable < s * ss < current})
            final = rng.choice(cuts)
        else:
            final = rng.choice((durable, current))
        writes: list[tuple[int, bytes]] = []
        for s in sorted(f.old.keys() & dirty):
            base = s * ss
            region = min(base + ss, final) - base  # bytes of the sector inside the file after
            if s in appended and self.safe_append and policy == "random":
                fate: SectorFate = "kept" if base < final else "dropped"
            elif base >= current and final > current:
                fate = "dropped"  # a truncation that did not reach the disk
            else:
                fate = self._fate(rng, policy)
            fates[s] = fate
            if region <= 0:
                continue
            old = f.old[s]
            if fate == "kept":
                if base + region > current:
                    # The file grows back over a truncated part: below the cut the new data
                    # stays, past it the durable data comes back.
                    lo = max(0, current - base)
                    tail = old[lo:region]
                    writes.append((base + lo, tail + bytes(region - lo - len(tail))))
                continue
            if fate == "dropped":
                content = old[:region]
                if len(content) < region:
                    if self.safe_append:
                        # Bytes past the durable size that the cut kept are really there.
                        have = os.pread(f.fd, region - len(content), base + len(content))
                        content += have
                    content += bytes(region - len(content))
            else:
                n = min(region, len(old)) if self.safe_append else region
                content = rng.randbytes(n)
            writes.append((base, content))
        if final != current:
            os.ftruncate(f.fd, final)
        for base, content in writes:
            os.pwrite(f.fd, content, base)
        return FileCrash(f.path, f.identity, durable, current, final, fates)

    def _crash_entries(self, rng: random.Random, policy: Policy) -> list[EntryCrash]:
        fates: list[tuple[_Entry, bool]] = []
        for e in self._entries:
            if policy == "drop":
                undo = True
            elif policy == "random":
                undo = rng.random() < 0.5
            else:
                undo = False
            fates.append((e, undo))
        out: list[EntryCrash] = []
        for e, undo in reversed(fates):
            if not undo:
                out.append(EntryCrash("kept", e.path, e.source))
            elif e.kind in _NEW_NAMES:
                with contextlib.suppress(FileNotFoundError):
                    if e.kind == "mkdir" and not os.path.islink(e.path):
                        shutil.rmtree(e.path)  # what was made in it is lost with it
                    else:
                        os.unlink(e.path)
                out.append(EntryCrash("vanished", e.path))
            elif e.kind == "unlink":
                if e.replaced is not None:
                    e.replaced.restore(e.path)
                out.append(EntryCrash("restored", e.path))
            else:
                assert e.source is not None
                with contextlib.suppress(FileNotFoundError):
                    os.replace(e.path, e.source)
                    if e.replaced is not None:
                        e.replaced.restore(e.path)
                out.append(EntryCrash("reverted", e.path, e.source))
        out.reverse()
        return out

    def discard(self) -> None:
        """Forget every unsynced change and entry without crashing (as after a clean
        shutdown), and close the descriptors the simulator holds."""
        files, self._files = self._files, {}
        self._entries = []
        for f in files.values():
            with contextlib.suppress(OSError):
                os.close(f.fd)


# -- the ops, as the driver wrapper shows them ----------------------------------------------
#
# The two calls the driver wrapper (PowerLossDriver) makes. Functions of this module, not
# methods: PowerLossSimulator is a SimulatedDisk, and every public member of the disk is
# public API of the simulator (docs/api.md), which these are not.


def before_op(disk: SimulatedDisk, op: Op) -> Note:
    """Show ``op`` to ``disk`` before it goes to the kernel: keep what it will overwrite
    or remove while it can still be read (a write's durable sectors, a replaced or removed
    entry). An exception means the op cannot be modelled: the caller fails it instead of
    forwarding it. Returns the note to hand to :func:`after_op`."""
    kind = op.kind
    if kind in WRITE_KINDS:
        f = disk._file_for(op)
        data = b"".join(bytes(b) for b in op.buffers)
        disk._capture(f, op.offset, op.offset + len(data))
        change = _Change(kind, op.offset, data)
        if fcntl.fcntl(op.fd, fcntl.F_GETFL) & _SYNC_WRITE_FLAGS:
            change.synchronous = f
        if kind is OpKind.WRITE_SYNC:
            covered = [c for c in f.pending if c.done]
            f.pending.append(change)
            return _LinkNote(change, f, covered)
    elif kind is OpKind.FTRUNCATE:
        f = disk._file_for(op)
        size = os.fstat(f.fd).st_size
        disk._capture(f, op.length, min(size, f.durable_size))
        change = _Change(kind, 0, length=op.length)
    elif kind is OpKind.FALLOCATE:
        f = disk._file_for(op)
        if op.mode & ~_FALLOC_MODELLED:
            # Collapse/insert range shift data: not modelled; kept as they are.
            return None
        if op.mode & (_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_ZERO_RANGE):
            disk._capture(f, op.offset, min(op.offset + op.length, f.durable_size))
        change = _Change(kind, op.offset, length=op.length, mode=op.mode)
    elif kind in (OpKind.FSYNC, OpKind.FDATASYNC):
        st = os.fstat(op.fd)
        if stat.S_ISDIR(st.st_mode):
            return _PathNote(kind, _fd_path(op.fd, op.path))  # recorded once it succeeded
        fd_file = disk._files.get((st.st_dev, st.st_ino))
        if fd_file is None:
            return None
        return fd_file, [c for c in fd_file.pending if c.done]
    elif kind is OpKind.OPENAT and op.flags & os.O_CREAT:
        p = _at(op.fd, op.path)
        # O_EXCL creates or fails; without it, the open creates only what was not there.
        return _PathNote(kind, p, created=bool(op.flags & os.O_EXCL) or not os.path.lexists(p))
    elif kind is OpKind.RENAMEAT:
        d = _at(op.fd, op.newpath)
        return _PathNote(kind, _at(op.fd, op.path), d, disk._content_of(d))
    elif kind is OpKind.UNLINKAT:
        p = _at(op.fd, op.path)
        return _PathNote(kind, p, saved=disk._content_of(p))
    elif kind is OpKind.MKDIRAT:
        return _PathNote(kind, _at(op.fd, op.path))
    elif kind in (OpKind.LINKAT, OpKind.SYMLINKAT):
        return _PathNote(kind, _at(op.fd, op.newpath))  # the new name (a symlink's text is no path)
    else:
        return None
    f.pending.append(change)
    return change


def after_op(disk: SimulatedDisk, op: Op, note: Note) -> None:
    """Show ``disk`` that ``op`` completed (its result or error set), with the note
    :func:`before_op` returned for it (None for an op it never saw): record the write, the
    new entry or the sync that happened."""
    if isinstance(note, _PathNote):
        if op.error is not None:
            return  # nothing happened (a path op is never partly done)
        if note.kind is OpKind.OPENAT:
            if note.created:
                disk._record_new("create", note.path)
        elif note.kind in _NEW_ENTRY_KINDS:
            disk._record_new(_NEW_ENTRY_KINDS[note.kind], note.path)
        elif note.kind is OpKind.RENAMEAT:
            assert note.newpath is not None
            disk._record_rename(note.path, note.newpath, note.saved)
        elif note.kind is OpKind.UNLINKAT:
            disk._record_unlink(note.path, note.saved)
        else:
            disk._record_dir_fsync(note.path)
    elif isinstance(note, _LinkNote):
        after_op(disk, op, note.change)
        if op.error is None:
            disk._make_durable(note.file, [*note.covered, note.change])
    elif isinstance(note, _Change):
        note.done = True
        note.ok = op.error is None
        note.transferred = op.transferred
        if note.synchronous is not None:
            # Each write(2) that returned bytes had made them durable, even if a later
            # part of the op failed.
            disk._make_durable(note.synchronous, [note])
    elif note is not None and op.error is None:
        disk._make_durable(*note)


def _restore(path: str, content: bytes, mode: int) -> None:
    """Bring back a file a crash undid the removal of (never over one that is there now)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


def _reopen(fd: int, path: str | None) -> int:
    """A descriptor of our own on the file behind ``fd``: no O_DIRECT, no shared offset."""
    candidates = [f"/proc/self/fd/{fd}", f"/dev/fd/{fd}"]
    if path is not None:
        candidates.append(path)
    last: OSError | None = None
    for name in candidates:
        try:
            return os.open(name, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            last = exc
    raise OSError(
        last.errno if last else 0,
        f"the power-loss simulator cannot open the file behind fd {fd} read-write to keep its old "
        f"content ({last}); it needs /proc/self/fd or the file's path, writable",
        path,
    )
