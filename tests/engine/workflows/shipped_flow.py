"""A file task whose argument is a class of the same file (tests/engine/test_backends.py): it
travels as source and loads under the file's name, ``shipped_flow``."""

from dataclasses import dataclass

from taskpoint import task


@dataclass
class Box:
    v: int


@task
def unbox(b: Box) -> int:
    return b.v
