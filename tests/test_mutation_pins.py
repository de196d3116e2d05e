"""Pins found by mutation testing (docs/testing.md): values that other tests let drift.

Each test here fails under a mutant that survived the rest of the suite: an
initialisation bound, an optimizer or schedule default, Dropout's scale, a weight-decay
guard. References are computed here, independently of the code under test: the same
formula with the same random stream, or PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from jacnet.layers import Dropout, Linear
from jacnet.optim import (
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
    get_optimizer,
)
from test_optim import START, jacnet_trajectory, torch_trajectory

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
