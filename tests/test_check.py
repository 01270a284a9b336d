"""The shared checks every parameter goes through (robustbench_geo.check)."""

import math

import numpy as np
import pytest
import torch

from robustbench_geo.check import NonFiniteError, check_finite, check_interval, check_like, check_number


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e400, True, False, "3", None, [1.0], torch.ones(2)])
def test_check_number_rejects_non_numbers_and_non_finite(value):
    with pytest.raises(ValueError, match=r"^budget: expected a"):
        check_number(value, "budget")


@pytest.mark.parametrize("value, kwargs, expected", [
    (3, {}, 3.0), (np.float32(0.5), {}, 0.5), (torch.tensor(2.0), {}, 2.0), (4.0, {"integer": True}, 4),
    (np.int64(7), {"integer": True, "low": 1}, 7), (0.0, {"low": 0.0}, 0.0), (1.0, {"low": 0, "high": 1}, 1.0),
])
def test_check_number_accepts_and_converts(value, kwargs, expected):
    out = check_number(value, "x", **kwargs)
    assert out == expected and type(out) is (int if kwargs.get("integer") else float)


@pytest.mark.parametrize("value, kwargs, message", [
    (2.5, {"integer": True}, "expected an integer, got 2.5"),
    (0, {"low": 0, "low_open": True}, r"expected a number > 0, got 0"),
    (181.0, {"low": 0.0, "high": 180.0}, r"expected a number in \[0.0, 180.0\], got 181.0"),
    (0, {"integer": True, "low": 1}, "expected an integer >= 1, got 0"),
])
def test_check_number_ranges_name_the_bounds(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_number(value, "x", **kwargs)


def test_check_like_follows_the_default():
    assert check_like(3.0, 31, "angle_steps") == 3 and check_like(True, False, "flag") is True
    assert check_like([0.5, 2], (0.4, 1.0), "scale_range") == [0.5, 2.0] and check_like("ce", "margin", "loss") == "ce"
    assert check_like("anything", None, "x") == "anything" and check_like(7, None, "x") == 7
    for value, default in ((True, 31), ("abc", 31), (1, False), ([0.5, math.inf], (0.4, 1.0)), (0.5, (0.4, 1.0)),
                           (3, "ce"), (math.nan, None), ([1, math.inf], None)):
        with pytest.raises(ValueError, match="^p"):
            check_like(value, default, "p")


def test_check_interval_and_finite():
    assert check_interval(np.array([1, 2]), "r") == (1.0, 2.0)
    for bad in ([1.0], "ab", [2.0, 1.0], [math.nan, 1.0], [0.0, math.inf]):
        with pytest.raises(ValueError, match="^r"):
            check_interval(bad, "r")
    x = torch.zeros(3)
    assert check_finite(x, "x") is x and check_finite(torch.tensor([1, 2]), "ints") is not None
    with pytest.raises(NonFiniteError, match="logits: expected finite values, got 1 NaN/infinite of 3"):
        check_finite(torch.tensor([0.0, math.nan, 1.0]), "logits")
