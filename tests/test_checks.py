"""gradcheck and jacobian_check: tolerances, step validation, memory layout of the input."""

from __future__ import annotations

import numpy as np
import pytest

from jacnet.checks import GradientCheckError, compare, gradcheck, jacobian_check
from jacnet.layers import Tanh
from jacnet.network import mlp
from jacnet.training import fit


def _data(n: int = 6, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.fixture(scope="module")
def trained() -> tuple:
    """A model trained to a loss near 1e-6: gradients near zero, finite differences noisy."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(40, 2))
    y = np.sin(2 * X[:, :1]) * X[:, 1:]
    model = mlp([2, 8, 1], activation="tanh", seed=0, dtype="float64")
    history = fit(model, X, y, optimizer="lm", epochs=60, progress=False)
    assert history["loss"][-1] < 1e-5
    return model, X, y


def test_trained_model_passes_on_the_absolute_bound(trained) -> None:
    model, X, y = trained
    report = gradcheck(model, X, y)
    assert report.passed
    fd = report.comparisons[1]
    assert fd.name == "backward vs finite differences (params)" and fd.bound == "atol"
    assert "within atol" in str(report)
    # The relative bound alone (atol=0) fails the same, correct gradient: that is the
    # false failure the absolute bound removes.
    strict = gradcheck(model, X, y, atol=0.0, raise_exception=False)
    assert not strict.passed and "atol + rtol·|b| = 0.0e+00 +" in str(strict)


def test_derivative_wrong_by_1e6_relative_still_fails(monkeypatch) -> None:
    model = mlp([3, 6, 2], activation="tanh", seed=2, dtype="float64")
    X, target = _data(), _data(d=2, seed=1)
    assert gradcheck(model, X, target).passed
    assert jacobian_check(model, X).passed
    monkeypatch.setattr(Tanh, "_derivative", lambda self, x, y: (1.0 - y * y) * (1 + 1e-6))
    with pytest.raises(GradientCheckError,
                       match=r"(?s)FAILED.*finite differences \(params\).*FAILED: \|a − b\|"):
        gradcheck(model, X, target)
    report = jacobian_check(model, X, wrt="params", raise_exception=False)
    assert not report.passed
    assert report.worst.name == "Jacobian vs finite differences"
    assert report.worst.n_failed > 0 and "relative error 1.0" in report.worst.failure


def test_compare_judges_each_entry_against_atol_plus_rtol_times_reference() -> None:
    reference = np.array([0.0, 1.0, 100.0])
    ok = compare("x", reference + np.array([5e-9, 5e-8, 5e-6]), reference, atol=1e-8, rtol=1e-7)
    assert ok.passed and ok.bound == "atol + rtol·|b|"
    bad = compare("x", reference + np.array([0.0, 2e-7, 0.0]), reference, atol=1e-8, rtol=1e-7)
    assert not bad.passed and bad.n_failed == 1 and "index (1,)" in bad.failure
    nan = compare("x", np.array([np.nan]), np.array([1.0]), atol=1e-8, rtol=1e-7)
    assert not nan.passed


@pytest.mark.parametrize("eps", [0.0, -1e-6, float("nan"), float("inf")])
@pytest.mark.parametrize("check", ["gradcheck", "jacobian_check"])
def test_a_step_that_measures_nothing_is_refused(eps: float, check: str) -> None:
    model = mlp([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0; got .*eps=1e-6"):
        if check == "gradcheck":
            gradcheck(model, _data(), _data(d=2), eps=eps)
        else:
            jacobian_check(model, _data(), eps=eps)


@pytest.mark.parametrize("name", ["atol", "rtol"])
def test_negative_or_nan_tolerances_are_refused(name: str) -> None:
    model = mlp([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        gradcheck(model, _data(), _data(d=2), **{name: -1.0})
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        jacobian_check(model, _data(), **{name: float("nan")})


@pytest.mark.parametrize("wrt", ["input", "params"])
def test_fortran_ordered_input_is_checked_not_falsely_failed(wrt: str) -> None:
    model = mlp([3, 5, 2], activation="tanh", seed=0)
    X = np.asfortranarray(_data())
    assert X.flags.f_contiguous and not X.flags.c_contiguous
    assert jacobian_check(model, X, wrt=wrt).passed
    assert gradcheck(model, X, np.asfortranarray(_data(d=2, seed=1))).passed


def test_dataframe_input_is_checked() -> None:
    pd = pytest.importorskip("pandas")
    model = mlp([3, 5, 2], activation="sigmoid", seed=0)
    frame = pd.DataFrame(_data(), columns=["a", "b", "c"])
    report = gradcheck(model, frame, _data(d=2, seed=1))
    assert report.passed
    assert report.comparisons[3].max_abs_error < 1e-8  # input finite differences reached X
    assert jacobian_check(model, frame).passed
