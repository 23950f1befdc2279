"""Serve a directory over HTTP: aiopg_io's ASGI FileResponse under uvicorn or hypercorn.

    python examples/static_server.py DIR --host 127.0.0.1 --port 8000          # uvicorn, asyncio
    python examples/static_server.py DIR --host 127.0.0.1 --port 8000 --trio   # hypercorn, trio

Every regular file under DIR is served at its relative path (GET and HEAD, single Range
requests, ETag / Last-Modified and 304s); a path that leads out of DIR (``..``, a symlink
out, a NUL byte) gets 404. The files are read through aiopg_io (``--driver`` picks the
driver): neither server offers ASGI's ``pathsend`` or exposes its socket, so the body goes
out in ``http.response.body`` messages. uvicorn runs its default loop (uvloop when it is
installed); ``--trio`` runs hypercorn on trio. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import sys

from aiopg_io.asgi import StaticFiles


def make_app(directory: str) -> StaticFiles:
    """The ASGI app: the files under ``directory`` (the benchmark serves this one too)."""
    return StaticFiles(directory)


def serve_uvicorn(app: StaticFiles, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")


def serve_hypercorn_trio(app: StaticFiles, host: str, port: int) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    trio.run(serve, app, config)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python examples/static_server.py",
        description="Serve DIR over HTTP with aiopg_io.asgi: under uvicorn (asyncio) by default, "
        "under hypercorn on trio with --trio.",
    )
    parser.add_argument("directory", metavar="DIR", help="the directory to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--trio", action="store_true", help="run hypercorn on trio instead of uvicorn on asyncio"
    )
    parser.add_argument("--driver", help="aiopg_io driver (io_uring, posix_aio, worker, sync; default auto)")
    args = parser.parse_args()
    if args.driver:
        os.environ["AIOPG_IO_DRIVER"] = args.driver
    if not os.path.isdir(args.directory):
        print(f"static_server: {args.directory!r} is not a directory", file=sys.stderr)
        return 2
    app = make_app(args.directory)
    server = "hypercorn on trio" if args.trio else "uvicorn on asyncio"
    where = f"http://{args.host}:{args.port}/"
    print(f"serving {os.path.abspath(args.directory)} at {where} ({server})", flush=True)
    try:
        if args.trio:
            serve_hypercorn_trio(app, args.host, args.port)
        else:
            serve_uvicorn(app, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
