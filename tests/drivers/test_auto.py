"""What ``auto`` picks on Linux (issue 14, item 3): ``io_uring_c`` (the C ring) wherever its
extension loads and the kernel has io_uring; the pure ``io_uring`` where the extension cannot
load (its import fails, as ``drivers/_compiled.py`` catches it) or ``AIOPG_IO_PURE=1`` refuses
it; and ``python -m aiopg_io info`` names the path in use and why.

The pure-path cases run in a fresh interpreter: the extension is loaded once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io import _info
from aiopg_io.drivers import DriverSpec, resolve, unavailable_reason

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="auto picks an io_uring driver on Linux only"
)

_C_REASON = unavailable_reason("io_uring_c")
_PURE_REASON = unavailable_reason("io_uring")

#: A child that opens a file with no driver named, reads it back, and prints the driver it
#: got, then the ``compiled`` and ``auto`` lines of ``info`` (argv[1]: the file; argv[2]:
#: "unbuilt" to make the extension's import fail first, as where it did not build).
_CHILD = """
import sys
if sys.argv[2] == "unbuilt":
    sys.modules["aiopg_io.drivers._uring"] = None  # import raises ImportError, as when not built
import asyncio, aiopg_io
from aiopg_io import _info

async def main():
    async with aiopg_io.open(sys.argv[1], "rb") as f:
        assert await f.read() == b"auto" * 1024, "read back differs"
        return f.driver

print(asyncio.run(main()))
out = _info.render(_info.machine_matrix(".")).splitlines()
print(next(ln for ln in out if ln.strip().startswith("compiled ")).strip())
print(next(ln for ln in out if ln.strip().startswith("auto ->")).strip())
"""


def _child(tmp_path: Path, how: str, **env: str) -> list[str]:
    p = tmp_path / "f.bin"
    p.write_bytes(b"auto" * 1024)
    environ = {k: v for k, v in os.environ.items() if k not in ("AIOPG_IO_DRIVER", "AIOPG_IO_PURE")}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(p), how],
        env={**environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_auto_picks_the_c_ring_where_it_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if _C_REASON is not None:
        pytest.skip(f"io_uring_c cannot run here: {_C_REASON}")
    monkeypatch.delenv("AIOPG_IO_DRIVER", raising=False)
    assert resolve("auto") == resolve(None) == DriverSpec("io_uring_c")
    assert resolve("auto", direct=True) == DriverSpec("io_uring_c")  # the ring takes O_DIRECT as it is
    driver, compiled, auto = _child(tmp_path, "built")
    assert driver == "io_uring_c"
    assert compiled.startswith("compiled  C ring for driver io_uring_c (C extension loaded from ")
    assert compiled.endswith("; auto picks it")
    assert auto == "auto -> io_uring_c (the C ring)"
    m = _info.machine_matrix(str(tmp_path))
    assert m.auto == "io_uring_c" and m.compiled == compiled.removeprefix("compiled  ")


def test_auto_picks_the_pure_ring_where_the_extension_cannot_load(tmp_path: Path) -> None:
    if _PURE_REASON is not None:
        pytest.skip(f"the pure io_uring driver cannot run here: {_PURE_REASON}")
    driver, compiled, auto = _child(tmp_path, "unbuilt")
    why = (
        "the C extension aiopg_io.drivers._uring is not built (import of aiopg_io.drivers._uring halted; "
        "None in sys.modules); reinstall with a C compiler (pip install -e .) to build it"
    )
    assert driver == "io_uring"
    assert compiled == f"compiled  pure Python ({why})"
    assert auto == f"auto -> io_uring (the pure-Python ring: io_uring_c cannot run here: {why})"


def test_pure_forced_by_environment_through_auto_and_info(tmp_path: Path) -> None:
    if _PURE_REASON is not None:
        pytest.skip(f"the pure io_uring driver cannot run here: {_PURE_REASON}")
    why = "AIOPG_IO_PURE=1 forces the pure-Python path"
    driver, compiled, auto = _child(tmp_path, "built", AIOPG_IO_PURE="1")
    assert driver == "io_uring"
    assert compiled == f"compiled  pure Python ({why})"
    assert auto == f"auto -> io_uring (the pure-Python ring: io_uring_c cannot run here: {why})"
    # The command itself, as a user runs it.
    env = {k: v for k, v in os.environ.items() if k != "AIOPG_IO_DRIVER"}
    out = subprocess.run(
        [sys.executable, "-m", "aiopg_io", "info", str(tmp_path)],
        env={**env, "AIOPG_IO_PURE": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"  compiled  pure Python ({why})\n" in out
    assert f"  io_uring_c  no: {why}\n" in out
    assert out.endswith(f"  {auto}\n")


def test_an_explicit_driver_still_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` is only the default: the argument and AIOPG_IO_DRIVER still name the pure
    driver, with the C ring loaded."""
    if _PURE_REASON is not None:
        pytest.skip(f"the pure io_uring driver cannot run here: {_PURE_REASON}")
    monkeypatch.setenv("AIOPG_IO_DRIVER", "io_uring")
    assert resolve(None) == DriverSpec("io_uring")
    assert aiopg_io.drivers.resolve("io_uring:entries=8") == DriverSpec("io_uring", (("entries", 8),))
