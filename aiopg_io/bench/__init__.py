"""Benchmarks: the fio-like engine (``_engine``) behind ``python -m aiopg_io`` and
``python -m aiopg_io bench``, and one module per component's comparison (``uring``,
``posix_aio``, ``wal``, ``buffers``, ``core``), each wired in as ``bench-<name>``.

Benchmarks print figures; they are never tests. The machine they run on is shared and
noisy: compare ratios measured in one run, and quote medians.
"""
