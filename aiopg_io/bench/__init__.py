"""The fio-like engine (``_engine``) behind ``python -m aiopg_io`` and
``python -m aiopg_io bench`` (``job``).

The comparisons against other tools (fio, aiofiles, aiofile, ``pg_test_fsync``) are not
part of the package: they live in the source tree's ``benchmarks/`` and run on this engine,
through the names re-exported here (an interface for those scripts, not a stable API).
Benchmarks print figures; they are never tests. See docs/benchmarks.md.
"""

from ._engine import REFERENCES as REFERENCES
from ._engine import RW_MODES as RW_MODES
from ._engine import Job as Job
from ._engine import JobResult as JobResult
from ._engine import Opener as Opener
from ._engine import Target as Target
from ._engine import TaskIO as TaskIO
from ._engine import offsets as offsets
from ._engine import parse_size as parse_size
from ._engine import prepare_file as prepare_file
from ._engine import run_job as run_job

__all__ = [
    "REFERENCES",
    "RW_MODES",
    "Job",
    "JobResult",
    "Opener",
    "Target",
    "TaskIO",
    "offsets",
    "parse_size",
    "prepare_file",
    "run_job",
]
