"""Benchmark: the buffer pool's own CPU per ``read_page``, with the relation's file stubbed.

The file's ``preadinto`` is replaced by a stub that fills nothing and returns the page size
without suspending, so what is left is the pool's own work per call: the checks, the
lookup, the pin (and for a miss the clock sweep, the eviction, the mapping entry, the
``InFlightIO`` and its end), the ``Page``, and ``release``. Three loops in one task, rounds
interleaved, medians printed (process CPU µs per call):

- ``hit``: ``read_page`` of blocks the pool holds;
- ``miss``: ``read_page`` of blocks it does not (each evicts a clean page);
- ``floor``: the stub's ``preadinto`` awaited plus one ``dict.get`` of a ``(rel, block)``
  key: issue 15's "the same per-call cost as a file ``preadinto`` plus a hash lookup",
  with the read itself taken out as it is from the other two.

The file is real (the pool opens it) but is never read after the warm-up. Results:
docs/benchmarks.md ("read_page's per-call cost"). Run from a checkout (``--backend
uvloop`` or ``trio`` needs the ``bench`` extra: ``pip install -e '.[bench]'``)::

    python benchmarks/pool_call.py [--calls 200000] [--rounds 7] [--backend asyncio] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Generator
from typing import Any

from _common import LOOPS, run_on, script

from aiopg_io.buffers import BufferPool

PAGE = 8192


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=200_000, help="read_page calls per loop and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--nbuffers", type=int, default=1024)
    parser.add_argument("--backend", default="asyncio", choices=LOOPS)
    parser.add_argument("--driver", default=None, help="aiopg_io driver of the file (default: auto)")
    parser.add_argument("--dir", default=None, help="where to put the file (default: the temp directory)")


class _Ready:
    """An awaitable that returns ``n`` without suspending (on any loop)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __await__(self) -> Generator[Any, None, int]:
        return self.n
        yield  # a generator: never reached


class _StubFile:
    """The relation's file with ``preadinto`` stubbed; everything else is the real file's."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._ready = _Ready(PAGE)

    def preadinto(self, buf: Any, offset: int) -> _Ready:
        return self._ready

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def _measure(path: str, args: argparse.Namespace) -> dict[str, list[float]]:
    n = args.calls
    out: dict[str, list[float]] = {"hit": [], "miss": [], "floor": []}
    async with BufferPool(args.nbuffers, PAGE, driver=args.driver) as pool:
        rel = await pool.open(path)
        real = rel.file
        rel.file = _StubFile(real)  # type: ignore[assignment]
        try:
            nb = pool.nbuffers
            held = [i % nb for i in range(n)]
            absent = [nb + i % (rel.nblocks - nb) for i in range(n)]
            mapping: dict[tuple[int, int], object] = {}
            stub = rel.file
            buf = bytearray(PAGE)
            for _ in range(args.rounds):
                for b in range(nb):  # the pool holds blocks 0..nb-1 again
                    (await pool.read_page(rel, b)).release()
                c0 = time.process_time()
                for b in held:
                    (await pool.read_page(rel, b)).release()
                c1 = time.process_time()
                for b in absent:
                    (await pool.read_page(rel, b)).release()
                c2 = time.process_time()
                for b in absent:
                    mapping.get((0, b))
                    await stub.preadinto(buf, b * PAGE)
                c3 = time.process_time()
                out["hit"].append((c1 - c0) / n * 1e6)
                out["miss"].append((c2 - c1) / n * 1e6)
                out["floor"].append((c3 - c2) / n * 1e6)
        finally:
            rel.file = real
    return out


def main(args: argparse.Namespace) -> int:
    tmp = tempfile.mkdtemp(prefix="aiopg_io-bench-pool-call-", dir=args.dir)
    path = os.path.join(tmp, "relation")
    try:
        with open(path, "wb") as f:
            f.truncate(args.nbuffers * 4 * PAGE)
        res = run_on(args.backend, _measure, path, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(
        f"read_page's own CPU per call, file stubbed, {args.backend}, median of {args.rounds} rounds "
        f"of {args.calls} calls"
    )
    for k in ("hit", "miss", "floor"):
        extra = f"  (+{med[k] - med['floor']:.3f} over the floor)" if k != "floor" else ""
        print(f"  {k:<6} {med[k]:.3f} us{extra}")
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/pool_call.py")
