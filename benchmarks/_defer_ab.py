"""Prototype measurement (branch ``defer``, reverted after): io_uring_c with and without
``defer_taskrun``, each job in a fresh interpreter, the order alternating per round; medians
of IOPS and CPU µs per read. 4 KiB random O_DIRECT reads of FILE (1 GiB)::

    python benchmarks/_defer_ab.py FILE LOOP QD READS ROUNDS
    strace -c -f python benchmarks/_defer_ab.py FILE LOOP 1 3000 0 0|1   # one job, counted
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

_CHILD = """
import json, sys
from aiopg_io.bench import Job, run_job
path, loop, qd, n, drv = sys.argv[1:6]
r = run_job(Job(filename=path, direct=True, size=1 << 30, iodepth=int(qd), runtime=float("inf"),
                ramp=0.0, number_ios=int(n), driver=drv, loop=loop))
print(json.dumps([r.iops, r.cpu_us_per_op]))
"""


def main() -> None:
    path, loop, qd, n, rounds = sys.argv[1:6]
    if int(rounds) == 0:  # one job in this process (for strace -c -f)
        sys.argv = ["-", path, loop, qd, n, f"io_uring_c:defer_taskrun={sys.argv[6]}"]
        exec(compile(_CHILD, "<job>", "exec"), {})
        return
    res: dict[int, list[list[float]]] = {0: [], 1: []}
    for i in range(int(rounds)):
        for v in (0, 1) if i % 2 == 0 else (1, 0):
            drv = f"io_uring_c:defer_taskrun={v}"
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, path, loop, qd, n, drv],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            res[v].append(json.loads(out))
    for v in (0, 1):
        iops = statistics.median(r[0] for r in res[v])
        cpu = statistics.median(r[1] for r in res[v])
        print(
            f"{loop} QD{qd} defer_taskrun={v}: IOPS {iops:,.0f}  CPU us/read {cpu:.2f}  {[round(r[1], 1) for r in res[v]]}"
        )


if __name__ == "__main__":
    main()
