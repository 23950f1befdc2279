"""Simulated power losses on the WAL and on the buffer pool, counted: what was acknowledged
durable, and whether any of it was lost, corrupted or invented, or left a log that does not
reopen.

Every cell is one experiment (the WAL with one sync method, with or without O_DIRECT; the
buffer pool, with or without O_DIRECT) on one event loop (asyncio, uvloop, trio) and one
driver that runs here (``aiopg_io.drivers.unavailable_reason``). A *run* is one simulated
power loss (``aiopg_io.testing.PowerLossSimulator``, ``atomic_sectors=True``, seeded):

- **WAL**: committers commit records (random sizes, some spanning pages and segments) and
  others are appended without a flush. At a seeded point the power is cut: every later
  write and sync fails without reaching the disk (a dead disk), and the write in flight at
  the cut may be cut short first (its first bytes written, as a torn write of an O_DSYNC
  descriptor could leave). Then the simulator crashes the files and the directory entries,
  and the WAL is reopened with the plain driver and read. Runs come in chains of
  ``CHAIN`` on one directory: each run recovers the log the last one left.
  *acknowledged*: commits that returned. *lost*: an acknowledged record, or one that an
  earlier reopen had read (recovery made it durable), missing or changed. *corrupt*: a
  record whose bytes are not the ones written, or LSNs out of order. *invented*: a record
  never written, or at another LSN. *reopen failures*: ``WAL.open`` raised.
- **pool**: writers change whole pages of a small pool while a checkpointer flushes; the
  power is cut after a seeded number of changes (the same dead disk). The relation is made
  by the pool in half the runs (its directory entry is then durable only through the
  checkpoint's directory fsync). Then it is reopened in a fresh pool and every page read.
  *acknowledged*: pages checked against the last completed checkpoint (written before it
  began). *lost*: such a page holding an older version, or missing. *corrupt*: a torn page
  with sectors of an older version (sectors of versions written after the checkpoint began
  may mix: a write in flight at the cut). *invented*: a sector that no version of that page
  ever held. *reopen failures*: the
  relation missing or refused by the pool after a completed checkpoint.

Run from a checkout, with the ``bench`` extra (trio, uvloop) installed
(``pip install -e '.[bench]'``); ``--runs`` is the number of runs per experiment, spread over
its cells::

    python benchmarks/powerloss.py [--runs 200] [--seed 0] [--cell wal/o_dsync] [--jobs N]

Failures are listed after the table with their cell and seed; ``--cell`` and ``--seed``
replay one.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio

from aiopg_io.buffers import BufferPool
from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason
from aiopg_io.testing import CheckpointWorkload, Fault, FaultInjector, PowerLossSimulator, page_version
from aiopg_io.wal import WAL, SyncMethod, WALPoisonedError

LOOPS = ("asyncio", "uvloop", "trio")
WAL_METHODS = ("fdatasync", "fsync", "o_dsync", "fdatasync+direct", "o_dsync+direct")
POOL_MODES = ("buffered", "direct")
CHAIN = 4  # WAL runs per directory: each recovers what the last one left
SEG = 64 * 1024  # small segments: records cross them
PS = 1024  # pool pages of two 512-byte sectors: a page can be torn between them
SECTOR = 512
NBLOCKS = 8
#: Every write and sync fails from the power cut on, without reaching the disk.
DEAD_DISK = Fault(kind=("writes", "syncs", "fallocate", "ftruncate"), errno=errno.EIO, times=None)


@dataclass
class Tally:
    runs: int = 0
    acknowledged: int = 0
    lost: int = 0
    corrupt: int = 0
    invented: int = 0
    reopen_failures: int = 0
    failures: list[str] = field(default_factory=list)  # "seed S: what", the first few

    def add(self, other: Tally) -> None:
        self.runs += other.runs
        self.acknowledged += other.acknowledged
        self.lost += other.lost
        self.corrupt += other.corrupt
        self.invented += other.invented
        self.reopen_failures += other.reopen_failures
        self.failures += other.failures[: max(0, 20 - len(self.failures))]

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(what)


@dataclass(frozen=True)
class Cell:
    experiment: str  # "wal" or "pool"
    mode: str  # a WAL sync method (+direct), or a pool mode
    loop: str
    driver: str

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.mode}/{self.loop}/{self.driver}"

    @property
    def direct(self) -> bool:
        return self.mode.endswith("direct")


def _backend(loop: str) -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"use_uvloop": True}) if loop == "uvloop" else (loop, {})


# -- the WAL -----------------------------------------------------------------------------------


def payload(tag: str, length: int) -> bytes:
    """A record that names itself and whose bytes follow from its name."""
    head = f"{tag}:{length}:".encode()
    block = hashlib.sha256(head).digest()
    return head + (block * (length // len(block) + 1))[:length]


def tag_of(data: bytes) -> str | None:
    """The tag of a record made by :func:`payload`; None when its bytes are not such a record."""
    try:
        tag, length, _ = data.split(b":", 2)
        name = tag.decode()
        return name if payload(name, int(length)) == data else None
    except ValueError:
        return None


async def wal_chain(cell: Cell, directory: Path, seeds: list[int], tally: Tally) -> None:
    """``len(seeds)`` runs on one directory, each crashing what the last one recovered."""
    expected: dict[int, str] = {}  # lsn -> tag: acknowledged, or read back after a reopen
    written: dict[str, int | None] = {}  # every tag submitted -> its LSN when known
    for seed in seeds:
        survivors = await wal_run(cell, directory, seed, expected, written, tally)
        if survivors is None:
            return  # the directory is unusable: the chain ends
        expected = survivors


async def wal_run(
    cell: Cell,
    directory: Path,
    seed: int,
    expected: dict[int, str],
    written: dict[str, int | None],
    tally: Tally,
) -> dict[int, str] | None:
    """One power loss; what must survive the next one (None: the log did not reopen)."""
    sync_method = cast(SyncMethod, cell.mode.split("+")[0])
    rng = random.Random(seed)
    tally.runs += 1
    sim = PowerLossSimulator(cell.driver, atomic_sectors=True)
    inj = FaultInjector(driver=sim)
    acked_now = 0
    cut_at = rng.randint(0, 60) if rng.random() < 0.85 else None
    cut = False

    def cut_power() -> None:
        nonlocal cut
        if cut:
            return
        cut = True
        if rng.random() < 0.5:
            # The write in flight at the cut gets only its first bytes to the disk.
            short = rng.randrange(0, 8) * (4096 if cell.direct else SECTOR)
            inj.add(Fault(kind="writes", short=short))
        inj.add(DEAD_DISK)

    try:
        wal = await WAL.open(
            directory,
            driver=inj,
            sync_method=sync_method,
            direct=cell.direct,
            segment_size=SEG,
            segments_ahead=rng.choice([0, 1]),
            wal_buffers=rng.choice([1, 16 * 1024, 64 * 1024]),
        )
    except Exception as exc:  # the last run's crash left a log that does not recover
        tally.reopen_failures += 1
        tally.fail(f"seed {seed}: WAL.open under the simulator raised {type(exc).__name__}: {exc}")
        sim.discard()
        return None

    async def committer(k: int) -> None:
        nonlocal acked_now
        cr = random.Random(seed * 1000 + k)
        for i in range(cr.randint(1, 12)):
            if cut:
                return
            tag = f"{seed}.{k}.{i}"
            size = cr.choice([0, 10, 100, 700, 3000, 9000, 20000])
            written[tag] = None
            try:
                lsn = await wal.commit(payload(tag, size))
            except WALPoisonedError:
                return
            written[tag] = lsn
            expected[lsn] = tag
            acked_now += 1
            if cut_at is not None and acked_now >= cut_at:
                cut_power()
            if cr.random() < 0.3:
                await anyio.sleep(0)

    try:
        async with anyio.create_task_group() as tg:
            for k in range(rng.randint(1, 16)):
                tg.start_soon(committer, k)
        if not cut:
            for i in range(rng.randint(0, 20)):  # appended, never flushed
                tag = f"{seed}.u.{i}"
                written[tag] = None
                try:
                    written[tag] = await wal.append(payload(tag, rng.choice([50, 700, 5000])))
                except WALPoisonedError:
                    break
            if cut_at is not None:
                cut_power()
                with anyio.move_on_after(5):
                    try:
                        await wal.flush()  # the flush the cut interrupts
                    except WALPoisonedError:
                        pass
    finally:
        await wal.close(flush=False)
    tally.acknowledged += acked_now
    sim.crash(seed=seed)
    # Reopen with the plain driver, on the same loop and driver.
    try:
        async with WAL.open(
            directory,
            driver=cell.driver,
            sync_method=sync_method,
            direct=cell.direct,
            segment_size=SEG,
            segments_ahead=0,
        ) as wal2:
            got = [r async for r in wal2.read()]
    except Exception as exc:  # any reason the log will not reopen or read is a finding
        tally.reopen_failures += 1
        tally.fail(f"seed {seed}: the WAL does not reopen: {type(exc).__name__}: {exc}")
        return None
    lsns = [lsn for lsn, _ in got]
    if lsns != sorted(set(lsns)):
        tally.corrupt += 1
        tally.fail(f"seed {seed}: LSNs out of order or repeated")
    have: dict[int, str] = {}
    for lsn, data in got:
        found = tag_of(data)
        if found is None:
            tally.corrupt += 1
            tally.fail(f"seed {seed}: record at {lsn:#x} has bytes never written ({data[:40]!r}...)")
            continue
        have[lsn] = found
        if found not in written or written[found] not in (None, lsn):
            tally.invented += 1
            tally.fail(f"seed {seed}: record {found!r} at {lsn:#x} was never written there")
    for lsn, tag in sorted(expected.items()):
        if have.get(lsn) != tag:
            tally.lost += 1
            tally.fail(f"seed {seed}: record {tag!r} at {lsn:#x} lost (found {have.get(lsn)!r})")
    # What the reopen read is durable now (recovery synced it): it must stay.
    return have


# -- the buffer pool ---------------------------------------------------------------------------


def version(blockno: int, v: int) -> bytes:
    """Version ``v`` of a block (0: the zeros it starts with); each sector names its version."""
    return page_version(blockno, v, PS)


async def pool_run(cell: Cell, directory: Path, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    tally.runs += 1
    nbuffers = rng.choice([3, 4])
    cut_at = rng.randint(10, 60)
    path = directory / f"rel{seed}"
    create = rng.random() < 0.5
    if not create:
        path.write_bytes(bytes(PS * NBLOCKS))  # durable before the simulator sees it
    sim = PowerLossSimulator(cell.driver, atomic_sectors=True)
    inj = FaultInjector(driver=sim)
    work = CheckpointWorkload(NBLOCKS, seed=seed, writers=rng.choice([2, 3]), cut_at=cut_at)
    try:
        async with BufferPool(nbuffers, PS, direct=cell.direct, driver=inj) as pool:
            rel = await pool.open(path, create=create)
            if create:
                await pool.extend(rel, NBLOCKS)
            await work.run(pool, rel, inj, DEAD_DISK)
    except OSError:
        pass  # the closing checkpoint, on the dead disk (or a write the cut failed)
    sim.crash(seed=seed)
    history, completed = work.history, work.completed
    if not completed:
        path.unlink(missing_ok=True)
        return
    began = completed[-1]
    try:
        async with BufferPool(NBLOCKS, PS, direct=cell.direct, driver=cell.driver) as check:
            rel = await check.open(path)
            blocks = []
            for b in range(min(rel.nblocks, NBLOCKS)):
                with await check.read_page(rel, b) as page:
                    blocks.append(bytes(page.data))
    except Exception as exc:
        tally.reopen_failures += 1
        tally.fail(
            f"seed {seed}: the relation does not reopen after a checkpoint: {type(exc).__name__}: {exc}"
        )
        path.unlink(missing_ok=True)
        return
    path.unlink()
    for b in range(NBLOCKS):
        got = blocks[b] if b < len(blocks) else b""
        at_start = max(v for n, v in history[b] if n <= began)
        later = [v for n, v in history[b] if n > began]
        if at_start == 0 and not later:
            continue  # never written: nothing acknowledged
        if at_start:
            tally.acknowledged += 1
        where = f"seed {seed}: block {b} should hold version {at_start}"
        if len(got) < PS:
            if at_start:
                tally.lost += 1
                tally.fail(f"{where}, but the relation has {len(blocks)} blocks")
            continue
        ever = {v for _, v in history[b]}
        allowed = {at_start, *later}
        sector_versions: list[int | None] = []
        for i in range(0, PS, SECTOR):
            vs = [v for v in ever if version(b, v)[i : i + SECTOR] == got[i : i + SECTOR]]
            sector_versions.append(vs[0] if vs else None)
        if None in sector_versions:
            tally.invented += 1
            tally.fail(f"{where}, holds a sector no version had ({got[:8]!r}...)")
        elif all(v in allowed for v in sector_versions):
            continue  # torn between versions written after the checkpoint began: allowed
        elif len(set(sector_versions)) == 1:
            tally.lost += 1
            tally.fail(f"{where} (or later: {later}), holds version {sector_versions[0]}")
        else:
            tally.corrupt += 1
            tally.fail(f"{where} (or later: {later}), holds a torn page of versions {sector_versions}")


# -- running the cells -------------------------------------------------------------------------


def run_chunk(cell: Cell, seeds: list[int], base: str) -> Tally:
    """One process's share of a cell (runs in a worker process)."""
    tally = Tally()
    backend, options = _backend(cell.loop)
    directory = Path(tempfile.mkdtemp(prefix="powerloss-", dir=base))

    async def main() -> None:
        if cell.experiment == "wal":
            for i in range(0, len(seeds), CHAIN):
                d = directory / f"wal{seeds[i]}"
                await wal_chain(cell, d, seeds[i : i + CHAIN], tally)
                shutil.rmtree(d, ignore_errors=True)
        else:
            for seed in seeds:
                await pool_run(cell, directory, seed, tally)

    try:
        anyio.run(main, backend=backend, backend_options=options)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return tally


def direct_reason(base: str) -> str | None:
    probe = os.path.join(base, ".odirect-probe")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | getattr(os, "O_DIRECT", 0), 0o600)
    except OSError as exc:
        return f"{base} refuses O_DIRECT: {exc}"
    os.close(fd)
    os.unlink(probe)
    return None


def cells(only: str | None, base: str) -> tuple[list[Cell], list[str]]:
    out, skipped = [], []
    dio = direct_reason(base)
    for experiment, modes in (("wal", WAL_METHODS), ("pool", POOL_MODES)):
        for mode in modes:
            for loop in LOOPS:
                for driver in DRIVER_NAMES:
                    cell = Cell(experiment, mode, loop, driver)
                    if only is not None and only not in cell.name:
                        continue
                    reason = unavailable_reason(driver, direct=cell.direct)
                    if reason is None and cell.direct:
                        reason = dio
                    if reason is None and loop == "uvloop":
                        try:
                            import uvloop  # noqa: F401
                        except ImportError as exc:
                            reason = f"uvloop is not installed ({exc})"
                    if reason is not None:
                        skipped.append(f"{cell.name}: {reason}")
                    else:
                        out.append(cell)
    return out, skipped


def plan(cs: list[Cell], runs: int, seed: int, chunk: int) -> list[tuple[Cell, list[int]]]:
    """Each experiment's ``runs`` spread over its cells, cut into chunks (whole WAL chains)."""
    jobs = []
    for experiment in ("wal", "pool"):
        mine = [c for c in cs if c.experiment == experiment]
        for i, c in enumerate(mine):
            n = runs // len(mine) + (1 if i < runs % len(mine) else 0) if mine else 0
            # From the seed and the cell's name only: --cell NAME replays a cell's runs.
            cell_seed = seed * 10**9 + zlib.crc32(c.name.encode()) % 100_000 * 10_000
            seeds = [cell_seed + k for k in range(n)]
            step = max(CHAIN, chunk - chunk % CHAIN)
            jobs += [(c, seeds[j : j + step]) for j in range(0, n, step)]
    # Longest-running first keeps the workers busy to the end.
    return sorted(jobs, key=lambda j: -len(j[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/powerloss.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=200,
        help="power losses per experiment (WAL, pool), spread over its cells (default 200)",
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="base seed; each cell derives its runs' seeds from it (default 0)"
    )
    ap.add_argument(
        "--cell", default=None, help="run only cells whose name (experiment/mode/loop/driver) contains this"
    )
    ap.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: the CPU count)"
    )
    ap.add_argument(
        "--dir",
        default=None,
        help="where the files go (default: a temporary directory; must accept O_DIRECT for the direct cells)",
    )
    ap.add_argument("--chunk", type=int, default=40, help="runs per job handed to a worker (default 40)")
    args = ap.parse_args(argv)
    if args.runs < 0:
        ap.error(f"--runs {args.runs}: must be >= 0")
    base = args.dir or tempfile.mkdtemp(prefix="aiopg-powerloss-")
    os.makedirs(base, exist_ok=True)
    cs, skipped = cells(args.cell, base)
    jobs = plan(cs, args.runs, args.seed, args.chunk)
    t0 = time.monotonic()
    results: dict[str, Tally] = {c.name: Tally() for c in cs}
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads and rings
    try:
        with ctx.Pool(max(1, args.jobs)) as workers:
            pending = [(c, workers.apply_async(run_chunk, (c, seeds, base))) for c, seeds in jobs]
            total, done = sum(len(seeds) for _, seeds in jobs), 0
            for (c, res), (_, seeds) in zip(pending, jobs, strict=True):
                results[c.name].add(res.get())
                done += len(seeds)
                print(f"{done}/{total} runs, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    wall = time.monotonic() - t0
    print_table(cs, results, wall, args)
    for line in skipped:
        print(f"skipped {line}")
    bad = False
    for name, t in results.items():
        for f in t.failures:
            bad = True
            print(f"FAILURE {name}: {f}")
    return 1 if bad else 0


def print_table(cs: list[Cell], results: dict[str, Tally], wall: float, args: argparse.Namespace) -> None:
    head = ("experiment", "runs", "acknowledged", "lost", "corrupt", "invented", "reopen failures")
    rows: list[tuple[str, ...]] = []
    totals: dict[str, Tally] = {}
    for c in cs:
        t = results[c.name]
        rows.append((c.name, *_nums(t)))
        totals.setdefault(c.experiment, Tally()).add(t)
    for experiment, t in totals.items():
        what = "commits" if experiment == "wal" else "checkpointed pages"
        rows.append((f"{experiment} (all cells; acknowledged = {what})", *_nums(t)))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(r))

    print(
        f"powerloss.py --runs {args.runs} --seed {args.seed}: {len(cs)} cells, "
        f"{wall:.0f} s wall, {args.jobs} jobs"
    )
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for i, r in enumerate(rows):
        if i == len(cs):
            print("  ".join("-" * w for w in widths))
        print(line(r))


def _nums(t: Tally) -> tuple[str, ...]:
    return tuple(str(n) for n in (t.runs, t.acknowledged, t.lost, t.corrupt, t.invented, t.reopen_failures))


if __name__ == "__main__":
    sys.exit(main())
