"""The library's argument checks: one message style, naming the argument and the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightdecay import _validate as V

GOOD = [
    (V.real, -2.5, -2.5), (V.real, np.float32(0.5), 0.5), (V.real, torch.tensor(3.0), 3.0),
    (V.non_negative, 0, 0.0), (V.positive, 1e-8, 1e-8), (V.fraction, 0.0, 0.0),
    (V.fraction, 0.999, 0.999), (V.positive_int, np.int64(3), 3),
]
BAD = [
    (V.real, "1", "x must be a real number, got '1'"),
    (V.real, True, "x must be a real number, got True"),
    (V.real, torch.ones(2), "x must be a real number"),
    (V.real, float("nan"), "x must be finite, got nan"),
    (V.non_negative, -1, "x must be >= 0, got -1.0"),
    (V.non_negative, float("inf"), "x must be finite, got inf"),
    (V.positive, 0.0, "x must be > 0, got 0.0"),
    (V.fraction, 1.0, r"x must be in \[0, 1\), got 1.0"),
    (V.positive_int, 2.0, "x must be a positive integer, got 2.0"),
    (V.positive_int, 0, "x must be a positive integer, got 0"),
]


@pytest.mark.parametrize("check,value,expected", GOOD)
def test_accepted_values_are_converted(check, value, expected):
    out = check("x", value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("check,value,message", BAD)
def test_refused_values_name_the_argument_and_the_value(check, value, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        check("x", value)


def test_one_of():
    assert V.one_of("impl", None, (None, "foreach")) is None
    with pytest.raises(ValueError, match="^impl must be one of None, 'foreach', got 'x'$"):
        V.one_of("impl", "x", (None, "foreach"))
