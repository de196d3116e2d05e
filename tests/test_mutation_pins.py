"""Pins found by mutation testing (docs/testing.md): values that other tests let drift.

Each test here fails under a mutant that survived the rest of the suite: an
initialisation bound, an optimizer or schedule default, Dropout's scale, a weight-decay
guard. References are computed here, independently of the code under test: the same
formula with the same random stream, or PyTorch.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from jacnet.layers import Dropout, Linear
from jacnet.optim import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ExponentialLR,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
    get_optimizer,
)
from test_optim import GRADS, PARAMS, START, jacnet_trajectory, torch_trajectory

# fan_in ≠ fan_out, so that a bound built from the wrong fan (or their sum) shows.
FAN_IN, FAN_OUT = 300, 200


# --------------------------------------------------------------------------- Linear's initialisation
def _uniform(bound: float) -> Any:
    return lambda rng, shape: rng.uniform(-bound, bound, shape)


def _normal(std: float) -> Any:
    return lambda rng, shape: rng.normal(0.0, std, shape)


# name → (its distribution, its bound (uniform) or std (normal))
SCHEMES: dict[str, tuple[str, float]] = {
    "glorot_uniform": ("uniform", math.sqrt(6.0 / (FAN_IN + FAN_OUT))),
    "glorot_normal": ("normal", math.sqrt(2.0 / (FAN_IN + FAN_OUT))),
    "he_uniform": ("uniform", math.sqrt(6.0 / FAN_IN)),
    "he_normal": ("normal", math.sqrt(2.0 / FAN_IN)),
    "lecun_normal": ("normal", math.sqrt(1.0 / FAN_IN)),
    "torch": ("uniform", 1.0 / math.sqrt(FAN_IN)),
}


def _reference(init: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias a scheme must draw, from the same generator and in the same order."""
    kind, scale = SCHEMES[init]
    draw = _uniform(scale) if kind == "uniform" else _normal(scale)
    rng = np.random.default_rng(seed)
    weight = draw(rng, (FAN_OUT, FAN_IN))
    bias = _uniform(1.0 / math.sqrt(FAN_IN))(rng, (FAN_OUT,)) if init == "torch" else np.zeros(FAN_OUT)
    return weight, bias


@pytest.mark.parametrize("init", sorted(SCHEMES))
def test_each_initialisation_draws_exactly_its_formula(init: str) -> None:
    layer = Linear(FAN_IN, FAN_OUT, init=init, seed=7, dtype=np.float64)
    weight, bias = _reference(init, 7)
    np.testing.assert_array_equal(layer.weight, weight)
    np.testing.assert_array_equal(layer.bias, bias)


@pytest.mark.parametrize("init", sorted(SCHEMES))
def test_each_initialisation_has_its_bound_or_std(init: str) -> None:
    # A large draw: 60 000 weights put the sample std within 1% (its relative standard error
    # is 1/sqrt(2·60000) ≈ 0.3%) and the largest |w| of a uniform within 0.1% of the bound.
    kind, scale = SCHEMES[init]
    weight = Linear(FAN_IN, FAN_OUT, init=init, seed=0, dtype=np.float64).weight
    assert abs(weight.mean()) < 0.02 * scale
    if kind == "uniform":
        assert np.abs(weight).max() <= scale
        assert np.abs(weight).max() > 0.999 * scale
        assert weight.std() == pytest.approx(scale / math.sqrt(3.0), rel=0.01)
    else:
        assert weight.std() == pytest.approx(scale, rel=0.01)


def test_torch_initialisation_has_torch_linears_bounds() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torch.nn.Linear(FAN_IN, FAN_OUT)
    layer = Linear(FAN_IN, FAN_OUT, init="torch", seed=0, dtype=np.float64)
    for ours, theirs in ((layer.weight, reference.weight), (layer.bias, reference.bias)):
        theirs = theirs.detach().double().numpy()
        # both U(±1/sqrt(fan_in)): the same largest |value| to within a draw's spacing
        assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.01)
        assert ours.std() == pytest.approx(theirs.std(), rel=0.1)


def test_zeros_and_reset_set_biases_to_zero() -> None:
    layer = Linear(4, 3, init="zeros", seed=0, dtype=np.float64)
    assert not np.any(layer.weight) and layer.bias is not None and not np.any(layer.bias)
    for init in sorted(set(SCHEMES) - {"torch"}):
        layer = Linear(4, 3, init=init, seed=0, dtype=np.float64)
        layer.bias[...] = 5.0
        layer.reset_parameters(1)
        np.testing.assert_array_equal(layer.bias, 0.0)
        fresh = Linear(4, 3, init=init, seed=1, dtype=np.float64)
        np.testing.assert_array_equal(layer.weight, fresh.weight)


def test_default_initialisation_is_glorot_uniform() -> None:
    np.testing.assert_array_equal(
        Linear(FAN_IN, FAN_OUT, seed=3).weight,
        Linear(FAN_IN, FAN_OUT, init="glorot_uniform", seed=3).weight,
    )


# --------------------------------------------------------------------------- Dropout's scale
def test_dropout_scales_kept_inputs_by_one_over_keep_probability() -> None:
    p, seed = 0.25, 11
    x = np.random.default_rng(0).normal(size=(50, 40))
    drop = Dropout(p, seed=seed)
    out = drop.forward(x)
    keep = np.random.default_rng(seed).random(x.shape) >= p  # the same stream, drawn once
    np.testing.assert_allclose(out, np.where(keep, x / (1.0 - p), 0.0), rtol=1e-15, atol=0)
    assert 0.7 < keep.mean() < 0.8  # the mask really drops about p of the entries
    v = np.random.default_rng(1).normal(size=x.shape)
    expected = np.where(keep, v / (1.0 - p), 0.0)
    for got in (drop.backward(v), drop.jvp(v), drop.jacobian().vjp(v)):
        np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)


def test_dropout_keeps_the_mean_in_training() -> None:
    x = np.ones((400, 500))
    assert Dropout(0.6, seed=0).forward(x).mean() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(("p", "training"), [(0.5, False), (0.0, True)])
def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero(p: float, training: bool) -> None:
    x = np.random.default_rng(0).normal(size=(6, 5))
    drop = Dropout(p, seed=0)
    drop.training = training
    np.testing.assert_array_equal(drop.forward(x), x)
    np.testing.assert_array_equal(drop.backward(x), x)
    np.testing.assert_array_equal(drop.jvp(x), x)


def test_dropout_default_probability_is_one_half() -> None:
    assert Dropout().p == 0.5


# --------------------------------------------------------------------------- optimizer defaults
DEFAULTS: dict[type, dict[str, Any]] = {
    SGD: {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "dampening": 0.0},
    Adam: {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
    AdamW: {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False},
    RMSprop: {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False,
              "weight_decay": 0.0},
}


@pytest.mark.parametrize("cls", list(DEFAULTS), ids=lambda cls: cls.__name__)
def test_optimizer_defaults(cls: type) -> None:
    assert cls().get_config() == DEFAULTS[cls]
    assert cls().weight_decay_mask is None


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop"])
def test_default_optimizer_follows_torchs_default(name: str) -> None:
    # torch's Adam, AdamW and RMSprop have the same defaults as ours: built with no
    # argument, both must take the same steps (SGD's default lr differs: 0.01 vs 1e-3).
    expected = torch_trajectory(name, {}, n_steps=30)
    np.testing.assert_allclose(jacnet_trajectory(get_optimizer(name), n_steps=30), expected,
                               rtol=1e-12, atol=0)
    assert not np.allclose(expected[-1], START)


def test_default_sgd_steps_by_one_hundredth_of_the_gradient() -> None:
    params = START.copy()
    grads = np.linspace(-1.0, 1.0, START.size)
    SGD().step(params, grads)
    np.testing.assert_allclose(params, START - 0.01 * grads, rtol=1e-15)


# --------------------------------------------------------------------------- weight-decay guards
# weight_decay = 1.0 exactly: a guard mutated from "!= 0" to "!= 1" skips the decay there.
DECAY_CASES = [("sgd", {"lr": 1e-4}), ("sgd", {"lr": 1e-4, "momentum": 0.9}),
               ("adam", {"lr": 1e-2}), ("adamw", {"lr": 1e-2}), ("rmsprop", {"lr": 1e-3})]


@pytest.mark.parametrize("weight_decay", [0.0, 1.0, 0.3])
@pytest.mark.parametrize(("name", "kwargs"), DECAY_CASES, ids=[n for n, _ in DECAY_CASES])
def test_weight_decay_matches_torch(name: str, kwargs: dict[str, Any], weight_decay: float) -> None:
    kwargs = {**kwargs, "weight_decay": weight_decay}
    expected = torch_trajectory(name, kwargs, n_steps=15)
    np.testing.assert_allclose(jacnet_trajectory(get_optimizer(name, **kwargs), n_steps=15),
                               expected, rtol=1e-12, atol=0)
    without = torch_trajectory(name, {**kwargs, "weight_decay": 0.0}, n_steps=15)
    # a non-zero decay changes the run; a zero one is the run without decay
    assert np.allclose(expected, without, rtol=1e-12, atol=0) == (weight_decay == 0.0)


@pytest.mark.parametrize(("name", "kwargs"), DECAY_CASES, ids=[n for n, _ in DECAY_CASES])
def test_weight_decay_mask_with_unit_decay_matches_torch(name: str, kwargs: dict[str, Any]) -> None:
    mask = np.array([True, False, True, True, False, True])
    kwargs = {**kwargs, "weight_decay": 1.0}
    expected = torch_trajectory(name, kwargs, n_steps=15, mask=mask)
    got = jacnet_trajectory(get_optimizer(name, weight_decay_mask=mask, **kwargs), n_steps=15)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- schedule defaults
def test_schedule_defaults() -> None:
    assert StepLR(SGD(), step_size=2).get_config() == {"step_size": 2, "gamma": 0.1}
    assert CosineAnnealingLR(SGD(), T_max=3).get_config() == {"T_max": 3, "eta_min": 0.0}
    assert ReduceLROnPlateau(SGD()).get_config() == {
        "mode": "min", "factor": 0.1, "patience": 10, "threshold": 1e-4, "min_lr": 0.0,
        "threshold_mode": "rel", "cooldown": 0, "eps": 1e-8,
    }


def test_default_plateau_schedule_follows_torch() -> None:
    torch = pytest.importorskip("torch")
    torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_optimizer)
    optimizer = SGD(lr=0.3)
    schedule = ReduceLROnPlateau(optimizer)
    metrics = [1.0] + [0.99995] * 12 + [0.5] + [0.5] * 12
    for metric in metrics:
        torch_schedule.step(metric)
        schedule.step(metric)
        assert optimizer.lr == torch_optimizer.param_groups[0]["lr"]
    assert optimizer.lr == pytest.approx(0.003)  # two reductions by the default factor


# --------------------------------------------------------------------------- second-order defaults
def test_second_order_defaults() -> None:
    from jacnet.optim import BayesianRegularization, GaussNewton, LevenbergMarquardt

    common = {"goal": 0.0, "min_grad": 1e-7, "chunk_size": None}
    damping = {"mu_dec": 0.1, "mu_inc": 10.0, "mu_max": 1e10}
    expected: dict[type, dict[str, Any]] = {
        LevenbergMarquardt: {"mu": 1e-3, **damping, "max_fail": 6, "weight_decay": 0.0, **common},
        GaussNewton: {"c": 1e-4, "max_backtracks": 30, "max_fail": 6, **common},
        BayesianRegularization: {"mu": 0.005, **damping, "max_fail": 0, **common},
    }
    for cls, values in expected.items():
        config = cls().get_config()
        assert {key: config.get(key, "missing") for key in values} == values, cls.__name__


# --------------------------------------------------------------------------- losses
# Pins for the mutants of losses.py that survived the selection (docs/testing.md): the
# float32 dtype of every result, the shift of the log-softmax on logits of very different
# sizes, the curvature roots, the target checks and their full messages.
def _losses() -> list[Any]:
    from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss

    return [MSELoss(), MSELoss("sum"), CrossEntropyLoss(), BCEWithLogitsLoss("sum")]


def _targets(loss: Any, rng: np.random.Generator, b: int, m: int) -> np.ndarray:
    from jacnet.losses import CrossEntropyLoss, MSELoss

    if isinstance(loss, MSELoss):
        return rng.normal(size=(b, m))
    if isinstance(loss, CrossEntropyLoss):
        return rng.integers(0, m, b)
    return rng.integers(0, 2, (b, m)).astype(float)  # exact 0 and 1 are valid BCE targets


@pytest.mark.parametrize("index", range(4))
def test_losses_keep_float32_and_root_their_curvature(index: int) -> None:
    loss = _losses()[index]
    rng = np.random.default_rng(index)
    z = rng.normal(size=(5, 3)).astype(np.float32)
    target = loss.prepare_target(_targets(loss, rng, 5, 3), 3, dtype=np.float32)
    if target.ndim == 2:
        assert target.dtype == np.float32
    value, grad = loss.value_and_grad(z.copy(), target)
    assert isinstance(value, float) and grad.dtype == np.float32
    assert np.array_equal(loss.grad(z.copy(), target), grad)
    hessian = loss.curvature(z, target).dense()
    assert hessian.dtype == np.float32
    # CᵀC = H on the unnormalised scale (the reduction's 1/B left out), in float64
    z64, t64 = z.astype(np.float64), target if target.ndim == 1 else target.astype(np.float64)
    root = loss.curvature_sqrt(z64, t64)
    full = np.einsum("bkm,bkn->bmn", root, root) if root.ndim == 3 else np.stack(
        [np.diag(r * r) for r in root])
    scale = 1 / 5 if loss.reduction == "mean" else 1.0
    np.testing.assert_allclose(full * scale, loss.curvature(z64, t64).dense(), atol=1e-15)
    assert loss.get_config() == {"type": type(loss).__name__, "reduction": loss.reduction}
    assert repr(loss) == f"{type(loss).__name__}(reduction={loss.reduction!r})"
    assert loss.curvature_sqrt(z, target).dtype == np.float32
    # the checked call converts float64 targets to the predictions' type first
    raw = target if target.ndim == 1 else target.astype(np.float64)
    assert loss(z, raw) == value


def test_base_class_roots_any_curvature() -> None:
    from jacnet.jacobians import PerSample
    from jacnet.losses import Loss

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 3))
    blocks = a @ a.transpose(0, 2, 1)
    blocks[0] = np.diag([2.0, 0.5, -1.0])  # a negative eigenvalue is clipped to 0

    class Quadratic(Loss):
        def curvature(self, prediction: np.ndarray, target: np.ndarray) -> PerSample:
            return PerSample(blocks * target[:, :1, None] * self._scale(prediction.shape[0]))

    for reduction in ("mean", "sum"):
        root = Quadratic(reduction).curvature_sqrt(np.zeros((4, 3)), np.ones((4, 3)))
        assert root.shape == (4, 3, 3) and root.dtype == np.float64
        expected = blocks.copy()
        expected[0] = np.diag([2.0, 0.5, 0.0])
        np.testing.assert_allclose(root.transpose(0, 2, 1) @ root, expected, atol=1e-12)
    assert Quadratic().curvature_sqrt(np.zeros((4, 3), np.float32),
                                      np.ones((4, 3))).dtype == np.float32


def test_cross_entropy_root_for_small_and_negative_row_totals() -> None:
    from jacnet.losses import CrossEntropyLoss

    z = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    d = np.array([[0.1, 0.2, 0.1], [0.0, 0.0, 0.0], [-0.5, 0.2, 0.1]])  # totals 0.4, 0, −0.2
    loss = CrossEntropyLoss("sum")
    root = loss.curvature_sqrt(z, d)
    h = loss.curvature(z, d).dense()
    np.testing.assert_allclose(root[:2].transpose(0, 2, 1) @ root[:2], h[:2], atol=1e-15)
    assert np.all(root[2] == 0.0)  # a concave row gets no curvature


def test_losses_on_logits_of_very_different_sizes() -> None:
    from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss

    # each row shifted by its own maximum: one global shift underflows the second row
    z = np.array([[1000.0, 999.0], [-1000.0, -1001.0]])
    ce = CrossEntropyLoss("sum")
    expected = 2 * np.log1p(np.exp(-1.0))
    value, grad = ce.value_and_grad(z.copy(), np.array([0, 0]))
    assert value == pytest.approx(expected, rel=1e-12) and np.isfinite(grad).all()
    np.testing.assert_allclose(ce.per_sample(z, np.array([0, 0])), expected / 2, rtol=1e-12)
    assert np.isfinite(ce.curvature(z, np.array([0, 0])).dense()).all()
    curvature = BCEWithLogitsLoss().curvature(np.array([[1000.0, -1000.0, 0.0]]),
                                              np.zeros((1, 3))).dense()
    np.testing.assert_allclose(np.diagonal(curvature[0]), [0.0, 0.0, 0.25], atol=1e-300)
    root = BCEWithLogitsLoss().curvature_sqrt(np.array([[1000.0, -1000.0, 0.0]]), np.zeros((1, 3)))
    np.testing.assert_allclose(root, [[0.0, 0.0, 0.5]], atol=1e-200)


def test_mse_residuals_and_two_class_cross_entropy() -> None:
    from jacnet.losses import CrossEntropyLoss, MSELoss

    z, d = np.array([[1.0, 2.0]]), np.array([[0.5, 3.0]])
    np.testing.assert_array_equal(MSELoss().residuals(z, d), [[0.5, -1.0]])
    assert CrossEntropyLoss()(np.zeros((2, 2)), [0, 1]) == pytest.approx(np.log(2.0))
    np.testing.assert_array_equal(CrossEntropyLoss().prepare_target([0.0, 2.0], 3), [0, 2])
    onehot = CrossEntropyLoss().prepare_target(np.eye(3)[[0, 2]], 3, dtype=np.float32)
    assert onehot.dtype == np.float32 and onehot.shape == (2, 3)


@pytest.mark.parametrize("call, error, message", [
    (lambda L: L.MSELoss()(np.array([[np.nan]]), [[0.0]]), ValueError,
     r"^MSELoss: prediction contains NaN or infinity"),
    (lambda L: L.MSELoss()(np.zeros((2, 1)), [[np.inf], [0.0]]), ValueError,
     r"^MSELoss: target contains NaN or infinity"),
    (lambda L: L.MSELoss()(np.zeros((3, 2)), [0, 1, 1]), ValueError,
     r"^MSELoss: target has shape \(3,\) but the network has 2 outputs; pass a target of "
     r"shape \(n_samples, 2\)\. These look like class labels: train with "
     r"loss='cross_entropy'\.$"),
    (lambda L: L.MSELoss()(np.zeros((3, 2)), [0.5, 1, 1]), ValueError,
     r"pass a target of shape \(n_samples, 2\)\.$"),
    (lambda L: L.CrossEntropyLoss()(np.zeros((2, 1)), [0, 0]), ValueError,
     r"^CrossEntropyLoss needs a network with at least 2 outputs \(one logit per class\); "
     r"for a single logit use BCEWithLogitsLoss\.$"),
    (lambda L: L.CrossEntropyLoss()(np.zeros((2, 2)), [0, np.nan]), ValueError,
     r"^CrossEntropyLoss: target contains NaN"),
    (lambda L: L.check_labels([0.0, 1.5], 3), ValueError,
     r"^target labels must be integers; got 1\.5 at index 1\. For soft targets pass a 2-D "
     r"array of class probabilities instead\.$"),
    (lambda L: L.check_labels([0, 3], 3, name="y"), ValueError,
     r"^y labels must be integers in \[0, 3\); got 3 at index 1\. The network has 3 outputs: "
     r"encode the classes as 0\.\.2 or widen the output layer\.$"),
    (lambda L: L.check_labels([[0, 1]], 3), ValueError, r"^target must have 1 dimensions"),
    (lambda L: L.BCEWithLogitsLoss()(np.zeros((1, 2)), [[1.5, 0.0]]), ValueError,
     r"^BCEWithLogitsLoss: target values must lie in \[0, 1\] \(labels or probabilities\); "
     r"got values from 0\.0 to 1\.5\.$"),
    (lambda L: L.BCEWithLogitsLoss()(np.zeros((1, 2)), [[1.0, -0.5]]), ValueError,
     r"got values from -0\.5 to 1\.0\.$"),
    (lambda L: L.get_loss("hinge"), ValueError,
     r"^loss must be one of 'mse', 'cross_entropy', 'ce', 'bce', 'bce_with_logits'; got "
     r"'hinge'\.$"),
])
def test_loss_errors_say_what_and_how(call: Any, error: type, message: str) -> None:
    from jacnet import losses

    with pytest.raises(error, match=message):
        call(losses)


def test_get_loss_names() -> None:
    from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, get_loss

    assert isinstance(get_loss("Cross-Entropy"), CrossEntropyLoss)
    assert isinstance(get_loss("bce-with-logits", reduction="sum"), BCEWithLogitsLoss)
    loss = CrossEntropyLoss()
    assert get_loss(loss) is loss


# --------------------------------------------------------------------------- first-order optimizers
# Pins for the mutants of optim/first_order.py that survived the selection (docs/testing.md):
# every argument check's full message and both sides of each boundary, the checkpoint
# keys and copies, the re-check of a new gradient array, the clipping threshold.
def _raises_exactly(error: type, message: str) -> Any:
    return pytest.raises(error, match="^" + re.escape(message) + "$")


FULL_MESSAGES: list[tuple[Any, dict[str, Any], type, str]] = [
    (SGD, {"lr": 0.0}, ValueError, "The 'lr' parameter of SGD must be a float > 0; got 0.0 instead."),
    (SGD, {"lr": True}, TypeError, "The 'lr' parameter of SGD must be a float > 0; got True instead."),
    (SGD, {"momentum": 1.0}, ValueError,
     "The 'momentum' parameter of SGD must be a float in [0, 1); got 1.0 instead."),
    (SGD, {"dampening": 1.5}, ValueError,
     "The 'dampening' parameter of SGD must be a float in [0, 1]; got 1.5 instead."),
    (SGD, {"dampening": -0.1}, ValueError,
     "The 'dampening' parameter of SGD must be a float in [0, 1]; got -0.1 instead."),
    (SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.5}, ValueError,
     "The 'nesterov' parameter of SGD requires momentum > 0 and dampening == 0; got "
     "momentum=0.9 and dampening=0.5. Pass e.g. momentum=0.9, dampening=0.0, or nesterov=False."),
    (SGD, {"weight_decay": -1.0}, ValueError,
     "The 'weight_decay' parameter of SGD must be a float >= 0; got -1.0 instead."),
    (SGD, {"weight_decay_mask": np.array([1, 0])}, TypeError,
     "The 'weight_decay_mask' parameter of SGD must be a boolean array over params (True = "
     f"decay this entry); got an array of dtype {np.array([1, 0]).dtype}. Build it with e.g. "
     "np.ones(n_params, dtype=bool) and set biases to False."),
    (Adam, {"betas": (1.0, 0.5)}, ValueError,
     "The 'betas' parameter of Adam must be a pair of floats in [0, 1); got (1.0, 0.5) instead."),
    (Adam, {"betas": (0.9, -0.1)}, ValueError,
     "The 'betas' parameter of Adam must be a pair of floats in [0, 1); got (0.9, -0.1) instead."),
    (Adam, {"betas": "ab"}, ValueError,
     "The 'betas' parameter of Adam must be a pair of floats in [0, 1); got 'ab' instead."),
    (AdamW, {"eps": -1.0}, ValueError,
     "The 'eps' parameter of AdamW must be a float >= 0; got -1.0 instead."),
    (RMSprop, {"eps": -1.0}, ValueError,
     "The 'eps' parameter of RMSprop must be a float >= 0; got -1.0 instead."),
    (RMSprop, {"eps": "1e-8"}, TypeError,
     "The 'eps' parameter of RMSprop must be a float >= 0; got '1e-8' instead."),
    (RMSprop, {"momentum": 1.0}, ValueError,
     "The 'momentum' parameter of RMSprop must be a float in [0, 1); got 1.0 instead."),
    (RMSprop, {"alpha": -0.5}, ValueError,
     "The 'alpha' parameter of RMSprop must be a float in [0, 1); got -0.5 instead."),
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "message"), FULL_MESSAGES)
def test_optimizer_argument_errors_in_full(cls: Any, kwargs: dict[str, Any], error: type,
                                           message: str) -> None:
    with _raises_exactly(error, message):
        cls(**kwargs)


@pytest.mark.parametrize(("betas", "which", "bad"), [
    ((1.0, 0.5), "betas[0]", 1.0), ((0.5, 1.0), "betas[1]", 1.0),
    ((-0.5, 0.5), "betas[0]", -0.5), ((0.5, -0.5), "betas[1]", -0.5),
])
def test_betas_error_names_the_bad_beta_in_its_cause(betas: tuple[float, float], which: str,
                                                     bad: float) -> None:
    # the traceback's "direct cause" says which of the two is out of range
    with pytest.raises(ValueError) as info:
        Adam(betas=betas)
    assert str(info.value.__cause__) == (
        f"The {which!r} parameter of Adam must be a float in [0, 1); got {bad!r} instead."
    )


EDGES_ACCEPTED: list[tuple[Any, dict[str, Any]]] = [
    (SGD, {"lr": 1e-300, "momentum": 0.0, "dampening": 1.0, "weight_decay": 0.0}),
    (SGD, {"momentum": 0.999, "dampening": 0.0, "nesterov": np.bool_(True)}),
    (Adam, {"betas": (0.0, 0.0), "eps": 0.0}),
    (Adam, {"betas": [0.999999, 0.999999]}),
    (RMSprop, {"alpha": 0.0, "eps": 0.0, "momentum": 0.999}),
]


@pytest.mark.parametrize(("cls", "kwargs"), EDGES_ACCEPTED)
def test_optimizer_accepts_the_edges_of_each_interval(cls: Any, kwargs: dict[str, Any]) -> None:
    config = cls(**kwargs).get_config()
    for key, value in kwargs.items():
        assert config[key] == (list(value) if key == "betas" else value)


def test_check_number_describes_every_interval() -> None:
    from jacnet.optim.first_order import _check_number

    # the validator shared by the optimizers, the schedules and LM/GN/BR
    cases = [({"high": 1.0}, 2.0, "a float < 1"), ({"high": 1.0, "high_closed": True}, 2.0,
                                                    "a float <= 1"),
             ({}, "x", "a float"), ({"integer": True}, 1.5, "an int")]
    for bounds, value, wanted in cases:
        error = TypeError if isinstance(value, str) or bounds.get("integer") else ValueError
        with _raises_exactly(error, f"The 'x' parameter of F must be {wanted}; got {value!r} instead."):
            _check_number(value, "x", "F", **bounds)
    assert _check_number(1.0, "x", "F", high=1.0, high_closed=True) == 1.0
    number = _check_number(np.int64(3), "x", "F", low=1, integer=True)
    assert type(number) is int and number == 3
    assert type(_check_number(np.float32(0.5), "x", "F")) is float


def test_sgd_with_full_dampening_adds_no_new_gradient_to_momentum() -> None:
    # dampening = 1: b = g on the first step, then b = 0.9 b + 0 · g
    optimizer = SGD(lr=0.1, momentum=0.9, dampening=1.0)
    params, grads = np.array(PARAMS), np.array(GRADS)
    optimizer.step(params, grads)
    optimizer.step(params, grads)
    np.testing.assert_allclose(params, np.array(PARAMS) - 0.1 * 1.9 * np.array(GRADS), rtol=1e-14)


def test_a_new_gradient_array_is_checked_even_with_the_same_params() -> None:
    optimizer = SGD()
    params = np.array(PARAMS)
    optimizer.step(params, np.array(GRADS))
    with _raises_exactly(TypeError, "SGD.step: grads must have the dtype of params (float64); got "
                                    "float32."):
        optimizer.step(params, np.array(GRADS, dtype=np.float32))
    grads = np.array(GRADS)
    optimizer.step(params, grads)
    with _raises_exactly(ValueError, "SGD.step: grads must have the shape of params (4,); got (3,)."):
        optimizer.step(np.zeros(4), grads)
    with _raises_exactly(ValueError, "SGD.step: the optimizer's state was allocated for params of "
                         "shape (3,); got params of shape (4,). Use one optimizer per model (or a "
                         "new optimizer after changing the model)."):
        optimizer.step(np.zeros(4), np.zeros(4))
    with _raises_exactly(TypeError, "SGD.step: params must be a float32 or float64 NumPy array; got "
                         "int64. Pass the model's flat parameter and gradient vectors."):
        optimizer.step(np.array([1, 2, 3]), grads)


@pytest.mark.parametrize(("cls", "kwargs", "keys"), [
    (SGD, {}, set()), (SGD, {"momentum": 0.9}, {"momentum_buffer"}),
    (RMSprop, {}, {"square_avg"}), (RMSprop, {"momentum": 0.5, "centered": True},
                                    {"square_avg", "momentum_buffer", "grad_avg"}),
])
def test_state_dict_holds_exactly_the_buffers_in_use(cls: Any, kwargs: dict[str, Any],
                                                     keys: set[str]) -> None:
    optimizer = cls(**kwargs)
    optimizer.step(np.array(PARAMS), np.array(GRADS))
    assert set(optimizer.state_dict()) == {"lr", "step", *keys}


def test_load_state_dict_before_any_step_and_its_messages() -> None:
    fresh = Adam(lr=0.1)
    resumed = Adam()
    resumed.load_state_dict(fresh.state_dict())  # a state saved before the first step
    assert resumed.state_dict() == {"lr": 0.1, "step": 0}
    with _raises_exactly(ValueError, "Adam.load_state_dict: the state does not match this optimizer "
                         "(missing keys ['step'], unexpected keys []). Load a state saved by an "
                         "optimizer built with the same configuration: " + repr(resumed) + "."):
        resumed.load_state_dict({"lr": 0.1})
    adam = Adam()
    adam.step(np.array(PARAMS), np.array(GRADS))
    with _raises_exactly(ValueError, "Adam.load_state_dict: buffers have different shapes "
                         "{'exp_avg': (4,), 'exp_avg_sq': (3,)}."):
        resumed.load_state_dict({**adam.state_dict(), "exp_avg": np.zeros(4)})
    with _raises_exactly(TypeError, "Adam.load_state_dict: buffer 'exp_avg' must be float32 or "
                         "float64; got int64."):
        resumed.load_state_dict({**adam.state_dict(), "exp_avg": np.zeros(3, dtype=np.int64)})


def test_load_state_dict_copies_the_saved_buffers() -> None:
    adam = Adam()
    adam.step(np.array(PARAMS), np.array(GRADS))
    saved = adam.state_dict()
    kept = {key: np.copy(value) for key, value in saved.items()}
    resumed = Adam()
    resumed.load_state_dict(saved)
    resumed.step(np.array(PARAMS), np.array(GRADS))
    for key, value in kept.items():
        np.testing.assert_array_equal(saved[key], value)  # the checkpoint is not written to


def test_optimizer_repr_lists_its_configuration() -> None:
    assert repr(SGD(lr=0.5)) == ("SGD(lr=0.5, momentum=0.0, nesterov=False, weight_decay=0.0, "
                                 "dampening=0.0)")
    assert repr(AdamW()) == ("AdamW(lr=0.001, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.01, "
                             "amsgrad=False)")


def test_clip_grad_norm_threshold_messages_and_shapes() -> None:
    from jacnet.optim import clip_grad_norm

    grads = np.array([3.0, 4.0])
    assert clip_grad_norm(grads, 6.0) == 5.0  # below max_norm: left exactly as it was
    np.testing.assert_array_equal(grads, [3.0, 4.0])
    matrix = np.array([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # any shape: the norm of all entries
    assert clip_grad_norm(matrix, 1.0) == 5.0
    np.testing.assert_allclose(matrix, np.array([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]]) / (5.0 + 1e-6),
                               rtol=1e-15)
    with _raises_exactly(TypeError, "clip_grad_norm: grads must be a float32 or float64 NumPy array "
                         "(it is scaled in place); got list."):
        clip_grad_norm([1.0, 2.0], 1.0)  # type: ignore[arg-type]
    with _raises_exactly(TypeError, "clip_grad_norm: grads must be a float32 or float64 NumPy array "
                         "(it is scaled in place); got int64."):
        clip_grad_norm(np.array([1, 2], dtype=np.int64), 1.0)
    with _raises_exactly(ValueError, "clip_grad_norm: the gradient norm is nan; the gradients "
                         "contain NaN or infinity. Lower the learning rate or check the loss for "
                         "overflow."):
        clip_grad_norm(np.array([np.nan, 1.0]), 1.0, error_if_nonfinite=True)


def test_get_optimizer_messages_in_full() -> None:
    with _raises_exactly(ValueError, "Unknown optimizer 3; choose one of " + ", ".join(
            repr(name) for name in sorted(OPTIMIZERS)) + "."):
        get_optimizer(3)  # type: ignore[arg-type]
    with _raises_exactly(TypeError, "SGD got unexpected argument(s) ['betas']; it accepts ['lr', "
                         "'momentum', 'nesterov', 'weight_decay', 'dampening', "
                         "'weight_decay_mask']."):
        get_optimizer("SGD", betas=(0.9, 0.99))


# --------------------------------------------------------------------------- layers
# Pins for the mutants of layers.py that survived the selection (docs/testing.md): the dtype
# of every derivative and parameter Jacobian, the input gradient a float64 gradient keeps,
# Linear's JVP in θ alone and its sparse-input parameter Jacobian, exact GELU without SciPy,
# softmax's per-row shift, the base class's binding of any number of parameter arrays,
# and every message in full.
def _activations() -> list[Any]:
    from jacnet.layers import GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh

    return [Identity(), Sigmoid(), Tanh(), ReLU(), LeakyReLU(0.1), Softplus(), GELU(), GELU("tanh")]


@pytest.mark.parametrize("index", range(8))
def test_activation_derivatives_keep_float32_and_a_wider_gradient(index: int) -> None:
    layer = _activations()[index]
    x = np.array([[-1.5, -0.25, 0.5, 2.0]], dtype=np.float32)
    layer.forward(x)
    derivative = layer.derivative()
    assert derivative.dtype == np.float32 and layer.jacobian().dense().dtype == np.float32
    grad = np.array([[0.5, -2.0, 3.0, 1.0]])  # float64 through a float32 layer stays float64
    grad_input = layer.backward(grad)
    assert grad_input.dtype == np.float64
    np.testing.assert_array_equal(grad_input, derivative.astype(np.float64) * grad)


def test_leaky_relu_default_slope_kink_and_messages() -> None:
    from jacnet.layers import LeakyReLU

    assert LeakyReLU().negative_slope == 0.01
    layer = LeakyReLU(0.1)
    np.testing.assert_array_equal(layer.forward(np.array([[0.0, -1.0, 2.0]])), [[0.0, -0.1, 2.0]])
    # at the kink x = 0 the slope is the negative one, as torch.nn.LeakyReLU's gradient
    np.testing.assert_array_equal(layer.derivative(), [[0.1, 0.1, 1.0]])
    for bad in (math.inf, "0.1"):
        with _raises_exactly(ValueError, f"negative_slope must be a finite number; got {bad!r}."):
            LeakyReLU(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("hide_scipy", [False, True])
def test_exact_gelu_with_and_without_scipy(hide_scipy: bool, monkeypatch: Any) -> None:
    import sys

    from jacnet import layers

    x = np.linspace(-4.0, 4.0, 17).reshape(1, -1)
    cdf = np.array([[0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x[0]]])
    monkeypatch.setattr(layers, "_erf_ufunc", None)  # as in a fresh process
    if hide_scipy:
        monkeypatch.setitem(sys.modules, "scipy.special", None)  # import fails: no SciPy
    for dtype, rtol in ((np.float64, 1e-15), (np.float32, 1e-6)):
        out = layers.GELU().forward(x.astype(dtype))
        assert out.dtype == dtype
        np.testing.assert_allclose(out, x * cdf, rtol=rtol, atol=1e-7 if dtype == np.float32 else 0)


def test_linear_parameter_jvp_backward_without_input_grad_and_sparse_input() -> None:
    rng = np.random.default_rng(0)
    layer = Linear(3, 2, seed=0, dtype=np.float64)
    x = rng.normal(size=(4, 3))
    layer.forward(x)
    direction = rng.normal(size=layer.n_params)
    d_weight, d_bias = direction[:6].reshape(2, 3), direction[6:]
    # J_θ·p alone (tangent=None): the output's change when θ moves along p
    np.testing.assert_allclose(layer.jvp(None, direction), x @ d_weight.T + d_bias, rtol=1e-14)
    np.testing.assert_allclose(layer.jvp(np.ones((4, 3)), direction),
                               np.ones((4, 3)) @ layer.weight.T + x @ d_weight.T + d_bias,
                               rtol=1e-14)
    with _raises_exactly(ValueError, "Linear(in_features=3, out_features=2, bias=True).jvp: pass a "
                         "tangent, a param_tangent or both; got neither."):
        layer.jvp(None, None)
    grad_output = rng.normal(size=(4, 2))
    assert layer.backward(grad_output, input_grad=False) is None
    np.testing.assert_allclose(layer.grad_weight, grad_output.T @ x, rtol=1e-14)
    np.testing.assert_allclose(layer.grad_bias, grad_output.sum(axis=0), rtol=1e-14)
    dense = layer.param_jacobian().dense()
    sparse = pytest.importorskip("scipy.sparse")
    layer.forward(sparse.csr_matrix(x))
    np.testing.assert_array_equal(layer.param_jacobian().dense(), dense)
    small = Linear(3, 2, seed=0)  # float32: every block of ∂s/∂θ stays float32
    small.forward(x.astype(np.float32))
    assert small.param_jacobian().dense().dtype == np.float32


def test_layer_base_class_binds_any_number_of_parameter_arrays() -> None:
    from jacnet.layers import Layer, layer_from_config

    class ThreeArrays(Layer):  # a user's layer: three parameter arrays, rebuilt from its config
        def __init__(self, n: int = 2) -> None:
            super().__init__()
            self.n = n
            self.param_shapes = {"a": (n,), "b": (n, n), "c": (1,)}
            self.bind(np.zeros(self.n_params), np.zeros(self.n_params))

        def get_config(self) -> dict[str, Any]:
            return {"type": "ThreeArrays", "n": self.n}

    layer = layer_from_config({"type": "ThreeArrays", "n": 2})
    assert isinstance(layer, ThreeArrays) and layer.dtype == np.float64
    params, grads = np.arange(7.0), np.arange(7.0) + 10
    layer.bind(params, grads)
    np.testing.assert_array_equal(layer.a, [0.0, 1.0])
    np.testing.assert_array_equal(layer.b, [[2.0, 3.0], [4.0, 5.0]])
    np.testing.assert_array_equal(layer.c, [6.0])
    np.testing.assert_array_equal(layer.grad_c, [16.0])
    np.testing.assert_array_equal(layer.flat_params(), params)
    np.testing.assert_array_equal(layer.flat_grads(), grads)
    assert repr(layer) == "ThreeArrays(n=2)"


def test_parameter_free_layers_are_float32_until_bound() -> None:
    from jacnet.layers import ReLU

    for layer in (ReLU(), Dropout()):
        assert layer.dtype == np.float32
        for flat in (layer.flat_params(), layer.flat_grads()):
            assert flat.shape == (0,) and flat.dtype == np.float32


def test_layer_reprs_and_messages_in_full() -> None:
    from jacnet.layers import GELU, ReLU, Softmax, get_activation, layer_from_config

    assert repr(Linear(3, 2, bias=False)) == "Linear(in_features=3, out_features=2, bias=False)"
    assert repr(GELU("tanh")) == "GELU(approximate='tanh')" and repr(ReLU()) == "ReLU()"
    for layer in (Linear(3, 2), Softmax(), Dropout(0.5), ReLU()):
        with _raises_exactly(RuntimeError, f"{layer!r}: backward, jvp or jacobian was called before "
                             "forward. Run a forward pass on the batch first (model(X) or "
                             "layer.forward(X))."):
            layer.backward(np.zeros((1, 2)))
    with _raises_exactly(ValueError, "out_features must be an integer >= 1; got 0."):
        Linear(3, 0)
    with _raises_exactly(ValueError, "approximate must be one of 'none', 'tanh'; got 'exact'."):
        GELU("exact")
    with _raises_exactly(ValueError, "activation must be one of 'identity', 'linear', 'sigmoid', "
                         "'logistic', 'tanh', 'relu', 'leaky_relu', 'softplus', 'gelu', 'softmax'; "
                         "got 'swish'."):
        get_activation("swish")
    assert type(get_activation("Leaky-ReLU")).__name__ == "LeakyReLU"
    for config, shown in (({"in_features": 3}, "None"), ({"type": "Activation"}, "'Activation'")):
        with pytest.raises(ValueError) as info:
            layer_from_config(config)
        prefix = f"unknown layer type {shown} in a model description; known: "
        message = str(info.value)
        assert message.startswith(prefix) and message.endswith(".")
        known = message[len(prefix):-1].split(", ")
        assert known == sorted(known) and "Activation" not in known
        assert {"Dropout", "GELU", "Identity", "LeakyReLU", "Linear", "ReLU", "Sigmoid", "Softmax",
                "Softplus", "Tanh"} <= set(known)


def test_softmax_shifts_each_row_by_its_own_maximum() -> None:
    from jacnet.layers import Softmax

    z = np.array([[1000.0, 999.0], [-1000.0, -1001.0]])  # one global shift underflows row 2
    p = 1.0 / (1.0 + math.exp(-1.0))
    np.testing.assert_allclose(Softmax().forward(z), [[p, 1 - p], [p, 1 - p]], rtol=1e-15)


def test_dropout_keeps_float32_and_draws_nothing_at_p_zero() -> None:
    x = np.ones((20, 30), dtype=np.float32)
    drop = Dropout(0.5, seed=0)
    assert drop.forward(x).dtype == np.float32 and drop.backward(x).dtype == np.float32
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(Dropout(0.0, seed=rng).forward(x), x)
    # a generator shared with other layers is not advanced by a dropout that drops nothing
    assert rng.random() == np.random.default_rng(5).random()


# --------------------------------------------------------------------------- Jacobian operators
# Pins for the mutants of jacobians.py that survived the selection (docs/testing.md): the
# plain and notebook displays in full, the dtype of every materialised operator, the
# Kronecker forms with one row or one input, and the names and factors kept by composition.
def test_jacobian_repr_and_notebook_display_in_full() -> None:
    from jacnet.jacobians import Diagonal, Kronecker, Matrix

    assert repr(Kronecker(np.ones((3, 2)), n_rows=4)) == "Kronecker(batch_size=3, shape=(4, 8))"
    one = Diagonal(np.array([[2.0, 0.5]]))
    assert one._repr_html_() == (
        "<div><b>Diagonal</b> — diagonal: only diag(f′) is stored, one vector per sample; "
        "1 sample of 2 × 2</div><table><caption>the matrix</caption><tbody>"
        "<tr><td>2</td><td>0</td></tr><tr><td>0</td><td>0.5</td></tr></tbody></table>")
    two = Diagonal(np.array([[2.0, 0.5], [7.0, 9.0]]))
    assert two._repr_html_() == (
        "<div><b>Diagonal</b> — diagonal: only diag(f′) is stored, one vector per sample; "
        "2 samples of 2 × 2</div><table><caption>sample 0</caption><tbody>"
        "<tr><td>2</td><td>0</td></tr><tr><td>0</td><td>0.5</td></tr></tbody></table>")
    structure = "one matrix shared by every sample (∂(W y)/∂y = W)"
    shown = Matrix(np.eye(8), batch_size=2)._repr_html_()  # 64 entries: written out
    assert shown.startswith(f"<div><b>Matrix</b> — {structure}; 2 samples of 8 × 8</div><table>")
    assert shown.count("<tr>") == 8 and shown.count("<td>1</td>") == 8
    assert Matrix(np.eye(9, 8), batch_size=2)._repr_html_() == (
        f"<div><b>Matrix</b> — {structure}; 2 samples of 9 × 8</div><div>(matrix not shown: 72 "
        "entries per sample; call <code>.dense()</code>)</div>")
    assert Diagonal(np.zeros((0, 2)))._repr_html_() == (
        "<div><b>Diagonal</b> — diagonal: only diag(f′) is stored, one vector per sample; "
        "0 samples of 2 × 2</div><div>(matrix not shown: 4 entries per sample; call "
        "<code>.dense()</code>)</div>")


def _kron_reference(x: np.ndarray, n_rows: int, left: np.ndarray | None) -> np.ndarray:
    """L_b ⊗ x_bᵀ sample by sample, with NumPy's Kronecker product (L = I by default)."""
    lefts = [np.eye(n_rows)] * len(x) if left is None else list(left)
    return np.stack([np.kron(L, row[None, :]) for L, row in zip(lefts, x)])


@pytest.mark.parametrize(("n_in", "n_rows", "with_left"),
                         [(3, 1, False), (1, 3, True), (3, 2, True), (1, 1, False)])
def test_kronecker_dense_matches_numpys_kron(n_in: int, n_rows: int, with_left: bool) -> None:
    from jacnet.jacobians import Kronecker

    rng = np.random.default_rng(n_in + 10 * n_rows)
    x = rng.normal(size=(4, n_in))
    left = rng.normal(size=(4, 5, n_rows)) if with_left else None
    np.testing.assert_allclose(Kronecker(x, n_rows, left=left).dense(),
                               _kron_reference(x, n_rows, left), rtol=1e-15)


@pytest.mark.parametrize("x_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("left_dtype", [None, np.float32, np.float64])
def test_materialised_operators_keep_their_dtype(x_dtype: Any, left_dtype: Any) -> None:
    from jacnet.jacobians import BlockRow, Identity, Kronecker

    x = np.ones((2, 3), dtype=x_dtype)
    left = None if left_dtype is None else np.ones((2, 4, 2), dtype=left_dtype)
    expected = x_dtype if left_dtype is None else np.result_type(x_dtype, left_dtype)
    block = Kronecker(x, 2, left=left)
    assert block.dense().dtype == expected
    assert BlockRow([block, block]).dense().dtype == expected
    eye = Identity(3, batch_size=2, dtype=x_dtype).dense()
    assert eye.dtype == x_dtype
    np.testing.assert_array_equal(eye, np.broadcast_to(np.eye(3), (2, 3, 3)))


def test_block_rows_names_and_composition_through_kronecker_factors() -> None:
    from jacnet.jacobians import BlockRow, Kronecker, Matrix

    with _raises_exactly(ValueError, "BlockRow needs at least one block."):
        BlockRow([])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 3))
    blocks = [Kronecker(x, 2), Kronecker(np.ones((3, 1)), 2)]
    assert BlockRow(blocks).names == ["0", "1"]
    inner = BlockRow(blocks, ["w", "b"])
    middle, outer = Matrix(rng.normal(size=(4, 2)), 3), Matrix(rng.normal(size=(5, 4)), 3)
    chain = outer @ (middle @ inner)  # A₂ (A₁ (I ⊗ xᵀ)): the factor of the inner Kronecker kept
    assert chain.names == ["w", "b"]
    np.testing.assert_allclose(chain.dense(), outer.dense() @ middle.dense() @ inner.dense(),
                               rtol=1e-13)


# --------------------------------------------------------------------------- schedules
# Pins for the mutants of optim/schedules.py that survived the selection (docs/testing.md):
# each plateau mode and threshold mode at its exact bound, the eps guard at equality, the
# initial and stepped state, every argument check's message in full.
@pytest.mark.parametrize(("mode", "threshold_mode", "metrics"), [
    ("min", "rel", [8.0, 4.0, 3.9]),    # bound 8 · (1 − 0.5) = 4
    ("min", "abs", [8.0, 7.5, 7.4]),    # bound 8 − 0.5
    ("max", "rel", [8.0, 12.0, 12.5]),  # bound 8 · (1 + 0.5) = 12
    ("max", "abs", [8.0, 8.5, 8.6]),    # bound 8 + 0.5
])
def test_plateau_improvement_is_strictly_beyond_the_bound(mode: str, threshold_mode: str,
                                                          metrics: list[float]) -> None:
    # patience 0: every epoch without improvement halves lr. The first metric improves on
    # ±inf, the second sits exactly on the bound (no improvement), the third beats it.
    kwargs = {"mode": mode, "threshold_mode": threshold_mode, "threshold": 0.5, "patience": 0,
              "factor": 0.5}
    schedule = ReduceLROnPlateau(SGD(lr=1.0), **kwargs)
    assert [schedule.step(metric) for metric in metrics] == [1.0, 0.5, 0.5]
    torch = pytest.importorskip("torch")
    torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_optimizer, **kwargs)
    lrs = []
    for metric in metrics:
        torch_schedule.step(metric)
        lrs.append(torch_optimizer.param_groups[0]["lr"])
    assert lrs == [1.0, 0.5, 0.5]


def test_plateau_skips_reductions_not_larger_than_eps() -> None:
    for factor, eps, expected in ((0.5, 0.5, 1.0), (0.95, 0.1, 1.0), (0.5, 0.4, 0.5)):
        schedule = ReduceLROnPlateau(SGD(lr=1.0), factor=factor, patience=0, eps=eps)
        assert [schedule.step(1.0), schedule.step(1.0)] == [1.0, expected]


def test_plateau_state_starts_clean_and_counts_epochs() -> None:
    schedule = ReduceLROnPlateau(SGD(lr=0.5), mode="max")
    assert schedule.state_dict() == {"base_lr": 0.5, "last_epoch": 0, "best": -math.inf,
                                     "num_bad_epochs": 0, "cooldown_counter": 0}
    for metric in (1.0, 0.5, 0.25):
        schedule.step(metric)
    assert schedule.state_dict() == {"base_lr": 0.5, "last_epoch": 3, "best": 1.0,
                                     "num_bad_epochs": 2, "cooldown_counter": 0}
    assert schedule.get_last_lr() == 0.5


def test_cosine_with_a_one_epoch_half_period() -> None:
    schedule = CosineAnnealingLR(SGD(lr=1.0), T_max=1)
    assert [schedule.step() for _ in range(4)] == [0.0, 1.0, 0.0, 1.0]
    assert schedule.get_last_lr() == 1.0


BAD_SCHEDULE_MESSAGES: list[tuple[Any, dict[str, Any], type, str]] = [
    (ExponentialLR, {"gamma": 0.0}, ValueError,
     "The 'gamma' parameter of ExponentialLR must be a float > 0; got 0.0 instead."),
    (StepLR, {"step_size": 1, "gamma": 0.0}, ValueError,
     "The 'gamma' parameter of StepLR must be a float > 0; got 0.0 instead."),
    (CosineAnnealingLR, {"T_max": 2.5}, TypeError,
     "The 'T_max' parameter of CosineAnnealingLR must be an int >= 1; got 2.5 instead."),
    (CosineAnnealingLR, {"T_max": 0}, ValueError,
     "The 'T_max' parameter of CosineAnnealingLR must be an int >= 1; got 0 instead."),
    (CosineAnnealingLR, {"T_max": 3, "eta_min": -1.0}, ValueError,
     "The 'eta_min' parameter of CosineAnnealingLR must be a float >= 0; got -1.0 instead."),
    (ReduceLROnPlateau, {"mode": "avg"}, ValueError,
     "The 'mode' parameter of ReduceLROnPlateau must be one of 'min', 'max'; got 'avg' instead."),
    (ReduceLROnPlateau, {"factor": 0.0}, ValueError,
     "The 'factor' parameter of ReduceLROnPlateau must be a float in (0, 1); got 0.0 instead."),
    (ReduceLROnPlateau, {"patience": -1}, ValueError,
     "The 'patience' parameter of ReduceLROnPlateau must be an int >= 0; got -1 instead."),
    (ReduceLROnPlateau, {"threshold": -1.0}, ValueError,
     "The 'threshold' parameter of ReduceLROnPlateau must be a float >= 0; got -1.0 instead."),
    (ReduceLROnPlateau, {"min_lr": -1.0}, ValueError,
     "The 'min_lr' parameter of ReduceLROnPlateau must be a float >= 0; got -1.0 instead."),
    (ReduceLROnPlateau, {"cooldown": 1.5}, TypeError,
     "The 'cooldown' parameter of ReduceLROnPlateau must be an int >= 0; got 1.5 instead."),
    (ReduceLROnPlateau, {"cooldown": -1}, ValueError,
     "The 'cooldown' parameter of ReduceLROnPlateau must be an int >= 0; got -1 instead."),
    (ReduceLROnPlateau, {"eps": -1.0}, ValueError,
     "The 'eps' parameter of ReduceLROnPlateau must be a float >= 0; got -1.0 instead."),
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "message"), BAD_SCHEDULE_MESSAGES)
def test_schedule_argument_errors_in_full(cls: Any, kwargs: dict[str, Any], error: type,
                                          message: str) -> None:
    with _raises_exactly(error, message):
        cls(SGD(), **kwargs)


def test_schedule_reprs_names_and_messages_in_full() -> None:
    import json

    from jacnet.optim import get_schedule

    assert repr(StepLR(SGD(), step_size=2)) == "StepLR(step_size=2, gamma=0.1)"
    exponential = get_schedule("Exponential", SGD(), gamma=0.5)
    assert exponential.get_config() == {"gamma": 0.5}
    assert repr(exponential) == "ExponentialLR(gamma=0.5)"
    assert ReduceLROnPlateau(SGD(), threshold=0.0, eps=0.0, min_lr=0.0, cooldown=0,
                             patience=0).get_config()["threshold"] == 0.0
    config = json.dumps(CosineAnnealingLR(SGD(), T_max=np.int64(3)).get_config())
    assert config == '{"T_max": 3, "eta_min": 0.0}'  # an int, not 3.0
    with _raises_exactly(ValueError, "Unknown schedule 3; choose one of 'cosine', 'exponential', "
                         "'plateau', 'step'."):
        get_schedule(3, SGD())  # type: ignore[arg-type]
    with _raises_exactly(TypeError, "StepLR needs a jacnet optimizer (e.g. jacnet.optim.Adam); got "
                         "str."):
        StepLR("adam", step_size=2)  # type: ignore[arg-type]
    with _raises_exactly(ValueError, "StepLR.load_state_dict: expected keys ['base_lr', "
                         "'last_epoch']; got ['base_lr', 'best', 'cooldown_counter', 'last_epoch', "
                         "'num_bad_epochs']."):
        StepLR(SGD(), step_size=2).load_state_dict(ReduceLROnPlateau(SGD()).state_dict())
