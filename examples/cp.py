"""Copy a file with N reads in flight: the classic io_uring-cp, on asyncio.

    python examples/cp.py SRC DST [--depth 32] [--bs 128k] [--driver io_uring] [--direct]

Each of ``depth`` tasks takes the next block, reads it with ``pread``, and writes it at the
same offset with ``pwrite``; blocks complete in any order, so the copy is positional through
and through. The destination is ``fdatasync``'d before the program says it is done. A long
copy prints its progress on stderr every second (``--progress``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from _progress import Progress, add_progress_option

import aiopg_io


async def copy(
    src: str, dst: str, *, depth: int, bs: int, driver: str | None, direct: bool, every: float = 1.0
) -> int:
    size = os.stat(src).st_size
    progress = Progress("copying", size, every=every)
    next_offset = copied = 0
    async with (
        aiopg_io.open(src, "rb", driver=driver, direct=direct) as fin,
        aiopg_io.open(dst, "wb", driver=driver, direct=direct) as fout,
    ):
        if size:
            await fout.truncate(size)  # direct writes of the last block may overshoot; fixed below

        async def mover() -> None:
            nonlocal next_offset, copied
            buf = aiopg_io.aligned_buffer(bs)
            while next_offset < size:
                off = next_offset
                next_offset += bs
                n = await fin.preadinto(buf, off)
                if direct:
                    await fout.pwrite(buf, off)  # whole aligned block; the size is set below
                else:
                    await fout.pwrite(buf[:n], off)
                copied += n
                progress(copied)

        await asyncio.gather(*(mover() for _ in range(depth)))
        await fout.truncate(size)
        await fout.fdatasync()
    return size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--depth", type=int, default=32, help="reads in flight (default 32)")
    p.add_argument("--bs", default="128k", help="block size (default 128k)")
    p.add_argument("--driver", default=None, help="io_uring, posix_aio, worker, sync (default: auto)")
    p.add_argument("--direct", action="store_true", help="O_DIRECT on both files")
    add_progress_option(p)
    a = p.parse_args()
    bs = int(a.bs[:-1]) * 1024 if a.bs.lower().endswith("k") else int(a.bs)
    t0 = time.perf_counter()
    job = copy(a.src, a.dst, depth=a.depth, bs=bs, driver=a.driver, direct=a.direct, every=a.progress)
    size = asyncio.run(job)
    dt = time.perf_counter() - t0
    print(f"copied {size} bytes in {dt:.3f} s ({size / dt / (1 << 20):.1f} MiB/s)")


if __name__ == "__main__":
    main()
