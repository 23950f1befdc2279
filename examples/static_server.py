"""Serve a directory over HTTP: aiopg_io's ASGI StaticFiles under uvicorn, hypercorn or granian.

    python examples/static_server.py DIR --host 127.0.0.1 --port 8000                    # uvicorn
    python examples/static_server.py DIR --host 127.0.0.1 --port 8000 --server granian   # granian
    python examples/static_server.py DIR --host 127.0.0.1 --port 8000 --trio             # hypercorn, trio

Every regular file under DIR is served at its relative path (GET and HEAD, single Range
requests, ETag / Last-Modified and 304s); a path that leads out of DIR (``..``, a symlink
out, a NUL byte) gets 404. ``--server`` picks the ASGI server, all on asyncio:

- ``uvicorn`` (the default; uvloop and httptools when installed) and ``uvicorn-h11``;
  ``hypercorn`` (on uvloop when installed): these offer neither ``pathsend`` nor the
  socket, so the files are read through aiopg_io (``--driver`` picks the driver) and go
  out in ``http.response.body`` messages.
- ``granian`` (one worker): it offers ``http.response.pathsend``, so a whole-file GET is
  checked and opened through aiopg_io and then sent by granian itself; ranges are read
  through aiopg_io as above.

``--trio`` runs hypercorn on trio. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from aiopg_io.asgi import StaticFiles

SERVERS = ("uvicorn", "uvicorn-h11", "hypercorn", "granian")
# granian imports its app by name in its worker process: the directory goes by environment.
_DIR_VARIABLE = "STATIC_SERVER_DIR"


def make_app(directory: str) -> StaticFiles:
    """The ASGI app: the files under ``directory`` (the benchmark serves this one too)."""
    return StaticFiles(directory)


def app_from_environment() -> StaticFiles:
    """granian's factory (``static_server:app_from_environment``)."""
    return make_app(os.environ[_DIR_VARIABLE])


def serve_uvicorn(app: object, host: str, port: int, http: str = "auto") -> None:
    import uvicorn

    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        http=http,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def serve_hypercorn(app: object, host: str, port: int, trio: bool = False) -> None:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    if trio:
        import trio as trio_mod
        from hypercorn.trio import serve as trio_serve

        trio_mod.run(trio_serve, app, config)
        return
    import asyncio

    from hypercorn.asyncio import serve

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(app, config, mode="asgi"))  # type: ignore[arg-type]
    else:
        uvloop.run(serve(app, config, mode="asgi"))  # type: ignore[arg-type]


def serve_granian(factory: str, workdir: str, host: str, port: int) -> None:
    """Run granian with one worker on the app ``factory`` ("module:function") from ``workdir``."""
    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        factory,
        address=host,
        port=port,
        interface=Interfaces.ASGINL,
        workers=1,
        factory=True,
        working_dir=Path(workdir),
        log_enabled=False,
    ).serve()


def serve(directory: str, server: str, host: str, port: int) -> None:
    if server == "granian":
        os.environ[_DIR_VARIABLE] = os.path.abspath(directory)
        serve_granian("static_server:app_from_environment", os.path.dirname(__file__), host, port)
    elif server == "hypercorn-trio":
        serve_hypercorn(make_app(directory), host, port, trio=True)
    elif server == "hypercorn":
        serve_hypercorn(make_app(directory), host, port)
    else:
        serve_uvicorn(make_app(directory), host, port, "h11" if server == "uvicorn-h11" else "auto")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python examples/static_server.py",
        description="Serve DIR over HTTP with aiopg_io.asgi: under uvicorn (asyncio) by default, "
        "another ASGI server with --server, under hypercorn on trio with --trio.",
    )
    parser.add_argument("directory", metavar="DIR", help="the directory to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="uvicorn",
        help="the ASGI server, on asyncio (default uvicorn; granian offers pathsend)",
    )
    parser.add_argument(
        "--trio", action="store_true", help="run hypercorn on trio instead (overrides --server)"
    )
    parser.add_argument("--driver", help="aiopg_io driver (io_uring, posix_aio, worker, sync; default auto)")
    args = parser.parse_args()
    if args.driver:
        os.environ["AIOPG_IO_DRIVER"] = args.driver
    if not os.path.isdir(args.directory):
        print(f"static_server: {args.directory!r} is not a directory", file=sys.stderr)
        return 2
    server = "hypercorn-trio" if args.trio else args.server
    where = f"http://{args.host}:{args.port}/"
    label = "hypercorn on trio" if args.trio else f"{server} on asyncio"
    print(f"serving {os.path.abspath(args.directory)} at {where} ({label})", flush=True)
    try:
        serve(args.directory, server, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
