"""Training in float32 stays float32 end to end: no silent upcast to float64 anywhere.

Every layer's forward output, input gradient, JVP and Jacobian, every loss's value and
gradient, the flat params and grads, and every optimizer's state are checked after a
few training steps. The checks wrap the layers' and the loss's methods, so an upcast
in any one of them is reported with the name of the method that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import jacnet
from jacnet.layers import Dropout, Layer, Linear
from jacnet.losses import LOSSES, Loss, get_loss
from jacnet.optim import OPTIMIZERS, get_optimizer

F32 = np.dtype(np.float32)

HIDDEN_ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "gelu"]
OPTIMIZER_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("sgd", {"momentum": 0.9, "dampening": 0.1}),
    ("adam", {}),
    ("adam", {"amsgrad": True, "weight_decay": 1e-3}),
    ("adamw", {}),
    ("rmsprop", {}),
    ("rmsprop", {"momentum": 0.9, "centered": True, "weight_decay": 1e-3}),
]


class Upcast(AssertionError):
    """A float64 (or other non-float32) array came out of a float32 computation."""


def _check(value: Any, where: str) -> None:
    arrays = value if isinstance(value, tuple) else (value,)
    for i, array in enumerate(arrays):
        if isinstance(array, np.ndarray) and array.dtype != F32:
            raise Upcast(f"{where} returned {array.dtype} (item {i}), expected float32")
        if isinstance(array, np.generic) and array.dtype.kind == "f" and array.dtype != F32:
            raise Upcast(f"{where} returned a NumPy {array.dtype} scalar, expected a Python "
                         "float or float32")


def _guard(obj: Any, method: str, label: str) -> None:
    """Wrap ``obj.method`` on the instance so that every result is dtype-checked."""
    original: Callable[..., Any] = getattr(obj, method)

    def checked(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        # An upcast is float32 in, float64 out; a caller that hands over float64 on
        # purpose (the second-order optimizers judge the loss in float64) gets float64.
        floats = [a for a in (*args, *kwargs.values())
                  if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
        if all(a.dtype == F32 for a in floats):
            _check(result, f"{label}.{method}")
        return result

    setattr(obj, method, checked)


def guard_model(model: jacnet.Sequential) -> None:
    for i, layer in enumerate(model.layers):
        for method in ("forward", "backward", "jvp"):
            _guard(layer, method, f"layer {i} ({layer!r})")
        if hasattr(layer, "derivative"):
            _guard(layer, "derivative", f"layer {i} ({layer!r})")


def guard_loss(loss: Loss) -> None:
    _guard(loss, "value_and_grad", repr(loss))


def _data(loss_name: str, n_out: int, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    if loss_name == "cross_entropy":
        return X, rng.integers(0, n_out, n)
    if loss_name == "bce":
        return X, (rng.random((n, n_out)) > 0.5).astype(np.float32)
    return X, rng.standard_normal((n, n_out)).astype(np.float32)


def train_float32(model: jacnet.Sequential, loss: Loss, optimizer: Any, X: np.ndarray,
                  target: Any, steps: int = 3) -> None:
    """The fit loop's per-batch work, with every array it produces dtype-checked."""
    y = loss.prepare_target(target, model.out_features, dtype=model.dtype)
    guard_model(model)
    guard_loss(loss)
    for _ in range(steps):
        out = model.forward(X)
        value, grad = loss.value_and_grad(out, y)
        assert isinstance(value, float), f"loss value is {type(value).__name__}"
        model.backward(grad, input_grad=True)
        _check(model.grads, "model.grads")
        optimizer.step(model.params, model.grads)
        _check(model.params, "model.params")
        for key, buffer in optimizer.state_dict().items():
            _check(buffer, f"{optimizer!r} state {key!r}")
    assert np.all(np.isfinite(model.params))


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy", "bce"])
def test_every_activation_and_loss_stays_float32(activation: str, loss_name: str) -> None:
    model = jacnet.mlp([5, 7, 6, 3], activation=activation, seed=0, dtype="float32")
    loss = get_loss(loss_name)
    X, target = _data(loss_name, 3)
    train_float32(model, loss, get_optimizer("adam", lr=1e-2), X, target)
    # the derivative faces too: Jacobians w.r.t. input and parameters, JVP, curvature
    for wrt in ("input", "params"):
        _check(jacnet.jacobian(model, X, wrt=wrt), f"jacobian(wrt={wrt!r})")
    _check(model.jvp(X, tangent=X, param_tangent=np.ones_like(model.params)), "model.jvp")
    y = loss.prepare_target(target, 3, dtype=np.float32)
    _check(loss.curvature(model.forward(X), y).dense(), f"{loss!r}.curvature")


@pytest.mark.parametrize(("name", "kwargs"), OPTIMIZER_VARIANTS)
def test_every_optimizer_stays_float32(name: str, kwargs: dict[str, Any]) -> None:
    model = jacnet.mlp([5, 8, 3], activation="tanh", seed=1, dtype="float32")
    optimizer = get_optimizer(name, lr=1e-2, **kwargs)
    X, target = _data("cross_entropy", 3)
    train_float32(model, get_loss("cross_entropy"), optimizer, X, target, steps=4)
    assert optimizer.state_dict()["step"] == 4


FULL_BATCH = sorted(name for name, cls in OPTIMIZERS.items() if getattr(cls, "full_batch", False))


@pytest.mark.parametrize("name", FULL_BATCH)
def test_full_batch_optimizers_keep_the_model_float32(name: str) -> None:
    # Levenberg–Marquardt and friends solve their normal equations in float64 by design;
    # the model, its parameters and every layer's output must stay float32.
    model = jacnet.mlp([5, 4, 2], activation="tanh", seed=0, dtype="float32")
    guard_model(model)
    X, target = _data("mse", 2)
    optimizer = get_optimizer(name)
    loss = get_loss("mse")
    guard_loss(loss)
    for _ in range(2):
        optimizer.epoch(model, loss, X, target)
        _check(model.params, "model.params")
    _check(model.forward(X), "model.forward")


def test_every_registered_optimizer_is_covered() -> None:
    assert {name for name, _ in OPTIMIZER_VARIANTS} | set(FULL_BATCH) >= set(OPTIMIZERS)


def test_every_registered_loss_is_covered() -> None:
    assert {type(get_loss(name)) for name in ("mse", "cross_entropy", "bce")} == set(
        LOSSES.values())


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_output_layers_and_dropout_stay_float32(output: str) -> None:
    layers: list[Layer] = [Linear(5, 6, seed=0), jacnet.Tanh(), Dropout(0.3, seed=0),
                           Linear(6, 3, seed=1)]
    layers.append(jacnet.Softmax() if output == "softmax" else jacnet.Sigmoid())
    model = jacnet.Sequential(layers)
    X, target = _data("mse", 3)
    train_float32(model, get_loss("mse"), get_optimizer("sgd", lr=0.1), X, target)


def test_soft_cross_entropy_targets_stay_float32() -> None:
    model = jacnet.mlp([5, 4, 3], seed=0)
    X, labels = _data("cross_entropy", 3)
    soft = np.eye(3, dtype=np.float64)[labels] * 0.9 + 0.1 / 3  # float64 from the user
    train_float32(model, get_loss("cross_entropy"), get_optimizer("adam"), X, soft)


class _UpcastingTanh(jacnet.Tanh):
    """A Tanh whose derivative silently promotes, as a NumPy float64 scalar would."""

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        return np.float64(1.0) - y * y


def test_the_guard_catches_an_upcast() -> None:
    model = jacnet.Sequential([Linear(5, 4, seed=0), _UpcastingTanh(), Linear(4, 3, seed=1)])
    X, target = _data("mse", 3)
    with pytest.raises(Upcast, match=r"layer 1 \(_UpcastingTanh\(\)\)\.\w+ returned float64"):
        train_float32(model, get_loss("mse"), get_optimizer("sgd"), X, target)


def test_the_guard_catches_an_upcasting_optimizer_state() -> None:
    model = jacnet.mlp([5, 4, 3], seed=0)
    optimizer = get_optimizer("adam")
    X, target = _data("mse", 3)
    train_float32(model, get_loss("mse"), optimizer, X, target, steps=1)
    optimizer._state["exp_avg"] = optimizer._state["exp_avg"].astype(np.float64)
    with pytest.raises(Upcast, match="state 'exp_avg' returned float64"):
        train_float32(model, get_loss("mse"), optimizer, X, target, steps=1)
