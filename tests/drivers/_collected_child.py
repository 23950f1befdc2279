"""Run by tests/drivers/test_collected_unclosed.py in a fresh interpreter: a driver with reads
in flight on an empty pipe is dropped without close() and collected; print what followed.

argv: driver name (io_uring | io_uring_c), mode (cancel: the kernel's cancel works; stuck:
the cancel is masked, as for a read no cancel can stop). Prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import os
import select
import sys
import time
import warnings

from aiopg_io.drivers import _orphans, io_uring
from aiopg_io.drivers.base import Op, OpKind
from aiopg_io.drivers.io_uring import IoUringDriver
from aiopg_io.drivers.io_uring_c import IoUringCDriver

N_READS, SIZE = 4, 4096


class Buf(bytearray):
    """A bytearray the collector tracks (it has a __dict__), so gc.get_objects() counts the
    live ones; weak references would not do: the collector clears them before it runs
    finalizers, also for objects a finalizer then keeps alive."""


def alive() -> int:
    return sum(type(o) is Buf for o in gc.get_objects())


def fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def main() -> None:
    name, mode = sys.argv[1], sys.argv[2]
    said: list[str] = []
    warnings.simplefilter("always")
    warnings.showwarning = lambda msg, cat, *a, **k: said.append(f"{cat.__name__}: {msg}")
    rfd, wfd = os.pipe()
    before = fds()
    d = IoUringDriver() if name == "io_uring" else IoUringCDriver()
    bufs = [Buf(SIZE) for _ in range(N_READS)]
    ops = [Op(OpKind.READ, rfd, 0, (memoryview(b),)) for b in bufs]
    d.submit(ops)
    if mode == "stuck":
        io_uring._COLLECTED_WAIT_SECONDS = 0.05  # type: ignore[attr-defined]
        d._queue_cancel = lambda token, flags: True  # type: ignore[method-assign]
    del d, ops, bufs
    gc.collect()
    out: dict[str, object] = {
        "alive_after_gc": alive(),
        "parked": _orphans.parked(),
        "fds_left_at_gc": sorted(set(fds()) - set(before)),
        "warnings": said,
    }
    # Memory a freed buffer would be reused for, framed: the kernel must not write into it.
    canaries = [bytearray(b"\xa5" * SIZE) for _ in range(4 * N_READS)]
    os.write(wfd, b"\x5a" * SIZE * N_READS)
    deadline = time.monotonic() + 10
    while (_orphans.parked() or alive()) and time.monotonic() < deadline:
        time.sleep(0.01)
    out["alive_at_end"] = alive()
    out["parked_at_end"] = _orphans.parked()
    out["canaries_intact"] = all(c == b"\xa5" * SIZE for c in canaries)
    readable, _, _ = select.select([rfd], [], [], 0)
    out["pipe_bytes_left"] = len(os.read(rfd, SIZE * N_READS)) if readable else 0
    os.close(rfd)
    os.close(wfd)
    out["fds_left_at_end"] = sorted(set(fds()) - set(before))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
