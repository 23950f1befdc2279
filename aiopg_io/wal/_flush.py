"""Writing and group commit: the writer, the parked waiters, sync methods, poisoning
(PostgreSQL's ``XLogWrite``/``XLogFlush`` under ``WALWriteLock``).

What it owns: ``write_pos``, ``flushed`` and ``write_segno`` of :class:`~._xlogctl.XLogCtl`,
the segment file open for writing, the heap of parked committers and the tasks waiting for
room in the WAL buffers.

How it works, in PostgreSQL's terms (src/backend/access/transam/xlog.c):

- **Group commit**: one task at a time is the writer. A committer whose record is not
  durable either becomes the writer — it takes *everything appended so far*, issues one
  write (a ``pwritev`` of at most two slices of the ring per segment) and one sync — or,
  when a write is already going out, parks (a :class:`aiopg_io._glue.Park`) in a heap keyed
  by the LSN it needs. After each round, the parked tasks now covered are woken in LSN
  order, and the lowest one still uncovered is woken to lead the next round, which by then
  has gathered every commit that arrived meanwhile. On asyncio (3.11+) the tasks parked
  until a round takes its snapshot of the log share one wake-up (the glue's
  :class:`aiopg_io._glue.SharedPark`), after the first of them, which parks alone: it is
  the one handed the next round when the round does not cover it. Before its first write
  a leader yields once (a zero-time ``commit_delay``) so the tasks the last round just
  woke append first and one write carries them all; commits arriving while the write is out are written again
  before the sync (up to three writes, one sync). The usual round, one write linked with
  its sync in the segment open for writing, is started with no task waiting on it
  (:meth:`XLogFlush._linked_round`): the callback where its completion is reaped advances
  ``flushed`` (or poisons) and wakes the leader and the covered tasks, so a cancelled
  leader abandons nothing and no cancel scope is paid per round. A lone round (nobody
  parked behind it) is submitted as it is started, not at the end of the tick: a driver
  that runs it in submit (``sync``) has it done before the leader would park, and the
  commit then only yields once (:meth:`XLogFlush.lead_round`). Other rounds (a segment
  entered or left, ``o_dsync``, direct I/O, a sync with nothing new to write) run in the
  leader's task, shielded from cancellation: a cancelled committer does not abandon the
  I/O that others wait on. A round costs one sync plus the CPU of the commits it carries,
  so with many committers (all of them in one sync) that CPU bounds throughput (the figures
  and the command: docs/benchmarks.md, "WAL group commit"; why rounds do not overlap
  there, in "A leaner commit path": two syncs of one open file that overlap may see a
  writeback error reported to only one of them).
- **sync_method** (``wal_sync_method``): ``fdatasync`` (default) and ``fsync`` sync after
  the write; ``o_dsync`` opens segments with ``O_DSYNC`` so the write itself is durable.
  With ``direct=True`` segments are also opened ``O_DIRECT`` and every write covers whole
  aligned blocks: the block holding the end of the last write is written again with the
  new bytes (PostgreSQL rewrites the partial last page the same way). Rewriting those
  bytes is safe even if torn: they are identical to what is on disk.
- **Failure** (``data_sync_retry = off``): any failed write or sync poisons the WAL
  (:meth:`~._xlogctl.XLogCtl.poison_with`). Every parked task and every later call raises
  WALPoisonedError chaining the OSError; ``flushed`` never moves again, so nothing after
  the failure is acknowledged.

Facts relied on:

- A segment's data is durable once it is synced (fsync(2): fdatasync flushes the data and
  the metadata needed to read it back), or written through a descriptor opened ``O_DSYNC``
  (open(2): each write returns once its data is durable as by fdatasync). A segment being
  left is synced before its file is closed, so segments become durable in order.
- After a failed fsync the kernel may have dropped the dirty pages and reports the error
  once per fd (Linux >= 4.13; :mod:`aiopg_io.drivers.base`): a retry can report success
  over lost data (PostgreSQL's "fsyncgate", 2018, hence ``data_sync_retry = off``). So the
  WAL never retries; it poisons itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

import anyio
import anyio.lowlevel

import aiopg_io
from aiopg_io._file import AsyncFile
from aiopg_io._glue import Park, SharedPark, current_glue

from ._format import align_up
from ._segments import WALSegments
from ._xlogctl import XLogCtl

__all__ = ["SYNC_METHODS", "SyncMethod", "XLogFlush"]

SyncMethod = Literal["fdatasync", "o_dsync", "fsync"]
SYNC_METHODS = ("fdatasync", "o_dsync", "fsync")
_WRITES_PER_ROUND = 3
#: The key of the open group (:meth:`XLogFlush.park_behind`) among the parked: above any
#: LSN, so no round wakes it before it is sealed with its members' highest target.
_OPEN_GROUP = 1 << 64


def _dsync_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_DSYNC, 0o666)


class XLogFlush:
    """The writer of ``ctl``'s WAL buffers into the segments of ``segments``, and the
    committers waiting for it (module docstring)."""

    def __init__(self, ctl: XLogCtl, segments: WALSegments, *, sync_method: SyncMethod) -> None:
        self._ctl = ctl
        self._segments = segments
        self.sync_method: SyncMethod = sync_method
        self._opener: Callable[[str, int], int] | None = None
        if sync_method == "o_dsync":
            self._opener = _dsync_opener
        self.io_align = 1  # with direct I/O, what every write is aligned to (set at open)
        self._write_file: AsyncFile | None = None
        self._write_unsynced = False
        # Writer and waiters.
        self._writing = False
        self._just_woken = 0  # tasks the last round woke (they commit again at once)
        # Parked committers in arrival order, which is LSN order: each parks right after
        # placing its record, with the end of the log then as its target.
        self._waiters: list[tuple[int, Park]] = []
        self._lead: Park | None = None  # the parked task handed the next round, not yet running
        # On asyncio (3.11+) the committers parked until the next round's snapshot share one
        # wake-up (a SharedPark, its key its members' highest target): the open group, last
        # among the waiters, keyed _OPEN_GROUP until the round that will cover every member
        # takes its snapshot and seals it. The first
        # task to park after a snapshot parks on its own (_head_parked): the one the lead
        # goes to when that round does not cover it, so a hand-over wakes one task, not a
        # group (whose other members would park again behind later arrivals). Only when
        # that first task was cancelled does the lead go to a group: its first member to
        # resume leads, the others park again, and a commit that parked meanwhile may then
        # return before them (each still only once its own record is durable).
        self._group: SharedPark | None = None
        self._head_parked = False
        glue = current_glue()
        probe = glue.shared_park()
        self._shared_park = glue.shared_park if probe is not None else None
        self._group_type = type(probe)  # (type(None) where parks are not shared)
        self._round_leader: Park | None = None  # the leader of a _linked_round that is out
        self._inline_leader = False  # the leader of a round done in submit is at its checkpoint
        self.park = glue.park
        self._checkpoint = glue.checkpoint
        self._room_waiters: list[anyio.Event] = []
        # Counters.
        self.rounds = 0
        self.writes = 0
        self.syncs = 0
        self.flush_waits = 0
        self.backpressure_waits = 0

    async def flush_to(self, target: int) -> None:
        """Return once every byte below ``target`` is durable: as the writer, or parked
        until a round covers it (or makes this task the next round's leader)."""
        ctl = self._ctl
        while ctl.flushed < target:
            item = self.park_behind(target)
            if item is not None:
                while True:
                    try:
                        await item[1].wait()
                        break
                    except BaseException as exc:
                        if not self.rewait(item, exc):
                            self.abandon_wait(item)
                            raise
                self.woken(item, target)
            else:
                await self.lead_round()

    def rewait(self, item: tuple[int, Park], exc: BaseException) -> bool:
        """True when the parked wait of ``item`` failed with ``exc`` only because another
        member of its group was cancelled (:meth:`aiopg_io._glue.SharedPark.spurious`):
        wait again."""
        park = item[1]
        return type(park) is self._group_type and park.spurious(exc)

    def park_behind(self, target: int) -> tuple[int, Park] | None:
        """When a round is out or handed over, queue a wake-up for ``target`` and return it
        (await its ``wait()``, then call :meth:`woken`, or :meth:`abandon_wait` if the wait
        fails); None when this task should lead a round itself. Split from
        :meth:`flush_to` so that ``WAL.commit`` parks without a coroutine of its own."""
        ctl = self._ctl
        if ctl.closed or ctl.poison is not None:
            ctl.check_usable()
        if self._writing or self._lead is not None:
            self.flush_waits += 1
            shared_park = self._shared_park
            if shared_park is None or not self._head_parked:
                self._head_parked = True
                item: tuple[int, Park] = (target, self.park())
                self._waiters.append(item)
                return item
            group = self._group
            if group is None:
                group = self._group = shared_park()
                assert group is not None
                self._waiters.append((_OPEN_GROUP, group))
            group.members += 1
            if target > group.key:
                group.key = target
            return self._waiters[-1]
        return None

    def seal_group(self) -> None:
        """A round takes its snapshot of the log's end now: the open group's members all
        placed their records before it, so the round covers them; later parkers start a
        new group. Called at every snapshot of a sync round (sealing early is safe: a
        sealed group is keyed by its highest target, and waits while any member is not
        covered)."""
        self._head_parked = False
        group = self._group
        if group is not None:
            self._group = None
            self._waiters[-1] = (group.key, group)  # the open group is always the last

    def woken(self, item: tuple[int, Park], target: int) -> None:
        """After a parked wait for ``target`` returned: a task handed the lead takes it (it
        leads the next round as it loops), or passes it on when a round covered it
        meanwhile. Of a group handed the lead, the first member to resume takes it."""
        park = item[1]
        if type(park) is self._group_type:
            park.members -= 1
        if self._lead is park:
            self._lead = None
            if self._ctl.flushed >= target:
                self._pass_lead()

    def abandon_wait(self, item: tuple[int, Park]) -> None:
        # The wait may have been cancelled before the wake-up came (asyncio cancels the
        # future itself, so it then reads as not set): a task taken off the list by a wake-up
        # is no longer in it, and a lead handed to it must still go on. A group stays for
        # its other members; once none is left it goes as a task's park does.
        park = item[1]
        if type(park) is self._group_type:
            park.members -= 1
            if park.members:
                return
        if park is self._group:
            self._group = None
        if self._lead is park:
            self._lead = None
            self._pass_lead()  # a lead we cannot take goes to the next in line
        else:
            waiters = self._waiters
            for i in range(len(waiters)):
                if waiters[i][1] is park:  # (a group's key changed when it was sealed)
                    del waiters[i]
                    break

    def _pass_lead(self) -> None:
        """Wake the oldest parked task to lead the next round, when no round is out and none
        was handed over yet. Until it runs, a committer that finds no round out parks behind
        it instead of starting one (the woken tasks' turn would otherwise be taken, and
        commits would return out of LSN order)."""
        if self._writing or self._lead is not None or not self._waiters:
            return
        ev = self._waiters.pop(0)[1]
        if ev is self._group:
            self._group = None
        self._lead = ev
        ev.set()

    def _wake_after_round(self) -> None:
        """Wake, in one pass, every parked task the round made durable; then pass the lead."""
        leader = self._round_leader
        if leader is not None:
            self._round_leader = None
            leader.set()
        waiters = self._waiters
        if self._ctl.poison is not None:
            self._waiters = []
            self._lead = None
            self._group = None
            self._head_parked = False
            for _, ev in waiters:
                ev.set()
        elif waiters:
            flushed = self._ctl.flushed
            if waiters[-1][0] <= flushed:  # the usual case: the round covered every one
                self._waiters = []
                self._head_parked = False  # (an open group is never covered: it is not here)
                for _, ev in waiters:
                    ev.set()
                self._just_woken = len(waiters)
            else:
                rest = [item for item in waiters if item[0] > flushed]
                if len(rest) < len(waiters):
                    for target, ev in waiters:
                        if target <= flushed:
                            ev.set()
                self._waiters = rest
                self._just_woken = len(waiters) - len(rest)
                self._pass_lead()
        else:
            self._just_woken = 0
        self._wake_room_waiters()

    def _wake_room_waiters(self) -> None:
        if not self._room_waiters:  # the usual round: no list made per round
            return
        rooms, self._room_waiters = self._room_waiters, []
        for ev in rooms:
            ev.set()

    def wake_all(self) -> None:
        """Wake every parked task (the WAL is closing: each sees it closed)."""
        waiters, self._waiters = self._waiters, []
        self._lead = None
        self._group = None
        self._head_parked = False
        leader, self._round_leader = self._round_leader, None
        if leader is not None:
            leader.set()
        for _, ev in waiters:
            ev.set()
        self._wake_room_waiters()

    async def make_room(self) -> None:
        """Wait until a write has freed some WAL buffers (leading that write if none is out)."""
        self._ctl.check_usable()
        self.backpressure_waits += 1
        if self._writing:
            ev = anyio.Event()
            self._room_waiters.append(ev)
            await ev.wait()
            self._ctl.check_usable()
        else:
            await self.round(sync=False)

    async def lead_round(self) -> None:
        """Lead one sync round (no round is out, none handed over: :meth:`park_behind`
        returned None) and return when it has ended (it made the log durable to where it
        ended when the round took its snapshot, or poisoned the WAL). The usual round is
        :meth:`_linked_round`; any other, :meth:`round`. ``WAL.commit`` calls this directly
        when it finds nothing out: a lone commit's whole path is this coroutine and the
        file's op."""
        started = await self._linked_round()
        if started is False:
            await self.round(sync=True)
        elif started is True:
            # Done within the call (a driver that runs it in submit, as ``sync`` does): the
            # log is durable already. Still a schedule point, as every I/O call is, so a lone
            # committer in a loop neither starves the other tasks nor misses its
            # cancellation (raised with the record durable, as when cancelled while out).
            # A commit that comes meanwhile is not lone: its round is held to the end of the
            # tick (_linked_round), so those after it park behind it and share its sync.
            self._inline_leader = True
            try:
                await self._checkpoint()
            finally:
                self._inline_leader = False
        else:  # out: the callback where it is reaped wakes this leader first
            try:
                await started.wait()
            except BaseException:
                if self._round_leader is started:
                    self._round_leader = None
                raise

    async def _linked_round(self) -> Park | bool:
        """Start a round that is one linked write + sync on the open segment, its completion
        work (advance, or poison; wake) done by the callback where the op is reaped: no task
        waits on the op, so nothing needs shielding from cancellation. Returns the wake-up to
        wait on (given first when the round ends: the leader's record is the round's
        oldest), True when the op completed at once, False, with nothing started, when the
        round is of another kind (left to :meth:`round`): direct I/O, o_dsync, a segment
        to enter or leave, nothing new to write."""
        ctl = self._ctl
        self._writing = True
        try:
            if self._just_woken:
                # The zero-time commit_delay of round(); cancelled here, nothing started.
                self._just_woken = 0
                await self._checkpoint()
            start, upto, durable_to = ctl.write_pos, ctl.insert_pos, ctl.insert_end
            self.seal_group()
            f = self._write_file
            seg = ctl.segment_size
            if (
                f is None
                or upto <= start
                or self.io_align > 1
                or self.sync_method == "o_dsync"
                or not ctl.write_segno * seg <= start < upto <= (ctl.write_segno + 1) * seg
            ):
                self._writing = False
                return False
            ring, ring_size = ctl.ring, ctl.ring_size
            r, n = start % ring_size, upto - start
            bufs = [ring[r : r + n]] if r + n <= ring_size else [ring[r:], ring[: n - (ring_size - r)]]

            def done(nbytes: int, error: OSError | None) -> None:
                if error is not None:
                    ctl.poison_with(error)
                else:
                    ctl.write_pos = upto
                    self._write_unsynced = False  # the sync covered any write left unsynced
                    if ctl.flushed < durable_to:
                        ctl.flushed = durable_to
                self._writing = False
                self._wake_after_round()

            self.rounds += 1
            self.writes += 1
            self.syncs += 1
            sync: Literal["fdatasync", "fsync"] = "fsync" if self.sync_method == "fsync" else "fdatasync"
            await f._start_pwritev_sync(bufs, start - ctl.write_segno * seg, done, sync=sync)
            if self._writing and not self._waiters and not self._inline_leader:
                # A lone round (no task parked behind it): submitted now, not at the end of
                # the tick, so the leader parks with its op already out (on a ring, the
                # kernel starts it one loop pass sooner), and a driver that runs it in
                # submit (``sync``) has it done before the leader would park: no wake-up,
                # one loop pass per lone commit instead of two. Not with tasks parked: done
                # at once, it would wake them before the leader, whose record is older
                # (commits return in LSN order). Not while the leader of a round done at
                # once is still in its schedule point (lead_round): this commit came
                # meanwhile, so others may be coming too, and a round done at once would
                # leave them nothing to park behind.
                f.submit_staged()
            if not self._writing:
                return True  # completed inline: done() has run
            self._round_leader = ev = self.park()
            return ev
        except OSError as exc:  # refused before it started (as round() does with a failed op)
            self._writing = False
            poisoned = ctl.poisoned_by(exc)
            self._wake_after_round()
            raise poisoned from exc
        except BaseException:
            # Nothing was started (cancelled at the checkpoint, or while waiting for a slot).
            self._writing = False
            self._wake_after_round()
            raise

    async def round(self, *, sync: bool) -> None:
        """Write everything appended so far and, with ``sync``, make it durable."""
        ctl = self._ctl
        self._writing = True
        try:
            with anyio.CancelScope(shield=True):
                self.rounds += 1
                try:
                    if sync and self._just_woken:
                        # Let every task runnable now append first (those the last round just
                        # woke): one write then carries all of them. A zero-time commit_delay,
                        # skipped when the last round woke nobody (a lone committer).
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                    # With a sync to follow, the write carries it (one linked op); with
                    # o_dsync, commits that arrive while the write is out join the round: the
                    # leader writes again, each write durable on its own.
                    linked = sync and self.sync_method != "o_dsync"
                    if sync:
                        self.seal_group()  # before this round's first snapshot
                    for _ in range(_WRITES_PER_ROUND if sync else 1):
                        upto = ctl.insert_pos
                        durable_to = ctl.insert_end
                        if upto <= ctl.write_pos:
                            break
                        await self.write(ctl.write_pos, upto, sync=linked)
                        ctl.write_pos = upto
                        if linked:
                            break
                    if self.sync_method == "o_dsync":
                        ctl.flushed = max(ctl.flushed, durable_to)
                    elif sync and ctl.flushed < durable_to:
                        await self.sync_write_file()
                        ctl.flushed = durable_to
                except OSError as exc:
                    raise ctl.poisoned_by(exc) from exc
        finally:
            self._writing = False
            self._wake_after_round()

    async def write(self, start: int, end: int, *, sync: bool = False) -> None:
        """Write the ring's bytes from ``start`` to ``end`` into their segments (widened to
        whole aligned blocks with direct I/O). With ``sync``, the last write and the sync of
        its segment go as one linked op (``AsyncFile.pwritev_sync``: one trip through the
        loop instead of two); a segment left before is synced as it is closed."""
        if self.io_align > 1:
            start -= start % self.io_align
            end = align_up(end, self.io_align)
        ctl = self._ctl
        seg = ctl.segment_size
        ring, ring_size = ctl.ring, ctl.ring_size
        pos = start
        while pos < end:
            segno = pos // seg
            chunk_end = min(end, (segno + 1) * seg)
            f = self._write_file
            if f is None or ctl.write_segno != segno:
                f = await self.segment_for_write(segno)
            r = pos % ring_size
            n = chunk_end - pos
            off = pos - segno * seg
            self.writes += 1
            if sync and chunk_end >= end:
                bufs = [ring[r : r + n]] if r + n <= ring_size else [ring[r:], ring[: n - (ring_size - r)]]
                self.syncs += 1
                await f.pwritev_sync(bufs, off, sync="fsync" if self.sync_method == "fsync" else "fdatasync")
                self._write_unsynced = False
                return
            if r + n <= ring_size:
                await f.pwrite(ring[r : r + n], off)
            else:
                await f.pwritev([ring[r:], ring[: n - (ring_size - r)]], off)
            if self.sync_method == "o_dsync":
                self.syncs += 1
            else:
                self._write_unsynced = True
            pos = chunk_end

    async def sync_write_file(self) -> None:
        """Sync the segment file written last, if it has writes not synced yet."""
        f = self._write_file
        if f is None or not self._write_unsynced:
            return
        self.syncs += 1
        if self.sync_method == "fsync":
            await f.fsync()
        else:
            await f.fdatasync()
        self._write_unsynced = False

    async def segment_for_write(self, segno: int) -> AsyncFile:
        """The open file of segment ``segno`` (made first if missing); the segment left is
        synced and closed."""
        ctl = self._ctl
        if self._write_file is not None and ctl.write_segno == segno:
            return self._write_file
        if self._write_file is not None:
            # Leaving a segment: it must be durable before its file is closed.
            await self.sync_write_file()
            f, self._write_file = self._write_file, None
            await f.aclose()
        await self._segments.ensure(segno)
        self._write_file = await aiopg_io.open(
            ctl.segment_path(segno), "r+b", direct=ctl.direct, driver=ctl.driver, opener=self._opener
        )
        ctl.write_segno = segno
        self._write_unsynced = False
        self._segments.want_ahead()
        return self._write_file

    async def close_file(self) -> None:
        """Close the segment file open for writing (without syncing it)."""
        if self._write_file is not None:
            f, self._write_file = self._write_file, None
            await f.aclose()
