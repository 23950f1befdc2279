"""A sequential table scan through a read stream, printing MiB/s.

    python examples/scan.py FILE --create 256M      # first make a table of random pages
    python examples/scan.py FILE [--direct] [--driver io_uring] [--max-ios 16] [--loop trio]

The scan asks the buffer pool for every page of FILE in order, through
``pool.read_stream(rel, range(rel.nblocks))``, as PostgreSQL's sequential scan does. The
stream looks ahead: consecutive pages missing from the pool become one vectored read of up
to ``io_combine_limit`` pages (128 KiB), and while reads have to be waited for it widens its
look-ahead until ``--max-ios`` such reads are in flight together (read_stream.c's distance).
The consumer hashes each page while the reads for later pages run; the SHA-256 of every
byte scanned is printed, so ``sha256sum FILE`` checks the result.

Without ``--direct`` a second scan mostly measures the page cache; ``--direct`` (O_DIRECT)
reads from the device every time. Creating the table and scanning it print their progress on
stderr every second (``--progress``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import time

import anyio
from _progress import MiB, Progress, add_progress_option

from aiopg_io.buffers import BufferPool


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = units.get(text[-1:].lower())
    return int(text[:-1]) * unit if unit else int(text)


def create(path: str, size: int, page_size: int, every: float) -> int:
    """Write ``size`` random bytes (rounded up to whole pages): a table to scan."""
    npages = -(-size // page_size)
    progress = Progress(f"creating {path}", npages * page_size, every=every)
    with open(path, "wb") as f:
        for first in range(0, npages, 128):
            f.write(os.urandom(min(128, npages - first) * page_size))
            progress(f.tell())
    return npages * page_size


async def scan(args: argparse.Namespace) -> None:
    digest = hashlib.sha256()
    async with BufferPool(args.buffers, args.page_size, direct=args.direct, driver=args.driver) as pool:
        rel = await pool.open(args.file)
        progress = Progress("scanning", rel.nblocks * args.page_size, every=args.progress)
        t0 = time.perf_counter()
        scanned = 0
        async for page in pool.read_stream(rel, range(rel.nblocks), max_ios=args.max_ios):
            with page:  # pinned until the end of the block, then the buffer can be reused
                digest.update(page.data)
            scanned += args.page_size
            progress(scanned)
        elapsed = time.perf_counter() - t0
        stats = pool.statistics()
    nbytes = rel.nblocks * args.page_size
    print(
        f"scanned {rel.nblocks} pages ({nbytes} bytes) in {elapsed:.3f} s: "
        f"{nbytes / max(elapsed, 1e-9) / MiB:.1f} MiB/s, {stats.reads} reads of "
        f"{stats.blocks_per_read:.1f} pages on average"
    )
    print(f"sha256 {digest.hexdigest()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", help="the table: a file of whole pages")
    p.add_argument("--create", metavar="SIZE", help="first write SIZE (e.g. 256M) of random pages to FILE")
    p.add_argument("--direct", action="store_true", help="O_DIRECT: bypass the page cache")
    p.add_argument("--driver", default=None, help="io_uring, posix_aio, worker, sync (default: auto)")
    p.add_argument("--page-size", type=int, default=8192)
    p.add_argument("--buffers", type=int, default=1024, help="pages in the pool (default 1024: 8 MiB)")
    p.add_argument("--max-ios", type=int, default=16, help="combined reads in flight at most (default 16)")
    p.add_argument("--loop", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    add_progress_option(p)
    args = p.parse_args()
    if args.create:
        size = create(args.file, parse_size(args.create), args.page_size, args.progress)
        print(f"created {args.file}: {size} bytes")
    backend, options = ("asyncio", {"use_uvloop": True}) if args.loop == "uvloop" else (args.loop, {})
    anyio.run(functools.partial(scan, args), backend=backend, backend_options=options)


if __name__ == "__main__":
    main()
