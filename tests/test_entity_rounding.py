"""An entity's overlap is shown rounded by ``rounded``: it must be Python's ``round`` to the bit."""

import math
import random
import struct

import pytest

from constraints.index import rounded


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _values(seed: int = 7, n: int = 50_000) -> list[float]:
    rng = random.Random(seed)
    values = [0.0, -0.0, 0.0005, -0.0005, 0.00049999, 1.0005, 2.675, 0.125, 1e-300, 5e-324, 214748.3648, 2.147483648e6, 1e15, 1e300]
    for _ in range(n):
        magnitude = 10 ** rng.uniform(-8, 12)
        values.append(rng.choice((1, -1)) * rng.random() * magnitude)
        # decimals that end in a 5 just past the kept digits: ties in decimal, near-ties in binary
        values.append(rng.randint(0, 10**9) / 10 ** rng.randint(0, 8) + rng.choice((0.0, 5e-4, 5e-5, 5e-9)))
    return values


@pytest.mark.parametrize("ndigits", [0, 2, 3, 4, 6])
def test_rounded_is_round_to_the_bit(ndigits):
    for x in _values():
        assert _bits(rounded(x, ndigits)) == _bits(round(x, ndigits)), x


def test_rounded_leaves_what_is_not_a_number_to_round():
    assert math.isnan(rounded(math.nan, 3))
    assert rounded(math.inf, 3) == math.inf and rounded(-math.inf, 4) == -math.inf
