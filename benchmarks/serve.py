"""Benchmark: serving files over HTTP (issue 17), driven by ``wrk``.

Servers on loopback, all started at once, each in its own process, named
``RESPONSE@SERVER`` (``--servers`` picks them; the default is the issue's three):

- ``aiopg_io@SERVER``: ``examples/static_server.py --server SERVER``
  (``aiopg_io.asgi.StaticFiles``), SERVER one of ``uvicorn`` (uvloop + httptools),
  ``uvicorn-h11``, ``hypercorn`` (uvloop, h11) or ``granian`` (which offers ``pathsend``).
- ``starlette@SERVER``: the same request path -> file mapping, answered by Starlette's
  ``FileResponse``, under the same server and settings (the example's own launchers). It
  does not check paths against the directory (the example does): a small head start.
- ``bytes@SERVER``: every file's bytes held in memory (read at start), sent in the
  messages aiopg_io's ``FileResponse`` sends (one up to ``whole_body_max``, else
  ``chunk_size`` slices of the bytes object) without reading anything: the ceiling of any
  ASGI app under that server, where all the work left is the server's.
- ``threadopen@SERVER``: aiopg_io's StaticFiles resolving, checking and opening each file
  in a thread (what it does without openat2): the thread hop per request that opening a
  cached path on the loop's thread takes out, measured in the same run.
- ``sendfile``: a minimal threaded server answering each request with a blocking
  ``os.sendfile`` loop: the floor for large files.

For each file size (``--sizes``: 4 KiB, 1 MiB, 100 MiB) ``wrk`` requests a rotation of
distinct files (2048, 64 and 3 of them), with the page cache warm (read once before) or
cold (``POSIX_FADV_DONTNEED`` on every file right before the cell, so each file's first
read in the cell comes from the disk). Every cell runs ``--seconds`` per server; rounds are
interleaved (all servers, all cells, then again) and each figure is the median over
``--rounds``. Printed side by side: requests/s, MiB/s (bytes wrk read per second, partial
responses included), p99 latency, the server's CPU (user + system of its process tree,
from /proc) per MiB sent, the figure least moved by other load on the machine, the load
generator's (wrk's) CPU per MiB, and how long the server's threads waited for a CPU
(run-queue wait from /proc/PID/task/*/schedstat, in cores: 0.5 is half of one core's time
waiting to run); then the
issue's targets (ratios paired round by round): aiopg_io >= 2x Starlette's requests/s on
1 MiB files and >= 1.5x on 4 KiB (under the same server); on 100 MiB files MiB/s >= 0.9x
the sendfile server's, with beside it the same pairing of the whole pipeline's CPU per MiB
(server + wrk: on loopback the sendfile server hands its copy to wrk).

Every server gets the same warm-up before round 1 (``--warmup`` seconds of wrk per size,
not counted). ``--placement`` says where servers and wrk run: ``shared`` (the default: one
session, any CPU), ``sessions`` (each in a session of its own: under the kernel's autogroup
each then gets one share of the machine whatever its thread count) or ``pinned`` (sessions,
wrk on CPU 0 and every server on CPU 1). On a shared 2-core machine each choice moves the
100 MiB ratio by itself (docs/benchmarks.md, "The 100 MiB row's spread"): the default stays
``shared``, and many short rounds (``--seconds 2 --rounds 10``) are what steady the median.

Setup: ``wrk`` is Debian's package; when it is missing the script says so and installs it
with ``apt-get install -y wrk`` (root) before anything else. Results: docs/benchmarks.md.

Run from a checkout (``pip install -e '.[bench]'`` brings uvicorn, Starlette, httptools,
hypercorn and granian)::

    python benchmarks/serve.py [--seconds 10] [--rounds 3] [--sizes 4k,1m,100m] [--caches warm,cold]
        [--servers aiopg_io@uvicorn,starlette@uvicorn,aiopg_io@granian,sendfile]
        [--placement shared|sessions|pinned] [--warmup 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import static_server  # noqa: E402  (the example: its app and its server launchers)

SERVERS = ("aiopg_io@uvicorn", "starlette@uvicorn", "sendfile")
RESPONSES = ("aiopg_io", "starlette", "bytes", "threadopen")
_TICK = os.sysconf("SC_CLK_TCK")
# size name -> (bytes per file, files in the rotation)
SIZES = {"4k": (4096, 2048), "1m": (1 << 20, 64), "100m": (100 << 20, 3)}
CACHES = ("warm", "cold")
PLACEMENTS = ("shared", "sessions", "pinned")
SPREAD = ("requests_per_s", "mib_per_s")  # figures printed with their min-max over the rounds
MEDIANS = ("p99_ms", "cpu_ms_per_mib", "wrk_cpu_ms_per_mib", "waited_cores")  # medians only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per cell and server")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are printed)")
    parser.add_argument("--sizes", default="4k,1m,100m", help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--caches", default="warm,cold", help="comma list of warm, cold")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir under .)")
    parser.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="shared",
        help="where the servers and wrk run: shared (one session, any CPU: the method before "
        "2026-12-05 evening), sessions (each in a session of its own, so the kernel's autogroup "
        "gives each the same share of the machine, whatever its thread count), pinned (sessions, "
        "and wrk on CPU 0, every server on CPU 1); default %(default)s",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of wrk per server and size before round 1, not counted",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--report", default=None, help="print the report of a run saved with --json")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma list of RESPONSE@SERVER (RESPONSE: aiopg_io, starlette, bytes, threadopen; SERVER: "
        f"{', '.join(static_server.SERVERS)}) and sendfile; default: %(default)s",
    )
    # Internal: the script starts its own servers with this.
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)


# -- the servers ---------------------------------------------------------------------------------


def starlette_app(directory: str) -> Any:
    from starlette.responses import FileResponse

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await FileResponse(os.path.join(directory, scope["path"].lstrip("/")))(scope, receive, send)

    return app


def bytes_app(directory: str) -> Any:
    """Every regular file under ``directory`` read into memory now; each request answered
    from there, in the messages aiopg_io's FileResponse would send (slices of the bytes
    object: no copy by the app)."""
    from aiopg_io.asgi import FileResponse

    held: dict[str, bytes] = {}
    for where, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(where, name)
            with open(path, "rb") as f:
                held["/" + os.path.relpath(path, directory)] = f.read()
    step = FileResponse.chunk_size

    async def app(scope: Any, receive: Any, send: Any) -> None:
        data = held.get(scope["path"])
        if data is None:
            head = {"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]}
            await send(head)
            await send({"type": "http.response.body", "body": b""})
            return
        length = str(len(data)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
        if len(data) <= FileResponse.whole_body_max:
            await send({"type": "http.response.body", "body": data})
            return
        view = memoryview(data)
        for pos in range(0, len(data), step):
            more = pos + step < len(data)
            await send({"type": "http.response.body", "body": view[pos : pos + step], "more_body": more})

    return app


def threadopen_app(directory: str) -> Any:
    """aiopg_io's StaticFiles made to resolve, check and open every file in a thread, as it
    does without openat2 (and as it did everywhere before 2026-12-05, evening): the
    "before" of opening a cached path on the loop's thread, in the same run."""
    app = static_server.make_app(directory)
    app._opens_here = False
    return app


APPS = {"starlette": starlette_app, "bytes": bytes_app, "threadopen": threadopen_app}


def app_from_environment() -> Any:
    """granian's factory (``serve:app_from_environment``)."""
    return APPS[os.environ["SERVE_BENCH_RESPONSE"]](os.environ["SERVE_BENCH_DIR"])


def serve_app(response: str, directory: str, server: str, port: int) -> None:
    """The ``response`` app (starlette, bytes) over ``directory`` under ``server``."""
    if server == "granian":
        os.environ["SERVE_BENCH_DIR"], os.environ["SERVE_BENCH_RESPONSE"] = directory, response
        static_server.serve_granian("serve:app_from_environment", str(ROOT / "benchmarks"), "127.0.0.1", port)
    elif server == "hypercorn":
        static_server.serve_hypercorn(APPS[response](directory), "127.0.0.1", port)
    else:
        http = "h11" if server == "uvicorn-h11" else "auto"
        static_server.serve_uvicorn(APPS[response](directory), "127.0.0.1", port, http)


def serve_sendfile(directory: str, port: int) -> None:
    """One thread per connection; keep-alive; each GET answered with os.sendfile."""

    def handle(conn: socket.socket) -> None:
        # Headers go with MSG_MORE so they leave in the body's first segment; NODELAY so the
        # last segment is not held back for an ACK (uvicorn sets it too).
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, contextlib.suppress(ConnectionError):
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                try:
                    fd = os.open(os.path.join(directory, path.lstrip("/")), os.O_RDONLY)
                except OSError:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    continue
                try:
                    size = os.fstat(fd).st_size
                    head = f"HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n".encode()
                    conn.sendall(head, socket.MSG_MORE)
                    offset = 0
                    while offset < size:
                        n = os.sendfile(conn.fileno(), fd, offset, size - offset)
                        if n == 0:
                            return
                        offset += n
                finally:
                    os.close(fd)

    with socket.create_server(("127.0.0.1", port), backlog=1024) as server:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()


def parse_servers(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    for name in names:
        response, _, server = name.partition("@")
        if name != "sendfile" and (response not in RESPONSES or server not in static_server.SERVERS):
            raise SystemExit(
                f"unknown server {name!r}: RESPONSE@SERVER with RESPONSE in {', '.join(RESPONSES)} "
                f"and SERVER in {', '.join(static_server.SERVERS)}, or sendfile"
            )
    return names


def placed(cmd: list[str], placement: str, cpu: int) -> list[str]:
    """``cmd`` pinned to ``cpu`` when ``placement`` is "pinned" (``taskset``, which execs it:
    the pid is the command's, and every thread it starts inherits the mask)."""
    return ["taskset", "-c", str(cpu), *cmd] if placement == "pinned" else cmd


def start_servers(
    directory: str, names: list[str], placement: str = "shared"
) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    procs = {}
    for name in names:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        response, _, server = name.partition("@")
        if response == "aiopg_io":
            example = str(ROOT / "examples" / "static_server.py")
            cmd = [sys.executable, example, directory, "--port", str(port), "--server", server]
        else:
            cmd = [sys.executable, __file__, "--serve", name, "--dir", directory, "--port", str(port)]
        # A session of its own: under autogroup (sched_autogroup_enabled, the default on most
        # distributions' kernels) CPU time is shared between sessions first, so a server of 32
        # threads and one of 1 get the same share of a machine other sessions also load.
        own = placement != "shared"
        out = subprocess.DEVNULL
        proc = subprocess.Popen(placed(cmd, placement, 1), stdout=out, stderr=out, start_new_session=own)
        procs[name] = (proc, port)
    for name, (proc, port) in procs.items():
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the {name} server exited with status {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {name} server did not listen within 60 s") from None
                time.sleep(0.1)
    return procs


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian's worker is a child), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
        except OSError:
            continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return found


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (exited threads included);
    0 where /proc is missing."""
    total = 0.0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def tree_waited_s(pid: int) -> float:
    """Seconds the live threads of ``pid`` and its descendants spent runnable but waiting
    for a CPU (the second field of /proc/PID/task/TID/schedstat); 0 where it is missing."""
    total = 0.0
    for p in _tree(pid):
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue
    return total


class WaitProbe(threading.Thread):
    """The server's run-queue wait over the middle 80% of a cell, in cores (seconds waited
    per second): a thread-per-connection server's threads end with the cell, and their
    counts with them."""

    def __init__(self, pid: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.seconds, self.cores = pid, seconds, 0.0

    def run(self) -> None:
        time.sleep(0.1 * self.seconds)
        start = tree_waited_s(self.pid)
        time.sleep(0.8 * self.seconds)
        self.cores = (tree_waited_s(self.pid) - start) / (0.8 * self.seconds)


# -- wrk -----------------------------------------------------------------------------------------


def ensure_wrk() -> str | None:
    exe = shutil.which("wrk")
    if exe is not None:
        return exe
    print("setup: wrk is not installed; installing Debian's package: apt-get install -y wrk", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        # A fresh machine's package lists may be empty or old: update once, then again.
        subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(install, check=False, stdout=subprocess.DEVNULL)
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_BINARY = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}  # wrk's units are powers of 1024


def wrk(
    exe: str, port: int, script_path: str, args: argparse.Namespace, seconds: float | None = None
) -> dict[str, float]:
    seconds = args.seconds if seconds is None else seconds
    cmd = [
        exe,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        # wrk's default timeout (2 s) is shorter than a 100 MiB response takes with 32 of them
        # in flight: every one would count as a socket error and none as a request.
        f"--timeout={round(seconds) + 60}s",
        "-s",
        script_path,
        f"http://127.0.0.1:{port}/",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = args.placement != "shared"
    cmd = placed(cmd, args.placement, 0)
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=seconds + 120, start_new_session=own
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    # Bytes read per second, partial responses included: with 100 MiB files only a handful
    # of responses end within the run, so requests/s x size would count whole files or none.
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    if rps is None or p99 is None or transfer is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_s": float(rps[1]),
        "mib_per_s": float(transfer[1]) * _BINARY[transfer[2]] / (1 << 20),
        "p99_ms": float(p99[1]) * _UNITS[p99[2]],
        "bad_responses": float(bad[1]) if bad else 0.0,
        "socket_errors": float(sum(int(x) for x in errors.groups())) if errors else 0.0,
        "wrk_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    }


def rotation_script(directory: Path, size_name: str, count: int) -> str:
    """A wrk Lua script requesting the ``count`` files of ``size_name`` in turn."""
    path = directory / f"rotate-{size_name}.lua"
    paths = ", ".join(f'"/{size_name}/{i}"' for i in range(count))
    path.write_text(
        f"local paths = {{{paths}}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n  return wrk.format('GET', paths[(i % #paths) + 1])\nend\n"
    )
    return str(path)


def make_files(directory: Path, size_name: str) -> list[Path]:
    size, count = SIZES[size_name]
    (directory / size_name).mkdir(exist_ok=True)
    block = os.urandom(min(size, 1 << 20))
    files = []
    for i in range(count):
        path = directory / size_name / str(i)
        if not path.exists() or path.stat().st_size != size:
            with open(path, "wb") as f:
                for _ in range(size // len(block)):
                    f.write(block)
        files.append(path)
    return files


def set_cache(files: list[Path], cache: str) -> None:
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            if cache == "cold":
                os.fsync(fd)  # dirty pages cannot be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                while os.read(fd, 1 << 20):
                    pass
        finally:
            os.close(fd)


# -- the run -------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, exe: str, directory: Path) -> dict[str, Any]:
    sizes = [s for s in args.sizes.split(",") if s]
    caches = [c for c in args.caches.split(",") if c]
    for name in sizes:
        if name not in SIZES:
            raise SystemExit(f"unknown size {name!r}: choose from {', '.join(SIZES)}")
    for cache in caches:
        if cache not in CACHES:
            raise SystemExit(f"unknown cache state {cache!r}: warm or cold")
    files = {name: make_files(directory, name) for name in sizes}
    scripts = {name: rotation_script(directory, name, SIZES[name][1]) for name in sizes}
    samples: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    names = parse_servers(args.servers)
    procs = start_servers(str(directory), names, args.placement)
    try:
        if args.warmup > 0:  # the same for every server: first requests, rings, pools, caches
            for size_name in sizes:
                set_cache(files[size_name], "warm")
                for server in names:
                    wrk(exe, procs[server][1], scripts[size_name], args, args.warmup)
        for round_no in range(args.rounds):
            for size_name in sizes:
                for cache in caches:
                    for server in names:
                        set_cache(files[size_name], cache)
                        pid = procs[server][0].pid
                        cpu = tree_cpu_s(pid)
                        probe = WaitProbe(pid, args.seconds)
                        probe.start()
                        r = wrk(exe, procs[server][1], scripts[size_name], args)
                        cpu = tree_cpu_s(pid) - cpu
                        probe.join()
                        mib = r["mib_per_s"] * args.seconds
                        r["cpu_ms_per_mib"] = cpu * 1e3 / mib if mib else 0.0
                        r["wrk_cpu_ms_per_mib"] = r.pop("wrk_cpu_s") * 1e3 / mib if mib else 0.0
                        r["waited_cores"] = probe.cores
                        samples.setdefault((size_name, cache, server), []).append(r)
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    results: dict[str, Any] = {}
    for (size_name, cache, server), runs in samples.items():
        results[f"{size_name}/{cache}/{server}"] = {
            "size": size_name,
            "cache": cache,
            "server": server,
            **{key: statistics.median(r.get(key, 0.0) for r in runs) for key in (*SPREAD, *MEDIANS)},
            **{f"{key}_range": (min(r[key] for r in runs), max(r[key] for r in runs)) for key in SPREAD},
            "bad_responses": sum(r["bad_responses"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
            "runs": runs,
        }
    return results


def ratios(results: dict[str, Any], ours: str, theirs: str, key: str) -> tuple[float, float, float] | None:
    """Median and min-max of ``ours / theirs`` for ``key``, paired round by round."""
    if ours not in results or theirs not in results:
        return None
    pairs = zip(results[ours]["runs"], results[theirs]["runs"], strict=True)
    each = [a[key] / b[key] if b[key] else float("inf") for a, b in pairs]
    return statistics.median(each), min(each), max(each)


def machine_ratio(results: dict[str, Any], ours: str, theirs: str) -> tuple[float, float, float] | None:
    """Median and min-max, paired round by round, of ``theirs`` / ``ours`` in CPU per MiB
    of the whole pipeline (the server's + wrk's): how many more MiB ours moves per CPU
    second of the machine. On loopback the sendfile server hands its one copy to wrk
    (whose CPU per MiB is then 2-3x that with an ASGI server), so this, not the server's
    CPU alone, is the cost to compare; and CPU per MiB is what other load moves least."""
    if ours not in results or theirs not in results:
        return None

    def total(r: dict[str, float]) -> float:
        # 0 for a run saved before wrk's CPU was recorded: nothing to pair.
        return r["cpu_ms_per_mib"] + r["wrk_cpu_ms_per_mib"] if "wrk_cpu_ms_per_mib" in r else 0.0

    pairs = zip(results[ours]["runs"], results[theirs]["runs"], strict=True)
    each = [total(b) / total(a) for a, b in pairs if total(a) > 0 and total(b) > 0]
    return (statistics.median(each), min(each), max(each)) if each else None


def report(results: dict[str, Any]) -> None:
    print(
        "medians over the rounds, (min-max) over the rounds; CPU ms/MiB: the server's and wrk's "
        "per MiB sent; waited: the server's run-queue wait, in cores"
    )
    print(
        f"{'size':>5} {'cache':>5} {'server':>20} {'req/s (min-max)':>20} "
        f"{'MiB/s (min-max)':>24} {'p99 ms':>8} {'CPU ms/MiB':>10} {'wrk':>6} {'waited':>6}  errors"
    )
    for r in results.values():
        errors = int(r["bad_responses"] + r["socket_errors"])
        (rlo, rhi), (mlo, mhi) = r["requests_per_s_range"], r["mib_per_s_range"]
        rps = f"{r['requests_per_s']:.0f} ({rlo:.0f}-{rhi:.0f})"
        mib = f"{r['mib_per_s']:.1f} ({mlo:.1f}-{mhi:.1f})"
        # wrk prints a p99 of 0 when no response ended within the run (100 MiB files).
        p99 = f"{r['p99_ms']:8.2f}" if r["requests_per_s"] else f"{'-':>8}"
        wrk_cpu, waited = r.get("wrk_cpu_ms_per_mib", 0.0), r.get("waited_cores", 0.0)  # older runs lack them
        cpu = f"{r['cpu_ms_per_mib']:10.3f} {wrk_cpu:6.3f} {waited:6.2f}"
        cells = f"{r['size']:>5} {r['cache']:>5} {r['server']:>20} {rps:>20} {mib:>24}"
        print(f"{cells} {p99} {cpu}  {errors or ''}")
    print("targets (issue 17), ratios paired round by round: median (min-max)")
    servers = sorted({r["server"].partition("@")[2] for r in results.values()} - {""})
    for cache in CACHES:
        for server in servers:
            for size_name, target in (("1m", 2.0), ("4k", 1.5)):
                cell = f"{size_name}/{cache}"
                # threadopen: the same response opening in a thread, against the same baseline.
                for response, theirs_name in (("aiopg_io", "starlette"), ("aiopg_io", "threadopen")):
                    ours, theirs = f"{cell}/{response}@{server}", f"{cell}/{theirs_name}@{server}"
                    got = ratios(results, ours, theirs, "requests_per_s")
                    cpu = ratios(results, theirs, ours, "cpu_ms_per_mib")
                    if got and cpu:
                        aim = f"target >= {target}x" if theirs_name == "starlette" else "no thread hop"
                        print(
                            f"  {size_name:>4} {cache}: {response} / {theirs_name} req/s under {server} "
                            f"{got[0]:.2f}x ({got[1]:.2f}-{got[2]:.2f}) ({aim}); {theirs_name} / "
                            f"{response} CPU per request {cpu[0]:.2f}x ({cpu[1]:.2f}-{cpu[2]:.2f})"
                        )
            for response, what in (("aiopg_io", "target >= 0.9x"), ("bytes", "the ceiling of any ASGI app")):
                cell = f"100m/{cache}"
                got = ratios(results, f"{cell}/{response}@{server}", f"{cell}/sendfile", "mib_per_s")
                cpu = machine_ratio(results, f"{cell}/{response}@{server}", f"{cell}/sendfile")
                if got:
                    pipeline = (
                        f"; sendfile / {response} CPU per MiB, server + wrk {cpu[0]:.2f}x "
                        f"({cpu[1]:.2f}-{cpu[2]:.2f})"
                        if cpu
                        else ""
                    )
                    print(
                        f"  100m {cache}: {response} under {server} / blocking sendfile MiB/s "
                        f"{got[0]:.2f}x ({got[1]:.2f}-{got[2]:.2f}) ({what}){pipeline}"
                    )


def main(args: argparse.Namespace) -> int:
    if args.serve is not None and args.serve != "sendfile":
        response, _, server = args.serve.partition("@")
        serve_app(response, args.dir, server, args.port)
        return 0
    if args.serve == "sendfile":
        serve_sendfile(args.dir, args.port)
        return 0
    if args.report is not None:
        report(json.loads(Path(args.report).read_text())["results"])
        return 0
    exe = ensure_wrk()
    if exe is None:
        print("wrk could not be installed (apt-get install -y wrk needs root and Debian's archive)")
        return 2
    if args.dir is not None:
        os.makedirs(args.dir, exist_ok=True)
        results = measure(args, exe, Path(args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="serve-bench-", dir=".") as d:
            results = measure(args, exe, Path(d).resolve())
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/serve.py")
