"""A tiny durable key-value store: the WAL for durability, the buffer pool for pages.

    python examples/kvstore.py DIR [--clients 32] [--seconds 5] [--keys 20000] [--driver worker]
    python examples/kvstore.py DIR --get key12608
    python examples/kvstore.py DIR --ack-log acks.txt   # then kill -9 it, and:
    python examples/kvstore.py DIR --verify acks.txt    # checks, recovers nothing
    python examples/kvstore.py DIR                      # recovers: replayed N WAL records

Run it, kill it with ``kill -9`` whenever you like, run it again: every put it acknowledged
is there. How, in PostgreSQL's terms:

- **Log first.** A put appends a WAL record, applies it to its page in the buffer pool
  (stamping the page with the record's LSN), then waits for the WAL to be durable up to that
  LSN. Only then is it acknowledged. Concurrent puts share WAL flushes (group commit).
- **Pages.** A key lives in bucket ``crc32(key) % buckets``; a bucket is one 8 KiB page:
  ``page LSN (8) | count (2) | entries (key length 1, value length 2, key, value)``.
  A put checks that the new entry fits its page *before* logging it, so every record in
  the WAL can be replayed. The pool holds every bucket (one buffer each), so it never
  evicts: a page is written only by a checkpoint.
- **Checkpoints** (every ``--checkpoint`` seconds) take every bucket lock, so no put is
  between its append and its page change and no page changes while it is being written
  (a write racing a change could reach the file torn). Under the locks: the redo point is
  the end of the log; the WAL is flushed (every change in a page is now durable in the
  WAL: PostgreSQL's WAL-before-data rule — without it, a page could carry an LSN past the
  log's end after a crash, and replay would skip later records below that LSN); every
  dirty page is written and synced. Then, with puts running again, the redo point goes to
  ``kvstore.control`` (a temporary file, synced, renamed, directory synced), and the WAL
  before it is recycled. The locks stall puts for the length of the page writes: a real
  system copies each page under a short lock instead.
- **Recovery** on start: the WAL recovers itself (cutting any torn tail), then every record
  from the redo point on is replayed into pages whose LSN is older than the record's
  (changes to one page are logged in LSN order under its bucket lock, so a page's LSN
  says exactly which records it holds). Recovery prints how many records it replayed.
- **Looking without recovering.** ``--get`` and ``--verify`` open the store read-only: they
  replay the WAL into the pool in memory only (pages are not marked dirty, so nothing is
  written back) and do not checkpoint, so the records stay for the store's next start to
  replay (the WAL itself still cuts a torn tail on open, as any opener must before reading).

The load: ``--clients`` tasks, each owning a slice of the keys (``key0`` to ``key{--keys - 1}``),
loop over put-then-get for ``--seconds``, and throughput is printed every second. A value is
``key:version:padding`` (``key12608:3:xxxx``); a client continues a key from the version
stored, across restarts. ``--ack-log FILE`` appends each acknowledged put (``key12608 3``, one
line, after the put returned; a ``# run`` line starts each run), so a test can kill the
process and ``--verify`` afterwards: every key holds
its last acknowledged version or a later one. Later by at most one per run: a run killed
between a put and its line leaves a durable version nobody acknowledged, and the next run
continues from it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from typing import Any

import anyio

import aiopg_io
from aiopg_io.buffers import BufferPool, Relation
from aiopg_io.wal import WAL

PAGE = 8192
HEADER = struct.Struct("<QH")  # page LSN, entry count
ENTRY = struct.Struct("<BH")  # key length, value length
MAX_KEY, MAX_VALUE = 255, 1024


class BucketFullError(aiopg_io.AiopgIOError, ValueError):
    """A bucket's page has no room for another entry: use more ``--buckets``."""


def decode_page(data: memoryview) -> tuple[int, dict[bytes, bytes]]:
    lsn, count = HEADER.unpack_from(data, 0)
    entries: dict[bytes, bytes] = {}
    pos = HEADER.size
    for _ in range(count):
        klen, vlen = ENTRY.unpack_from(data, pos)
        pos += ENTRY.size
        key = bytes(data[pos : pos + klen])
        pos += klen
        entries[key] = bytes(data[pos : pos + vlen])
        pos += vlen
    return lsn, entries


def encode_page(data: memoryview, lsn: int, entries: dict[bytes, bytes], bucket: int) -> None:
    parts = [HEADER.pack(lsn, len(entries))]
    for key, value in entries.items():
        parts += [ENTRY.pack(len(key), len(value)), key, value]
    blob = b"".join(parts)
    if len(blob) > PAGE:
        raise BucketFullError(f"bucket {bucket} would need {len(blob)} bytes, a page holds {PAGE}")
    data[: len(blob)] = blob
    data[len(blob) :] = bytes(PAGE - len(blob))


def encode_record(key: bytes, value: bytes) -> bytes:
    return bytes([len(key)]) + key + value


def decode_record(record: bytes) -> tuple[bytes, bytes]:
    klen = record[0]
    return record[1 : 1 + klen], record[1 + klen :]


class KVStore:
    """The store in ``directory``. ``read_only``: replay the WAL in memory only and never
    checkpoint (``--get``, ``--verify``): the next read-write start still replays it all."""

    def __init__(self, directory: str, buckets: int, driver: str | None, *, read_only: bool = False) -> None:
        self.directory = directory
        self.buckets = buckets
        self.driver = driver
        self.read_only = read_only
        self.locks = [anyio.Lock() for _ in range(buckets)]
        self.puts = self.gets = 0
        self.scratch = memoryview(bytearray(PAGE))

    async def __aenter__(self) -> KVStore:
        os.makedirs(self.directory, exist_ok=True)
        self._wal_cm = WAL.open(os.path.join(self.directory, "wal"), driver=self.driver)
        self.wal = await self._wal_cm.__aenter__()
        self._pool = BufferPool(self.buckets, PAGE, driver=self.driver)
        self.pool = await self._pool.__aenter__()
        self.rel: Relation = await self.pool.open(os.path.join(self.directory, "pages"), create=True)
        if self.rel.nblocks < self.buckets:
            await self.pool.extend(self.rel, self.buckets - self.rel.nblocks)
            await self.pool.flush(self.rel)
        self.replayed = await self._recover()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is None and not self.read_only:
                await self.checkpoint()
        finally:
            await self._pool.__aexit__(None, None, None)
            await self._wal_cm.__aexit__(None, None, None)

    # -- durability -------------------------------------------------------------------------

    def _control_path(self) -> str:
        return os.path.join(self.directory, "kvstore.control")

    def _read_redo(self) -> int | None:
        try:
            with open(self._control_path()) as f:
                redo: int = json.load(f)["redo"]
                return redo
        except FileNotFoundError:
            return None

    def _write_redo(self, redo: int) -> None:
        tmp = self._control_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"redo": redo}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._control_path())
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def _recover(self) -> int:
        redo = self._read_redo()
        replayed = 0
        last_report = time.perf_counter()
        async for lsn, record in self.wal.read(start=redo):
            key, value = decode_record(record)
            await self._apply(lsn, key, value)
            replayed += 1
            if time.perf_counter() - last_report >= 1:  # a long WAL: say that it is moving
                last_report = time.perf_counter()
                print(f"  recovering: {replayed:,} WAL records replayed so far", file=sys.stderr, flush=True)
        return replayed

    async def _apply(self, lsn: int, key: bytes, value: bytes) -> None:
        bucket = zlib.crc32(key) % self.buckets
        page = await self.pool.read_page(self.rel, bucket)
        with page:
            page_lsn, entries = decode_page(page.data)
            if lsn <= page_lsn:  # the page was written after this change
                return
            entries[key] = value
            encode_page(page.data, lsn, entries, bucket)
            if not self.read_only:  # read-only: the change lives in the pool, never written
                page.mark_dirty()

    async def checkpoint(self) -> None:
        async with contextlib.AsyncExitStack() as locks:
            for lock in self.locks:
                await locks.enter_async_context(lock)
            redo = self.wal.insert_lsn
            await self.wal.flush()
            await self.pool.flush(self.rel)
        await anyio.to_thread.run_sync(self._write_redo, redo)
        await self.wal.truncate_before(redo)

    # -- the API ----------------------------------------------------------------------------

    async def put(self, key: bytes, value: bytes) -> int:
        if not 0 < len(key) <= MAX_KEY or len(value) > MAX_VALUE:
            raise ValueError(
                f"key of {len(key)} bytes (1 to {MAX_KEY}), value of {len(value)} bytes (at most {MAX_VALUE})"
            )
        if self.read_only:
            raise RuntimeError(f"the store in {self.directory!r} was opened read-only: no puts")
        bucket = zlib.crc32(key) % self.buckets
        # As PostgreSQL holds the buffer lock across XLogInsert: changes to one page are
        # logged and applied in LSN order. The flush (where group commit happens) is outside.
        async with self.locks[bucket]:
            page = await self.pool.read_page(self.rel, bucket)
            with page:
                _, entries = decode_page(page.data)
                entries[key] = value
                encode_page(self.scratch, 0, entries, bucket)  # raises BucketFullError, nothing logged
                lsn = await self.wal.append(encode_record(key, value))
                encode_page(page.data, lsn, entries, bucket)
                page.mark_dirty()
        await self.wal.flush(lsn)
        self.puts += 1
        return lsn

    async def get(self, key: bytes) -> bytes | None:
        page = await self.pool.read_page(self.rel, zlib.crc32(key) % self.buckets)
        with page:
            _, entries = decode_page(page.data)
        self.gets += 1
        return entries.get(key)


def key_name(k: int) -> str:
    """The one spelling of key number ``k``: in the store, in values, in the ack log, for ``--get``."""
    return f"key{k}"


def read_ack_log(ack_log: str) -> tuple[dict[str, int], int]:
    """The last acknowledged version of each key, and how many runs wrote the log."""
    last: dict[str, int] = {}
    runs = 0
    with open(ack_log) as f:
        for line in f:
            if not line.endswith("\n"):  # a line cut by the kill was never an acknowledgement
                continue
            if line.startswith("#"):
                runs += 1
                continue
            k, v = line.split()
            last[k] = max(int(v), last[k]) if k in last else int(v)
    return last, runs


async def verify(kv: KVStore, ack_log: str) -> dict[str, Any]:
    """Every acknowledged put must be there: a key holds its last acknowledged version, or a
    later one by at most one per run (durable, killed before its acknowledgement was written)."""
    last, runs = read_ack_log(ack_log)
    bad = []
    for k, v in sorted(last.items()):
        value = await kv.get(k.encode())
        stored = int(value.split(b":")[1]) if value is not None else 0
        if not v <= stored <= v + runs:
            bad.append((k, v, stored))
    print(
        f"verified {len(last)} keys against {ack_log}: {len(bad)} lost "
        f"(read-only: {kv.replayed} WAL records replayed in memory, left for the store's next start)"
    )
    if bad:
        raise SystemExit(f"acknowledged puts lost (key, acked version, stored version): {bad[:10]}")
    return {"verified": len(last)}


def keys_of(client: int, clients: int, nkeys: int) -> Iterator[int]:
    return iter(range(client, nkeys, clients))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    read_only = args.get is not None or args.verify is not None
    async with KVStore(args.dir, args.buckets, args.driver, read_only=read_only) as kv:
        if args.get is not None:
            value = await kv.get(args.get.encode())
            hint = f" (keys are spelled {key_name(int(args.get))})" if args.get.isdigit() else ""
            print(value.decode() if value is not None else f"(not found){hint}")
            return {}
        if args.verify is not None:
            return await verify(kv, args.verify)
        print(f"recovered: replayed {kv.replayed} WAL records", flush=True)
        ack_fd = os.open(args.ack_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if args.ack_log else None
        if ack_fd is not None:
            os.write(ack_fd, b"# run\n")
        deadline = time.perf_counter() + args.seconds
        versions: dict[int, int] = {}

        async def client(c: int) -> None:
            rng = random.Random(c)
            mine = list(keys_of(c, args.clients, args.keys))
            while time.perf_counter() < deadline:
                k = rng.choice(mine)
                name = key_name(k)
                key = name.encode()
                if k not in versions:  # continue from the version stored by an earlier run
                    stored = await kv.get(key)
                    versions[k] = int(stored.split(b":")[1]) if stored is not None else 0
                v = versions[k] + 1
                value = f"{name}:{v}:".encode() + b"x" * rng.randrange(8, 96)
                await kv.put(key, value)
                versions[k] = v
                if ack_fd is not None:
                    os.write(ack_fd, f"{name} {v}\n".encode())
                got = await kv.get(key)
                assert got == value, (key, got, value)

        async def checkpointer() -> None:
            while True:
                await anyio.sleep(args.checkpoint)
                await kv.checkpoint()

        async def reporter() -> None:
            last_puts, last_gets, t = 0, 0, time.perf_counter()
            while True:
                await anyio.sleep(1)
                now = time.perf_counter()
                dt, puts, gets = now - t, kv.puts, kv.gets
                put_rate, get_rate = (puts - last_puts) / dt, (gets - last_gets) / dt
                print(f"  {put_rate:9,.0f} durable puts/s {get_rate:9,.0f} gets/s", flush=True)
                last_puts, last_gets, t = puts, gets, now

        t0 = time.perf_counter()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(checkpointer)
                tg.start_soon(reporter)
                async with anyio.create_task_group() as clients:
                    for c in range(args.clients):
                        clients.start_soon(client, c)
                tg.cancel_scope.cancel()
        finally:
            if ack_fd is not None:
                os.close(ack_fd)
        elapsed = time.perf_counter() - t0
        stats = kv.wal.statistics()
        print(
            f"{kv.puts} puts and {kv.gets} gets in {elapsed:.1f} s: {kv.puts / elapsed:,.0f} durable puts/s, "
            f"{kv.puts / max(stats.syncs, 1):.1f} puts per WAL sync"
        )
        return {"puts": kv.puts, "gets": kv.gets}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", help="the store's directory (created if missing)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--keys", type=int, default=20_000)
    p.add_argument("--buckets", type=int, default=1024, help="pages of the table (default 1024: 8 MiB)")
    p.add_argument("--checkpoint", type=float, default=2.0, help="seconds between checkpoints")
    p.add_argument("--driver", default=None)
    p.add_argument("--loop", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    p.add_argument("--ack-log", help="append 'key12608 3' (key, version) for each acknowledged put")
    read_only = "; recovers nothing (the store's next start does)"
    p.add_argument("--get", metavar="KEY", help=f"print one key's value (e.g. key12608) and exit{read_only}")
    p.add_argument(
        "--verify", metavar="ACK_LOG", help=f"check every put in an --ack-log survived, and exit{read_only}"
    )
    args = p.parse_args()
    backend, options = ("asyncio", {"use_uvloop": True}) if args.loop == "uvloop" else (args.loop, {})
    anyio.run(functools.partial(run, args), backend=backend, backend_options=options)


if __name__ == "__main__":
    main()
