"""``python -m aiopg_io``: what runs here, and how fast.

With no subcommand: the driver matrix, then a 30-second self-benchmark of every driver that
runs here (``--json``, ``--plot FILE.png``).

Subcommands:
  info [DIR] [--json]     the driver x {buffered, direct} matrix of this machine
  bench [fio options]     one workload in fio's vocabulary (rw, bs, iodepth, direct, size, runtime)
  bench-<component>       each component's comparison against its reference (see --help)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from . import _mainjob
from ._info import machine_matrix, render

# subcommand -> (module, help); each module has add_arguments(parser) and main(args) -> int
BENCHMARKS: dict[str, tuple[str, str]] = {
    "bench": ("aiopg_io.bench.job", "one workload in fio's vocabulary, across drivers and loops"),
    "bench-core": ("aiopg_io.bench.core", "4 KiB random reads, warm cache: worker driver vs aiofiles"),
    "bench-uring": ("aiopg_io.bench.uring", "io_uring vs fio, aiofile, aiofiles and the worker driver"),
    "bench-posix-aio": ("aiopg_io.bench.posix_aio", "posix_aio vs worker and io_uring"),
    "bench-wal": ("aiopg_io.bench.wal", "WAL group commit vs a naive loop and pg_test_fsync"),
    "bench-buffers": ("aiopg_io.bench.buffers", "buffer pool read streams vs fio and preadinto"),
}


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
    for name, (module, text) in BENCHMARKS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        bp = sub.add_parser(name, help=text)
        mod.add_arguments(bp)
        bp.set_defaults(func=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
