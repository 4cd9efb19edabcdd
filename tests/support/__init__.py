"""Helpers shared by every test suite (``tests/`` is on ``sys.path`` through ``tests/conftest.py``).

Modules that run in other processes (Dask workers, workflow files the CLI runs, source written
out as strings) may not see ``tests/`` and stay self-contained.
"""
