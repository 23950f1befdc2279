"""Crash test: a child process commits records and reports each acknowledged LSN; the
parent SIGKILLs it at a random moment, reopens the WAL and checks that every acknowledged
record is there, byte for byte, in a gap-free log with no corrupt record.

Each kill is a fresh child on the same directory (recovery after recovery after...), killed
at a random delay: during start-up, recovery, the open-time stamp, or while committing.
Several directories run in parallel so a hundred kills stay cheap. The default suite runs
one loop per driver and DEFAULT_KILLS kills in all, shared among the drivers that run here
(28 each with four); the whole loop x driver matrix, 120 kills each (1440 with four
drivers), is marked slow.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason

from ._util import check_payload, read_all

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("crash_child.py")
LANES = 4
# Where a failing lane's directory and log are kept (the lane's tmp_path when not writable).
EVIDENCE = Path(os.environ.get("AIOPG_IO_WAL_EVIDENCE", "/work/notes/wal-failures"))
_ACK_LINE = re.compile(r"^(\d+) ([0-9]+-[0-9]+)\.([0-9]+)\.([0-9]+)$")
# One loop per driver in the default suite, so each driver and each loop is covered.
DEFAULT_LOOPS = {"io_uring": "asyncio", "posix_aio": "uvloop", "worker": "trio", "sync": "asyncio"}
DEFAULT_KILLS = 112


def _backend(loop: str) -> tuple[str, dict[str, object]]:
    return ("asyncio", {"use_uvloop": True}) if loop == "uvloop" else (loop, {})


def spawn_child(directory: Path, driver: str, loop: str, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), driver, loop, run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def kill_and_collect(
    child: subprocess.Popen[bytes], head: bytes, what: str, log: list[str]
) -> dict[int, str]:
    """SIGKILL the child; the records it acknowledged, by LSN (``head``: what was already
    read from its stdout). What happened goes to ``log`` as evidence.

    The rest of stdout is read through ``child.stdout`` itself, never ``communicate()``:
    communicate reads the pipe's fd directly and so drops what ``readline()`` already pulled
    into the BufferedReader (up to 8 KiB). A child that is fast while the parent is slow
    (a loaded machine) has many lines in that buffer, the last one cut at its edge; the rest
    of the cut line then parsed as an acknowledgement with a wrong LSN ("9952 3-6.4.40" from
    "2049952 3-6.4.40"), or a ValueError when the cut fell in the tag. Both were reported as
    lost records of the WAL.
    """
    assert child.stdout is not None and child.stderr is not None
    child.send_signal(signal.SIGKILL)
    # The child is dead (no grandchildren hold the pipes): both reads end, one after the other.
    out = head + child.stdout.read()
    err = child.stderr.read()
    child.wait()
    child.stdout.close()
    child.stderr.close()
    text = out.decode()
    lines = text.split("\n")[:-1]  # a line without its newline was not sent
    log.append(
        f"--- {what}, rc {child.returncode}, {len(lines)} lines: first {lines[:3]} "
        f"last {lines[-3:]}\nstderr:\n{err.decode()}"
    )
    assert child.returncode == -signal.SIGKILL, f"the child died on its own:\n{err.decode()}"
    acked: dict[int, str] = {}
    next_seq: dict[str, int] = {}
    for line in lines:
        if line == "open":
            continue
        m = _ACK_LINE.match(line)
        assert m is not None, f"the child sent a malformed line {line!r} (lines lost or cut in the parent?)"
        lsn, run, task, seq = int(m[1]), m[2], m[3], int(m[4])
        # Each committer reports its commits in order: a gap means the parent lost lines.
        assert seq == next_seq.get(task, 0), (
            f"{what}: line {line!r} after seq {next_seq.get(task)} of task {task}"
        )
        next_seq[task] = seq + 1
        acked[lsn] = f"{run}.{task}.{seq}"
    return acked


def _one_kill(
    directory: Path, driver: str, loop: str, run_id: str, rng: random.Random, log: list[str]
) -> dict[int, str]:
    """Start a child, kill it after a random delay; the records it acknowledged, by LSN."""
    child = spawn_child(directory, driver, loop, run_id)
    assert child.stdout is not None
    head = b""
    early = rng.random() < 0.2
    try:
        if early:
            time.sleep(rng.uniform(0.05, 0.5))  # during start-up, recovery or the stamp
        else:
            head = child.stdout.readline()  # "open": the WAL is recovered and stamped
            time.sleep(rng.uniform(0.0, 0.25))
    finally:
        acked = kill_and_collect(child, head, f"kill {run_id} ({'early' if early else 'after open'})", log)
    return acked


def _verify(directory: Path, driver: str, loop: str, acked: dict[int, str]) -> None:
    backend, options = _backend(loop)
    records = anyio.run(read_all, directory, driver, backend=backend, backend_options=options)
    lsns = [lsn for lsn, _ in records]
    assert lsns == sorted(set(lsns))
    tags = {lsn: check_payload(data) for lsn, data in records}  # no corrupt record returned
    missing = {lsn: tag for lsn, tag in acked.items() if tags.get(lsn) != tag}
    if missing:
        first = min(missing)
        near = [(lsn, tags[lsn]) for lsn in lsns if abs(lsn - first) <= 3 * 8192]
        raise AssertionError(
            f"acknowledged records lost or changed: {sorted(missing.items())[:5]} "
            f"({len(missing)} in all); recovered {len(records)} records, last "
            f"{records[-1][0] if records else None}; recovered near {first}: {near}"
        )


def _keep_evidence(
    directory: Path, before: Path, log: list[str], acked: dict[int, str], exc: BaseException
) -> str:
    """Copy the lane (as the verifier found it, and as it is now) where the lead can study it."""
    keep = EVIDENCE
    try:
        keep.mkdir(parents=True, exist_ok=True)
    except OSError:
        keep = directory.parent
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{random.randrange(1 << 30):x}"
    dest = keep / f"evidence-{stamp}-{directory.name}"
    if before.exists():
        shutil.copytree(before, dest / "before-verify")
    shutil.copytree(directory, dest / "after-verify")
    (dest / "kills.log").write_text("\n".join(log))
    (dest / "acked.txt").write_text("".join(f"{lsn} {tag}\n" for lsn, tag in sorted(acked.items())))
    (dest / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
    return str(dest)


def _lane(directory: Path, driver: str, loop: str, kills: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    directory.mkdir()
    before = directory.with_name(directory.name + ".before-verify")
    acked: dict[int, str] = {}
    log: list[str] = []
    for k in range(kills):
        # The verifier's open recovers and stamps too: keep the state the child left.
        shutil.rmtree(before, ignore_errors=True)
        try:
            acked.update(_one_kill(directory, driver, loop, f"{seed}-{k}", rng, log))
            shutil.copytree(directory, before)
            _verify(directory, driver, loop, acked)
        except Exception as exc:
            where = _keep_evidence(directory, before, log, acked, exc)
            tail = "\n".join(log[-2:])
            raise AssertionError(
                f"lane {directory.name}, kill {k}, driver {driver}, loop {loop}: "
                f"{type(exc).__name__}: {exc}\nevidence kept in {where}\nlast kills:\n{tail}"
            ) from exc
    return kills, len(acked)


def _crash_test(tmp_path: Path, driver: str, loop: str, kills: int) -> None:
    reason = unavailable_reason(driver)
    if reason is not None:
        pytest.skip(f"driver {driver} cannot run here: {reason}")
    per_lane = -(-kills // LANES)
    with ThreadPoolExecutor(LANES) as pool:
        futures = [pool.submit(_lane, tmp_path / f"lane{i}", driver, loop, per_lane, i) for i in range(LANES)]
        results = [f.result() for f in futures]
    assert sum(k for k, _ in results) >= kills
    assert sum(n for _, n in results) > 0, "no child ever acknowledged a record: the test proves nothing"


@pytest.mark.parametrize("driver", DRIVER_NAMES)
def test_crash_kill_and_recover(tmp_path: Path, driver: str) -> None:
    running = [d for d in DRIVER_NAMES if unavailable_reason(d) is None]
    kills = -(-DEFAULT_KILLS // max(1, len(running)))  # 100+ in the suite, whatever runs here
    _crash_test(tmp_path, driver, DEFAULT_LOOPS.get(driver, "asyncio"), kills=kills)


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
@pytest.mark.parametrize("driver", DRIVER_NAMES)
def test_crash_kill_and_recover_matrix(tmp_path: Path, driver: str, loop: str) -> None:
    _crash_test(tmp_path, driver, loop, kills=120)
