"""Directory durability, shared by the WAL (segments) and the buffer pool (new relations).

- A new or renamed file's directory entry is durable only once the *directory* is fsynced
  (Linux fsync(2): "Calling fsync() does not necessarily ensure that the entry in the
  directory containing the file has also reached disk. For that an explicit fsync() on a
  file descriptor for the directory is also needed."); PostgreSQL's ``durable_rename`` and
  ``fsync_fname(dir)`` do this. A directory cannot be opened through ``aiopg_io.open`` (it
  refuses directories, as Python's ``open`` does), so the fsync is a blocking ``os.fsync``
  run in a worker thread through ``anyio.to_thread.run_sync``.
- Every create, rename, unlink and directory fsync is also reported to the driver factory
  when it has ``note_create`` / ``note_rename`` / ``note_unlink`` / ``note_dir_fsync``
  (aiopg_io.testing's power-loss simulator, directly or under a fault injector;
  docs/testing.md), so a simulated power cut can undo an entry that was never made
  durable: that is how the fsyncs are tested. An unlink is reported just before it is
  done, while the file can still be read.
"""

from __future__ import annotations

import os

import anyio.to_thread

from .drivers import DriverFactory, resolve

__all__ = ["fsync_directory", "note_entry"]


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def fsync_directory(directory: str, driver: str | DriverFactory | None = None) -> None:
    """Make the directory's entries durable (a blocking fsync in a worker thread)."""
    await anyio.to_thread.run_sync(_fsync_dir, directory)
    note_entry(driver, "note_dir_fsync", directory)


def note_entry(driver: str | DriverFactory | None, method: str, *paths: str) -> None:
    """Report a create, rename or directory fsync to a factory that models directory entries;
    any other factory has no such method, and nothing happens."""
    factory = None if isinstance(driver, str) else resolve(driver)
    fn = getattr(factory, method, None)
    if fn is not None:
        fn(*paths)
