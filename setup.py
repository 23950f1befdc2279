"""Only the optional C extension lives here; the metadata is pyproject.toml's [project].

``aiopg_io.drivers._uring`` (the ring of the ``io_uring_c`` driver) is built where a C
compiler and Python's headers are present, on Linux only; ``aiopg_io._glue._wake`` (the loop
glue's wakers, which that driver calls) wherever a C compiler is; ``aiopg_io.wal._record``
(a WAL record laid in one call) where zlib's headers are too. ``optional=True`` makes a failed
build a warning, not a failed install: the package then runs its pure-Python path, and
``python -m aiopg_io info`` says the extension is missing and why.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "aiopg_io.drivers._uring",
            ["aiopg_io/drivers/_uring.c"],
            extra_compile_args=["-O2", "-std=gnu11"],
            optional=True,
        )
    )
# The glue's wakers in C (aiopg_io/_glue/_wake.c): plain C API, any platform.
ext_modules.append(
    Extension(
        "aiopg_io._glue._wake",
        ["aiopg_io/_glue/_wake.c"],
        extra_compile_args=["-O2", "-std=gnu11"] if sys.platform != "win32" else [],
        optional=True,
    )
)

# A WAL record's header, CRC and copy in one call (aiopg_io/wal/_record.c): needs zlib's
# headers (zlib.h); without them the WAL runs its pure-Python twin.
ext_modules.append(
    Extension(
        "aiopg_io.wal._record",
        ["aiopg_io/wal/_record.c"],
        extra_compile_args=["-O2", "-std=gnu11"] if sys.platform != "win32" else [],
        libraries=["z"],
        optional=True,
    )
)

setup(ext_modules=ext_modules)
