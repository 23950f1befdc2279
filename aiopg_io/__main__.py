"""``python -m aiopg_io``: what runs here, and how fast.

Subcommands:
  info [DIR] [--json]     the driver x {buffered, direct} matrix of this machine
  bench-core [...]        4 KiB random reads: the worker driver vs aiofiles (issue 2)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from ._info import machine_matrix, render

# subcommand -> (module, help); each module has add_arguments(parser) and main(args) -> int
BENCHMARKS: dict[str, tuple[str, str]] = {
    "bench-core": ("aiopg_io.bench.core", "4 KiB random reads, warm cache: worker driver vs aiofiles"),
}


def _info(args: argparse.Namespace) -> int:
    m = machine_matrix(args.directory)
    if args.json:
        print(json.dumps(m.as_dict(), indent=2))
    else:
        print(render(m))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aiopg_io", description=__doc__.splitlines()[0])
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["info", *(argv or [])])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
