"""A power-loss scenario for a buffer pool: writers change pages while checkpoints run, and
the power is cut after a given number of changes.

This project's checkpoint tests (tests/buffers/test_checkpoint.py) and its power-loss
benchmark (benchmarks/powerloss.py) run it; so can anyone who wants to check a driver, or a
build, against the pool's durability contract. What to check afterwards: every page that
no change touched after the last completed checkpoint began holds the version it had then
(docs/guide.md, "The buffer pool": "When flush returns, every page dirty at its start is
durable").
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..buffers import BufferPool, Relation
    from ._faults import Fault
    from ._injector import FaultInjector

__all__ = ["CheckpointWorkload", "page_version"]


def page_version(blockno: int, version: int, page_size: int) -> bytes:
    """Version ``version`` of block ``blockno``: a whole page of one byte that differs
    between versions and blocks, so every sector on disk names the version it came from (a
    page with sectors of two versions is torn). Version 0 is zeros, as a new file reads."""
    if version == 0:
        return bytes(page_size)
    return bytes([(blockno * 37 + version) % 255 + 1]) * page_size


class CheckpointWorkload:
    """``writers`` tasks change whole pages of a relation (each change a new
    :func:`page_version`, some made while the page stays pinned across a step of the others)
    while a checkpointer calls ``pool.flush()`` at seeded intervals; after ``cut_at`` changes
    the ``power_cut`` fault is added to the injector (a dead disk: every later write and sync
    fails) and the tasks stop.

    What it did is kept here as it goes, so it is there even when the pool's closing
    checkpoint then raises: ``history`` maps each block to its ``(change number, version)``
    pairs (change 0: the file as it was, version 0), ``completed`` holds the change number at
    which each checkpoint that returned began.
    """

    def __init__(self, nblocks: int, *, seed: int, writers: int, cut_at: int) -> None:
        self.seed = seed
        self.writers = writers
        self.cut_at = cut_at
        self.history: dict[int, list[tuple[int, int]]] = {b: [(0, 0)] for b in range(nblocks)}
        self.changes = 0
        self.completed: list[int] = []
        self.cut = False

    async def run(self, pool: BufferPool, rel: Relation, injector: FaultInjector, power_cut: Fault) -> None:
        """Run the writers and the checkpointer on ``rel`` until the power is cut."""
        async with anyio.create_task_group() as tg:
            for k in range(self.writers):
                tg.start_soon(self._writer, pool, rel, injector, power_cut, k)
            tg.start_soon(self._checkpointer, pool)

    async def _writer(
        self, pool: BufferPool, rel: Relation, injector: FaultInjector, power_cut: Fault, k: int
    ) -> None:
        wr = random.Random(self.seed * 1000 + k)
        nblocks = len(self.history)
        while not self.cut:
            b = wr.randrange(nblocks)
            with await pool.read_page(rel, b) as page:
                if wr.random() < 0.3:
                    await anyio.sleep(0)  # keep it pinned across a step of the others
                if self.cut:
                    return
                v = self.history[b][-1][1] + 1
                self.changes += 1
                page.data[:] = page_version(b, v, pool.page_size)
                page.mark_dirty()
                self.history[b].append((self.changes, v))
                if self.changes >= self.cut_at:
                    self.cut = True
                    injector.add(power_cut)
                    return
            if wr.random() < 0.5:
                await anyio.sleep(0)

    async def _checkpointer(self, pool: BufferPool) -> None:
        cr = random.Random(self.seed * 1000 + 999)
        while not self.cut:
            for _ in range(cr.randint(0, 6)):
                await anyio.sleep(0)
            began = self.changes
            try:
                await pool.flush()
            except OSError:
                return  # the power was cut
            self.completed.append(began)
