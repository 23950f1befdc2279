"""The crash-test child: commits records from several tasks and reports each acknowledged
one on stdout (``lsn tag``), until it is killed. Run by tests/wal/test_crash.py.

Usage: python crash_child.py DIRECTORY DRIVER LOOP RUN_ID
"""

from __future__ import annotations

import sys

import anyio

from tests.wal._util import SEG, payload


async def main(directory: str, driver: str, run_id: str) -> None:
    from aiopg_io.wal import WAL

    out = sys.stdout
    async with WAL.open(directory, driver=driver, segment_size=SEG, segments_ahead=1) as wal:
        out.write("open\n")
        out.flush()
        st = wal.statistics()
        # Evidence for a failing crash test: where recovery put the end, and the new epoch.
        sys.stderr.write(f"open: insert_lsn={st.insert_lsn} last_lsn={wal.last_lsn} epoch={st.epoch}\n")
        sys.stderr.flush()

        async def committer(task: int) -> None:
            seq = 0
            while True:
                n = (seq * 613 + task * 1999) % 2500
                if seq % 17 == 5:
                    n += 9000  # spans pages
                tag = f"{run_id}.{task}.{seq}"
                lsn = await wal.commit(payload(tag, n))
                out.write(f"{lsn} {tag}\n")
                out.flush()
                seq += 1

        async with anyio.create_task_group() as tg:
            for task in range(6):
                tg.start_soon(committer, task)


if __name__ == "__main__":
    directory, driver, loop, run_id = sys.argv[1:5]
    backend, options = loop, {}
    if loop == "uvloop":
        backend, options = "asyncio", {"use_uvloop": True}
    anyio.run(main, directory, driver, run_id, backend=backend, backend_options=options)
