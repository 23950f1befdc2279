"""The comparisons in ``benchmarks/`` (outside the package) start, say how to run them, and
get through a tiny run; and the engine they share does what they rely on. Figures are not
checked: speed belongs to benchmarks, not tests."""

from __future__ import annotations

import errno
import http.client
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiopg_io.bench import Job, offsets, prepare_file, run_job
from aiopg_io.drivers import unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
NAMES = [
    "core", "uring", "uring_pair", "sqpoll", "posix_aio", "wal", "wal_lone", "buffers", "pool_call",
    "powerloss", "serve",
]  # fmt: skip


#: The smallest run of the I/O comparisons: a 1 MiB file, 20 ms a cell, queue depth 1.
TINY = ("--size", "1m", "--seconds", "0.02", "--depths", "1")


def run_process(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/NAME.py *args``, whatever its exit status."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run(name: str, *args: str, cwd: Path) -> str:
    r = run_process(name, *args, cwd=cwd)
    assert r.returncode == 0, f"{name} {args}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_every_benchmark_is_listed() -> None:
    assert sorted(p.stem for p in BENCHMARKS.glob("[!_]*.py")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_help_says_how_to_run_it(name: str, tmp_path: Path) -> None:
    out = run(name, "--help", cwd=tmp_path)
    assert f"usage: python benchmarks/{name}.py" in out
    assert f"\n    python benchmarks/{name}.py" in out  # the command in the module docstring
    assert "pip install -e '.[bench]'" in out
    assert list(tmp_path.iterdir()) == []


def test_core(tmp_path: Path) -> None:
    out = run("core", "--size", "1m", "--runtime", "0.05", "--repeat", "1", cwd=tmp_path)
    assert "target worker >= 2x aiofiles" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(unavailable_reason("io_uring") is not None, reason=str(unavailable_reason("io_uring")))
def test_uring_buffered(tmp_path: Path) -> None:
    run(
        "uring", *TINY, "--only", "buffered",
        "--path", str(tmp_path / "u.dat"), "--json", str(tmp_path / "u.json"), cwd=tmp_path,
    )  # fmt: skip
    doc = json.loads((tmp_path / "u.json").read_text())
    contenders = {r["contender"] for r in doc["results"]}
    assert {"aiopg_io io_uring", "aiopg_io worker", "aiofile (caio)", "aiofiles"} <= contenders
    assert all(r["iops"] > 0 for r in doc["results"])
    assert not (tmp_path / "u.dat").exists()


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
@pytest.mark.skipif(
    unavailable_reason("io_uring_c", direct=True) is not None, reason="io_uring_c cannot run direct I/O here"
)
def test_uring_pair(tmp_path: Path) -> None:
    """Two variants (this tree twice, one with a driver option) against fio, one round."""
    out = run(
        "uring_pair", *TINY, "--rounds", "1",
        "--loops", "asyncio", "--variants", "a=,b=@io_uring_c:reap_batch=0",
        "--path", str(tmp_path / "p.dat"), cwd=tmp_path,
    )  # fmt: skip
    rows = {tuple(line.split()[:3]) for line in out.splitlines()[1:]}
    assert rows == {("fio", "-", "1"), ("a", "asyncio", "1"), ("b", "asyncio", "1")}
    # The split of the depth: reads at the device and microseconds outside it per read, or
    # "-" where the file sits on no block device (tmpfs, overlayfs).
    assert out.splitlines()[0].split()[10:14] == ["at", "dev", "out", "us"]
    for line in out.splitlines()[1:]:
        at_dev, out_us = line.split()[7:9]
        assert (at_dev, out_us) == ("-", "-") or (float(at_dev) >= 0 and float(out_us) == float(out_us))


@pytest.mark.skipif(unavailable_reason("io_uring") is not None, reason=str(unavailable_reason("io_uring")))
def test_uring_on_one_loop(tmp_path: Path) -> None:
    run(
        "uring", *TINY, "--only", "buffered",
        "--contenders", "aiopg_io io_uring", "--loops", "trio",
        "--path", str(tmp_path / "u.dat"), "--json", str(tmp_path / "u.json"), cwd=tmp_path,
    )  # fmt: skip
    doc = json.loads((tmp_path / "u.json").read_text())
    assert {(r["contender"], r["loop"]) for r in doc["results"]} == {("aiopg_io io_uring", "trio")}


@pytest.mark.skipif(unavailable_reason("io_uring") is not None, reason=str(unavailable_reason("io_uring")))
def test_sqpoll(tmp_path: Path) -> None:
    run(
        "sqpoll", *TINY, "--repeat", "1",
        "--drivers", "io_uring", "--path", str(tmp_path / "s.dat"), "--json", str(tmp_path / "s.json"),
        cwd=tmp_path,
    )  # fmt: skip
    doc = json.loads((tmp_path / "s.json").read_text())
    ran = {(r["mode"], r["sqpoll"]) for r in doc["results"]}
    assert ran == {("direct", False), ("direct", True), ("warm", False), ("warm", True)}
    assert all(r["iops"] > 0 and r["cpu_us_per_op"] > 0 for r in doc["results"])
    assert not (tmp_path / "s.dat").exists()


def test_posix_aio(tmp_path: Path) -> None:
    run(
        "posix_aio", *TINY, "--modes", "buffered",
        "--dir", str(tmp_path), "--json", str(tmp_path / "p.json"), cwd=tmp_path,
    )  # fmt: skip
    doc = json.loads((tmp_path / "p.json").read_text())
    ran = {r["contender"] for r in doc["results"]}
    assert "worker" in ran
    assert ("posix_aio" in ran) == (unavailable_reason("posix_aio") is None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_wal(tmp_path: Path) -> None:
    out = run(
        "wal",
        "--seconds",
        "0.1",
        "--committers",
        "4",
        "--no-pg-test-fsync",
        "--dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert "group / naive" in out
    assert list(tmp_path.iterdir()) == []


def test_wal_lone(tmp_path: Path) -> None:
    out = run("wal_lone", "--rounds", "2", "--ops", "2", "--dir", str(tmp_path), cwd=tmp_path)
    assert "worker:link" in out and "wal " in out and "wal:sync " in out
    assert list(tmp_path.iterdir()) == []


def test_pool_call(tmp_path: Path) -> None:
    out = run(
        "pool_call", "--calls", "50", "--rounds", "1", "--nbuffers", "8", "--dir", str(tmp_path), cwd=tmp_path
    )
    assert "hit" in out and "miss" in out and "floor" in out
    assert list(tmp_path.iterdir()) == []


def _takes_o_direct(directory: Path) -> bool:
    try:
        fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT | getattr(os, "O_DIRECT", 0))
    except OSError as e:
        if e.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    os.unlink(directory / "probe")
    return True


def test_buffers(tmp_path: Path) -> None:
    if not _takes_o_direct(tmp_path):
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    out = run(
        "buffers",
        "--size-mib",
        "2",
        "--repeat",
        "1",
        "--random-reads",
        "200",
        "--skip-fio",
        "--writeback-mib",
        "1",
        "--dir",
        str(tmp_path),
        "--json",
        str(tmp_path / "b.json"),
        cwd=tmp_path,
    )
    assert "read_stream runs (max_ios=16, combine=16)" in out and "CPU us/page" in out
    doc = json.loads((tmp_path / "b.json").read_text())
    for row in (
        "read_stream pages (max_ios=16, combine=16)",
        "read_stream runs (max_ios=16, combine=16)",
        "random read_page x32",
        "checkpoint of 128 dirty pages (+ fdatasync)",
    ):
        assert doc[row]["pages_per_s"] > 0 and doc[row]["cpu_us_per_page"] >= 0, row  # clock ticks: may be 0
    assert doc["read_stream runs (max_ios=16, combine=16)"]["blocks_per_read"] > 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_serve_bytes_server_sends_the_files(tmp_path: Path) -> None:
    """serve.py's ``bytes@uvicorn`` (the ceiling of any ASGI app: the files held in memory)
    answers with each file's bytes as on disk, in one message or in chunks, and 404 for a
    path it does not hold."""
    pytest.importorskip("uvicorn", reason="uvicorn (the bench extra) is not installed")
    (tmp_path / "www" / "100m").mkdir(parents=True)
    small, large = os.urandom(4096), os.urandom(3 * 1024 * 1024 + 17)  # large: several chunks
    (tmp_path / "www" / "small").write_bytes(small)
    (tmp_path / "www" / "100m" / "0").write_bytes(large)
    port = _free_port()
    cmd = [sys.executable, str(BENCHMARKS / "serve.py"), "--serve", "bytes@uvicorn"]
    proc = subprocess.Popen([*cmd, "--dir", str(tmp_path / "www"), "--port", str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "serve.py --serve bytes@uvicorn exited early"
            try:
                got = _get(port, "/small")
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "the bytes server did not listen within 60 s"
                time.sleep(0.1)
        assert got == (200, small)
        assert _get(port, "/100m/0") == (200, large)
        assert _get(port, "/missing") == (404, b"")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_report_shows_the_ceiling(tmp_path: Path) -> None:
    """``--report`` of a saved run: the ceiling's ratio beside the target's, and a run saved
    before wrk's CPU and the run-queue wait were recorded still reads."""

    def cell(server: str, mib_per_s: float, **extra: float) -> dict[str, object]:
        run = {"requests_per_s": 1.0, "mib_per_s": mib_per_s, "p99_ms": 0.0, "cpu_ms_per_mib": 0.1, **extra}
        ranges = {"requests_per_s_range": [1.0, 1.0], "mib_per_s_range": [mib_per_s, mib_per_s]}
        return {
            "size": "100m",
            "cache": "warm",
            "server": server,
            **run,
            **ranges,
            "bad_responses": 0,
            "socket_errors": 0,
            "runs": [run],
        }

    ours = {"wrk_cpu_ms_per_mib": 0.3, "waited_cores": 0.4}
    results = {
        "100m/warm/aiopg_io@uvicorn": cell("aiopg_io@uvicorn", 800.0, **ours),
        "100m/warm/bytes@uvicorn": cell("bytes@uvicorn", 1000.0, wrk_cpu_ms_per_mib=0.4, waited_cores=0.5),
        "100m/warm/sendfile": cell("sendfile", 1000.0),  # a row of an older run: no wrk CPU, no wait
    }
    (tmp_path / "run.json").write_text(json.dumps({"args": {}, "results": results}))
    out = run("serve", "--report", str(tmp_path / "run.json"), cwd=tmp_path)
    assert "aiopg_io under uvicorn / blocking sendfile MiB/s 0.80x (0.80-0.80) (target >= 0.9x)" in out
    assert "bytes under uvicorn / blocking sendfile MiB/s 1.00x (1.00-1.00) (the ceiling" in out
    assert "0.100  0.400   0.50" in out and "0.100  0.000   0.00" in out
    assert "CPU per MiB, server + wrk" not in out  # the older sendfile row has no wrk CPU
    # A newer run: the whole pipeline's CPU per MiB paired too (sendfile 0.1 + 0.9, ours 0.1 + 0.3).
    results["100m/warm/sendfile"] = cell("sendfile", 1000.0, wrk_cpu_ms_per_mib=0.9, waited_cores=0.1)
    (tmp_path / "run.json").write_text(json.dumps({"args": {}, "results": results}))
    out = run("serve", "--report", str(tmp_path / "run.json"), cwd=tmp_path)
    assert "(target >= 0.9x); sendfile / aiopg_io CPU per MiB, server + wrk 2.50x (2.50-2.50)" in out


# -- the engine: what the benchmarks rely on --------------------------------------------------------


def test_number_ios_ends_the_job(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    prepare_file(path, 1 << 20)
    job = Job(path, bs=8192, iodepth=3, size=1 << 20, runtime=math.inf, ramp=0, number_ios=10, driver="sync")
    r = run_job(job)
    assert r.ops == 10 and r.cpu_us_per_op > 0


@pytest.mark.parametrize("driver", ["sync", "worker"])
def test_a_window_too_short_for_one_op_still_measures_one(tmp_path: Path, driver: str) -> None:
    # A busy machine can end a short window before the first completion; the figure would be
    # 0 IOPS. The window stays open until one op is counted.
    path = str(tmp_path / "f")
    prepare_file(path, 1 << 20)
    r = run_job(Job(path, bs=4096, iodepth=2, size=1 << 20, runtime=0, ramp=0, driver=driver))
    assert r.ops >= 1 and r.iops > 0 and r.lat_p50_us > 0


def test_one_pass_reads_the_file_once(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    prepare_file(path, 1 << 20)
    job = Job(
        path,
        rw="read",
        bs=64 << 10,
        iodepth=4,
        size=1 << 20,
        runtime=math.inf,
        ramp=0,
        number_ios=16,
        driver="worker",
    )
    assert list(offsets(job)) == [i * (64 << 10) for i in range(16)]
    assert run_job(job).ops == 16


def test_random_offsets_are_the_jobs_own(tmp_path: Path) -> None:
    job = Job(str(tmp_path / "f"), bs=8192, size=1 << 20, seed=42, number_ios=100_000)
    table = offsets(job)
    assert len(table) == 100_000 and table == offsets(job)  # a benchmark can read the same blocks
    assert all(off % 8192 == 0 and 0 <= off < 1 << 20 for off in table)
    assert offsets(Job(str(tmp_path / "f"), bs=8192, size=1 << 20, seed=43)) != table
