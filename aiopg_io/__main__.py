"""``python -m aiopg_io``: what runs here, and how fast.

With no subcommand: the driver matrix, then a 30-second self-benchmark of every driver that
runs here (``--json``, ``--plot FILE.png``).

Subcommands:
  info [DIR] [--json]     the driver x {buffered, direct} matrix of this machine
  bench [fio options]     one workload in fio's vocabulary (rw, bs, iodepth, direct, size, runtime)

Each component's comparison against other tools (fio, aiofiles, aiofile, pg_test_fsync) is
a script in the source tree's ``benchmarks/``, not part of the package: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import _mainjob
from ._info import machine_matrix, render
from .bench import job as bench_job


def _info(args: argparse.Namespace) -> int:
    m = machine_matrix(args.directory)
    if args.json:
        print(json.dumps(m.as_dict(), indent=2))
    else:
        print(render(m))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aiopg_io", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _mainjob.add_arguments(parser)
    parser.set_defaults(func=_mainjob.main)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("info", help="the driver matrix of this machine")
    p.add_argument("directory", nargs="?", default=".", help="where to probe direct I/O (default: .)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)
    p = sub.add_parser("bench", help="one workload in fio's vocabulary, across drivers and loops")
    bench_job.add_arguments(p)
    p.set_defaults(func=bench_job.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
