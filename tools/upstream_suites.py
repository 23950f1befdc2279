"""Run aiofiles' and anyio's own file tests against aiopg_io, with only their imports changed.

    python tools/upstream_suites.py                     # both suites, every driver that runs here
    python tools/upstream_suites.py --suite anyio --driver io_uring
    python tools/upstream_suites.py --keep /tmp/upstream -- -x --tb=long

What it does, each run (docs/testing.md, "Checking against aiofiles' and anyio's own suites"):

1. Downloads the sdists of the aiofiles and anyio versions installed in this interpreter
   (``pip download --no-deps --no-binary :all:``) into a temporary directory; ``--sdist-dir``
   uses ones already downloaded. Their tests are never copied into this repository: we read
   other projects' tests to check ourselves.
2. Copies their file tests into the temporary directory. aiofiles: ``tests/test_os.py``
   (``aiofiles.os``, ``aiofiles.os.path``), ``tests/test_tempfile.py``, ``tests/test_simple.py``
   and ``tests/threadpool/`` (``open``, ``wrap``) with ``tests/resources/``, byte for byte;
   they import ``aiofiles``, which resolves to a shim package of name bindings
   (``aiofiles.open = aiopg_io.open``, ...) put first on ``PYTHONPATH``. anyio:
   ``tests/test_fileio.py`` and its ``conftest.py``; the one ``from anyio import (...)``
   statement of the test file is rewritten so the file names (``AsyncFile``, ``Path``,
   ``open_file``, ``wrap_file``) come from aiopg_io and the rest (``CancelScope``,
   ``CapacityLimiter``) from anyio. That diff is printed. Nothing else is changed.
3. Runs each suite as shipped, against aiofiles / anyio themselves (the baseline: a test
   that fails there too fails because of this machine, e.g. ``access()`` as root), then
   pointed at aiopg_io once per driver (``AIOPG_IO_DRIVER``), with pytest in this
   interpreter. aiofiles' tests run under pytest-asyncio in auto mode, as aiofiles runs
   them, on asyncio, uvloop and asyncio+eager (3.12+) through pytest-asyncio's
   ``pytest_asyncio_loop_factories`` hook (not trio: the tests call asyncio's functions);
   anyio's under anyio's plugin with anyio's own ``anyio_backend`` fixture (asyncio,
   uvloop, asyncio+eager on 3.12+, trio). If trustme (anyio's TLS fixtures, unused by
   these tests) is not installed, a stand-in that raises when used takes its import.
4. Prints the tests that did not pass on every driver, what they raised, the skip reasons
   with their counts (``--all``: every test), and per suite and driver the counts. A failure
   listed in ``ACCEPTED`` below (a test of the upstream project's internals, which a
   drop-in cannot and need not pass) or failing in the baseline too is reported as
   accepted, with its reason. The exit status is 1 if any other test failed.

Run it with the interpreter whose aiopg_io you check (``.venv/bin/python``, or a venv of
another Python with ``pip install -e '.[test]'``): the versions it fetches are the ones
installed there.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

#: The upstream tests that a drop-in cannot pass, and why: (suite, node-id glob) -> reason;
#: in the globs ``*`` is a wildcard and ``[`` itself (it opens a test's parameters).
#: docs/testing.md lists the same ones (tests/test_examples.py checks it names each).
ACCEPTED: dict[tuple[str, str], str] = {
    ("aiofiles", "tests/threadpool/test_binary.py::test_simple_close_ctx_mgr[*"): (
        "asserts on file._file, aiofiles' private io object under its wrapper; aiopg_io files "
        "have no io object underneath (the public part, file.closed, passes)"
    ),
    ("aiofiles", "tests/threadpool/test_binary.py::test_simple_close_ctx_mgr_iter[*"): (
        "asserts on file._file, aiofiles' private io object under its wrapper"
    ),
    ("aiofiles", "tests/threadpool/test_text.py::test_simple_close[*"): (
        "asserts on file._file, aiofiles' private io object under its wrapper"
    ),
    ("aiofiles", "tests/test_tempfile.py::test_spooled_temporary_file[*b+*"): (
        "asserts on f._file._file, the private BytesIO inside aiofiles' spooled-file wrapper"
    ),
    ("aiofiles", "tests/threadpool/test_concurrency.py::test_slow_file[*"): (
        "monkeypatches aiofiles.threadpool.sync_open (aiofiles' hook for mocking the open() its "
        "threads call); aiopg_io calls no Python open() to patch (aiopg_io.testing injects faults)"
    ),
    ("aiofiles", "tests/threadpool/test_open.py::test_filetask_async_context_aexit[*"): (
        "reads file_ctx._obj, the private result slot of aiofiles' context manager"
    ),
}

#: The names the anyio test file imports from anyio that aiopg_io provides.
ANYIO_TO_AIOPG_IO = {
    "AsyncFile": "AsyncFile",
    "Path": "Path",
    "open_file": "open",
    "wrap_file": "wrap",
}

#: The aiofiles modules and names the shim provides (aiofiles name -> aiopg_io expression).
AIOFILES_SHIM = {
    "__init__.py": '''\
"""aiofiles' names bound to aiopg_io's (tools/upstream_suites.py). Not aiofiles."""
import sys

import aiopg_io
import aiopg_io.os
import aiopg_io.ospath
import aiopg_io.tempfile
from aiopg_io import open as open

from . import threadpool as threadpool

os = aiopg_io.os
ospath = aiopg_io.ospath
tempfile = aiopg_io.tempfile
wrap = aiopg_io.wrap
for _name, _module in (("os", os), ("os.path", os.path), ("ospath", ospath), ("tempfile", tempfile)):
    sys.modules[f"{__name__}.{_name}"] = _module
''',
    "threadpool.py": '''\
"""aiofiles.threadpool's open and wrap bound to aiopg_io's (tools/upstream_suites.py)."""
from aiopg_io import open as open
from aiopg_io import wrap as wrap
''',
}

#: Files of the aiofiles sdist that are copied (paths under tests/; a folder is copied whole).
AIOFILES_TESTS = ("test_os.py", "test_tempfile.py", "test_simple.py", "threadpool", "resources")
ANYIO_TESTS = ("__init__.py", "conftest.py", "test_fileio.py")

#: Writes each test's outcome as JSON (the path in $UPSTREAM_SUITES_REPORT) for the summary,
#: and which ``aiofiles`` the tests imported, so a shim not taking effect cannot pass unseen.
REPORT_PLUGIN = """\
import json, os, sys

_results = {}


def pytest_runtest_logreport(report):
    entry = _results.setdefault(report.nodeid, {"outcome": "pass", "detail": ""})
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        detail = crash.message if crash is not None else str(report.longrepr)
        entry.update(outcome="fail" if report.when == "call" else "error", detail=detail)
    elif report.skipped and entry["outcome"] == "pass":
        if hasattr(report, "wasxfail"):
            entry.update(outcome="xfail", detail=report.wasxfail)
        else:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            entry.update(outcome="skip", detail=reason)


def pytest_sessionfinish(session):
    aiofiles = sys.modules.get("aiofiles")
    with open(os.environ["UPSTREAM_SUITES_REPORT"], "w") as out:
        json.dump({"results": _results,
                   "aiofiles": getattr(aiofiles, "__file__", None)}, out)
"""

#: The loops aiofiles' tests run on: pytest-asyncio runs each test once per factory here
#: (its pytest_asyncio_loop_factories hook), as tests/conftest.py runs ours (trio is not one:
#: aiofiles' tests call asyncio's own functions).
LOOPS_PLUGIN = """\
import asyncio, sys

import uvloop


def _eager_loop():
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    return loop


def pytest_asyncio_loop_factories(config, item):
    loops = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    if sys.version_info >= (3, 12):
        loops["asyncio+eager"] = _eager_loop
    return loops
"""

#: trustme makes certificates for anyio's TLS fixtures, which its file tests never use; where
#: it is not installed, its import in anyio's conftest.py resolves to this.
TRUSTME_STUB = '''\
"""Stands in for trustme (tools/upstream_suites.py): anyio's file tests use no TLS fixture."""


class CA:
    def __init__(self) -> None:
        raise RuntimeError("trustme is not installed: a TLS fixture was used")
'''

PYTEST_INI = {
    "aiofiles": "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
    "anyio": "[pytest]\naddopts = -p anyio -p no:asyncio\nanyio_mode = auto\nxfail_strict = true\n",
}


@dataclasses.dataclass
class Outcome:
    outcome: str  # pass, fail, error, skip, xfail
    detail: str


def log(msg: str) -> None:
    print(msg, flush=True)


def installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{name} is not installed in {sys.executable}: install the test extra first")


def fetch_sdist(name: str, version: str, dest: Path, sdist_dir: Path | None) -> Path:
    """The unpacked sdist of name==version, with a tests/ folder (exit if it has none)."""
    pattern = f"{name}-{version}.tar.gz"
    if sdist_dir is None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{name}=={version}",
            "-d",
            str(dest),
        ]
        log(f"+ {' '.join(cmd)}")
        subprocess.run(cmd, check=True)
        sdist_dir = dest
    found = sorted(sdist_dir.glob(pattern))
    if not found:
        sys.exit(f"no {pattern} in {sdist_dir}")
    with tarfile.open(found[0]) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.12, and 3.8-3.11 security releases
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)
    root = dest / f"{name}-{version}"
    if not (root / "tests").is_dir():
        # The other place the tests live is the project's tagged tarball on its forge, which
        # this machine cannot reach (only package registries are reachable).
        sys.exit(
            f"the {name} {version} sdist has no tests/ folder, and the tagged source "
            "tarball it would have to come from is not reachable from here"
        )
    return root


def copy_tests(src: Path, dst: Path, names: Iterable[str]) -> None:
    for name in names:
        s = src / "tests" / name
        if s.is_dir():
            shutil.copytree(s, dst / "tests" / name)
        else:
            (dst / "tests").mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dst / "tests" / name)


def rewrite_anyio_import(source: str) -> str:
    """``source`` with its ``from anyio import (...)`` statement split: the file names from
    aiopg_io, the rest still from anyio. Exits if the file has no such statement."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "anyio" and node.level == 0:
            break
    else:
        sys.exit("anyio's test_fileio.py has no top-level 'from anyio import' any more")
    from_anyio = [a for a in node.names if a.name not in ANYIO_TO_AIOPG_IO]
    from_aiopg_io = [a for a in node.names if a.name in ANYIO_TO_AIOPG_IO]
    lines = []
    if from_anyio:
        lines.append("from anyio import " + ", ".join(_alias(a.name, a.asname) for a in from_anyio))
    lines.append(
        "from aiopg_io import "
        + ", ".join(_alias(ANYIO_TO_AIOPG_IO[a.name], a.asname or a.name) for a in from_aiopg_io)
    )
    old = source.splitlines(keepends=True)
    assert node.end_lineno is not None
    new = old[: node.lineno - 1] + [line + "\n" for line in lines] + old[node.end_lineno :]
    return "".join(new)


def _alias(name: str, asname: str | None) -> str:
    return name if asname in (None, name) else f"{name} as {asname}"


def prepare(suite: str, root: Path, work: Path, *, shimmed: bool) -> Path:
    """Lay out one suite in work/SUITE (pointed at aiopg_io) or work/SUITE-upstream (as
    shipped, for the baseline run); returns that folder."""
    here = work / (suite if shimmed else f"{suite}-upstream")
    here.mkdir()
    (here / "pytest.ini").write_text(PYTEST_INI[suite])
    shim = here / "shim"
    shim.mkdir()
    copy_tests(root, here, AIOFILES_TESTS if suite == "aiofiles" else ANYIO_TESTS)
    if suite == "aiofiles" and shimmed:
        (shim / "aiofiles").mkdir()
        for name, text in AIOFILES_SHIM.items():
            (shim / "aiofiles" / name).write_text(text)
    elif suite == "anyio":
        if shimmed:
            test = here / "tests" / "test_fileio.py"
            old = test.read_text()
            new = rewrite_anyio_import(old)
            test.write_text(new)
            log(
                "".join(
                    difflib.unified_diff(
                        old.splitlines(keepends=True),
                        new.splitlines(keepends=True),
                        "anyio/tests/test_fileio.py",
                        "(as run)",
                    )
                )
            )
        if importlib.util.find_spec("trustme") is None:
            (shim / "trustme.py").write_text(TRUSTME_STUB)
    (shim / "upstream_report.py").write_text(REPORT_PLUGIN)
    if suite == "aiofiles":
        (shim / "upstream_loops.py").write_text(LOOPS_PLUGIN)
    return here


def run_suite(
    here: Path, driver: str, jobs: int, extra: Sequence[str]
) -> tuple[dict[str, Outcome], str | None]:
    report = here / f"report-{driver}.json"
    env = dict(os.environ)
    env["AIOPG_IO_DRIVER"] = driver
    env["UPSTREAM_SUITES_REPORT"] = str(report)
    env["PYTHONPATH"] = os.pathsep.join([str(here / "shim"), *filter(None, [env.get("PYTHONPATH")])])
    plugins = ["-p", "upstream_report"] + (
        ["-p", "upstream_loops"] if (here / "shim" / "upstream_loops.py").exists() else []
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *plugins,
        "-q",
        "-rN",
        "--no-header",
        "-p",
        "no:cacheprovider",
        *(["-n", str(jobs)] if jobs else []),
        *extra,
        "tests",
    ]
    log(f"+ (cd {here}; AIOPG_IO_DRIVER={driver} {' '.join(cmd[1:])})")
    proc = subprocess.run(cmd, cwd=here, env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
    log(f"  {tail[0]}")
    if not report.exists():
        sys.exit(f"pytest wrote no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(report.read_text())
    results = {k: Outcome(**v) for k, v in data["results"].items()}
    return results, data["aiofiles"]


def accepted_reason(suite: str, nodeid: str) -> str | None:
    for (s, pattern), reason in ACCEPTED.items():
        if s == suite and fnmatch.fnmatchcase(nodeid, pattern.replace("[", "[[]")):
            return reason
    return None


def summarize(
    suite: str,
    version: str,
    by_driver: dict[str, dict[str, Outcome]],
    baseline: dict[str, Outcome] | None,
    show_all: bool,
) -> tuple[int, int]:
    """Print the per-test table and counts; returns (failed unaccepted, failed accepted)."""
    drivers = list(by_driver)
    nodeids = list(dict.fromkeys(n for r in by_driver.values() for n in r))
    unexpected = accepted = 0
    skips: dict[str, int] = {}
    log(f"\n== {suite} {version}: {len(nodeids)} tests x drivers {', '.join(drivers)}")
    for nodeid in nodeids:
        outs = {d: by_driver[d].get(nodeid, Outcome("missing", "not run on this driver")) for d in drivers}
        kinds = {o.outcome for o in outs.values()}
        failed = bool(kinds & {"fail", "error", "missing"})
        reason = accepted_reason(suite, nodeid) if failed else None
        upstream = baseline.get(nodeid) if baseline is not None else None
        if failed and reason is None and upstream is not None and upstream.outcome in ("fail", "error"):
            reason = f"fails with {suite} itself too, here: {textwrap.shorten(upstream.detail, 120)}"
        if failed:
            if reason is None:
                unexpected += 1
            else:
                accepted += 1
        if not failed and not show_all:
            if kinds <= {"skip", "xfail"}:
                for o in outs.values():
                    skips[o.detail] = skips.get(o.detail, 0) + 1
            if kinds <= {"pass", "skip", "xfail"}:
                continue
        where = "all drivers" if len(kinds) == 1 else ", ".join(f"{d}={o.outcome}" for d, o in outs.items())
        label = ("ACCEPTED" if reason else "FAIL") if failed else "/".join(sorted(kinds))
        log(f"  {label:8} {nodeid}  [{where}]")
        details = {o.detail for o in outs.values() if o.detail and o.outcome != "pass"}
        for detail in sorted(details)[:3]:
            log(textwrap.indent(textwrap.shorten(detail, 300), "           "))
        if reason:
            log(f"           accepted: {reason}")
    for detail, count in sorted(skips.items(), key=lambda kv: -kv[1]):
        log(f"  skipped  {count // len(drivers)} tests: {detail}")
    for d in drivers:
        counts: dict[str, int] = {}
        for o in by_driver[d].values():
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        log(f"  {suite} on {d}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if baseline is not None:
        counts = {}
        for o in baseline.values():
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        log(
            f"  {suite} {version} itself (the baseline): "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        )
    return unexpected, accepted


def default_drivers() -> list[str]:
    from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason

    out = []
    for name in DRIVER_NAMES:
        reason = unavailable_reason(name)
        if reason is None:
            out.append(name)
        else:
            log(f"driver {name} skipped: it cannot run here: {reason}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite",
        action="append",
        choices=["aiofiles", "anyio"],
        help="run only this suite (repeatable; default both)",
    )
    parser.add_argument(
        "--driver",
        action="append",
        help="run only on this driver (repeatable; default every one that runs here)",
    )
    parser.add_argument("--sdist-dir", type=Path, help="use the sdists in this folder, download nothing")
    parser.add_argument("--keep", type=Path, help="lay the suites out in this (new) folder and keep it")
    parser.add_argument(
        "--jobs", "-n", type=int, default=0, help="pytest-xdist workers per run (default none)"
    )
    parser.add_argument("--all", action="store_true", help="list passing and skipped tests one by one")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="do not run the tests against aiofiles / anyio themselves first",
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to every pytest run")
    args = parser.parse_args(argv)

    suites = args.suite or ["aiofiles", "anyio"]
    drivers = args.driver or default_drivers()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        work = args.keep.resolve()
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="upstream-suites-")
        work = Path(cleanup.name)
    try:
        unexpected = accepted = 0
        for suite in suites:
            version = installed_version(suite)
            root = fetch_sdist(suite, version, work / "sdists", args.sdist_dir)
            baseline = None
            if not args.no_baseline:
                # The same tests against the real package: a test that fails there too fails
                # because of this machine (e.g. access() checks as root), not of aiopg_io.
                log(f"baseline: the tests against {suite} {version} itself")
                baseline, _ = run_suite(
                    prepare(suite, root, work, shimmed=False), "sync", args.jobs, args.pytest_args
                )
            here = prepare(suite, root, work, shimmed=True)
            by_driver = {}
            for driver in drivers:
                results, aiofiles_file = run_suite(here, driver, args.jobs, args.pytest_args)
                if suite == "aiofiles" and not str(aiofiles_file).startswith(str(here / "shim")):
                    sys.exit(f"the tests imported aiofiles from {aiofiles_file}, not the shim")
                by_driver[driver] = results
            u, a = summarize(suite, version, by_driver, baseline, args.all)
            unexpected += u
            accepted += a
        log(
            f"\n{unexpected} test(s) failed that are not accepted differences"
            if unexpected
            else f"\nno failures but the {accepted} accepted"
            if accepted
            else "\nno failures"
        )
        return 1 if unexpected else 0
    finally:
        if cleanup is not None:
            cleanup.cleanup()


if __name__ == "__main__":
    sys.exit(main())
