"""One module per system in the side-by-side benchmarks.

Each module can run as ``python -m peers.<module> serve ...`` (a server that
prints its port on stdout and exits when its stdin closes) and offers a
``driver(...)`` for ``bench_calls.py``.  Payloads and op names shared by all
of them live in :mod:`peers.common`.
"""
