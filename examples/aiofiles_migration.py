"""One program written for aiofiles, run with aiopg_io by changing one import.

    python examples/aiofiles_migration.py [--lines 20000]

Needs aiofiles (``pip install -e '.[examples]'``). aiofiles runs each call in a thread, so it
takes a few seconds per 20,000 lines (the aiopg_io half a fraction of that); raise ``--lines``
for a longer comparison (each half prints its progress on stderr every second: ``--progress``).

``process()`` below is ordinary aiofiles code: write a log file line by line, read it back
with ``async for``, seek, read a tail, append. It is run twice, once with
``import aiofiles`` and once with ``import aiopg_io as aiofiles``, and the two outputs are
compared and timed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from _progress import Progress, add_progress_option


async def process(aiofiles: Any, path: str, nlines: int, progress: Callable[[int], None]) -> str:
    """Code as an aiofiles user writes it; ``aiofiles`` is whichever module was imported.
    ``progress(n)``: n lines written and read so far."""
    async with aiofiles.open(path, "w", encoding="utf-8") as f:
        for i in range(nlines):
            await f.write(f"{i:08d} event=login user=u{i % 97} ok\n")
            progress(i + 1)
    h = hashlib.sha256()
    count = read = 0
    async with aiofiles.open(path, encoding="utf-8") as f:
        async for line in f:
            if "user=u13 " in line:
                count += 1
            h.update(line.encode())
            read += 1
            progress(nlines + read)
        await f.seek(0)
        head = await f.read(9)
    async with aiofiles.open(path, "a", encoding="utf-8") as f:
        await f.write(f"# {count} logins of u13, first id {head.strip()}\n")
    async with aiofiles.open(path, "rb") as f:
        await f.seek(-40, os.SEEK_END)
        tail = await f.read()
    return f"{h.hexdigest()[:16]} {count} {tail.decode().strip()}"


def run(module: ModuleType, path: str, nlines: int, every: float) -> tuple[str, float]:
    progress = Progress(f"{module.__name__}: lines written and read", 2 * nlines, unit="lines", every=every)
    t0 = time.perf_counter()
    out = asyncio.run(process(module, path, nlines, progress))
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=20_000, help="log lines to write and read (default 20000)")
    add_progress_option(p)
    a = p.parse_args()
    import aiofiles

    import aiopg_io

    with tempfile.TemporaryDirectory(dir=".") as d:
        print(f"aiofiles: writing and reading {a.lines} lines ...", flush=True)
        before, t_before = run(aiofiles, os.path.join(d, "a.log"), a.lines, a.progress)
        print(f"aiopg_io: the same {a.lines} lines ...", flush=True)
        after, t_after = run(aiopg_io, os.path.join(d, "b.log"), a.lines, a.progress)  # the one-line change
    print(f"aiofiles: {t_before:7.3f} s  {before}")
    print(f"aiopg_io: {t_after:7.3f} s  {after}")
    print(f"same output: {before == after}; aiopg_io took {t_after / t_before:.2f}x the time of aiofiles")
    if before != after:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
