"""Every example runs, as a user would run it, and does what it says."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LOOPS = ["asyncio", "uvloop", "trio"]


def run_process(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python *args``, whatever its exit status."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def run(*args: str, cwd: Path) -> str:
    return run_with_stderr(*args, cwd=cwd)[0]


def run_with_stderr(*args: str, cwd: Path) -> tuple[str, str]:
    r = run_process(*args, cwd=cwd)
    assert r.returncode == 0, f"{args} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout, r.stderr


def progress_lines(stderr: str, what: str, unit: str = "MiB") -> list[tuple[str, str]]:
    """The (done, total) of every ``--progress`` line about ``what`` (examples/_progress.py);
    every line of stderr must be one (nothing else is written there)."""
    rate = r"[\d,.]+ MiB/s" if unit == "MiB" else rf"[\d,]+ {unit}/s"
    pattern = rf"  {re.escape(what)}: ([\d,.]+) of ([\d,.]+) {unit} \(\d+%\) in [\d.]+ s, {rate}"
    found = []
    for line in stderr.splitlines():
        m = re.fullmatch(pattern, line)
        assert m is not None, line
        found.append((m[1], m[2]))
    return found


def mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):,.1f}"


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("size", [0, 10, 12345, 3 * 131072 + 7])
def test_cp(tmp_path: Path, size: int, direct: bool, driver: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(size))
    extra = ["--direct"] if direct else []
    args = [str(EXAMPLES / "cp.py"), str(src), str(dst), "--depth", "4", "--driver", driver, *extra]
    out, err = run_with_stderr(*args, "--progress", "0", cwd=tmp_path)
    assert dst.read_bytes() == src.read_bytes()
    assert out.startswith(f"copied {size} bytes")
    # One progress line per block copied (--progress 0), the last one at the whole size.
    lines = progress_lines(err, "copying")
    assert len(lines) == -(-size // 131072)
    assert not lines or lines[-1] == (mib(size), mib(size))


def test_trio_checksum(tmp_path: Path, driver: str) -> None:
    tree = tmp_path / "tree"
    expected = {}
    for i in range(20):
        d = tree / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        data = os.urandom(i * 150_001 % 2_500_000)
        (d / f"f{i}").write_bytes(data)
        expected[str(d / f"f{i}")] = hashlib.sha256(data).hexdigest()
    args = [str(EXAMPLES / "trio_checksum.py"), str(tree), "--driver", driver, "--progress", "0"]
    out, err = run_with_stderr(*args, cwd=tmp_path)
    total = sum(p.stat().st_size for p in tree.rglob("f*"))
    assert progress_lines(err, "hashing")[-1] == (mib(total), mib(total))
    lines = out.splitlines()
    got = {path: digest for digest, path in (line.split("  ", 1) for line in lines[:-1])}
    assert got == expected
    assert lines[-1].startswith("20 files")


def test_aiofiles_migration(tmp_path: Path, driver: str) -> None:
    # The example takes no --driver: the fixture's AIOPG_IO_DRIVER reaches it through the environment.
    args = ["--lines", "3000", "--progress", "0"]
    out, err = run_with_stderr(str(EXAMPLES / "aiofiles_migration.py"), *args, cwd=tmp_path)
    assert "same output: True" in out
    for module in ("aiofiles", "aiopg_io"):  # a line per line written and read, in each half
        lines = [line for line in err.splitlines() if line.startswith(f"  {module}: ")]
        done = progress_lines("\n".join(lines), f"{module}: lines written and read", unit="lines")
        assert done == [(f"{n:,}", "6,000") for n in range(1, 6001)]


def load_file(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` imported as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up there
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> ModuleType:
    return load_file(f"example_{name}", EXAMPLES / f"{name}.py")


def loop_name(anyio_backend: Any) -> str:
    name, options = anyio_backend
    return "uvloop" if options.get("use_uvloop") else str(name)


@pytest.mark.parametrize("loop", LOOPS)
def test_kvstore_runs_and_prints_throughput(tmp_path: Path, loop: str, driver: str) -> None:
    kv, acks = str(EXAMPLES / "kvstore.py"), tmp_path / "acks"
    args = ["--driver", driver, "--loop", loop]
    load = ["--seconds", "2.2", "--checkpoint", "0.3", "--keys", "500", "--ack-log", str(acks)]
    out = run(kv, "store", *load, *args, cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0] == "recovered: replayed 0 WAL records"
    assert [line for line in lines if re.fullmatch(r" +[\d,]+ durable puts/s +[\d,]+ gets/s", line)]
    summary = re.fullmatch(
        r"(\d+) puts and (\d+) gets in [\d.]+ s: [\d,]+ durable puts/s, [\d.]+ puts per WAL sync", lines[-1]
    )
    assert summary is not None, out
    assert int(summary[1]) > 0 and int(summary[2]) >= int(summary[1])
    # Which keys a short run reaches depends on the machine's speed (client 7's seeded choices
    # reach key7 only at its 85th put): the ack log says which puts were acknowledged. A clean
    # exit acknowledges every put it made.
    put_lines = acks.read_text().splitlines()
    assert put_lines[0] == "# run" and len(put_lines) == 1 + int(summary[1]), put_lines[:3]
    key, version = put_lines[-1].split()
    assert re.fullmatch(r"key\d+", key), put_lines[-1]
    got = run(kv, "store", "--get", key, *args, cwd=tmp_path).strip()
    assert re.fullmatch(rf"{key}:{version}:x{{8,95}}", got), (got, put_lines[-1])
    number = key.removeprefix("key")
    out = run(kv, "store", "--get", number, *args, cwd=tmp_path).strip()
    assert out == f"(not found) (keys are spelled {key})"
    # Every acknowledged put is there; the clean exit checkpointed, so nothing is left to replay.
    acked = len({line.split()[0] for line in put_lines[1:]})
    out = run(kv, "store", "--verify", str(acks), *args, cwd=tmp_path).strip()
    assert out == f"verified {acked} keys against {acks}: 0 lost " + (
        "(read-only: 0 WAL records replayed in memory, left for the store's next start)"
    )
    # --verify reports an acknowledged version the store lacks, and one it could not have.
    wrong = tmp_path / "wrong"
    wrong.write_text(f"# run\n{key} {int(version) - 1}\n{key} {int(version) + 1}\n")
    r = run_process(kv, "store", "--verify", str(wrong), *args, cwd=tmp_path, timeout=120)
    assert r.returncode == 1, r
    assert f"verified 1 keys against {wrong}: 1 lost" in r.stdout
    lost = f"[('{key}', {int(version) + 1}, {version})]"
    assert f"acknowledged puts lost (key, acked version, stored version): {lost}" in r.stderr
    wrong.write_text(f"# run\n{key} {int(version) - 2}\n")  # two runs could not have moved it 2 ahead of one
    r = run_process(kv, "store", "--verify", str(wrong), *args, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "1 lost" in r.stdout, r


def test_kvstore_ack_log_keeps_any_acknowledged_version(tmp_path: Path) -> None:
    # The last version of a key is its largest, whatever its sign: a default of 0 used to stand
    # in for a key seen once with a version below it, so --verify passed a log it should fail
    # (the throughput test's "two ahead" line is version - 2, below 0 when a run acked version 1).
    log = tmp_path / "acks"
    log.write_text("# run\nkey1 -1\nkey2 3\nkey2 2\n# run\nkey3 0\ncut")
    assert load_example("kvstore").read_ack_log(str(log)) == ({"key1": -1, "key2": 3, "key3": 0}, 2)


async def wait_for_acks(proc: subprocess.Popen[str], acks: Path, start: int, count: int) -> None:
    """Until this run (its lines from byte ``start`` of the log on) has written ``count`` lines."""
    deadline = time.monotonic() + 120
    while not acks.exists() or acks.read_bytes()[start:].count(b"\n") < count:
        assert proc.poll() is None, f"kvstore exited early:\n{proc.communicate()}"
        assert time.monotonic() < deadline, "kvstore acknowledged too few puts in 120 s"
        await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_kvstore_survives_kill_9(tmp_path: Path, anyio_backend: Any, driver: str) -> None:
    """Run the store under load, SIGKILL it, twice (the second run recovers the first's crash,
    then crashes again mid-load), then check every acknowledged put is there, without
    recovering (``--verify``, and in this process), and that the next start recovers."""
    store, acks = tmp_path / "store", tmp_path / "acks"
    cmd = [sys.executable, str(EXAMPLES / "kvstore.py"), str(store), "--driver", driver]
    cmd += ["--loop", loop_name(anyio_backend)]
    load = ["--seconds", "600", "--keys", "2000", "--clients", "16", "--ack-log", str(acks)]
    outputs, second_run_acks = [], 0
    # The first run checkpoints under load; the second never does, so every put it acknowledged
    # is a WAL record past the redo point, which the next start must replay.
    for target, checkpoint in ((400, "0.2"), (800, "600")):
        start = acks.stat().st_size if acks.exists() else 0
        proc = subprocess.Popen(
            [*cmd, *load, "--checkpoint", checkpoint],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await wait_for_acks(proc, acks, start, target)
        finally:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        outputs.append(out)
        second_run_acks = acks.read_bytes()[start:].count(b"\n") - 1  # less its "# run" line
    assert re.match(r"recovered: replayed \d+ WAL records\n", outputs[1]), outputs[1]

    kvstore = load_example("kvstore")
    acked, runs = kvstore.read_ack_log(str(acks))
    assert runs == 2
    assert len(acked) > 100
    out = run(*cmd[1:], "--verify", str(acks), cwd=store).strip()
    verified = re.fullmatch(
        rf"verified {len(acked)} keys against {acks}: 0 lost \(read-only: (\d+) WAL records replayed in "
        r"memory, left for the store's next start\)",
        out,
    )
    assert verified is not None, out
    pending = int(verified[1])
    assert pending >= second_run_acks >= target - 1, (pending, second_run_acks)
    async with kvstore.KVStore(str(store), 1024, driver, read_only=True) as kv:
        assert kv.replayed == pending  # --verify left every record in place
        for k, v in acked.items():
            value = await kv.get(k.encode())
            assert value is not None, f"{k} acknowledged at version {v} is gone"
            key, version, pad = value.split(b":")
            # The last acknowledged version, or a later one by at most one per run: durable, the
            # run killed before its ack line, and the next run went on from it.
            assert key == k.encode() and pad.strip(b"x") == b"", (k, v, value)
            assert v <= int(version) <= v + runs, (k, v, value)
    # Recovery is the store's job, on its next start, and it says what it replayed.
    out = run(*cmd[1:], "--seconds", "0", cwd=store)
    assert out.splitlines()[0] == f"recovered: replayed {pending} WAL records", out


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("loop", LOOPS)
def test_scan(data_dir: Path, loop: str, direct: bool, driver: str) -> None:
    table = data_dir / "table"
    pages = 8 * 16 * 3 + 5  # several full combined reads and a short one
    data = os.urandom(pages * 8192)
    table.write_bytes(data)
    args = ["--driver", driver, "--loop", loop, "--buffers", "64", *(["--direct"] if direct else [])]
    out, err = run_with_stderr(str(EXAMPLES / "scan.py"), str(table), *args, "--progress", "0", cwd=data_dir)
    assert len(progress_lines(err, "scanning")) == pages
    assert progress_lines(err, "scanning")[-1] == (mib(len(data)), mib(len(data)))
    out = out.splitlines()
    speed = r"in [\d.]+ s: [\d.]+ MiB/s, \d+ reads of [\d.]+ pages on average"
    assert re.fullmatch(rf"scanned {pages} pages \({len(data)} bytes\) {speed}", out[0]), out
    assert out[1] == f"sha256 {hashlib.sha256(data).hexdigest()}"


def test_scan_creates_its_table(tmp_path: Path, driver: str) -> None:
    args = ["t", "--create", "100k", "--driver", driver, "--progress", "0"]
    out, err = run_with_stderr(str(EXAMPLES / "scan.py"), *args, cwd=tmp_path)
    assert progress_lines("\n".join(err.splitlines()[:1]), "creating t") == [("0.1", "0.1")]
    lines = out.splitlines()
    assert lines[0] == "created t: 106496 bytes"  # rounded up to 13 whole pages
    assert lines[2] == f"sha256 {hashlib.sha256((tmp_path / 't').read_bytes()).hexdigest()}"


def test_scan_refuses_a_file_of_part_pages(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"x" * 10000)
    r = run_process(str(EXAMPLES / "scan.py"), "t", cwd=tmp_path)
    assert r.returncode == 1
    assert "RelationSizeError: 't' is 10000 bytes, not a whole number of 8192-byte pages" in r.stderr


def test_api_reference_is_up_to_date() -> None:
    """docs/api.md is what tools/gen_api.py generates from the docstrings as they are now."""
    r = run_process(str(ROOT / "tools" / "gen_api.py"), "--check")
    assert r.returncode == 0, r.stderr


def _upstream_suites() -> ModuleType:
    return load_file("upstream_suites", ROOT / "tools" / "upstream_suites.py")


def test_upstream_suites_accepted_differences_are_documented() -> None:
    """Each upstream test tools/upstream_suites.py accepts as failing is in docs/testing.md."""
    doc = (ROOT / "docs" / "testing.md").read_text()
    section = doc[doc.index("## Checking against aiofiles' and anyio's own suites") :]
    for suite, pattern in _upstream_suites().ACCEPTED:
        assert f"`{pattern}`" in section, f"docs/testing.md: why is {suite}'s {pattern} accepted?"


def test_upstream_suites_rewrite_changes_only_the_import() -> None:
    """The anyio test file as run differs from upstream's in the one import statement."""
    source = (
        "import os\n\nfrom anyio import (\n    AsyncFile,\n    CancelScope,\n    Path,\n"
        "    open_file as of,\n    wrap_file,\n)\n\n\ndef f():\n    return Path, of\n"
    )
    assert _upstream_suites().rewrite_anyio_import(source) == (
        "import os\n\nfrom anyio import CancelScope\n"
        "from aiopg_io import AsyncFile, Path, open as of, wrap as wrap_file\n"
        "\n\ndef f():\n    return Path, of\n"
    )


def test_every_example_is_listed_and_run() -> None:
    """A new example gets a line in the README (how to run it) and a test here."""
    readme, tests = (ROOT / "README.md").read_text(), Path(__file__).read_text()
    for example in sorted(EXAMPLES.glob("[!_]*.py")):  # _progress.py: a helper they import
        assert f"python examples/{example.name}" in readme, f"README.md: how to run {example.name}?"
        assert f'"{example.name}"' in tests, f"no test runs examples/{example.name}"


def test_the_examples_extra_brings_what_the_examples_import() -> None:
    """Every third-party module an example imports comes with ``pip install -e '.[examples]'``
    (or with aiopg_io itself), so the README's example command works on a fresh machine."""
    import ast

    text = (ROOT / "pyproject.toml").read_text()  # tomllib is 3.11+: the two lists by pattern
    blocks = [re.search(rf"^{key} = \[(.*?)^\]", text, re.S | re.M) for key in ("dependencies", "examples")]
    names = {
        re.split(r"[<>=;\[ ]", req, maxsplit=1)[0].lower()
        for block in blocks
        if block is not None
        for req in re.findall(r'"([^"]+)"', block.group(1))
    }
    assert {"anyio", "aiofiles", "trio"} <= names, names
    stdlib = sys.stdlib_module_names
    for example in sorted(EXAMPLES.glob("*.py")):
        tree = ast.parse(example.read_text())
        for node in ast.walk(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for mod in mods:
                top = mod.split(".")[0]
                if top in stdlib or top in ("__future__", "aiopg_io") or (EXAMPLES / f"{top}.py").exists():
                    continue
                assert top.lower() in names, f"examples/{example.name} imports {top}: add it to the extra"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-trio", "granian"])
def test_static_server(tmp_path: Path, server: str) -> None:
    """examples/static_server.py on loopback: a file whole and a Range of it, byte for byte;
    a path out of the directory refused. Under granian the whole file goes by pathsend."""
    if server == "granian":
        pytest.importorskip("granian", reason="granian (the test extra) is not installed")
    (tmp_path / "www" / "sub").mkdir(parents=True)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "www" / "sub" / "blob.bin").write_bytes(payload)
    (tmp_path / "secret").write_bytes(b"no")
    port = _free_port()
    cmd = [sys.executable, str(EXAMPLES / "static_server.py"), str(tmp_path / "www"), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), *(["--trio"] if server == "hypercorn-trio" else ["--server", server])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"static_server exited early:\n{proc.communicate()}"
            try:
                status, headers, body = _get(port, "/sub/blob.bin")
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "static_server did not listen within 60 s"
                time.sleep(0.1)
        assert (status, body) == (200, payload) and headers["accept-ranges"] == "bytes"
        status, headers, body = _get(port, "/sub/blob.bin", {"Range": "bytes=1000000-1999999"})
        assert (status, body) == (206, payload[1_000_000:2_000_000])
        assert headers["content-range"] == f"bytes 1000000-1999999/{len(payload)}"
        status, _, _ = _get(port, "/sub/blob.bin", {"If-None-Match": headers["etag"]})
        assert status == 304
        assert _get(port, "/../secret")[0] == 404
        assert _get(port, "/sub/%2e%2e/%2e%2e/secret")[0] == 404
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert out.startswith(f"serving {tmp_path / 'www'} at http://127.0.0.1:{port}/"), (out, err)


def test_static_server_help() -> None:
    out = run(str(EXAMPLES / "static_server.py"), "--help", cwd=ROOT)
    assert "under uvicorn (asyncio)" in out and "under hypercorn on trio with --trio" in out
    assert "granian offers pathsend" in " ".join(out.split())
