"""The optional numba Adam/AdamW kernel: bit-identical to the NumPy path, and its selection."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from jacnet.optim import Adam, AdamW, _fused

numba = pytest.importorskip("numba")

N_PARAMS = 1003  # odd: the compiled loop's vector body and its remainder both run
OPTIONS = [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "weight_decay_mask": "half"},
    {"amsgrad": True},
    {"amsgrad": True, "weight_decay": 0.05, "weight_decay_mask": "half"},
    {"lr": 0.1, "betas": (0.5, 0.7), "eps": 0.0},  # eps 0: zero gradients give 0/0 = NaN
    {"lr": 3e-4, "betas": (0.0, 0.0), "eps": 1e-3},
    # an infinite parameter where decay is masked off (inf * 0 = NaN) and a NaN gradient
    {"amsgrad": True, "weight_decay": 0.1, "weight_decay_mask": "half", "nonfinite": True},
]


def bits(array: np.ndarray) -> np.ndarray:
    """The raw bits, so that NaNs compare too (and -0.0 differs from 0.0)."""
    return array.view(np.uint32 if array.dtype == np.float32 else np.uint64)


def train(cls: type[Adam], dtype: Any, fused: bool, options: dict[str, Any], steps: int = 50,
          optimizer: Adam | None = None, params: np.ndarray | None = None) -> tuple[np.ndarray, Adam]:
    rng = np.random.default_rng(0)
    kwargs = dict(options)
    nonfinite = kwargs.pop("nonfinite", False)
    if kwargs.get("weight_decay_mask") == "half":
        kwargs["weight_decay_mask"] = rng.random(N_PARAMS) < 0.5
        kwargs["weight_decay_mask"][4:6] = False
    if optimizer is None:
        optimizer = cls(fused=fused, **kwargs)
    if params is None:
        params = rng.standard_normal(N_PARAMS).astype(dtype)
    if nonfinite:
        params[4] = np.inf
    for step in range(steps):
        # gradients over six orders of magnitude, with exact zeros of both signs
        grads = (rng.standard_normal(N_PARAMS) * rng.choice([1e-3, 1.0, 1e3], N_PARAMS)).astype(dtype)
        grads[:4] = [0.0, -0.0, 0.0, -0.0]
        if nonfinite and step == 10:
            grads[5] = np.nan
        with np.errstate(all="ignore"):
            optimizer.step(params, grads)
    return params, optimizer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS, ids=repr)
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_kernel_is_bit_identical_to_numpy(cls: type[Adam], options: dict[str, Any], dtype: Any) -> None:
    numpy_params, numpy_opt = train(cls, dtype, False, options)
    fused_params, fused_opt = train(cls, dtype, True, options)
    assert numpy_opt._kernel is None and fused_opt._kernel is not None
    assert np.array_equal(bits(fused_params), bits(numpy_params))
    assert numpy_opt.state_dict().keys() == fused_opt.state_dict().keys()
    for key, value in numpy_opt.state_dict().items():
        if isinstance(value, np.ndarray):
            assert value.dtype == dtype
            assert np.array_equal(bits(fused_opt.state_dict()[key]), bits(value)), key
        else:
            assert fused_opt.state_dict()[key] == value


@pytest.mark.parametrize("fused_first", [True, False])
def test_resume_across_kernel_and_numpy_is_exact(fused_first: bool) -> None:
    options = {"weight_decay": 0.1, "amsgrad": True}
    whole, _ = train(AdamW, np.float32, True, options, steps=40)
    first_half, first = train(AdamW, np.float32, fused_first, options, steps=20)
    resumed = AdamW(fused=not fused_first, **options)
    resumed.load_state_dict(first.state_dict())
    # the second half draws the same gradients as steps 21-40 of the whole run
    rng = np.random.default_rng(0)
    rng.standard_normal(N_PARAMS)
    for step in range(40):
        grads = (rng.standard_normal(N_PARAMS) * rng.choice([1e-3, 1.0, 1e3], N_PARAMS)).astype(
            np.float32)
        grads[:4] = [0.0, -0.0, 0.0, -0.0]
        if step >= 20:
            resumed.step(first_half, grads)
    assert (resumed._kernel is not None) is not fused_first
    assert np.array_equal(bits(first_half), bits(whole))


def test_default_uses_the_kernel_when_numba_is_installed() -> None:
    _, default = train(Adam, np.float32, None, {}, steps=1)  # type: ignore[arg-type]
    _, never = train(Adam, np.float32, False, {}, steps=1)
    assert default.fused is None and default._kernel is not None
    assert never._kernel is None


def test_non_contiguous_params_fall_back_or_raise() -> None:
    params = np.zeros(2 * N_PARAMS)[::2]
    grads = np.ones(N_PARAMS)
    optimizer = Adam()
    optimizer.step(params, grads)
    assert optimizer._kernel is None
    with pytest.raises(ValueError, match=r"fused=True\) updates contiguous 1-D params"):
        Adam(fused=True).step(params, grads)


def test_fused_true_without_numba_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'jacnet\[fast\]'"):
        AdamW(fused=True)
    # the default falls back to NumPy without a word
    _, optimizer = train(Adam, np.float64, None, {}, steps=2)  # type: ignore[arg-type]
    assert optimizer._kernel is None


def test_fused_must_be_a_bool_or_none() -> None:
    with pytest.raises(TypeError, match="'fused' parameter of Adam must be a bool"):
        Adam(fused="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("fused", ["None", "False"])
def test_numba_is_imported_only_by_a_fused_step(fused: str) -> None:
    code = (
        "import sys, numpy as np, jacnet\n"
        "from jacnet.optim import Adam\n"
        "assert 'numba' not in sys.modules, 'import jacnet imported numba'\n"
        f"opt = Adam(fused={fused})\n"
        "assert 'numba' not in sys.modules, 'building Adam imported numba'\n"
        "opt.step(np.zeros(3), np.ones(3))\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == str(fused == "None")


def test_kernel_compiles_uncached_where_no_cache_is_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    real_njit, calls = numba.njit, []

    def njit(**options: Any) -> Any:
        calls.append(options["cache"])
        if options["cache"]:
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(**options)

    monkeypatch.setattr(numba, "njit", njit)
    monkeypatch.setattr(_fused, "_kernel", None)
    numpy_params, _ = train(Adam, np.float64, False, {}, steps=3)
    fused_params, optimizer = train(Adam, np.float64, True, {}, steps=3)
    assert calls == [True, False] and optimizer._kernel is not None
    assert np.array_equal(bits(fused_params), bits(numpy_params))
