"""An importable package (tests/engine/test_backends.py): its tasks travel by reference."""
