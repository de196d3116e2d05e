"""Tests for jacnet.optim: hand-worked steps, PyTorch as an oracle, checkpoints, dtypes, errors."""

from __future__ import annotations

import io
import json
import math
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jacnet.optim import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ExponentialLR,
    Optimizer,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
    clip_grad_norm,
    get_optimizer,
    get_schedule,
)

# The mini-batch optimizers (the registry also holds the full-batch lm/gn/br, tested in
# test_second_order.py: they take no step(params, grads) and no learning rate).
FIRST_ORDER = sorted(name for name, cls in OPTIMIZERS.items() if issubclass(cls, Optimizer))

PARAMS = [1.0, -2.0, 0.5]
GRADS = [0.5, -1.0, 2.0]


def one_step(optimizer: Any, dtype: Any = np.float64) -> np.ndarray:
    params = np.array(PARAMS, dtype=dtype)
    grads = np.array(GRADS, dtype=dtype)
    optimizer.step(params, grads)
    np.testing.assert_array_equal(grads, GRADS)  # an optimizer never changes grads
    return params


# --------------------------------------------------------------------------- hand-worked steps
def test_sgd_one_step_by_hand() -> None:
    # g = grads + 0.1 * params = [0.5 + 0.1, -1.0 - 0.2, 2.0 + 0.05] = [0.6, -1.2, 2.05]
    # first step: momentum buffer = g; params -= 0.1 * g
    params = one_step(SGD(lr=0.1, momentum=0.9, weight_decay=0.1))
    np.testing.assert_allclose(params, [1.0 - 0.06, -2.0 + 0.12, 0.5 - 0.205], rtol=1e-15)


def test_sgd_second_step_uses_momentum_by_hand() -> None:
    # step 1: b = g = [0.5, -1, 2]; p = [0.95, -1.9, 0.3]
    # step 2 (same grads): b = 0.9 b + (1 - 0.5) g = [0.7, -1.4, 2.8]
    # nesterov is off, so p -= 0.1 * b = [0.95 - 0.07, -1.9 + 0.14, 0.3 - 0.28]
    optimizer = SGD(lr=0.1, momentum=0.9, dampening=0.5)
    params, grads = np.array(PARAMS), np.array(GRADS)
    optimizer.step(params, grads)
    optimizer.step(params, grads)
    np.testing.assert_allclose(params, [0.88, -1.76, 0.02], rtol=1e-14)


def test_sgd_nesterov_one_step_by_hand() -> None:
    # b = g; direction = g + 0.9 b = 1.9 g = [0.95, -1.9, 3.8]; p -= 0.1 * direction
    params = one_step(SGD(lr=0.1, momentum=0.9, nesterov=True))
    np.testing.assert_allclose(params, [1.0 - 0.095, -2.0 + 0.19, 0.5 - 0.38], rtol=1e-15)


def test_adam_one_step_by_hand() -> None:
    # m = (1 - 0.9) g,  v = (1 - 0.999) g²;  bias-corrected: m̂ = g, sqrt(v̂) = |g|
    # eps goes *after* the bias correction: step = lr * g / (|g| + eps), eps = 0.5
    #   = 0.1 * [0.5/1.0, -1.0/1.5, 2.0/2.5] = [0.05, -0.0666…, 0.08]
    params = one_step(Adam(lr=0.1, eps=0.5))
    np.testing.assert_allclose(params, [0.95, -2.0 + 0.1 / 1.5, 0.42], rtol=1e-14)


def test_adam_l2_weight_decay_one_step_by_hand() -> None:
    # g = grads + 1.0 * params = [1.5, -3.0, 2.5]; step = 0.1 * g / (|g| + 0.5)
    params = one_step(Adam(lr=0.1, eps=0.5, weight_decay=1.0))
    expected = [1.0 - 0.15 / 2.0, -2.0 + 0.3 / 3.5, 0.5 - 0.25 / 3.0]
    np.testing.assert_allclose(params, expected, rtol=1e-14)


def test_adamw_one_step_by_hand() -> None:
    # decoupled: params *= 1 - 0.1 * 0.5 = 0.95 -> [0.95, -1.9, 0.475]
    # then the Adam step with the raw gradient: [0.05, -0.0666…, 0.08]
    params = one_step(AdamW(lr=0.1, eps=0.5, weight_decay=0.5))
    np.testing.assert_allclose(params, [0.9, -1.9 + 0.1 / 1.5, 0.395], rtol=1e-14)


def test_rmsprop_one_step_by_hand() -> None:
    # s = (1 - 0.75) g² = [0.0625, 0.25, 1.0]; sqrt(s) + eps = [0.25, 0.5, 1.0] + 0.5
    # params -= 0.01 * g / [0.75, 1.0, 1.5] = 0.01 * [2/3, -1, 4/3]
    params = one_step(RMSprop(lr=0.01, alpha=0.75, eps=0.5))
    expected = [1.0 - 0.02 / 3, -2.0 + 0.01, 0.5 - 0.04 / 3]
    np.testing.assert_allclose(params, expected, rtol=1e-14)


def test_rmsprop_centered_one_step_by_hand() -> None:
    # s = 0.25 g², a = 0.25 g, s - a² = (0.25 - 0.0625) g² = 0.1875 g²
    # params -= 0.01 * g / (sqrt(0.1875) |g|) = 0.01 * sign(g) / sqrt(0.1875)
    params = one_step(RMSprop(lr=0.01, alpha=0.75, eps=0.0, centered=True))
    move = 0.01 / math.sqrt(0.1875)
    np.testing.assert_allclose(params, [1.0 - move, -2.0 + move, 0.5 - move], rtol=1e-14)


# --------------------------------------------------------------------------- PyTorch oracle
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("sgd", {"lr": 1e-4}),
    ("sgd", {"lr": 1e-4, "momentum": 0.9}),
    ("sgd", {"lr": 1e-4, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 1e-4, "momentum": 0.8, "dampening": 0.3}),
    ("sgd", {"lr": 1e-4, "weight_decay": 0.1}),
    ("sgd", {"lr": 1e-4, "momentum": 0.9, "nesterov": True, "weight_decay": 0.5}),
    ("adam", {"lr": 1e-2}),
    ("adam", {"lr": 1e-2, "amsgrad": True}),
    ("adam", {"lr": 1e-2, "weight_decay": 0.1}),
    ("adam", {"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.5, "amsgrad": True}),
    ("adamw", {"lr": 1e-2}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}),
    ("adamw", {"lr": 3e-2, "weight_decay": 0.5, "amsgrad": True, "betas": (0.5, 0.9)}),
    ("rmsprop", {"lr": 1e-3}),
    ("rmsprop", {"lr": 1e-3, "centered": True}),
    ("rmsprop", {"lr": 1e-3, "momentum": 0.9}),
    ("rmsprop", {"lr": 1e-3, "centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.5}),
]
CONFIG_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CONFIGS]
TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
START = np.array([-1.2, 1.0, 0.8, -0.5, 1.5, 0.3])


def rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    """Gradient of sum 100 (x[i+1] - x[i]²)² + (1 - x[i])²."""
    grad = np.zeros_like(x)
    inner = x[1:] - x[:-1] ** 2
    grad[:-1] += -400.0 * x[:-1] * inner - 2.0 * (1.0 - x[:-1])
    grad[1:] += 200.0 * inner
    return grad


def torch_trajectory(
    name: str, kwargs: dict[str, Any], n_steps: int, mask: np.ndarray | None = None
) -> list[np.ndarray]:
    torch = pytest.importorskip("torch")
    tensor = torch.tensor(START.copy(), dtype=torch.float64, requires_grad=True)
    cls = getattr(torch.optim, TORCH_NAMES[name])
    if mask is None:
        groups: Any = [tensor]
        pieces = [tensor]
    else:  # torch has no mask: put the undecayed entries in a group with weight_decay=0
        decayed = torch.tensor(START[mask], requires_grad=True)
        plain = torch.tensor(START[~mask], requires_grad=True)
        groups = [{"params": [decayed]}, {"params": [plain], "weight_decay": 0.0}]
        pieces = [decayed, plain]
    optimizer = cls(groups, foreach=False, **kwargs)
    trajectory = []
    for _ in range(n_steps):
        current = np.empty_like(START)
        if mask is None:
            current[:] = pieces[0].detach().numpy()
        else:
            current[mask] = pieces[0].detach().numpy()
            current[~mask] = pieces[1].detach().numpy()
        grad = rosenbrock_grad(current)
        if mask is None:
            pieces[0].grad = torch.from_numpy(grad)
        else:
            pieces[0].grad = torch.from_numpy(grad[mask].copy())
            pieces[1].grad = torch.from_numpy(grad[~mask].copy())
        optimizer.step()
        after = np.empty_like(START)
        if mask is None:
            after[:] = pieces[0].detach().numpy()
        else:
            after[mask] = pieces[0].detach().numpy()
            after[~mask] = pieces[1].detach().numpy()
        trajectory.append(after)
    return trajectory


def jacnet_trajectory(optimizer: Any, n_steps: int, params: np.ndarray | None = None) -> list:
    params = START.copy() if params is None else params
    trajectory = []
    for _ in range(n_steps):
        optimizer.step(params, rosenbrock_grad(params))
        trajectory.append(params.copy())
    return trajectory


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_trajectory_matches_torch(name: str, kwargs: dict[str, Any]) -> None:
    expected = torch_trajectory(name, kwargs, n_steps=20)
    got = jacnet_trajectory(get_optimizer(name, **kwargs), n_steps=20)
    assert not np.allclose(expected[-1], START)  # the run really moved
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(name, kw) for name, kw in CONFIGS if kw.get("weight_decay", name == "adamw")],
    ids=[i for i, (name, kw) in zip(CONFIG_IDS, CONFIGS) if kw.get("weight_decay", name == "adamw")],
)
def test_weight_decay_mask_matches_torch_param_groups(name: str, kwargs: dict[str, Any]) -> None:
    mask = np.array([True, True, False, True, False, True])
    expected = torch_trajectory(name, kwargs, n_steps=20, mask=mask)
    unmasked = torch_trajectory(name, kwargs, n_steps=20)
    assert not np.allclose(expected[-1], unmasked[-1], rtol=1e-9, atol=0)  # the mask matters
    got = jacnet_trajectory(get_optimizer(name, weight_decay_mask=mask, **kwargs), n_steps=20)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_clip_grad_norm_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for max_norm in (0.5, 3.0, 100.0):
        grads = rng.normal(size=10) * 2.0
        tensor = torch.zeros(10, dtype=torch.float64, requires_grad=True)
        tensor.grad = torch.from_numpy(grads.copy())
        expected_norm = float(torch.nn.utils.clip_grad_norm_([tensor], max_norm))
        norm = clip_grad_norm(grads, max_norm)
        assert norm == pytest.approx(expected_norm, rel=1e-14)
        np.testing.assert_allclose(grads, tensor.grad.numpy(), rtol=1e-14)
    assert np.linalg.norm(grads) < 100.0  # the last case is below max_norm: untouched


def test_clip_grad_norm_leaves_nonfinite_gradients_alone() -> None:
    grads = np.array([1.0, np.inf, 2.0])
    assert clip_grad_norm(grads, 1.0) == math.inf
    np.testing.assert_array_equal(grads, [1.0, np.inf, 2.0])
    with pytest.raises(ValueError, match="gradient norm is inf"):
        clip_grad_norm(grads, 1.0, error_if_nonfinite=True)


SCHEDULE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("step", {"step_size": 3, "gamma": 0.5}, "StepLR"),
    ("step", {"step_size": 1, "gamma": 0.9}, "StepLR"),
    ("exponential", {"gamma": 0.9}, "ExponentialLR"),
    ("cosine", {"T_max": 5}, "CosineAnnealingLR"),
    ("cosine", {"T_max": 7, "eta_min": 0.01}, "CosineAnnealingLR"),
]


@pytest.mark.parametrize(("name", "kwargs", "torch_name"), SCHEDULE_CASES)
def test_schedule_matches_torch(name: str, kwargs: dict[str, Any], torch_name: str) -> None:
    torch = pytest.importorskip("torch")
    torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    torch_schedule = getattr(torch.optim.lr_scheduler, torch_name)(torch_optimizer, **kwargs)
    optimizer = SGD(lr=0.3)
    schedule = get_schedule(name, optimizer, **kwargs)
    for epoch in range(1, 31):  # past T_max: cosine rises again, as in torch
        torch_optimizer.step()
        torch_schedule.step()
        assert schedule.step() == optimizer.lr
        assert optimizer.lr == pytest.approx(torch_optimizer.param_groups[0]["lr"], rel=1e-14), epoch


METRICS = [5.0, 4.0, 4.0, 3.9999, 4.1, 4.2, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 2.5]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 1},
        {"patience": 0, "factor": 0.5, "cooldown": 2},
        {"patience": 2, "threshold": 0.1, "threshold_mode": "abs", "min_lr": 0.01},
        {"mode": "max", "patience": 1, "factor": 0.3},
        {"mode": "max", "patience": 0, "threshold_mode": "abs", "threshold": 0.5},
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_optimizer, **kwargs)
    optimizer = SGD(lr=0.3)
    schedule = ReduceLROnPlateau(optimizer, **kwargs)
    for metric in METRICS:
        torch_schedule.step(metric)
        schedule.step(metric)
        assert optimizer.lr == torch_optimizer.param_groups[0]["lr"]
    assert optimizer.lr < 0.3  # the sequence triggers reductions


@settings(max_examples=50, deadline=None)
@given(
    grads=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=1, max_side=40),
        elements=st.floats(-1e3, 1e3).filter(lambda v: abs(v) > 1e-3),
    ),
    name=st.sampled_from(FIRST_ORDER),
)
def test_first_step_descends_every_coordinate(grads: np.ndarray, name: str) -> None:
    # without weight decay, the first step of every optimizer moves each coordinate
    # against the sign of its gradient, whatever the vector's length
    params = np.zeros_like(grads)
    get_optimizer(name, weight_decay=0.0).step(params, grads)
    np.testing.assert_array_equal(np.sign(params), -np.sign(grads))


# --------------------------------------------------------------------------- checkpoints
def npz_round_trip(state: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    return np.load(buffer, allow_pickle=False)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_resumes_exactly(name: str, kwargs: dict[str, Any]) -> None:
    kwargs = {**kwargs, "lr": kwargs["lr"] * 10}  # move far enough for differences to show
    uninterrupted = get_optimizer(name, **kwargs)
    schedule = ExponentialLR(uninterrupted, gamma=0.9)
    params = START.copy()
    for _ in range(10):
        uninterrupted.step(params, rosenbrock_grad(params))
        schedule.step()

    first = get_optimizer(name, **kwargs)
    first_schedule = ExponentialLR(first, gamma=0.9)
    resumed_params = START.copy()
    for _ in range(5):
        first.step(resumed_params, rosenbrock_grad(resumed_params))
        first_schedule.step()
    config = json.loads(json.dumps(first.get_config()))
    second = get_optimizer(first.name, **config)
    second.load_state_dict(npz_round_trip(first.state_dict()))
    second_schedule = ExponentialLR(second, gamma=0.9)
    second_schedule.load_state_dict(npz_round_trip(first_schedule.state_dict()))
    for _ in range(5):
        second.step(resumed_params, rosenbrock_grad(resumed_params))
        second_schedule.step()

    np.testing.assert_array_equal(resumed_params, params)
    assert second.lr == uninterrupted.lr
    for key, value in uninterrupted.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[key], value)


def test_plateau_state_dict_round_trip() -> None:
    schedule = ReduceLROnPlateau(SGD(lr=1.0), patience=2, cooldown=1)
    for metric in METRICS[:6]:
        schedule.step(metric)
    resumed = ReduceLROnPlateau(SGD(lr=schedule.optimizer.lr), patience=2, cooldown=1)
    resumed.load_state_dict(npz_round_trip(schedule.state_dict()))
    assert resumed.state_dict() == schedule.state_dict()
    assert [schedule.step(m) for m in METRICS[6:]] == [resumed.step(m) for m in METRICS[6:]]


def test_state_dict_is_a_copy_and_empty_before_the_first_step() -> None:
    optimizer = Adam()
    assert optimizer.state_dict() == {"lr": 1e-3, "step": 0}
    params = np.array(PARAMS)
    optimizer.step(params, np.array(GRADS))
    saved = optimizer.state_dict()
    optimizer.step(params, np.array(GRADS))
    assert saved["step"] == 1
    np.testing.assert_allclose(saved["exp_avg"], 0.1 * np.array(GRADS))


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_float32_stays_float32(name: str, kwargs: dict[str, Any]) -> None:
    mask = np.array([True, False, True])
    optimizer = get_optimizer(name, weight_decay_mask=mask, **kwargs)
    reference_optimizer = get_optimizer(name, weight_decay_mask=mask, **kwargs)
    schedules = [CosineAnnealingLR(opt, T_max=3) for opt in (optimizer, reference_optimizer)]
    optimizer.lr = np.float64(optimizer.lr)  # a NumPy scalar lr must not promote either
    params, reference = np.array(PARAMS, dtype=np.float32), np.array(PARAMS)
    for _ in range(4):
        grads = np.sin(params) + np.float32(0.5)
        optimizer.step(params, grads)
        reference_optimizer.step(reference, np.sin(reference) + 0.5)
        for schedule in schedules:
            schedule.step()
        assert params.dtype == np.float32
        assert grads.dtype == np.float32
    for key, value in optimizer.state_dict().items():
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32, key
    for buffer in (optimizer._tmp, optimizer._effective_grad):
        assert buffer.dtype == np.float32
    assert not np.array_equal(reference, PARAMS)
    np.testing.assert_allclose(params, reference, rtol=1e-5, atol=1e-6)


class Float64Spy(np.ndarray):
    """An array that records every ufunc call given a float64 operand.

    In-place updates cast back to float32 silently, so a float64 scalar (e.g. from
    ``np.sqrt`` on a Python float) would not change any dtype, only make every pass
    slower and round differently. Buffers made with ``*_like`` inherit this class.
    """

    calls: ClassVar[list[str]] = []

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        for operand in inputs:
            if isinstance(operand, (np.ndarray, np.generic)) and operand.dtype == np.float64:
                Float64Spy.calls.append(ufunc.__name__)
        plain = [x.view(np.ndarray) if isinstance(x, Float64Spy) else x for x in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, Float64Spy) else o for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        return out[0] if out is not None and len(out) == 1 else result


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_float32_step_never_computes_in_float64(name: str, kwargs: dict[str, Any]) -> None:
    optimizer = get_optimizer(name, weight_decay_mask=np.array([True, False, True]), **kwargs)
    params = np.array(PARAMS, dtype=np.float32).view(Float64Spy)
    grads = np.array(GRADS, dtype=np.float32).view(Float64Spy)
    Float64Spy.calls.clear()
    for _ in range(3):
        optimizer.step(params, grads)
    assert isinstance(optimizer._tmp, Float64Spy)  # the spy really watched the buffers
    assert Float64Spy.calls == []
    Float64Spy.calls.clear()
    clip_grad_norm(grads, 0.1)
    assert Float64Spy.calls == []


def test_float64_checkpoint_loads_into_a_float32_run() -> None:
    optimizer = Adam(lr=0.1)
    optimizer.step(np.array(PARAMS), np.array(GRADS))
    resumed = Adam(lr=0.1)
    resumed.load_state_dict(optimizer.state_dict())
    params = np.array(PARAMS, dtype=np.float32)
    resumed.step(params, np.array(GRADS, dtype=np.float32))
    assert params.dtype == np.float32
    assert all(
        value.dtype == np.float32
        for value in resumed.state_dict().values()
        if isinstance(value, np.ndarray)
    )


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("name", FIRST_ORDER)
def test_get_config_is_json_and_rebuilds(name: str) -> None:
    optimizer = get_optimizer(name.upper(), lr=0.05)
    config = json.loads(json.dumps(optimizer.get_config()))
    rebuilt = get_optimizer(optimizer.name, **config)
    assert rebuilt.get_config() == config == optimizer.hyperparameters
    assert repr(rebuilt) == repr(optimizer)
    assert type(rebuilt) is OPTIMIZERS[name]


def test_registry_lists_every_optimizer() -> None:
    assert FIRST_ORDER == ["adam", "adamw", "rmsprop", "sgd"]
    assert {"lm", "gn", "br"} <= set(OPTIMIZERS)


def test_weight_decay_mask_skips_masked_entries_in_adamw() -> None:
    mask = np.array([True, False, True])
    params = one_step(AdamW(lr=0.1, eps=0.5, weight_decay=0.5, weight_decay_mask=mask))
    # entry 1 is not decayed: -2.0 + 0.1/1.5 instead of -1.9 + 0.1/1.5
    np.testing.assert_allclose(params, [0.9, -2.0 + 0.1 / 1.5, 0.395], rtol=1e-14)


# --------------------------------------------------------------------------- errors
BAD_ARGUMENTS: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
    (Adam, {"lr": -1}, ValueError, r"The 'lr' parameter of Adam must be a float > 0; got -1 instead\."),
    (SGD, {"lr": 0.0}, ValueError, "'lr' parameter of SGD must be a float > 0"),
    (SGD, {"lr": "0.1"}, TypeError, "'lr' parameter of SGD must be a float > 0; got '0.1'"),
    (SGD, {"lr": float("nan")}, ValueError, "got nan instead"),
    (SGD, {"momentum": -0.1}, ValueError, r"'momentum' parameter of SGD must be a float in \[0, 1\)"),
    (SGD, {"momentum": 1.0}, ValueError, "'momentum' parameter of SGD"),
    (SGD, {"dampening": 1.5}, ValueError, r"'dampening' .* in \[0, 1\]"),
    (SGD, {"nesterov": True}, ValueError, "requires momentum > 0 and dampening == 0"),
    (SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "dampening=0.1"),
    (SGD, {"nesterov": 1}, TypeError, "'nesterov' parameter of SGD must be a bool"),
    (SGD, {"weight_decay": -1e-4}, ValueError, "'weight_decay' parameter of SGD must be a float >= 0"),
    (
        Adam,
        {"betas": (0.9, 1.0)},
        ValueError,
        r"'betas' .* pair of floats in \[0, 1\); got \(0.9, 1.0\)",
    ),
    (Adam, {"betas": (-0.1, 0.9)}, ValueError, "'betas' parameter of Adam"),
    (Adam, {"betas": 0.9}, ValueError, "'betas' parameter of Adam must be a pair"),
    (AdamW, {"betas": (0.9, 0.99, 0.9)}, ValueError, "'betas' parameter of AdamW"),
    (Adam, {"eps": -1e-8}, ValueError, "'eps' parameter of Adam must be a float >= 0"),
    (Adam, {"amsgrad": "yes"}, TypeError, "'amsgrad' parameter of Adam must be a bool"),
    (AdamW, {"weight_decay": -0.01}, ValueError, "'weight_decay' parameter of AdamW"),
    (RMSprop, {"alpha": 1.0}, ValueError, r"'alpha' parameter of RMSprop must be a float in \[0, 1\)"),
    (RMSprop, {"momentum": -1}, ValueError, "'momentum' parameter of RMSprop"),
    (RMSprop, {"centered": None}, TypeError, "'centered' parameter of RMSprop must be a bool"),
    (SGD, {"weight_decay_mask": np.array([1, 0, 1])}, TypeError, "must be a boolean array"),
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "match"), BAD_ARGUMENTS)
def test_bad_hyperparameters_raise(cls: Any, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_step_rejects_bad_arrays() -> None:
    optimizer = Adam()
    params = np.array(PARAMS)
    with pytest.raises(TypeError, match="params must be a float32 or float64 NumPy array; got list"):
        optimizer.step(list(PARAMS), np.array(GRADS))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="grads must be a float32 or float64 NumPy array; got int64"):
        optimizer.step(params, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"grads must have the shape of params \(3,\); got \(2,\)"):
        optimizer.step(params, np.zeros(2))
    with pytest.raises(TypeError, match=r"grads must have the dtype of params \(float64\)"):
        optimizer.step(params, np.zeros(3, dtype=np.float32))
    frozen = np.array(PARAMS)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="params is read-only"):
        optimizer.step(frozen, np.array(GRADS))
    optimizer.step(params, np.array(GRADS))
    with pytest.raises(ValueError, match=r"allocated for params of shape \(3,\); got .* \(4,\)"):
        optimizer.step(np.zeros(4), np.zeros(4))
    with pytest.raises(TypeError, match="state is float64; got params of dtype float32"):
        optimizer.step(params.astype(np.float32), np.zeros(3, dtype=np.float32))


def test_mask_of_the_wrong_shape_raises_on_the_first_step() -> None:
    optimizer = SGD(weight_decay=0.1, weight_decay_mask=np.array([True, False]))
    with pytest.raises(ValueError, match=r"weight_decay_mask has shape \(2,\).*\(3,\)"):
        optimizer.step(np.array(PARAMS), np.array(GRADS))


def test_load_state_dict_errors() -> None:
    adam = Adam()
    adam.step(np.array(PARAMS), np.array(GRADS))
    with pytest.raises(ValueError, match=r"missing keys \['momentum_buffer'\].*'exp_avg'"):
        SGD(momentum=0.9).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match=r"missing keys \['max_exp_avg_sq'\]"):
        Adam(amsgrad=True).load_state_dict(adam.state_dict())
    ragged = {**adam.state_dict(), "exp_avg": np.zeros(4)}
    with pytest.raises(ValueError, match="buffers have different shapes"):
        Adam().load_state_dict(ragged)
    text = {**adam.state_dict(), "exp_avg": np.array(["a", "b", "c"])}
    with pytest.raises(TypeError, match="'exp_avg' must be float32 or float64"):
        Adam().load_state_dict(text)
    resumed = Adam()
    resumed.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match=r"loaded state buffer 'exp_avg' has shape \(3,\)"):
        resumed.step(np.zeros(5), np.zeros(5))


def test_get_optimizer_errors() -> None:
    with pytest.raises(ValueError, match="Unknown optimizer 'lbfgs'; choose one of 'adam', 'adamw', "):
        get_optimizer("lbfgs")
    with pytest.raises(TypeError, match=r"Adam got unexpected argument\(s\) \['momentum'\]"):
        get_optimizer("adam", momentum=0.9)


def test_clip_grad_norm_errors() -> None:
    with pytest.raises(ValueError, match="'max_norm' parameter of clip_grad_norm must be a float > 0"):
        clip_grad_norm(np.ones(3), 0.0)
    with pytest.raises(TypeError, match="grads must be a float32 or float64 NumPy array"):
        clip_grad_norm([1.0, 2.0], 1.0)  # type: ignore[arg-type]


BAD_SCHEDULES: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
    (StepLR, {"step_size": 0}, ValueError, "'step_size' parameter of StepLR must be an int >= 1"),
    (StepLR, {"step_size": 2.5}, TypeError, "'step_size' parameter of StepLR must be an int"),
    (StepLR, {"step_size": 2, "gamma": 0}, ValueError, "'gamma' parameter of StepLR"),
    (ExponentialLR, {"gamma": -0.5}, ValueError, "'gamma' parameter of ExponentialLR"),
    (CosineAnnealingLR, {"T_max": 0}, ValueError, "'T_max' parameter of CosineAnnealingLR"),
    (CosineAnnealingLR, {"T_max": 3, "eta_min": -1.0}, ValueError, "'eta_min' parameter"),
    (ReduceLROnPlateau, {"mode": "avg"}, ValueError, "'mode' .* one of 'min', 'max'; got 'avg'"),
    (ReduceLROnPlateau, {"threshold_mode": "pct"}, ValueError, "'threshold_mode' parameter"),
    (ReduceLROnPlateau, {"factor": 1.0}, ValueError, r"'factor' .* float in \(0, 1\)"),
    (ReduceLROnPlateau, {"patience": -1}, ValueError, "'patience' parameter .* an int >= 0"),
    (ReduceLROnPlateau, {"cooldown": -1}, ValueError, "'cooldown' parameter"),
    (ReduceLROnPlateau, {"min_lr": -1.0}, ValueError, "'min_lr' parameter"),
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "match"), BAD_SCHEDULES)
def test_bad_schedule_arguments_raise(cls: Any, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cls(SGD(), **kwargs)


def test_schedule_misuse_raises() -> None:
    with pytest.raises(TypeError, match="StepLR needs a jacnet optimizer"):
        StepLR("adam", step_size=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown schedule 'linear'; choose one of 'cosine'"):
        get_schedule("linear", SGD())
    with pytest.raises(TypeError, match="needs the monitored metric as a number"):
        ReduceLROnPlateau(SGD()).step("low")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected keys"):
        StepLR(SGD(), step_size=2).load_state_dict(ReduceLROnPlateau(SGD()).state_dict())
