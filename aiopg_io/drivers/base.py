"""The driver protocol: what every I/O method implements.

This is PostgreSQL's ``IoMethodOps`` (src/include/storage/aio_internal.h) for Python. A driver
knows nothing about event loops: it takes a batch of :class:`Op` objects, performs them
somehow (a thread pool, io_uring, POSIX AIO, inline), and hands completed ops back through
:meth:`Driver.reap`. When completions are pending, the fd returned by :meth:`Driver.fileno`
is readable; the loop glue (``aiopg_io/_glue``) waits on it and calls ``reap``.

Facts the protocol relies on:

- A regular file's ``pread``/``preadv`` returns fewer bytes than asked only at end of file
  or on a signal/error mid-way (POSIX.1-2017, read(2): "the value returned may be less than
  nbyte if the number of bytes left in the file is less than nbyte, or if the read() request
  was interrupted by a signal"). io_uring may also complete a buffered read short when part
  of it was not in the page cache (io_uring_prep_read(3), "short reads"). Drivers therefore
  continue a short transfer with :meth:`Op.advance` until it is complete, hits EOF (a read of
  zero bytes) or fails; the caller sees one result for the whole op.
- A write can be short only when the device or quota is full or on error; the next write
  then fails with the errno (write(2)). A write op either transfers every byte or fails; a
  failure after a partial transfer is reported as the OSError with ``op.transferred`` set to
  the bytes that did reach the file (so a caller can tell "nothing written" from "some").
- After fsync/fdatasync fails, the kernel may have dropped the dirty pages and cleared the
  error (Linux >= 4.13 reports it once per fd; see PostgreSQL's "fsyncgate", 2018). A driver
  never retries a failed sync: it reports the error and the caller decides (the WAL poisons
  itself).
- An op owns its fd and its buffers from :meth:`Driver.submit` until :meth:`Driver.reap`
  has returned it. Cancelling is a request: the op still completes through ``reap``, either
  with ``ECANCELED`` (it never ran) or with its real result (it ran anyway).
- Path ops (:data:`PATH_KINDS`: openat, renameat, unlinkat, mkdirat, statx, linkat,
  symlinkat; and close) name files the way the ``*at`` system calls do: ``fd`` is the
  directory fd a relative ``path`` starts from (:data:`AT_FDCWD`, the default, for the
  working directory). Linux openat(2), renameat(2), unlinkat(2), mkdirat(2), statx(2),
  linkat(2), symlinkat(2): the call either happened or failed whole; none is ever short.
  STATX writes a ``struct statx`` (:data:`STATX_SIZE` bytes) into the op's one buffer, as
  a read fills its buffer; :mod:`aiopg_io.drivers._statx` reads it. A path op
  handed to the kernel or a thread may still happen after a cancel, like any other op: a
  cancelled rename may have renamed, a cancelled open may have opened (and the op's result
  is then the fd, which the caller must close). ``fsync`` on an fd opened ``O_DIRECTORY``
  makes the directory's entries durable (fsync(2)): that is the FSYNC kind, on that fd.
- A linked write + sync (:data:`OpKind.WRITE_SYNC`) is one op that writes its buffers, then
  syncs the fd (fdatasync, or fsync with :data:`SYNC_FSYNC` in ``flags``) only once every
  byte is written: the sync runs after the write, so it covers it (fsync(2) covers the data
  written before it is called). A write that fails (or ends short and then fails) never
  reaches the sync: the op fails with the *write's* error, ``op.transferred`` the bytes that
  reached the file. A sync that fails fails the op with the sync's error and
  ``op.transferred`` equal to the whole length, which is how a caller tells the halves
  apart. It is io_uring's ``IOSQE_IO_LINK`` (io_uring_enter(2): "the next SQE will not be
  started before this one completes ... If a chain of SQE links is broken by an error, the
  remaining links are cancelled with -ECANCELED"; a short read or write breaks the chain
  too), and a blocking write then sync in one thread call on the other drivers. Like any
  write, a cancelled one may have happened in whole or in part (``op.transferred``); a part
  that happened is never written again.
- Not every driver runs every kind itself: :attr:`Capabilities.kinds` names those it does.
  A driver made through :class:`~aiopg_io.drivers.DriverSpec` gets the rest run in threads
  (:mod:`aiopg_io.drivers._fallback`), so every kind works through every driver.
"""

from __future__ import annotations

import abc
import enum
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import DriverOptionError, InvalidOffsetError

__all__ = [
    "ALL_KINDS",
    "AT_FDCWD",
    "AT_REMOVEDIR",
    "AT_SYMLINK_FOLLOW",
    "AT_SYMLINK_NOFOLLOW",
    "FILE_KINDS",
    "OFF_T_MAX",
    "PATH_KINDS",
    "RENAME_NOREPLACE",
    "STATX_BASIC_STATS",
    "STATX_SIZE",
    "Capabilities",
    "Driver",
    "DriverStatistics",
    "Op",
    "OpKind",
    "OpState",
    "SYNC_FSYNC",
    "flag_option",
    "int_option",
    "offset_error",
]


#: The largest file offset, and the largest end of a transfer: ``off_t`` is 64-bit on every
#: platform here (CPython is built with large-file support), and Linux refuses a transfer
#: whose end passes it (``rw_verify_area``, fs/read_write.c). The file layer checks every
#: offset against it; a driver that stores offsets in C fields checks again, since a larger
#: value would wrap silently there.
OFF_T_MAX = 2**63 - 1


def offset_error(offset: int, nbytes: int, path: str | None) -> InvalidOffsetError | None:
    """The error for ``nbytes`` at file offset ``offset`` when they do not lie within ``0 ..
    OFF_T_MAX`` (None when they do), in the words the file layer raises it with
    (:mod:`aiopg_io._checks`). A driver handed an op directly checks with it too, before the
    kernel sees the offset: io_uring and preadv2 read offset -1 as "at the file position",
    and a C field would wrap a larger one."""
    if offset < 0:
        return InvalidOffsetError(errno.EINVAL, f"offset {offset} is negative; file offsets start at 0", path)
    if offset > OFF_T_MAX:
        return InvalidOffsetError(
            errno.EINVAL, f"offset {offset} is past the largest file offset, {OFF_T_MAX} (2**63 - 1)", path
        )
    if offset + nbytes > OFF_T_MAX:
        return InvalidOffsetError(
            errno.EINVAL,
            f"{nbytes} bytes at offset {offset} would end at {offset + nbytes}, past the largest "
            f"file offset, {OFF_T_MAX} (2**63 - 1)",
            path,
        )
    return None


#: The ``dirfd`` meaning "relative to the working directory" (Linux fcntl.h; -100 there, and
#: what the kernel, liburing and the ``*at`` calls take). A path op's ``fd`` defaults to it.
AT_FDCWD = -100
#: UNLINKAT's flag to remove a directory (Linux fcntl.h; ``os`` has no constant for it).
AT_REMOVEDIR = 0x200
#: RENAMEAT's flag to fail with EEXIST rather than replace the target (renameat2(2), Linux
#: uapi fs.h; Linux 3.15).
RENAME_NOREPLACE = 1
#: STATX's flag to stat a symbolic link itself (lstat), and LINKAT's to link what a symbolic
#: link points to (Linux fcntl.h; os.link's ``follow_symlinks=True``).
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
#: STATX's mask: the fields stat(2) gives (Linux uapi stat.h), and the size of the
#: ``struct statx`` it writes (fixed by the kernel ABI; spare fields pad it to 256 bytes).
STATX_BASIC_STATS = 0x7FF
STATX_SIZE = 256
#: WRITE_SYNC's flag: sync with fsync (data and metadata) instead of fdatasync.
SYNC_FSYNC = 1


class OpKind(enum.Enum):
    """What an op asks the kernel to do. New kinds may be added; drivers reject unknown ones."""

    READ = "read"  # one buffer, positional
    READV = "readv"  # several buffers, positional, filled in order
    WRITE = "write"
    WRITEV = "writev"
    # Linked: writev, then fdatasync (fsync with SYNC_FSYNC in flags) once the write is whole.
    WRITE_SYNC = "write_sync"
    FSYNC = "fsync"
    FDATASYNC = "fdatasync"
    FALLOCATE = "fallocate"  # offset, length, mode (Linux FALLOC_FL_*; 0 extends the file)
    FTRUNCATE = "ftruncate"  # length is the new size
    NOP = "nop"  # completes with 0; used by probes and tests
    # Path ops (see the module docstring): ``fd`` is the directory fd ``path`` is relative to.
    OPENAT = "openat"  # path, flags (O_*), mode; the result is the new fd
    RENAMEAT = "renameat"  # path -> newpath; flags: 0 (replace) or RENAME_NOREPLACE
    UNLINKAT = "unlinkat"  # path; flags: 0 or AT_REMOVEDIR
    MKDIRAT = "mkdirat"  # path, mode (permission bits, less the umask)
    STATX = "statx"  # path; flags: 0 or AT_SYMLINK_NOFOLLOW; buffers: one of STATX_SIZE bytes
    LINKAT = "linkat"  # path -> newpath (a hard link); flags: 0 or AT_SYMLINK_FOLLOW
    SYMLINKAT = "symlinkat"  # newpath becomes a symbolic link holding path (never resolved)
    CLOSE = "close"  # ``fd`` itself is closed

    # Members are singletons, so identity hashing is right, and it runs in C where
    # Enum.__hash__ runs Python code: ops test their kind against sets on every op.
    __hash__ = object.__hash__


READ_KINDS = frozenset({OpKind.READ, OpKind.READV})
#: Every kind that writes buffers (WRITE_SYNC too: its write half counts bytes as a write does).
WRITE_KINDS = frozenset({OpKind.WRITE, OpKind.WRITEV, OpKind.WRITE_SYNC})
TRANSFER_KINDS = READ_KINDS | WRITE_KINDS
#: The kinds every driver ran before path ops existed: a driver's default :attr:`Capabilities.kinds`
#: (WRITE_SYNC is not among them: a driver that links it natively says so).
FILE_KINDS = (TRANSFER_KINDS - {OpKind.WRITE_SYNC}) | frozenset(
    {OpKind.FSYNC, OpKind.FDATASYNC, OpKind.FALLOCATE, OpKind.FTRUNCATE, OpKind.NOP}
)
#: Ops that name a file by path (``fd`` is the directory fd the path starts from).
PATH_KINDS = frozenset({OpKind.OPENAT, OpKind.RENAMEAT, OpKind.UNLINKAT, OpKind.MKDIRAT}) | frozenset(
    {OpKind.STATX, OpKind.LINKAT, OpKind.SYMLINKAT}
)
ALL_KINDS = frozenset(OpKind)


class OpState(enum.Enum):
    """An op's life, as PostgreSQL's PgAioHandleState. Every transition goes through
    :meth:`Op.set_state`, which refuses the ones that cannot happen."""

    IDLE = "idle"  # built, not handed to a driver
    SUBMITTED = "submitted"  # the driver owns it (queued, in a thread, or in the kernel)
    COMPLETED = "completed"  # result or error is set; the driver still lists it for reap
    REAPED = "reaped"  # returned by reap(); the driver no longer touches fd or buffers

    __hash__ = object.__hash__  # see OpKind


_TRANSITIONS = {
    OpState.IDLE: frozenset({OpState.SUBMITTED, OpState.COMPLETED}),
    OpState.SUBMITTED: frozenset({OpState.COMPLETED}),
    OpState.COMPLETED: frozenset({OpState.REAPED}),
    OpState.REAPED: frozenset(),
}


@dataclass(eq=False, slots=True)
class Op:
    """One I/O request and, once completed, its outcome.

    ``buffers`` are byte-format memoryviews: writable for reads, any for writes. The op keeps
    them (and whatever object owns their memory, in ``keepalive``) referenced until it is
    reaped, through views of its own, so nothing the kernel or a thread still uses can be
    freed, resized or reused, whatever the caller does with its views meanwhile.

    ``result`` is the byte count for transfers (a read may be short only at EOF), the new
    fd for OPENAT and 0 for the other kinds; ``error`` is the OSError when the op failed.
    Exactly one of the two is set once the op is COMPLETED.

    A path op's ``path`` is the file it acts on (relative to the directory fd ``fd``), and
    RENAMEAT's and LINKAT's ``newpath`` its new name; SYMLINKAT's ``path`` is the text the
    link holds and ``newpath`` the link. The caller has checked both (no NUL byte: the
    kernel would read the path only up to it).
    """

    kind: OpKind
    fd: int
    offset: int = 0
    buffers: tuple[memoryview, ...] = ()
    length: int = 0  # FALLOCATE: byte count; FTRUNCATE: new size
    mode: int = 0  # FALLOCATE mode bits; OPENAT, MKDIRAT: the new entry's permission bits
    path: str | None = None  # named in errors; a path op's file
    newpath: str | None = None  # RENAMEAT, LINKAT, SYMLINKAT: the new name (named in errors too)
    # OPENAT: O_* flags; RENAMEAT: RENAME_*; UNLINKAT: AT_REMOVEDIR; STATX: AT_SYMLINK_NOFOLLOW;
    # LINKAT: AT_SYMLINK_FOLLOW; WRITE_SYNC: SYNC_FSYNC
    flags: int = 0
    keepalive: object = None
    # Whether fd is O_DIRECT, when the caller knows (None: a driver that cares asks fcntl).
    direct: bool | None = None
    state: OpState = OpState.IDLE
    result: int | None = None
    error: OSError | None = None
    cancel_requested: bool = False
    # Progress of a transfer that the driver continues after a short completion.
    transferred: int = 0
    # Driver-private and waiter-private slots, so neither needs a side table.
    driver_data: object = None
    waiter: object = None
    # How many times a driver resubmitted this op (EAGAIN, short transfer).
    retries: int = 0
    _remaining: list[memoryview] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind in TRANSFER_KINDS:
            # Views of the op's own, not the caller's: a caller's view released while the op
            # is out (``mv.release()``) would otherwise release the export that keeps its
            # memory in place, and a bytearray could then be resized under the kernel's (or a
            # thread's) copy. The drivers transfer through these (``remaining()``).
            self._remaining = [v for b in self.buffers if len(v := memoryview(b))]

    # -- state ------------------------------------------------------------------------------

    def set_state(self, new: OpState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"op {self.kind.value}: illegal transition {self.state.value} -> {new.value}")
        self.state = new

    def complete(self, result: int) -> None:
        """Record success (``result`` is ignored for transfers: the op counts its own bytes)."""
        self.result = self.transferred if self.kind in TRANSFER_KINDS else result
        self.set_state(OpState.COMPLETED)

    def fail(self, err: int | OSError) -> None:
        """Record failure; an errno becomes an OSError naming the op's path."""
        if isinstance(err, int):
            if self.newpath is not None:
                # As os.rename names both: "[Errno 2] No such file or directory: 'a' -> 'b'".
                err = OSError(err, os.strerror(err), self.path, None, self.newpath)
            elif self.path:
                err = OSError(err, os.strerror(err), self.path)
            else:
                err = OSError(err, os.strerror(err))
        self.error = err
        self.set_state(OpState.COMPLETED)

    def cancelled(self) -> None:
        """Record that the op was cancelled before it did anything."""
        self.fail(errno.ECANCELED)

    @property
    def done(self) -> bool:
        return self.state in (OpState.COMPLETED, OpState.REAPED)

    # -- transfers --------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes the whole op asks to transfer."""
        return sum(len(b) for b in self.buffers)

    def remaining(self) -> list[memoryview]:
        """The buffers (trimmed) still to transfer, in order; empty when the op is whole."""
        return self._remaining

    def position(self) -> int:
        """The file offset of the next byte to transfer."""
        return self.offset + self.transferred

    def advance(self, n: int) -> bool:
        """Account ``n`` bytes transferred; return True when the op must go on.

        This is the one place short transfers are handled: a driver calls it with every
        non-negative completion. A read of 0 bytes is EOF and ends the op; otherwise the op
        goes on until every buffer is full (or drained, for writes).
        """
        if n < 0:
            raise ValueError(f"advance({n}): a byte count is never negative")
        if n == 0:
            # EOF for a read; for a write, a zero-byte completion with bytes left is a
            # device that accepts nothing: report ENOSPC rather than spin.
            if self.kind in WRITE_KINDS and self._remaining:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
            self._remaining = []
            return False
        self.transferred += n
        rest = self._remaining
        while n and rest:
            head = rest[0]
            if n >= len(head):
                n -= len(head)
                rest.pop(0)
            else:
                rest[0] = head[n:]
                n = 0
        if n:
            raise RuntimeError(f"op {self.kind.value}: kernel reported more bytes than asked")
        if rest:
            self.retries += 1
            return True
        return False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do here that changes how the IOContext drives it.

    Every field has a reader (``IOContext``); what a user may want to know besides (direct
    I/O, cancellation of started ops) is in ``unavailable_reason(direct=True)`` and the
    guide, not here."""

    asynchronous: bool = True  # False: submit() performs the I/O before returning
    inline: bool = False  # try_inline() may complete ops without a submission
    max_in_flight: int = 1024  # the IOContext caps ops in flight at this
    # Each op runs on a thread of this process that the driver schedules (the worker pool),
    # so a file's ``limiter=`` (an anyio CapacityLimiter) bounds how many it holds at once.
    threads: bool = False
    #: The op kinds that run on a thread of this process (the worker's pool, the fallback's
    #: threads): what an ``aiopg_io.os`` call's ``limiter=`` bounds. ``threads`` says the same
    #: of every kind at once, for files.
    threaded_kinds: frozenset[OpKind] = frozenset()
    #: The op kinds ``submit`` runs itself; a DriverSpec runs the others in threads for it
    #: (``drivers/_fallback.py``). The default is what every driver ran before path ops.
    kinds: frozenset[OpKind] = FILE_KINDS


@dataclass(frozen=True, slots=True)
class DriverStatistics:
    """A snapshot of a driver's counters (trio's ``statistics()`` style)."""

    driver: str
    in_flight: int
    submitted: int
    completed: int
    cancelled: int
    retries: int
    short_transfers: int
    submit_calls: int
    reap_calls: int
    overflows: int = 0
    extra: tuple[tuple[str, int], ...] = ()


class Driver(abc.ABC):
    """The contract of an I/O method. One instance serves one IOContext (one event loop).

    All methods are called from the event loop's thread; a driver may use threads of its
    own internally. No method may block on I/O except in a driver whose
    ``capabilities.asynchronous`` is False (the ``sync`` reference driver).
    """

    #: The name users select it by (``driver="worker"``, ``AIOPG_IO_DRIVER=worker``).
    name: ClassVar[str]

    @classmethod
    def unavailable_reason(cls, *, direct: bool = False) -> str | None:
        """Why this driver cannot run on this machine (one line a user can act on), or None.

        Shall be cheap enough to call once per process and shall leave nothing open. A
        driver that can run only buffered I/O says why for ``direct=True``. Optional: the
        default, None, is for a driver that runs wherever Python does (sync, worker, the
        testing wrappers); one that needs a kernel facility overrides it.
        """
        return None

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this instance supports (may depend on what the kernel offered at setup)."""

    @abc.abstractmethod
    def submit(self, ops: Sequence[Op]) -> None:
        """Take ownership of a batch of IDLE ops.

        Shall advance every op to at least SUBMITTED, and do so in as few system calls as the
        mechanism allows (one ``io_uring_submit``, one ``lio_listio``, one queue hand-off).
        An op that cannot even be started (bad fd, unknown kind) is COMPLETED with its error,
        never raised: the other ops of the batch must not be lost. Raises only for a driver
        that is closed (RuntimeError).
        """

    #: Optional: the file calls' fast path, for a driver whose cached reads need no op at
    #: all (io_uring_c: a ``_uring.FastPath``, whose ``reader(fd, owner_get, owner, after,
    #: max_read)`` serves one file; see ``_uring.c``). None, the default: every call makes an
    #: op. A wrapper that must see every op (the testing wrappers) leaves it None.
    fast_reads: Any = None

    #: Optional: the file calls' ring path, for a driver whose transfers the file may stage
    #: without a coroutine (io_uring_c: a ``_uring.RunPath``, bound by the IOContext to its
    #: loop, whose ``runner(...)`` serves one file; see ``_uring.c``). None, the default: the
    #: file's calls run through :meth:`IOContext.run`. A wrapper that must see every op (the
    #: testing wrappers) leaves it None.
    ring_runs: Any = None

    def try_inline(self, op: Op) -> bool:
        """Optional: perform an IDLE ``op`` at once if that cannot block; True when it did.

        True means the op is REAPED with its result or error, and the driver holds nothing
        of it. False means it must be submitted; the op may have made progress (a read the
        page cache held in part), which ``submit`` continues. Called only by drivers whose
        ``capabilities.inline`` is True; the default never completes anything.
        """
        return False

    @abc.abstractmethod
    def fileno(self) -> int | None:
        """The completion fd: readable while :meth:`reap` has ops to return.

        None for a driver that completes every op inside ``submit`` (then the caller reaps
        right after submitting). The fd belongs to the driver; callers never close it.
        """

    def notify_with(self, fn: Callable[[], None]) -> bool:
        """Optional: call ``fn`` whenever :meth:`fileno` becomes readable, from whichever
        thread makes it so, for an event loop that cannot watch an fd (asyncio's Proactor
        loop, the default on Windows, has no ``add_reader``). Shall call it at most once per
        readiness, as the fd would be signalled. False when the driver cannot (the kernel
        raises its fd, as io_uring's eventfd); the default."""
        return False

    @abc.abstractmethod
    def reap(self) -> list[Op]:
        """Return the ops completed since the last call, each moved to REAPED; never blocks.

        Shall clear the readiness of :meth:`fileno` before looking for completions, so a
        completion that races with the call leaves the fd readable again rather than lost.
        """

    def reap_and_wake(self, waker: Callable[[Op], object]) -> tuple[list[Op], int]:
        """Optional: :meth:`reap`, except that ops the driver can resume at once it moves to
        REAPED and hands to ``waker(op)`` (the loop glue's, lent by the IOContext) instead of
        returning them. Returns the other reaped ops and how many it handed over; the
        caller owes those their in-flight slots. ``waker`` does what the glue's ``wake``
        does, so the IOContext keeps no per-op work for them. The io_uring_c driver does
        this in C, with no Python frame per op; the default hands nothing over."""
        return self.reap(), 0

    @abc.abstractmethod
    def cancel(self, op: Op) -> None:
        """Ask that a SUBMITTED op not run; best effort, never blocks.

        The op still completes through :meth:`reap`: with ECANCELED when it was stopped in
        time, with its real result when it was not (a cancelled write may have happened).
        Its buffers stay referenced until then. Optional in effect: a driver that cannot
        cancel simply lets the op finish.
        """

    @abc.abstractmethod
    def close(self) -> list[Op]:
        """Cancel what is queued, wait for what is running, release every resource.

        Returns the ops that completed during the drain (already REAPED) so their waiters
        can be resumed. Idempotent; after it, ``submit`` raises RuntimeError.
        """

    @abc.abstractmethod
    def statistics(self) -> DriverStatistics:
        """Counters since the driver was created."""


class DriverCounters:
    """The counters behind :meth:`Driver.statistics`, shared by the drivers."""

    __slots__ = (
        "cancelled",
        "completed",
        "overflows",
        "reap_calls",
        "retries",
        "short_transfers",
        "submit_calls",
        "submitted",
    )

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.cancelled = 0
        self.retries = 0
        self.short_transfers = 0
        self.submit_calls = 0
        self.reap_calls = 0
        self.overflows = 0

    def reaped(self, ops: list[Op]) -> None:
        """Move ``ops`` to REAPED and count them: the reap accounting drivers share (a short
        transfer continued, its retries, a cancel that stopped the op in time)."""
        for op in ops:
            op.set_state(OpState.REAPED)
            if op.retries:
                self.short_transfers += 1
                self.retries += op.retries
            err = op.error
            if err is not None and op.cancel_requested and err.errno == errno.ECANCELED:
                self.cancelled += 1
        self.reap_calls += 1
        self.completed += len(ops)

    def snapshot(self, driver: str, in_flight: int, **extra: int) -> DriverStatistics:
        return DriverStatistics(
            driver=driver,
            in_flight=in_flight,
            submitted=self.submitted,
            completed=self.completed,
            cancelled=self.cancelled,
            retries=self.retries,
            short_transfers=self.short_transfers,
            submit_calls=self.submit_calls,
            reap_calls=self.reap_calls,
            overflows=self.overflows,
            extra=tuple(sorted(extra.items())),
        )


def int_option(driver: str, name: str, value: object, low: int, high: int) -> int:
    """A whole-number driver option (``worker:threads=4``) checked against its range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DriverOptionError(f"{driver} {name}={value!r} is not a whole number: it takes {low} to {high}")
    if not low <= value <= high:
        raise DriverOptionError(f"{driver} {name}={value!r} is out of range: {low} to {high}")
    return value


def flag_option(driver: str, name: str, value: object) -> bool:
    """A yes/no driver option: a bool, 0 or 1, or the words true/false, yes/no, on/off."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    elif isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise DriverOptionError(f"{driver} {name}={value!r} is not a boolean (use 0 or 1)")
