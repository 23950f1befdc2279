"""Progress lines for the examples (a helper they import, not an example itself).

Anything that may take more than a moment says it is moving: one line on stderr, at most
every ``every`` seconds (the examples' ``--progress SECONDS``, default 1), with how much is
done, the elapsed time and the rate. A run shorter than ``every`` prints none; ``every=0``
prints one line per step (the tests use it to see the lines without waiting). stderr, so
that stdout stays what the example computes (``sha256sum``-style lines, a summary).
"""

from __future__ import annotations

import argparse
import sys
import time

MiB = 1 << 20


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="a progress line on stderr at most every SECONDS (default 1; 0: one per step)",
    )


class Progress:
    """``progress(done)`` after each step of ``total`` ``unit`` (``"bytes"`` shows MiB)."""

    def __init__(self, what: str, total: int, *, unit: str = "bytes", every: float = 1.0) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        if self.unit == "bytes":
            amount = f"{done / MiB:,.1f} of {self.total / MiB:,.1f} MiB"
            rate = f"{done / MiB / elapsed:,.1f} MiB/s"
        else:
            amount = f"{done:,} of {self.total:,} {self.unit}"
            rate = f"{done / elapsed:,.0f} {self.unit}/s"
        percent = 100 * done // self.total if self.total else 100
        print(f"  {self.what}: {amount} ({percent}%) in {elapsed:.1f} s, {rate}", file=sys.stderr, flush=True)
