"""Benchmark: two trees of aiopg_io against each other and fio, job by job (issue 14).

Before/after figures for a change to the direct-read path, from one run: every round runs
fio, then each variant on each loop, at each depth, 4 KiB random O_DIRECT reads of one file
(``aiopg_io.bench``'s job, as ``benchmarks/uring.py`` runs it). A variant is
``NAME=PYTHONPATH@DRIVER``: its jobs run in a child interpreter (this one's executable) with
``PYTHONPATH`` put first, so a checkout of another commit, its extensions built in place
(``gcc -shared -fPIC -O2 -std=gnu11 -I<python include> <file>.c -o <module><EXT_SUFFIX>``,
or ``setup.py build_ext --inplace``), is imported instead of this tree; an empty PYTHONPATH
is this tree. ``@DRIVER`` (default ``io_uring_c``) takes driver options, e.g.
``@io_uring_c:reap_batch=0``.

Printed per variant, loop and depth: the medians over rounds of IOPS, of the IOPS ratio to
the same round's fio, of CPU µs per read (the process's, every thread) and of the p50
latency (fio's row: 1e6 / IOPS at QD1), where the file sits on a block device the mean
reads at the device and the microseconds each read spent outside it (below; "-" where it
sits on none), then each round's IOPS/CPU. On a shared machine the IOPS follow the other
users of the device; CPU per read, and ratios within one round, are what to compare.

At the device ("at dev"): the block layer's time per read over the job
(``/sys/dev/block/M:m/stat``, every reader of the device counted) times the job's IOPS, i.e.
the mean number of its reads the device held (Little's law); the rest of the depth was
outside the device, and "out us" is that time per read: the completion's wake-up, reaping,
resuming the task, its next call and the submission (and for fio its own loop). Where the
device returns reads in bursts, the rounds' gap between a burst and the next submission is
what "out us" adds over fio's (docs/benchmarks.md, "The QD32 turnaround"). Needs fio on the
PATH and the ``bench`` extra (``pip install -e '.[bench]'``)::

    python benchmarks/uring_pair.py --variants 'base=/tmp/aio-base,new=' --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

from _common import device_reads, device_stat, device_time_us, fio, int_list, script

from aiopg_io.bench import Job, parse_size, prepare_file

_CHILD = """
import json, sys
from aiopg_io.bench import Job, run_job
r = run_job(Job(**json.loads(sys.argv[1])))
print(json.dumps([r.iops, r.cpu_us_per_op, r.lat_p50_us]))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default="aiopg-pair.dat", help="the test file (kept)")
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--seconds", type=float, default=1.0, help="measured seconds per job")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--depths", type=int_list, default=(1, 32))
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--variants", default="new=", help="NAME=PYTHONPATH@DRIVER, comma-separated")


def _variants(text: str) -> list[tuple[str, str, str]]:
    out = []
    for item in text.split(","):
        name, _, rest = item.partition("=")
        path, _, driver = rest.partition("@")
        out.append((name, path, driver or "io_uring_c"))
    return out


def _child(job: dict[str, object], path: str) -> tuple[float, float, float]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if path:
        env["PYTHONPATH"] = path
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(job)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"job {job} failed:\n{proc.stderr}")
    iops, cpu, p50 = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(iops), float(cpu), float(p50)


Run = tuple[float, float, float, float | None]  # IOPS, CPU us per read, p50 us, device us per read


def _at_device(stat: str | None, job: Callable[[], tuple[float, float, float]]) -> Run:
    """``job()``, with the mean time its reads spent at the device (None: no block device)."""
    before = device_reads(stat) if stat else None
    iops, cpu, p50 = job()
    dev = device_time_us(before, device_reads(stat)) if stat and before else None
    return iops, cpu, p50, dev


def _depth_split(rs: list[Run], depth: int) -> str:
    """The medians of the reads at the device and of the microseconds outside it per read."""
    at = [r[0] * r[3] / 1e6 for r in rs if r[3] is not None and r[0] > 0]
    if not at:
        return f"{'-':>6} {'-':>7}"
    out = [(depth - r[0] * r[3] / 1e6) / r[0] * 1e6 for r in rs if r[3] is not None and r[0] > 0]
    return f"{statistics.median(at):>6.1f} {statistics.median(out):>7.0f}"


def main(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    prepare_file(path, args.size, warm=False)
    variants = _variants(args.variants)
    loops = args.loops.split(",")
    stat = device_stat(path)
    runs: dict[tuple[str, str, int], list[Run]] = {}
    print(f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    for rnd in range(args.rounds):
        for depth in args.depths:
            job: dict[str, object] = {
                "filename": path, "rw": "randread", "bs": 4096, "iodepth": depth, "direct": True,
                "size": args.size, "runtime": args.seconds, "ramp": 0.3,
            }  # fmt: skip

            def by_fio(job: dict[str, object] = job, depth: int = depth) -> tuple[float, float, float]:
                ref = fio(Job(**job))  # type: ignore[arg-type]
                if ref is None:
                    raise SystemExit("fio with the io_uring engine did not run")
                return ref.iops, ref.cpu_us_per_op, 1e6 / ref.iops if depth == 1 else 0.0

            runs.setdefault(("fio", "-", depth), []).append(_at_device(stat, by_fio))
            for loop in loops:
                for name, pythonpath, driver in variants:
                    spec = {**job, "loop": loop, "driver": driver}
                    got = _at_device(stat, functools.partial(_child, spec, pythonpath))
                    runs.setdefault((name, loop, depth), []).append(got)
        print(f"round {rnd + 1} of {args.rounds} done", file=sys.stderr)
    head = (
        f"{'variant':10} {'loop':8} {'QD':>4} {'IOPS':>9} {'x fio':>6} {'CPU us':>7} {'p50 us':>7}"
        f" {'at dev':>6} {'out us':>7}"
    )
    print(f"{head}  rounds (IOPS/CPU)")
    for (name, loop, depth), rs in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        ratio = statistics.median(r[0] / f[0] for r, f in zip(rs, runs[("fio", "-", depth)], strict=True))
        each = " ".join(f"{r[0] / 1000:.1f}k/{r[1]:.1f}" for r in rs)
        print(
            f"{name:10} {loop:8} {depth:>4} {statistics.median(r[0] for r in rs):>9,.0f} {ratio:>6.2f} "
            f"{statistics.median(r[1] for r in rs):>7.2f} {statistics.median(r[2] for r in rs):>7.1f} "
            f"{_depth_split(rs, depth)}  {each}"
        )
    print(f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, "python benchmarks/uring_pair.py")
