"""The whole file's CRC-32C combined from its parts' (``crcmath``) equals the CRC-32C of the
whole, for any split: uneven parts, empty ones, one byte, a short last part."""

from __future__ import annotations

import itertools
import os
import random

import crc32c
import pytest

from taskpoint.checkpoint.crcmath import combine_parts, zeros_operator


@pytest.mark.parametrize("seed", range(8))
def test_parts_combine_to_the_crc_of_the_whole(seed):
    rng = random.Random(seed)
    data = os.urandom(rng.randrange(1, 300_000))
    cuts = sorted(rng.randrange(0, len(data) + 1) for _ in range(rng.randrange(0, 12)))
    bounds = [0, *cuts, len(data)]
    parts = [data[a:b] for a, b in itertools.pairwise(bounds)]
    combined = combine_parts((crc32c.crc32c(p), len(p)) for p in parts)
    assert combined == crc32c.crc32c(data)


def test_equal_parts_and_a_short_last_one_as_an_upload_sends_them():
    data = os.urandom(5 * 65536 + 17)
    parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    assert combine_parts((crc32c.crc32c(p), len(p)) for p in parts) == crc32c.crc32c(data)


def test_nothing_and_empty_parts_are_the_crc_of_no_bytes():
    assert combine_parts([]) == crc32c.crc32c(b"") == 0
    assert combine_parts([(0, 0), (crc32c.crc32c(b"x"), 1), (0, 0)]) == crc32c.crc32c(b"x")


def test_carrying_over_zero_bytes_is_appending_zero_bytes():
    # The operator alone: the raw register over n zero bytes (without the CRC's inversions).
    for n in (1, 2, 3, 1000):
        crc = crc32c.crc32c(b"taskpoint")
        appended = crc32c.crc32c(b"\0" * n, value=crc)
        zeros = crc32c.crc32c(b"\0" * n)
        matrix = zeros_operator(n)
        carried = 0
        for bit in range(32):
            if crc >> bit & 1:
                carried ^= matrix[bit]
        assert carried ^ zeros == appended
