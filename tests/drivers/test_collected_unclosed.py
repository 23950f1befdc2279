"""An io_uring driver collected without close() while ops are in flight (issue 14, item 5).

The kernel writes into an op's buffers until its CQE, whatever became of the Python objects
(aiopg_io/drivers/_orphans.py). Each case runs in a fresh interpreter
(``_collected_child.py``): reads are in flight on a pipe nobody has written to, every
reference is dropped, ``gc.collect()`` runs, then the pipe gets its data.

- ``cancel``: the finalizer's cancel ends the reads: at once the fds are released and the
  pipe keeps its data (no read is left in a ring nobody reaps).
- ``stuck``: the cancel is masked, as for a read no cancel can stop: the buffers outlive the
  collection (kept with the ring, a ResourceWarning says so), the reads land in them when the
  data comes, memory reused since is intact, and then ring, fds and buffers are released.

Loop-independent: the driver holds the ops, not the loop, so this runs per driver.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aiopg_io.drivers import unavailable_reason

CHILD = Path(__file__).with_name("_collected_child.py")
N_READS, SIZE = 4, 4096


def run_child(name: str, mode: str) -> dict[str, object]:
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"driver {name} cannot run here: {reason}")
    r = subprocess.run([sys.executable, str(CHILD), name, mode], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # no crash report, no exception ignored in a finalizer
    report: dict[str, object] = json.loads(r.stdout)
    return report


@pytest.mark.parametrize("name", ["io_uring", "io_uring_c"])
def test_collected_driver_cancels_and_releases_everything(name: str) -> None:
    got = run_child(name, "cancel")
    assert got["fds_left_at_gc"] == []  # ring fd and eventfd closed by the finalizer
    assert got["parked"] == 0
    assert got["warnings"] == [
        f"ResourceWarning: unclosed {name} driver collected: {N_READS} ops in flight were cancelled "
        "and drained; call close()"
    ]
    assert got["pipe_bytes_left"] == N_READS * SIZE  # the cancelled reads took nothing
    assert got["canaries_intact"] is True
    assert got["alive_after_gc"] == 0  # both drivers release the buffers with their CQEs
    assert got["fds_left_at_end"] == []


@pytest.mark.parametrize("name", ["io_uring", "io_uring_c"])
def test_collected_driver_keeps_buffers_the_kernel_still_holds(name: str) -> None:
    got = run_child(name, "stuck")
    assert got["alive_after_gc"] == N_READS  # not freed under the kernel
    assert got["parked"] == 1
    assert len(got["fds_left_at_gc"]) == 2  # type: ignore[arg-type]  # ring fd and eventfd, kept
    assert got["warnings"] == [
        f"ResourceWarning: unclosed {name} driver collected with {N_READS} ops the kernel has not "
        "returned within 0.05 s of a cancel: its ring and their buffers are kept alive until it does "
        "(never freed under the kernel); call close()"
    ]
    # The data came: the reads completed into the kept buffers, nothing else was written.
    assert got["pipe_bytes_left"] == 0
    assert got["canaries_intact"] is True
    # ... and once their CQEs were in, the ring, its fds and the buffers were released.
    assert got["parked_at_end"] == 0
    assert got["fds_left_at_end"] == []
    assert got["alive_at_end"] == 0
