"""Benchmark: 4 KiB random reads through posix_aio, beside worker and io_uring (issue 7).

One file (256 MiB by default), random 4 KiB-aligned offsets, N tasks each awaiting one
``preadinto`` after another (N reads in flight), ``--seconds`` per configuration after a short
warm-up, on one event loop (asyncio by default). Buffered runs read a warm page cache (the
file is read through once first); direct runs use O_DIRECT and aligned buffers.

Contenders: ``posix_aio`` (glibc AIO, requests on one fd spread over dup()s), ``posix_aio
serial`` (``spread_fds=0``: glibc's own one-thread-per-fd behaviour), ``worker`` and
``io_uring`` when its module exists and runs here.

Run: ``python -m aiopg_io.bench.posix_aio [--size 256M] [--seconds 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import anyio

import aiopg_io
from aiopg_io.drivers import unavailable_reason

__all__ = ["add_arguments", "main"]

BS = 4096
DEPTHS = (1, 8, 32)
_WARMUP_SECONDS = 0.3
_OFFSETS = 1 << 15


@dataclass
class Result:
    mode: str  # "buffered" | "direct"
    contender: str
    spec: str
    loop: str
    depth: int
    iops: float
    cpu_us_per_op: float


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=_parse_size, default=256 << 20, help="file size (default 256M)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per configuration")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (median reported)")
    parser.add_argument(
        "--depths", type=lambda s: tuple(int(x) for x in s.split(",")), default=DEPTHS, help="e.g. 1,8,32"
    )
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop", "trio"])
    parser.add_argument("--dir", default=None, help="where to create the file (default: a temp dir)")
    parser.add_argument("--json", default="bench-posix_aio.json", help="where to write the results")
    parser.add_argument("--modes", default="buffered,direct", help="buffered,direct")


def _contenders() -> list[tuple[str, str]]:
    out = [("posix_aio", "posix_aio"), ("posix_aio serial", "posix_aio:spread_fds=0"), ("worker", "worker")]
    if importlib.util.find_spec("aiopg_io.drivers.io_uring") is not None:
        out.append(("io_uring", "io_uring"))
    return out


async def _measure(path: str, spec: str, direct: bool, depth: int, seconds: float) -> tuple[float, float]:
    size = os.path.getsize(path)
    rng = random.Random(depth)
    offsets = [rng.randrange(0, size // BS) * BS for _ in range(_OFFSETS)]
    async with aiopg_io.open(path, "rb", direct=direct, driver=spec, buffering=0) as f:
        counts = [0] * depth

        async def reader(i: int, until: float) -> None:
            buf = aiopg_io.aligned_buffer(BS)
            k = i * 997
            clock = time.perf_counter
            n = 0
            while clock() < until:
                await f.preadinto(buf, offsets[k % _OFFSETS])
                k += 1
                n += 1
            counts[i] = n

        async def phase(length: float) -> tuple[int, float, float]:
            for i in range(depth):
                counts[i] = 0
            t0, c0 = time.perf_counter(), time.process_time()
            async with anyio.create_task_group() as tg:
                for i in range(depth):
                    tg.start_soon(reader, i, t0 + length)
            return sum(counts), time.perf_counter() - t0, time.process_time() - c0

        await phase(_WARMUP_SECONDS)
        ops, wall, cpu = await phase(seconds)
    return ops / wall, cpu / max(ops, 1) * 1e6


def _make_file(directory: str, size: int) -> str:
    path = os.path.join(directory, "bench-posix_aio.dat")
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:  # warm the page cache for the buffered runs
        while f.read(1 << 22):
            pass
    return path


def _backend(loop: str) -> tuple[str, dict[str, object]]:
    if loop == "uvloop":
        return "asyncio", {"use_uvloop": True}
    return loop, {}


def main(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m]
    tmp = tempfile.mkdtemp(prefix="aiopg_io-bench-", dir=args.dir)
    results: list[Result] = []
    try:
        path = _make_file(tmp, args.size)
        backend, options = _backend(args.loop)
        for mode in modes:
            direct = mode == "direct"
            for label, spec in _contenders():
                reason = unavailable_reason(spec.partition(":")[0], direct=direct)
                if reason is not None:
                    print(f"skip {label} ({mode}): {reason}", file=sys.stderr)
                    continue
                for depth in args.depths:
                    runs = [
                        anyio.run(
                            _measure,
                            path,
                            spec,
                            direct,
                            depth,
                            args.seconds,
                            backend=backend,
                            backend_options=options,
                        )
                        for _ in range(max(1, args.repeat))
                    ]
                    iops = statistics.median(x for x, _ in runs)
                    cpu = statistics.median(y for _, y in runs)
                    r = Result(mode, label, spec, args.loop, depth, iops, cpu)
                    results.append(r)
                    print(
                        f"{mode:8} {label:17} depth {depth:3}: {iops:10.0f} IOPS  {cpu:7.1f} us CPU/op",
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(_table(results, args.depths))
    with open(args.json, "w") as out:
        json.dump(
            {
                "size": args.size,
                "seconds": args.seconds,
                "loop": args.loop,
                "results": [asdict(r) for r in results],
            },
            out,
            indent=2,
        )
    print(f"\nresults written to {args.json}")
    return 0


def _table(results: list[Result], depths: tuple[int, ...]) -> str:
    head = f"{'mode':8} {'driver':17} " + " ".join(f"{'QD ' + str(d):>10}" for d in depths)
    lines = [
        f"4 KiB random reads, median IOPS ({results[0].loop if results else '-'})",
        head,
        "-" * len(head),
    ]
    rows: dict[tuple[str, str], dict[int, float]] = {}
    for r in results:
        rows.setdefault((r.mode, r.contender), {})[r.depth] = r.iops
    for (mode, label), by_depth in rows.items():
        cells = " ".join(f"{by_depth.get(d, float('nan')):10.0f}" for d in depths)
        lines.append(f"{mode:8} {label:17} {cells}")
    worker = {(r.mode, r.depth): r.iops for r in results if r.contender == "worker"}
    ratios = [
        f"{r.mode} QD{r.depth}: {r.iops / worker[(r.mode, r.depth)]:.2f}x"
        for r in results
        if r.contender == "posix_aio" and worker.get((r.mode, r.depth))
    ]
    if ratios:
        lines.append("posix_aio / worker: " + ", ".join(ratios))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
