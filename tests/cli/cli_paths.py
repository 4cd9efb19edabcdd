"""Paths the CLI tests use."""

from pathlib import Path

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_checkpoint.py"
WORKFLOWS = Path(__file__).resolve().parent / "workflows"  # the files the tests run
