"""Checks at the library's boundary: they turn bad input into one clear error.

Every public entry point that accepts user data validates it here, once, and the
inner code (layers, Jacobians, optimizers) then trusts its arguments. Messages name
the argument, what was expected, what was found and, where possible, the fix.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_sparse(array: Any) -> bool:
    """Whether ``array`` is a SciPy sparse matrix or array, without importing SciPy.

    >>> is_sparse(np.zeros((2, 2)))
    False
    """
    if isinstance(array, np.ndarray):
        return False
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and bool(sparse.issparse(array))


def as_float_dtype(dtype: DTypeLike, name: str = "dtype") -> np.dtype[Any]:
    """Return ``dtype`` as a NumPy float32/float64 dtype, or raise a clear error.

    >>> as_float_dtype("float64")
    dtype('float64')
    """
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be float32 or float64; got {dtype!r}, which is not a NumPy dtype."
        ) from exc
    if resolved not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64; got {resolved}. "
            "Pass dtype='float32' (fast, the default) or dtype='float64' (exact checks)."
        )
    return resolved


def check_ndim(shape: tuple[int, ...], name: str, *, ndim: int | tuple[int, ...] = 2,
               owner: str | None = None) -> None:
    """Raise :func:`check_array`'s error for an array of ``shape`` with the wrong number of
    dimensions, from the shape alone (for an array not yet read from its file).

    >>> check_ndim((4, 3, 1), "X")
    Traceback (most recent call last):
    ValueError: X must be a 2-D array of shape (n_samples, n_features); got shape (4, 3, 1).
    """
    prefix = f"{owner}: " if owner else ""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if len(shape) in allowed:
        return
    if allowed == (2,):
        hint = (
            " Reshape a single sample with x.reshape(1, -1) "
            "or a single feature with x.reshape(-1, 1)."
            if len(shape) == 1
            else ""
        )
        raise ValueError(
            f"{prefix}{name} must be a 2-D array of shape (n_samples, n_features); "
            f"got shape {tuple(shape)}.{hint}"
        )
    raise ValueError(
        f"{prefix}{name} must have {' or '.join(map(str, allowed))} dimensions; "
        f"got shape {tuple(shape)}."
    )


def check_array(
    array: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] = 2,
    dtype: DTypeLike | None = None,
    finite: bool = True,
    n_columns: int | None = None,
    owner: str | None = None,
) -> np.ndarray:
    """Convert ``array`` to a NumPy array and check it, raising one readable error.

    Parameters
    ----------
    array : array-like
        What the user passed.
    name : str
        The argument's name, used in messages (``"X"``, ``"target"``).
    ndim : int or tuple of int, default 2
        Allowed numbers of dimensions.
    dtype : dtype, optional
        Convert to this float dtype. Non-numeric input raises ``TypeError``.
    finite : bool, default True
        Reject NaN and infinity, naming the first offending position.
    n_columns : int, optional
        Required size of the last axis.
    owner : str, optional
        Who is asking (``"Linear(4 -> 3)"``), prefixed to messages.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        Non-numeric data.
    ValueError
        Wrong number of dimensions, wrong number of columns, NaN or infinity.

    Examples
    --------
    >>> check_array([[1, 2], [3, 4]], "X", dtype="float32").dtype
    dtype('float32')
    >>> check_array([1.0, 2.0], "X")
    Traceback (most recent call last):
    ...
    ValueError: X must be a 2-D array of shape (n_samples, n_features); got shape (2,). ...
    """
    prefix = f"{owner}: " if owner else ""
    try:
        arr = np.asarray(array)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"{prefix}{name} could not be read as an array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{prefix}{name} must hold numbers; got an array of dtype {arr.dtype}. "
            "Convert text or object columns to numbers (or drop them) first."
        )
    check_ndim(arr.shape, name, ndim=ndim, owner=owner)
    if n_columns is not None and (arr.ndim == 0 or arr.shape[-1] != n_columns):
        raise ValueError(
            f"{prefix}{name} must have {n_columns} columns (features); got shape {arr.shape}."
        )
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    # A finite sum proves every entry finite, in one pass with no temporary; only when the
    # sum is not finite (a real NaN/inf, or an overflow) is the elementwise check run.
    if finite and arr.dtype.kind == "f" and arr.size and not _all_finite(arr):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise ValueError(
            f"{prefix}{name} contains NaN or infinity (first at index [{where}]: "
            f"{arr[tuple(bad)]}). Remove or impute those values before training."
        )
    return arr


def _all_finite(arr: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()):
            return True
    return bool(np.isfinite(arr).all())


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising if it is not an integer ``>= minimum``.

    >>> check_positive_int(3, "epochs")
    3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}.")
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming the options.

    >>> check_choice("mean", "reduction", ("mean", "sum"))
    'mean'
    """
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}.")
    return str(value)
