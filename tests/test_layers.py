"""Every layer's derivatives, checked four ways in float64.

One table drives everything: for each layer, backward (the VJP) must equal the
materialised Jacobian's rows, the JVP its columns, central finite differences of the
forward pass, and PyTorch autograd where it is installed. The same for losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jacnet.checks import _finite_difference, compare
from jacnet.layers import (
    GELU,
    Dropout,
    Identity,
    Layer,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
    get_activation,
    layer_from_config,
)
from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, check_labels, get_loss

FD_RTOL = 1e-7
TORCH_RTOL = 1e-10
N_IN = 5


@dataclass
class LayerCase:
    name: str
    make: Callable[[], Layer]
    n_out: int
    torch_fn: Callable[..., Any] | None  # (torch, x, layer) -> y


def _torch_linear(torch: Any, x: Any, layer: Linear) -> Any:
    return torch.nn.functional.linear(x, torch.tensor(layer.weight), torch.tensor(layer.bias))


LAYERS = [
    LayerCase("Linear", lambda: Linear(N_IN, 3, seed=0, dtype="float64"), 3, _torch_linear),
    LayerCase("Linear-nobias", lambda: Linear(N_IN, 4, bias=False, seed=1, dtype="float64"), 4,
              lambda t, x, layer: x @ t.tensor(layer.weight).T),
    LayerCase("Identity", Identity, N_IN, lambda t, x, layer: x),
    LayerCase("Sigmoid", Sigmoid, N_IN, lambda t, x, layer: t.sigmoid(x)),
    LayerCase("Tanh", Tanh, N_IN, lambda t, x, layer: t.tanh(x)),
    LayerCase("ReLU", ReLU, N_IN, lambda t, x, layer: t.relu(x)),
    LayerCase("LeakyReLU", lambda: LeakyReLU(0.1), N_IN,
              lambda t, x, layer: t.nn.functional.leaky_relu(x, 0.1)),
    LayerCase("Softplus", Softplus, N_IN, lambda t, x, layer: t.nn.functional.softplus(x)),
    LayerCase("GELU", GELU, N_IN, lambda t, x, layer: t.nn.functional.gelu(x)),
    LayerCase("GELU-tanh", lambda: GELU("tanh"), N_IN,
              lambda t, x, layer: t.nn.functional.gelu(x, approximate="tanh")),
    LayerCase("Softmax", Softmax, N_IN, lambda t, x, layer: t.softmax(x, dim=1)),
    LayerCase("Dropout", lambda: Dropout(0.3, seed=0), N_IN,
              lambda t, x, layer: x * t.tensor(layer._scale)),
]
IDS = [case.name for case in LAYERS]


def _inputs(batch: int = 4, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(batch, N_IN)) * 1.5
    # keep away from ReLU's kink so finite differences are meaningful
    x[np.abs(x) < 1e-3] = 0.5
    return x


def _flat_param_fd(layer: Layer, x: np.ndarray) -> np.ndarray:
    """Finite-difference Jacobian of the outputs w.r.t. the layer's flat parameters."""
    theta = layer.flat_params()
    params, grads = np.zeros_like(theta), np.zeros_like(theta)
    layer.bind(params, grads)
    params[:] = theta

    def f(t: np.ndarray) -> np.ndarray:
        params[:] = t
        return layer.forward(x)

    fd = _finite_difference(f, theta, 1e-6)  # (B, m, P)
    params[:] = theta
    return fd


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
def test_vjp_equals_jacobian_rows(case: LayerCase) -> None:
    layer, x = case.make(), _inputs()
    y = layer.forward(x)
    assert y.shape == (x.shape[0], case.n_out)
    v = np.random.default_rng(1).normal(size=y.shape)
    dense = layer.jacobian().dense()
    assert dense.shape == (x.shape[0], case.n_out, N_IN)
    grad_input = layer.backward(v)
    expected = np.einsum("bm,bmn->bn", v, dense)
    assert compare("vjp", grad_input, expected).max_rel_error < 1e-14
    assert compare("operator vjp", layer.jacobian().vjp(v), expected).max_rel_error < 1e-14


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
def test_jvp_equals_jacobian_columns(case: LayerCase) -> None:
    layer, x = case.make(), _inputs()
    layer.forward(x)
    u = np.random.default_rng(2).normal(size=x.shape)
    expected = np.einsum("bmn,bn->bm", layer.jacobian().dense(), u)
    assert compare("jvp", layer.jvp(u), expected).max_rel_error < 1e-14
    assert compare("operator jvp", layer.jacobian().jvp(u), expected).max_rel_error < 1e-14


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
def test_dot_product_vjp_jvp(case: LayerCase) -> None:
    """⟨VJP(v), u⟩ = ⟨v, JVP(u)⟩: the two modes describe the same linear map."""
    layer, x = case.make(), _inputs()
    y = layer.forward(x)
    rng = np.random.default_rng(3)
    v, u = rng.normal(size=y.shape), rng.normal(size=x.shape)
    lhs = np.vdot(layer.backward(v), u)
    rhs = np.vdot(v, layer.jvp(u))
    assert lhs == pytest.approx(rhs, rel=1e-13)


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
def test_jacobian_matches_finite_differences(case: LayerCase) -> None:
    layer, x = case.make(), _inputs()
    layer.training = False if isinstance(layer, Dropout) else layer.training
    layer.forward(x)
    dense = layer.jacobian().dense()
    fd = _finite_difference(layer.forward, x, 1e-6)
    fd = np.stack([fd[b, :, b, :] for b in range(x.shape[0])])
    assert compare("fd", dense, fd).max_rel_error < FD_RTOL


@pytest.mark.parametrize("case", [c for c in LAYERS if c.name.startswith("Linear")],
                         ids=lambda c: c.name)
def test_parameter_jacobian(case: LayerCase) -> None:
    """∂s/∂θ = [I ⊗ xᵀ, I]: the Kronecker form against finite differences and backward."""
    layer, x = case.make(), _inputs()
    layer.forward(x)
    pj = layer.param_jacobian()
    assert pj is not None
    dense = pj.dense()
    assert dense.shape == (x.shape[0], case.n_out, layer.n_params)
    assert compare("fd", dense, _flat_param_fd(layer, x)).max_rel_error < FD_RTOL
    # backward's weight gradient is the batch sum of the per-sample VJPs
    v = np.random.default_rng(4).normal(size=(x.shape[0], case.n_out))
    layer.backward(v)
    summed = pj.vjp(v).sum(axis=0)
    assert compare("grad", layer.flat_grads(), summed).max_rel_error < 1e-14
    # parameter JVP against the dense Jacobian
    direction = np.random.default_rng(5).normal(size=layer.n_params)
    expected = dense @ direction
    got = layer.jvp(np.zeros_like(x), direction)
    assert compare("param jvp", got, expected).max_rel_error < 1e-14


@pytest.mark.parametrize("case", [c for c in LAYERS if c.torch_fn], ids=lambda c: c.name)
def test_against_pytorch(case: LayerCase) -> None:
    torch = pytest.importorskip("torch")
    layer, x = case.make(), _inputs()
    y = layer.forward(x)
    v = np.random.default_rng(6).normal(size=y.shape)
    grad_input = layer.backward(v)
    xt = torch.tensor(x, requires_grad=True)
    params = []
    if isinstance(layer, Linear):
        wt = torch.tensor(layer.weight, requires_grad=True)
        params.append(wt)
        yt = xt @ wt.T
        if layer.bias is not None:
            bt = torch.tensor(layer.bias, requires_grad=True)
            params.append(bt)
            yt = yt + bt
    else:
        yt = case.torch_fn(torch, xt, layer)  # type: ignore[misc]
    assert compare("forward", y, yt.detach().numpy()).max_rel_error < TORCH_RTOL
    grads = torch.autograd.grad(yt, [xt, *params], torch.tensor(v), allow_unused=True)
    assert compare("grad_input", grad_input, grads[0].numpy()).max_rel_error < TORCH_RTOL
    if params:
        torch_flat = np.concatenate([g.numpy().reshape(-1) for g in grads[1:]])
        assert compare("grad_params", layer.flat_grads(), torch_flat).max_rel_error < TORCH_RTOL


# --- losses --------------------------------------------------------------------------


@dataclass
class LossCase:
    name: str
    loss: Any
    target: Callable[[np.random.Generator, int, int], np.ndarray]
    torch_value: Callable[..., Any]


def _onehot(rng: np.random.Generator, b: int, m: int) -> np.ndarray:
    return np.eye(m)[rng.integers(0, m, b)]


LOSSES = [
    LossCase("mse-mean", MSELoss(), lambda r, b, m: r.normal(size=(b, m)),
             lambda t, z, d, b: 0.5 * ((z - d) ** 2).sum() / b),
    LossCase("mse-sum", MSELoss("sum"), lambda r, b, m: r.normal(size=(b, m)),
             lambda t, z, d, b: 0.5 * ((z - d) ** 2).sum()),
    LossCase("ce-labels", CrossEntropyLoss(), lambda r, b, m: r.integers(0, m, b),
             lambda t, z, d, b: t.nn.functional.cross_entropy(z, d, reduction="sum") / b),
    LossCase("ce-onehot", CrossEntropyLoss("sum"), _onehot,
             lambda t, z, d, b: t.nn.functional.cross_entropy(z, d, reduction="sum")),
    # rows that do not sum to 1 (counts, smoothed labels): the gradient is s·softmax − d
    LossCase("ce-unnormalised", CrossEntropyLoss(), lambda r, b, m: r.uniform(0, 2, (b, m)),
             lambda t, z, d, b: t.nn.functional.cross_entropy(z, d, reduction="sum") / b),
    LossCase("bce", BCEWithLogitsLoss(), lambda r, b, m: r.uniform(size=(b, m)),
             lambda t, z, d, b: t.nn.functional.binary_cross_entropy_with_logits(
                 z, d, reduction="sum") / b),
]


def _loss_inputs(case: LossCase) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    prediction = rng.normal(size=(6, 4)) * 3
    target = case.loss.prepare_target(case.target(rng, 6, 4), 4)
    return prediction, target


@pytest.mark.parametrize("case", LOSSES, ids=lambda c: c.name)
def test_loss_gradient_and_curvature_finite_differences(case: LossCase) -> None:
    prediction, target = _loss_inputs(case)
    value, grad = case.loss.value_and_grad(prediction.copy(), target)
    fd = _finite_difference(
        lambda z: np.asarray(case.loss.value_and_grad(z, target)[0]), prediction, 1e-6)
    assert compare("grad", grad, fd).max_rel_error < FD_RTOL
    # the curvature is the Jacobian of the gradient, per sample (block-diagonal)
    hessian = case.loss.curvature(prediction, target).dense()
    fd_h = _finite_difference(lambda z: case.loss.value_and_grad(z, target)[1], prediction, 1e-5)
    fd_h = np.stack([fd_h[b, :, b, :] for b in range(prediction.shape[0])])
    assert compare("curvature", hessian, fd_h).max_rel_error < 1e-6
    assert case.loss(prediction, target) == pytest.approx(value, rel=1e-15)  # checked path
    per_sample = case.loss.per_sample(prediction, target)
    assert per_sample.shape == (prediction.shape[0],)
    reduce = np.mean if case.loss.reduction == "mean" else np.sum
    assert float(reduce(per_sample)) == pytest.approx(value, rel=1e-14)


@pytest.mark.parametrize("case", LOSSES, ids=lambda c: c.name)
def test_loss_against_pytorch(case: LossCase) -> None:
    torch = pytest.importorskip("torch")
    prediction, target = _loss_inputs(case)
    value, grad = case.loss.value_and_grad(prediction.copy(), target)
    zt = torch.tensor(prediction, requires_grad=True)
    dt = torch.tensor(target)
    vt = case.torch_value(torch, zt, dt, prediction.shape[0])
    (gt,) = torch.autograd.grad(vt, zt)
    assert value == pytest.approx(vt.item(), rel=TORCH_RTOL)
    assert compare("grad", grad, gt.numpy()).max_rel_error < TORCH_RTOL


def test_cross_entropy_curvature_root_carries_the_row_total() -> None:
    rng = np.random.default_rng(3)
    z, d = rng.normal(size=(5, 4)), rng.uniform(0, 2, (5, 4))
    loss = CrossEntropyLoss("sum")
    root = loss.curvature_sqrt(z, d)
    hessian = loss.curvature(z, d).dense()
    assert compare("CᵀC", np.einsum("bkm,bkn->bmn", root, root), hessian).max_rel_error < 1e-12


def test_losses_are_stable_for_huge_logits() -> None:
    z = np.array([[1000.0, -1000.0], [-800.0, 800.0]])
    value, grad = CrossEntropyLoss().value_and_grad(z, np.array([0, 0]))
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx(800.0)
    value, grad = BCEWithLogitsLoss().value_and_grad(z, np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert value == pytest.approx(1600.0 / 2) and np.isfinite(grad).all()


def test_mse_is_the_seeds_half_squared_norm() -> None:
    z, d = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [3.0, 4.0]])
    # per sample ½‖d − z‖² = 2.5 and 12.5; mean 7.5, sum 15
    assert MSELoss()(z, d) == pytest.approx(7.5)
    assert MSELoss("sum")(z, d) == pytest.approx(15.0)


# --- float32 and random shapes ---------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 7),
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 6),
    activation=st.sampled_from(["tanh", "sigmoid", "relu", "leaky_relu", "softplus", "gelu",
                                "identity", "softmax"]),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_keep_dtype_and_adjointness(batch: int, n_in: int, n_out: int,
                                                   activation: str, dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    linear = Linear(n_in, n_out, seed=rng, dtype=dtype)
    act = get_activation(activation)
    x = rng.normal(size=(batch, n_in)).astype(dtype)
    y = act.forward(linear.forward(x))
    assert y.shape == (batch, n_out) and y.dtype == np.dtype(dtype)
    v = rng.normal(size=y.shape).astype(dtype)
    g = linear.backward(act.backward(v))
    assert g is not None and g.dtype == np.dtype(dtype) and g.shape == x.shape
    assert linear.grad_weight.dtype == np.dtype(dtype)
    u = rng.normal(size=x.shape).astype(dtype)
    jv = act.jvp(linear.jvp(u))
    assert jv.dtype == np.dtype(dtype)
    tol = 1e-4 if dtype == "float32" else 1e-12
    lhs, rhs = float(np.vdot(g, u)), float(np.vdot(v, jv))
    assert abs(lhs - rhs) <= tol * (1 + abs(lhs) + float(np.abs(g).sum() * np.abs(u).max()))


# --- construction and errors -------------------------------------------------------------


def test_linear_shapes_and_views() -> None:
    layer = Linear(3, 2, seed=0)
    assert layer.weight.shape == (2, 3) and layer.bias is not None and layer.bias.shape == (2,)
    assert layer.weight.dtype == np.float32
    assert not np.any(layer.bias)


@pytest.mark.parametrize("layout", ["csr", "csc", "csr_array"])
def test_linear_works_on_sparse_input_directly(layout: str, monkeypatch: Any) -> None:
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(7, 5)) * (rng.uniform(size=(7, 5)) < 0.3)
    x = sparse.csr_array(dense) if layout == "csr_array" else sparse.csr_matrix(dense).asformat(layout)
    layer = Linear(5, 3, seed=1, dtype="float64")
    delta = rng.normal(size=(7, 3))
    out_dense = layer.forward(dense)
    layer.backward(delta, input_grad=False)
    grad_dense = layer.grad_weight.copy()
    # the product and the weight gradient never densify the input
    monkeypatch.setattr(type(x), "toarray", lambda *a, **k: pytest.fail("densified"))
    out_sparse = layer.forward(x)
    layer.grad_weight[...] = 0.0
    grad_input = layer.backward(delta)
    assert isinstance(out_sparse, np.ndarray) and isinstance(grad_input, np.ndarray)
    np.testing.assert_allclose(out_sparse, out_dense, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(layer.grad_weight, grad_dense, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad_input, delta @ layer.weight, rtol=1e-13)
    tangent = rng.normal(size=layer.n_params)
    np.testing.assert_allclose(layer.jvp(np.zeros((7, 5)), tangent),
                               dense @ tangent[:15].reshape(3, 5).T + tangent[15:], rtol=1e-12)


def test_initialisation_is_reproducible_and_scaled() -> None:
    a, b = Linear(100, 50, seed=3), Linear(100, 50, seed=3)
    assert np.array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, Linear(100, 50, seed=4).weight)
    limit = np.sqrt(6 / 150)
    assert np.abs(a.weight).max() <= limit and np.abs(a.weight).max() > 0.9 * limit
    he = Linear(100, 50, init="he_normal", seed=0)
    assert np.std(he.weight) == pytest.approx(np.sqrt(2 / 100), rel=0.1)


def test_config_round_trip() -> None:
    for layer in (Linear(3, 2, bias=False), LeakyReLU(0.2), GELU("tanh"), Dropout(0.1), Tanh()):
        rebuilt = layer_from_config(layer.get_config())
        assert rebuilt.get_config() == layer.get_config()


def test_layer_errors() -> None:
    with pytest.raises(ValueError, match=r"expects input of shape \(n_samples, 3\); got \(2, 4\)"):
        Linear(3, 2).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        Linear(3, 2).backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        Tanh().jacobian()
    with pytest.raises(ValueError, match="in_features must be an integer >= 1; got 0"):
        Linear(0, 2)
    with pytest.raises(ValueError, match="init must be one of"):
        Linear(2, 2, init="xavier")
    with pytest.raises(TypeError, match="dtype must be float32 or float64; got int32"):
        Linear(2, 2, dtype="int32")
    with pytest.raises(ValueError, match=r"'p' parameter of Dropout must be in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        get_activation("swish")
    with pytest.raises(ValueError, match="unknown layer type 'Conv2d'"):
        layer_from_config({"type": "Conv2d"})


def test_loss_errors() -> None:
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\); got 5 at index 1"):
        CrossEntropyLoss()(np.zeros((2, 3)), [0, 5])
    with pytest.raises(ValueError, match=r"labels must be integers; got 0\.5"):
        check_labels([0.5], 3)
    with pytest.raises(ValueError, match="at least 2 outputs"):
        CrossEntropyLoss()(np.zeros((2, 1)), [0, 1])
    with pytest.raises(ValueError, match="target contains NaN or infinity"):
        MSELoss()(np.zeros((2, 1)), [0.0, np.nan])
    with pytest.raises(ValueError, match="network has 3 outputs"):
        MSELoss()(np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match="target has 2 columns but the network has 3"):
        MSELoss()(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="prediction has 2 samples but target has 3"):
        MSELoss()(np.zeros((2, 1)), np.zeros(3))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        BCEWithLogitsLoss()(np.zeros((1, 1)), [2.0])
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum'; got 'avg'"):
        MSELoss("avg")
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("hinge")
    with pytest.raises(TypeError, match="must hold numbers"):
        MSELoss()(np.zeros((1, 1)), np.array(["a"]))


def test_label_mistakes_get_the_right_hint() -> None:
    with pytest.raises(ValueError, match="look like class labels: train with loss='cross_entropy'"):
        MSELoss().prepare_target(np.array([0, 2, 1]), 3)
    codes = CrossEntropyLoss().prepare_target(np.array([[0], [2], [1]]), 3)  # a label column
    assert codes.tolist() == [0, 2, 1]
