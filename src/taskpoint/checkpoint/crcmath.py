"""The CRC-32C of a whole file from the CRC-32C of its parts, without reading it again.

A multipart upload (``s3_upload``) computes each part's checksum as it reads the part, for the
server; the manifest needs the whole file's. Reading the file a second time for it cost a pass
over every byte on a machine whose cores the upload already keeps busy. The CRC of ``A + B`` is
the CRC of ``A`` carried over ``len(B)`` zero bytes, XOR the CRC of ``B`` (the initial and final
inversions of the standard CRC cancel out). Carrying a CRC over ``n`` zero bytes is linear over
GF(2): a 32 x 32 bit matrix, built by repeated squaring of the one-bit step (about 50 matrix
products, a few milliseconds), then applied to each part's CRC in 32 steps.
"""

from __future__ import annotations

from collections.abc import Iterable

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), bit-reflected
Matrix = list[int]  # 32 columns: column n is the image of the bit 1 << n


def _apply(matrix: Matrix, vector: int) -> int:
    result, n = 0, 0
    while vector:
        if vector & 1:
            result ^= matrix[n]
        vector >>= 1
        n += 1
    return result


def _compose(outer: Matrix, inner: Matrix) -> Matrix:
    """The matrix of ``outer`` after ``inner``."""
    return [_apply(outer, column) for column in inner]


def zeros_operator(nbytes: int) -> Matrix:
    """The matrix that carries a CRC-32C register over ``nbytes`` zero bytes."""
    step: Matrix = [_POLY] + [1 << n for n in range(31)]  # over one zero bit
    for _ in range(3):  # over one zero byte: 8 bits
        step = _compose(step, step)
    result: Matrix = [1 << n for n in range(32)]  # identity
    while nbytes:
        if nbytes & 1:
            result = _compose(step, result)
        nbytes >>= 1
        if nbytes:
            step = _compose(step, step)
    return result


def combine_parts(parts: Iterable[tuple[int, int]]) -> int:
    """The CRC-32C of the concatenation of parts given in order as ``(crc, size)``."""
    total = 0
    operators: dict[int, Matrix] = {}  # by size: all parts but the last share one
    for crc, size in parts:
        if size:
            operator = operators.get(size)
            if operator is None:
                operator = operators[size] = zeros_operator(size)
            total = _apply(operator, total) ^ crc
    return total
