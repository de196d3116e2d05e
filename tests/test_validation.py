"""Boundary checks: the messages users see, and the fast finiteness test."""

from __future__ import annotations

import numpy as np
import pytest

from jacnet._validation import as_float_dtype, check_array, check_choice, check_positive_int


def test_finite_values_whose_sum_overflows_are_accepted() -> None:
    big = np.full((4, 3), 3e38, dtype=np.float32)  # the float32 sum overflows to inf
    assert check_array(big, "X") is big


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_are_located(bad: float) -> None:
    X = np.zeros((3, 4), dtype=np.float32)
    X[2, 1] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \[2, 1\]"):
        check_array(X, "X")
    assert check_array(X, "X", finite=False) is X


def test_shape_and_type_messages() -> None:
    with pytest.raises(ValueError, match=r"Linear\(3 -> 2\): X must have 3 columns"):
        check_array(np.zeros((2, 4)), "X", n_columns=3, owner="Linear(3 -> 2)")
    with pytest.raises(ValueError, match="could not be read as an array"):
        check_array([[1, 2], [3]], "X")
    with pytest.raises(ValueError, match=r"must have 1 or 2 dimensions; got shape \(1, 1, 1\)"):
        check_array(np.zeros((1, 1, 1)), "y", ndim=(1, 2))
    with pytest.raises(TypeError, match=r"must be an integer >= 1; got 2\.5"):
        check_positive_int(2.5, "epochs")
    with pytest.raises(TypeError, match="must be an integer"):
        check_positive_int(True, "epochs")
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum'; got 'max'"):
        check_choice("max", "reduction", ("mean", "sum"))
    with pytest.raises(TypeError, match="not a NumPy dtype"):
        as_float_dtype("floaty")
