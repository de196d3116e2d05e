"""Sequential, mlp, whole-network Jacobians and the derivative checks."""

from __future__ import annotations

import numpy as np
import pytest

import jacnet
from jacnet import (
    BlockRow,
    Dropout,
    GradientCheckError,
    Kronecker,
    Linear,
    Sequential,
    Tanh,
    gradcheck,
    jacobian,
    jacobian_check,
    mlp,
)
from jacnet.checks import compare

ACTIVATIONS = ["tanh", "sigmoid", "relu", "leaky_relu", "softplus", "gelu", "identity"]
LOSS_TARGETS = {
    "mse": lambda rng, b, m: rng.normal(size=(b, m)),
    "cross_entropy": lambda rng, b, m: rng.integers(0, m, b),
    "bce": lambda rng, b, m: rng.uniform(size=(b, m)),
}


def _data(b: int = 5, n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, n))


# --- the flat parameter vector -----------------------------------------------------------


def test_parameters_are_views_into_one_flat_vector() -> None:
    model = mlp([3, 4, 2], seed=0)
    first, second = model.layers[0], model.layers[2]
    assert isinstance(first, Linear) and isinstance(second, Linear)
    assert np.shares_memory(first.weight, model.params)
    assert np.shares_memory(second.grad_weight, model.grads)
    # θ = (vec(V), b₁, vec(W), b₂), vec row-major
    np.testing.assert_array_equal(model.params[:12], first.weight.reshape(-1))
    np.testing.assert_array_equal(model.params[16:24], second.weight.reshape(-1))
    model.params[0] = 42.0
    assert first.weight[0, 0] == 42.0
    names = dict(model.named_parameters())
    assert names["2.bias"].shape == (2,) and np.shares_memory(names["2.bias"], model.params)
    assert model.parameter_slices()["2.weight"] == slice(16, 24)
    assert model.locate(17) == "2.weight[0, 1]"


def test_backward_overwrites_gradients_and_returns_input_gradient() -> None:
    model = mlp([3, 4, 2], seed=0, dtype="float64")
    X = _data()
    model(X)
    g = np.ones((5, 2))
    first = model.backward(g)
    grads = model.grads.copy()
    model(X)
    second = model.backward(g)
    np.testing.assert_array_equal(model.grads, grads)  # written, not accumulated
    np.testing.assert_array_equal(first, second)
    model(X)
    assert model.backward(g, input_grad=False) is None
    np.testing.assert_array_equal(model.grads, grads)


def test_float32_by_default_and_float64_on_request() -> None:
    assert mlp([2, 3, 1]).params.dtype == np.float32
    model = mlp([2, 3, 1], dtype="float64")
    assert model.params.dtype == np.float64
    assert model(np.zeros((1, 2), np.float32)).dtype == np.float64
    model32 = model.astype("float32")
    assert model32.params.dtype == np.float32 and model32(np.zeros((1, 2))).dtype == np.float32
    np.testing.assert_allclose(model32.params, model.params, rtol=1e-7)
    copy = model.copy()
    copy.params[:] = 0.0
    assert np.any(model.params != 0.0)


def test_config_round_trip_and_seeded_mlp() -> None:
    a, b = mlp([4, 6, 3], activation="relu", seed=5), mlp([4, 6, 3], activation="relu", seed=5)
    np.testing.assert_array_equal(a.params, b.params)
    rebuilt = Sequential.from_config(a.get_config(), params=a.params)
    X = _data(n=4)
    np.testing.assert_array_equal(rebuilt(X), a(X))


def test_dropout_only_in_training() -> None:
    model = Sequential([Linear(3, 50, seed=0, dtype="float64"), Dropout(0.5, seed=1)])
    X = _data()
    train_out = model(X)
    assert np.mean(train_out == 0) > 0.2
    model.eval()
    np.testing.assert_array_equal(model(X), model(X))
    assert not np.any(model(X) == 0)


def test_jvp_matches_dense_jacobians() -> None:
    model = mlp([3, 4, 2], activation="gelu", seed=0, dtype="float64")
    X = _data()
    rng = np.random.default_rng(1)
    tangent, direction = rng.normal(size=X.shape), rng.normal(size=model.n_params)
    out, t = model.jvp(X, tangent=tangent, param_tangent=direction)
    expected = (np.einsum("bmn,bn->bm", jacobian(model, X), tangent)
                + np.einsum("bmp,p->bm", jacobian(model, X, wrt="params"), direction))
    np.testing.assert_allclose(out, model(X))
    np.testing.assert_allclose(t, expected, rtol=1e-12)


# --- whole-network Jacobians ------------------------------------------------------------


def test_parameter_jacobian_is_kronecker_factored() -> None:
    model = mlp([3, 4, 2], seed=0, dtype="float64")
    op = jacobian(model, _data(), wrt="params", structured=True)
    assert isinstance(op, BlockRow)
    assert op.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(isinstance(block, Kronecker) for block in op.blocks)
    first_weight = op.blocks[0]
    assert isinstance(first_weight, Kronecker) and first_weight.left is not None
    assert first_weight.left.shape == (5, 2, 4)  # ∂z/∂s₁ per sample: the factor A of A ⊗ xᵀ
    last_weight = op.blocks[2]
    assert isinstance(last_weight, Kronecker) and last_weight.left is None  # I ⊗ yᵀ itself


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("wrt", ["input", "params"])
def test_jacobian_check_every_activation(activation: str, wrt: str) -> None:
    model = mlp([3, 5, 4, 2], activation=activation, output_activation="softmax", seed=1)
    report = jacobian_check(model, _data(4), wrt=wrt, rtol=1e-7)
    assert report.passed and len(report.comparisons) == 3


@pytest.mark.parametrize("loss", list(LOSS_TARGETS))
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_gradcheck_every_loss(loss: str, activation: str) -> None:
    model = mlp([3, 6, 3], activation=activation, seed=2)
    target = LOSS_TARGETS[loss](np.random.default_rng(3), 5, 3)
    report = gradcheck(model, _data(), target, loss=loss)
    assert report.max_rel_error < 1e-7


def test_checks_report_size_and_location_of_a_wrong_derivative(monkeypatch) -> None:
    """Break Tanh's derivative slightly: the checks must fail and say where."""
    monkeypatch.setattr(Tanh, "_derivative", lambda self, x, y: 1.0 - y * y + 1e-3)
    model = mlp([2, 3, 1], activation="tanh", seed=0)
    with pytest.raises(GradientCheckError,
                       match=r"(?s)FAILED.*finite differences \(params\).*at 0\.weight"):
        gradcheck(model, _data(n=2), np.zeros((5, 1)))
    report = jacobian_check(model, _data(n=2), wrt="input", raise_exception=False)
    assert not report.passed
    assert "sample" in report.worst.location and report.worst.max_abs_error > 1e-5
    assert "Jacobian vs finite differences" in str(report)


def test_whole_network_jacobian_against_pytorch() -> None:
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, jacrev, vmap

    model = mlp([6, 8, 3], activation="tanh", seed=0, dtype="float64")
    X = _data(7, 6)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    net = net.double()
    with torch.no_grad():
        for (_, p), (_, mine) in zip(net.named_parameters(), model.named_parameters()):
            p.copy_(torch.tensor(mine))
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, x):
        return functional_call(net, p, (x[None],))[0]

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, torch.tensor(X))
    torch_params = np.concatenate([jac[k].reshape(7, 3, -1).numpy() for k in params], axis=2)
    assert compare("params", jacobian(model, X, wrt="params"), torch_params).max_rel_error < 1e-12
    jac_x = vmap(jacrev(lambda x: net(x[None])[0]))(torch.tensor(X)).detach().numpy()
    assert compare("input", jacobian(model, X), jac_x).max_rel_error < 1e-12


# --- bad input -------------------------------------------------------------------------


def test_network_errors() -> None:
    with pytest.raises(ValueError,
                       match=r"layer 2 .* takes 5 inputs but the layers before it produce 4"):
        Sequential([Linear(3, 4), Tanh(), Linear(5, 2)])
    with pytest.raises(TypeError, match="mixed dtypes"):
        Sequential([Linear(3, 4, dtype="float64"), Linear(4, 2)])
    with pytest.raises(TypeError, match="layer 1 is ndarray, not a jacnet Layer"):
        Sequential([Linear(3, 4), np.zeros(3)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one layer"):
        Sequential([])
    with pytest.raises(ValueError, match="at least one Linear"):
        Sequential([Tanh()])
    shared = Linear(2, 2)
    Sequential([shared])
    with pytest.raises(ValueError, match="already belongs to another network"):
        Sequential([shared])
    model = mlp([3, 4, 2])
    with pytest.raises(ValueError, match=r"X must have 3 columns \(features\); got shape \(2, 5\)"):
        model(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"X must be a 2-D array.*x\.reshape\(1, -1\)"):
        model(np.zeros(3))
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \[1, 2\]"):
        model(np.array([[0, 0, 0], [0, 0, np.inf]]))
    with pytest.raises(TypeError, match="X must hold numbers"):
        model([["a", "b", "c"]])
    with pytest.raises(RuntimeError, match="before forward"):
        mlp([3, 4, 2]).backward(np.zeros((2, 2), np.float32))
    model(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(n_samples, 2\); got \(2, 3\)"):
        model.backward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="needs \\(26,\\)"):
        Sequential.from_config(model.get_config(), params=np.zeros(3))
    with pytest.raises(ValueError, match="param_tangent must have shape \\(26,\\)"):
        model.jvp(np.zeros((1, 3)), param_tangent=np.zeros(2))
    with pytest.raises(ValueError, match="wrt must be one of 'input', 'params'"):
        jacobian(model, np.zeros((1, 3)), wrt="weights")
    with pytest.raises(ValueError, match="sizes must list at least"):
        mlp([3])


def test_top_level_namespace() -> None:
    for name in jacnet.__all__:
        assert hasattr(jacnet, name), name
