"""What the benchmarks share beyond aiopg_io's engine (``aiopg_io.bench``): fio run on a
job of the engine's, aiofile as a target the engine can run, the loop a script runs on, and
the way each script starts, and how it writes its results as JSON.

Not a module of the package: the scripts in this directory import it as their neighbour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from aiopg_io.bench import Job, Target, TaskIO

LOOPS = ("asyncio", "uvloop", "trio")


def int_list(text: str) -> tuple[int, ...]:
    """``1,8,32`` -> (1, 8, 32)."""
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of whole numbers") from None


def run_on(loop: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``fn(*args)`` in a fresh event loop: ``asyncio``, ``uvloop`` or ``trio``."""
    backend = "trio" if loop == "trio" else "asyncio"
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    return anyio.run(fn, *args, backend=backend, backend_options=options)


def script(
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    main: Callable[[argparse.Namespace], int],
    prog: str,
) -> None:
    """Parse the command line with ``add_arguments``, run ``main``, exit with its status."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))


# -- fio -----------------------------------------------------------------------------------------


@dataclass
class FioResult:
    ioengine: str
    iops: float
    bytes_per_s: float
    cpu_us_per_op: float  # fio's own CPU (usr + sys) per I/O


def fio(job: Job, ioengines: tuple[str, ...] = ("io_uring",)) -> FioResult | None:
    """``job`` run by fio with the first of ``ioengines`` that works; None without fio, or
    when none works. Time-based (``runtime`` after ``ramp_time``) unless the job sets
    ``number_ios``."""
    exe = shutil.which("fio")
    if exe is None:
        return None
    for ioengine in ioengines:
        cmd = [
            exe,
            f"--name={job.rw}",
            f"--filename={job.filename}",
            f"--ioengine={ioengine}",
            f"--direct={int(job.direct)}",
            f"--rw={job.rw}",
            f"--bs={job.bs}",
            f"--iodepth={job.iodepth}",
            f"--size={job.size}",
            "--output-format=json",
        ]
        if job.number_ios is None:
            cmd += [f"--runtime={round(job.runtime * 1000)}ms", f"--ramp_time={round(job.ramp * 1000)}ms"]
            cmd.append("--time_based")
        else:
            cmd.append(f"--number_ios={job.number_ios}")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            continue
        report = json.loads(proc.stdout[proc.stdout.index("{") :])
        one = report["jobs"][0]
        side = one["write" if job.is_write else "read"]
        ios = max(1, side["total_ios"])
        cpu_seconds = (one["usr_cpu"] + one["sys_cpu"]) / 100 * one["job_runtime"] / 1000
        return FioResult(ioengine, float(side["iops"]), float(side["bw_bytes"]), cpu_seconds / ios * 1e6)
    return None


# -- the block device under a file ------------------------------------------------------------


def device_stat(path: str) -> str | None:
    """The sysfs ``stat`` file of the block device (or partition) that holds ``path``; None
    where there is none (tmpfs, overlayfs and the like sit on an anonymous device)."""
    st = os.stat(path)
    stat = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat"
    return stat if os.path.exists(stat) else None


def device_reads(stat: str) -> tuple[int, int]:
    """(reads completed, milliseconds spent on them): fields 1 and 4 of the kernel's block
    ``stat`` file (Documentation/block/stat.rst). The milliseconds are each read's time from
    its start in the block layer to its completion, summed (kept in ns since Linux 5.0, shown
    in ms), so between two readings their change over the reads' is the mean time a read
    spends at the device, and that times the reads per second is the mean number at the
    device (Little's law). Every reader of the device counts, not only the job."""
    with open(stat) as f:
        fields = f.read().split()
    return int(fields[0]), int(fields[3])


def device_time_us(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Mean microseconds per read at the device between two :func:`device_reads`."""
    reads = after[0] - before[0]
    return (after[1] - before[1]) * 1e3 / reads if reads > 0 else None


# -- aiofile (caio) --------------------------------------------------------------------------------


class _Aiofile:
    """aiofile as its users write it: one ``AIOFile`` shared by every task, positional
    ``read``/``write`` (caio underneath: io_uring, libaio or threads, in C)."""

    driver = "aiofile"
    alignment = None

    def __init__(self, afp: Any) -> None:
        self._afp = afp

    def task(self) -> AbstractAsyncContextManager[TaskIO]:
        return nullcontext(self)

    async def preadinto(self, buf: memoryview, offset: int, /) -> int:
        data: bytes = await self._afp.read(len(buf), offset)  # aiofile returns new bytes
        return len(data)

    async def pwrite(self, buf: memoryview, offset: int, /) -> int:
        n: int = await self._afp.write(bytes(buf), offset)
        return n


@asynccontextmanager
async def open_aiofile(job: Job, **context_options: Any) -> AsyncIterator[Target]:
    """An engine opener (``run_job(job, open_aiofile)``); buffered I/O only, on asyncio.
    With ``context_options`` (``sqpoll=False``) aiofile runs on a caio context of its own
    made with them; without, on its default context (caio's defaults)."""
    if job.direct or job.loop == "trio":
        raise ValueError("the aiofile contender runs buffered, on asyncio or uvloop")
    import caio
    from aiofile import AIOFile

    context = (
        caio.AsyncioContext(loop=asyncio.get_running_loop(), **context_options) if context_options else None
    )
    try:
        async with AIOFile(job.filename, "r+b" if job.is_write else "rb", context=context) as afp:
            yield _Aiofile(afp)
    finally:
        if context is not None:
            context.close()


def caio_sqpoll_option() -> bool:
    """True where caio's default context takes ``sqpoll=`` (its io_uring backend, in the
    versions that have the option; SQPOLL is then its default where the kernel allows it)."""
    try:
        import caio
    except ImportError:
        return False
    uring = getattr(caio, "linux_uring_asyncio", None)
    return (
        uring is not None
        and caio.AsyncioContext is uring.AsyncioContext
        and hasattr(caio.linux_uring, "SQPOLL_ALLOWED")
    )


def write_json(
    path: str, benchmark: str, args: argparse.Namespace, block_size: int, results: list[Any], **extra: Any
) -> None:
    """``results`` (dataclasses) at ``path`` with what every random-read benchmark records about
    its run (``args.size``, ``seconds``, ``repeat``; the kernel, Python, CPUs), then ``extra``."""
    with open(path, "w") as f:
        json.dump(
            {
                "benchmark": benchmark,
                "block_size": block_size,
                "file_size": args.size,
                "seconds": args.seconds,
                "repeat": args.repeat,
                "kernel": os.uname().release,
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "results": [asdict(r) for r in results],
                **extra,
            },
            f,
            indent=2,
        )
