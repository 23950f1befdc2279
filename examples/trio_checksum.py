"""Checksum every file of a directory tree concurrently, under trio.

    python examples/trio_checksum.py DIR [--files-in-flight 16] [--driver worker]

Prints ``sha256  path`` lines sorted by path (the format of ``sha256sum``), then a total.
Files are hashed ``--files-in-flight`` at a time; each one is read sequentially in 1 MiB
chunks with two reads in flight, so the disk always has work while hashlib hashes. A long
run prints its progress on stderr every second (``--progress``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import time
from collections.abc import Callable

import trio
from _progress import Progress, add_progress_option

import aiopg_io

CHUNK = 1 << 20


async def checksum(path: str, driver: str | None, hashed: Callable[[int], None]) -> str:
    h = hashlib.sha256()
    async with aiopg_io.open(path, "rb", driver=driver) as f:
        size = (await f.stat()).st_size
        offsets = range(0, size, CHUNK)
        # Double buffering: the next chunk is in flight while this one is hashed.
        pending, recv = trio.open_memory_channel[bytes](1)

        async def reader() -> None:
            async with pending:
                for off in offsets:
                    await pending.send(await f.pread(CHUNK, off))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            async with recv:
                async for chunk in recv:
                    h.update(chunk)
                    hashed(len(chunk))
    return h.hexdigest()


async def checksum_tree(
    root: str, *, files_in_flight: int, driver: str | None, every: float = 1.0
) -> dict[str, str]:
    paths = sorted(
        os.path.join(d, name)
        for d, _, names in os.walk(root)
        for name in names
        if os.path.isfile(os.path.join(d, name))
    )
    results: dict[str, str] = {}
    limiter = trio.CapacityLimiter(files_in_flight)
    progress = Progress("hashing", sum(os.path.getsize(p) for p in paths), every=every)
    done = 0

    def hashed(n: int) -> None:
        nonlocal done
        done += n
        progress(done)

    async def one(path: str) -> None:
        async with limiter:
            results[path] = await checksum(path, driver, hashed)

    async with trio.open_nursery() as nursery:
        for path in paths:
            nursery.start_soon(one, path)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--files-in-flight", type=int, default=16)
    p.add_argument("--driver", default=None)
    add_progress_option(p)
    a = p.parse_args()
    t0 = time.perf_counter()
    job = functools.partial(
        checksum_tree, a.root, files_in_flight=a.files_in_flight, driver=a.driver, every=a.progress
    )
    sums = trio.run(job)
    dt = time.perf_counter() - t0
    total = 0
    for path, digest in sorted(sums.items()):
        print(f"{digest}  {path}")
        total += os.path.getsize(path)
    print(f"{len(sums)} files, {total} bytes in {dt:.3f} s ({total / max(dt, 1e-9) / (1 << 20):.1f} MiB/s)")


if __name__ == "__main__":
    main()
