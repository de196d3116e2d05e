"""The Laplace approximation: against a dense reference, laplace-torch, and its promises."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from jacnet import jacobian, mlp
from jacnet.laplace import Laplace, br_precisions
from jacnet.losses import Loss
from jacnet.optim import BayesianRegularization, LevenbergMarquardt


def _data(n: int = 40, n_in: int = 2, n_out: int = 2, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, n_in))
    y = np.column_stack([np.sin(3 * X[:, 0]) + X[:, -1] ** (k + 1) for k in range(n_out)])
    return X, y + 0.1 * rng.standard_normal(y.shape), rng.uniform(-2, 2, (15, n_in))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _dense_cov(model, X, Xt, alpha_diag, beta, hessians=None, cols=slice(None)):
    """J(Xt) (β JᵀHJ + diag α)⁻¹ J(Xt)ᵀ per sample, from materialised Jacobians."""
    J = jacobian(model, X, wrt="params")[:, :, cols]
    if hessians is None:
        G = np.einsum("bmp,bmq->pq", J, J)
    else:
        G = np.einsum("bmp,bmn,bnq->pq", J, hessians, J)
    cov_w = np.linalg.inv(beta * G + np.diag(alpha_diag))
    Jt = jacobian(model, Xt, wrt="params")[:, :, cols]
    return np.einsum("bmp,pq,bnq->bmn", Jt, cov_w, Jt), G


def test_full_regression_matches_dense_reference() -> None:
    X, y, Xt = _data()
    model = mlp([2, 6, 2], seed=1, dtype="float64")
    la = Laplace(model, structure="full", prior_precision=0.7, noise_precision=30.0).fit(X, y)
    cov, _ = _dense_cov(model, X, Xt, np.full(model.n_params, 0.7), 30.0)
    mean, got = la.function_covariance(Xt)
    np.testing.assert_allclose(got, cov, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mean, model(Xt), rtol=0, atol=1e-14)
    pred = la.predictive(Xt)
    ref_var = np.diagonal(cov, axis1=1, axis2=2) + 1 / 30.0
    np.testing.assert_allclose(pred.var, ref_var, rtol=1e-10)
    np.testing.assert_allclose(pred.aleatoric_var, 1 / 30.0)
    np.testing.assert_allclose(pred.std, np.sqrt(ref_var), rtol=1e-10)


def test_per_block_prior_precision_matches_dense_reference() -> None:
    X, y, Xt = _data()
    model = mlp([2, 6, 2], seed=1, dtype="float64")
    per_block = [0.5, 2.0, 1.5, 3.0]  # 0.weight, 0.bias, 2.weight, 2.bias
    la = Laplace(model, structure="full", prior_precision=per_block,
                 noise_precision=10.0).fit(X, y)
    diag = np.concatenate([np.full(s.stop - s.start, a)
                           for s, a in zip(model.layer_block_slices(), per_block)])
    cov, _ = _dense_cov(model, X, Xt, diag, 10.0)
    np.testing.assert_allclose(la.function_covariance(Xt)[1], cov, rtol=1e-10, atol=1e-14)


def test_last_layer_matches_dense_reference_on_its_columns() -> None:
    X, y, Xt = _data()
    model = mlp([2, 6, 5, 2], seed=2, dtype="float64")
    la = Laplace(model, structure="last_layer", prior_precision=0.3,
                 noise_precision=20.0).fit(X, y)
    cols = model.layer_slices[4]
    cov, _ = _dense_cov(model, X, Xt, np.full(cols.stop - cols.start, 0.3), 20.0, cols=cols)
    assert la.n_params_ == cols.stop - cols.start == 12
    np.testing.assert_allclose(la.function_covariance(Xt)[1], cov, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n_out", [3, 1])
def test_classification_curvature_and_probit_match_dense_reference(n_out: int) -> None:
    rng = np.random.default_rng(3)
    X, Xt = rng.standard_normal((60, 2)), rng.standard_normal((10, 2))
    labels = rng.integers(0, max(n_out, 2), 60)
    model = mlp([2, 5, n_out], seed=3, dtype="float64")
    z = model(X)
    if n_out == 1:
        s = 1 / (1 + np.exp(-z))
        hess = (s * (1 - s))[:, :, None]
    else:
        p = _softmax(z)
        hess = np.einsum("bi,ij->bij", p, np.eye(n_out)) - p[:, :, None] * p[:, None, :]
    la = Laplace(model, "classification", prior_precision=0.9).fit(X, labels)
    cov, _ = _dense_cov(model, X, Xt, np.full(model.n_params, 0.9), 1.0, hessians=hess)
    np.testing.assert_allclose(la.function_covariance(Xt)[1], cov, rtol=1e-10, atol=1e-14)
    zt = model(Xt) / np.sqrt(1 + math.pi / 8 * np.diagonal(cov, axis1=1, axis2=2))
    ref = _softmax(np.column_stack([np.zeros(10), zt[:, 0]]) if n_out == 1 else zt)
    proba = la.predict_proba(Xt)
    np.testing.assert_allclose(proba, ref, rtol=1e-10)
    mc = la.predict_proba(Xt, method="mc", n_samples=4000, seed=0)
    np.testing.assert_allclose(mc.sum(axis=1), 1.0)
    assert np.max(np.abs(mc - proba)) < 0.05


def test_evidence_is_stationary_and_log_z_matches_dense_formula() -> None:
    X, y, _ = _data(n=60, n_out=1)
    model = mlp([2, 6, 1], seed=4, dtype="float64")
    LevenbergMarquardt().fit(model, X, y, epochs=30)
    la = Laplace(model).fit(X, y)
    alpha, beta = la.alpha_, la.beta_

    def log_z(a: float, b: float) -> float:
        return Laplace(model, prior_precision=a, noise_precision=b).fit(X, y) \
            .log_marginal_likelihood_

    J = jacobian(model, X, wrt="params").reshape(60, -1)
    e = model(X) - y
    P, theta = model.n_params, model.params
    ref = (-beta / 2 * np.sum(e**2) - alpha / 2 * theta @ theta + 60 / 2 * np.log(beta / 2 / np.pi)
           + P / 2 * np.log(alpha) - 0.5 * np.linalg.slogdet(beta * J.T @ J + alpha * np.eye(P))[1])
    assert la.log_marginal_likelihood_ == pytest.approx(ref, rel=1e-10)
    assert log_z(alpha, beta) == pytest.approx(la.log_marginal_likelihood_, rel=1e-12)
    h = 1e-4  # ∂ log Z / ∂ log α and ∂ / ∂ log β vanish at the fixed point
    for da, db in ((h, 0.0), (0.0, h)):
        slope = (log_z(alpha * math.exp(da), beta * math.exp(db))
                 - log_z(alpha * math.exp(-da), beta * math.exp(-db))) / (2 * h)
        assert abs(slope) < 1e-5
    # and a maximum: moving away lowers the evidence
    assert log_z(2 * alpha, beta) < la.log_marginal_likelihood_
    assert log_z(alpha, beta / 2) < la.log_marginal_likelihood_


def test_br_precisions_reproduce_the_evidence_fixed_point() -> None:
    X, y, _ = _data(n=60, n_out=1)
    model = mlp([2, 6, 1], seed=5, dtype="float64")
    br = BayesianRegularization()
    br.fit(model, X, y, epochs=100)
    alpha, beta = br_precisions(br)
    given = Laplace(model, prior_precision=alpha, noise_precision=beta).fit(X, y)
    assert given.effective_n_params_ == pytest.approx(br.gamma, rel=1e-2)  # BR: γ of the previous step
    post_hoc = Laplace(model).fit(X, y)  # BR converged: the evidence agrees
    assert post_hoc.alpha_ == pytest.approx(alpha, rel=1e-2)
    assert post_hoc.beta_ == pytest.approx(beta, rel=1e-2)


def test_synthetic_noise_coverage_and_growth_outside_the_data() -> None:
    """σ = 0.1 known noise, 5 seeds: estimate within 10%, ±2σ covers 95% ± 2%, σ(x) grows
    outside [-1, 1]."""
    def truth(x: np.ndarray) -> np.ndarray:
        return np.sin(3 * x) + 0.3 * x**2

    for seed in range(5):  # the seeds of benchmarks/bench_laplace.py --sections synthetic
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1, 1, (300, 1))
        y = truth(X) + 0.1 * rng.standard_normal(X.shape)
        Xt = rng.uniform(-1, 1, (2000, 1))
        yt = truth(Xt) + 0.1 * rng.standard_normal(Xt.shape)
        model = mlp([1, 16, 1], seed=seed, dtype="float64")
        BayesianRegularization().fit(model, X, y, epochs=200)
        la = Laplace(model).fit(X, y)
        assert abs(1 / math.sqrt(la.beta_) - 0.1) < 0.01
        pred = la.predictive(Xt)
        coverage = np.mean(np.abs(yt - pred.mean) <= 2 * pred.std)
        assert abs(coverage - 0.95) <= 0.02
        std = la.predictive(np.array([[0.0], [1.5], [3.0]])).std[:, 0]
        assert std[0] < std[1] < std[2]


def test_last_layer_on_a_large_network_never_forms_p_by_p() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 50)), rng.standard_normal((200, 1))
    model = mlp([50, 300, 300, 1], seed=0, dtype="float64")
    assert model.n_params >= 100_000
    tracemalloc.start()
    la = Laplace(model).fit(X, y)
    pred = la.predictive(X[:50])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert la.structure_ == "last_layer" and la.n_params_ == 301
    assert pred.std.shape == (50, 1) and np.all(pred.std > 0)
    # A P × P float64 array alone would be 8 P² bytes (90 GB); the structure needs MiBs:
    # the float64 copy of the network, features, and P_last × P_last matrices.
    assert peak < 16 * 2**20


def test_structure_auto_rule() -> None:
    X, y, _ = _data(n=10, n_out=1)
    small = Laplace(mlp([2, 4, 1], seed=0, dtype="float64"), prior_precision=1.0,
                    noise_precision=1.0).fit(X, y)
    assert small.structure_ == "full"
    big = Laplace(mlp([2, 45, 45, 1], seed=0), prior_precision=1.0, noise_precision=1.0)
    assert big.fit(X, y).structure_ == "last_layer"  # 2251 > 2048 parameters


def test_float32_model_is_handled_in_float64() -> None:
    X, y, Xt = _data()
    model32 = mlp([2, 6, 2], seed=1)
    la = Laplace(model32, prior_precision=0.7, noise_precision=30.0).fit(X, y)
    ref = Laplace(model32.astype("float64"), prior_precision=0.7, noise_precision=30.0).fit(X, y)
    assert la.predictive(Xt).std.dtype == np.float64
    np.testing.assert_array_equal(la.predictive(Xt).std, ref.predictive(Xt).std)


def test_laplace_torch_agrees_on_predictive_std() -> None:
    torch = pytest.importorskip("torch")
    laplace_torch = pytest.importorskip("laplace")
    curvature = pytest.importorskip("laplace.curvature")
    X, y, Xt = _data(n=50)
    model = mlp([2, 8, 2], seed=0, dtype="float64")
    LevenbergMarquardt().fit(model, X, y, epochs=20)
    alpha, beta = 0.7, 30.0
    pred = Laplace(model, structure="full", prior_precision=alpha,
                   noise_precision=beta).fit(X, y).predictive(Xt)
    # laplace-torch makes some tensors (the prior, the noise) in the default dtype.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        std, f_mu = _laplace_torch_std(torch, laplace_torch, curvature, model, X, y, Xt,
                                       alpha, beta)
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_allclose(pred.std, std, rtol=1e-6)
    np.testing.assert_allclose(pred.mean, f_mu, rtol=1e-10, atol=1e-12)


def _laplace_torch_std(torch, laplace_torch, curvature, model, X, y, Xt, alpha, beta):
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.tensor(model.params), net.parameters())
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(y)), batch_size=50)
    la = laplace_torch.Laplace(net, "regression", subset_of_weights="all",
                               hessian_structure="full", prior_precision=alpha,
                               sigma_noise=1 / math.sqrt(beta), backend=curvature.CurvlinopsGGN)
    la.fit(loader)
    f_mu, f_var = la(torch.tensor(Xt), pred_type="glm")
    std = np.sqrt(np.diagonal(f_var.detach().numpy(), axis1=1, axis2=2) + 1 / beta)
    return std, f_mu.detach().numpy()


class _NoCurvature(Loss):
    pass


def test_errors() -> None:
    X, y, _ = _data(n=10, n_out=1)
    model = mlp([2, 4, 1], seed=0, dtype="float64")
    with pytest.raises(TypeError, match="model must be a jacnet Sequential"):
        Laplace("not a model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no likelihood with a known curvature"):
        Laplace(model, _NoCurvature())
    with pytest.raises(ValueError, match="likelihood"):
        Laplace(model, "poisson")
    with pytest.raises(ValueError, match="structure"):
        Laplace(model, structure="kron")
    with pytest.raises(ValueError, match="prior_precision must be a positive"):
        Laplace(model, prior_precision=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="one positive value per parameter block \\(4 here"):
        Laplace(model, prior_precision=[1.0, 2.0], noise_precision=1.0).fit(X, y)
    with pytest.raises(ValueError, match="give noise_precision too"):
        Laplace(model, prior_precision=[1.0, 1.0, 1.0, 1.0]).fit(X, y)
    with pytest.raises(ValueError, match="noise_precision applies to regression only"):
        Laplace(model, "classification", noise_precision=1.0)
    with pytest.raises(ValueError, match="must output logits"):
        Laplace(mlp([2, 3, 2], output_activation="softmax", seed=0), "classification")
    la = Laplace(model)
    with pytest.raises(RuntimeError, match="call fit"):
        la.predictive(X)
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples, n_outputs\) = \(10, 1\)"):
        la.fit(X, np.zeros((9, 1)))
    with pytest.raises(ValueError, match="X"):
        la.fit(np.zeros((10, 3)), y)
    la.fit(X, y)
    with pytest.raises(ValueError, match="X"):
        la.predictive(np.zeros((3, 5)))
    with pytest.raises(RuntimeError, match="use predictive"):
        la.predict_proba(X)
    with pytest.raises(ValueError, match="fits the targets exactly"):
        Laplace(model).fit(X, model(X))
    with pytest.raises(ValueError, match="class labels"):
        Laplace(mlp([2, 3, 3], seed=0), "classification").fit(X, np.zeros((10, 3)))
    cls = Laplace(mlp([2, 3, 3], seed=0), "classification").fit(X, np.arange(10) % 3)
    with pytest.raises(RuntimeError, match="use predict_proba"):
        cls.predictive(X)
    with pytest.raises(ValueError, match="method"):
        cls.predict_proba(X, method="laplace_bridge")


def test_state_dict_and_pickle_restore_the_same_predictions() -> None:
    import pickle

    X, y, Xt = _data()
    model = mlp([2, 6, 5, 2], seed=2, dtype="float64")
    for structure in ("full", "last_layer"):
        la = Laplace(model, structure=structure).fit(X, y)
        again = Laplace(model).load_state_dict(la.state_dict())
        np.testing.assert_array_equal(again.predictive(Xt).std, la.predictive(Xt).std)
        np.testing.assert_array_equal(again.beta_, la.beta_)
        assert again.structure_ == structure
        loaded = pickle.loads(pickle.dumps(la))
        np.testing.assert_array_equal(loaded.predictive(Xt).std, la.predictive(Xt).std)
    with pytest.raises(ValueError, match="saved for another network"):
        Laplace(mlp([2, 4, 2], seed=0, dtype="float64")).load_state_dict(la.state_dict())
    with pytest.raises(ValueError, match="lacks"):
        Laplace(model).load_state_dict({"structure": "full"})
    with pytest.raises(ValueError, match="for likelihood 'regression'"):
        Laplace(mlp([2, 6, 5, 2], seed=2), "classification").load_state_dict(la.state_dict())


def test_one_noise_precision_per_output_matches_dense_reference() -> None:
    X, y, Xt = _data()
    model = mlp([2, 6, 2], seed=1, dtype="float64")
    beta = np.array([30.0, 5.0])
    la = Laplace(model, structure="full", prior_precision=0.7, noise_precision=beta).fit(X, y)
    hess = np.broadcast_to(np.diag(beta), (X.shape[0], 2, 2))
    cov, _ = _dense_cov(model, X, Xt, np.full(model.n_params, 0.7), 1.0, hessians=hess)
    np.testing.assert_allclose(la.function_covariance(Xt)[1], cov, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(la.predictive(Xt).aleatoric_var, np.broadcast_to(1 / beta, (15, 2)))
    with pytest.raises(ValueError, match="noise_precision has 3 values but the network has 2"):
        Laplace(model, prior_precision=1.0, noise_precision=[1.0, 2.0, 3.0]).fit(X, y)


def test_evidence_per_output_finds_each_noise_and_is_stationary() -> None:
    rng = np.random.default_rng(7)
    X = rng.uniform(-1, 1, (300, 1))
    y = np.column_stack([np.sin(3 * X[:, 0]), 2 * np.cos(2 * X[:, 0])])
    y = y + np.array([0.1, 0.3]) * rng.standard_normal(y.shape)
    model = mlp([1, 12, 2], seed=0, dtype="float64")
    LevenbergMarquardt().fit(model, X, y, epochs=100)
    la = Laplace(model).fit(X, y)
    assert la.beta_.shape == (2,)
    np.testing.assert_allclose(1 / np.sqrt(la.beta_), [0.1, 0.3], rtol=0.1)
    alpha, beta = la.alpha_, la.beta_

    def log_z(a: float, b: np.ndarray) -> float:
        return Laplace(model, prior_precision=a, noise_precision=b).fit(X, y) \
            .log_marginal_likelihood_

    J = jacobian(model, X, wrt="params")
    e = model(X) - y
    P, theta, N = model.n_params, model.params, X.shape[0]
    A = np.einsum("bmp,m,bmq->pq", J, beta, J) + alpha * np.eye(P)
    ref = (np.sum(-beta / 2 * np.sum(e**2, axis=0) + N / 2 * np.log(beta / 2 / np.pi))
           - alpha / 2 * theta @ theta + P / 2 * np.log(alpha) - 0.5 * np.linalg.slogdet(A)[1])
    assert la.log_marginal_likelihood_ == pytest.approx(ref, rel=1e-10)
    h = 1e-4
    for step in ((h, 0.0, 0.0), (0.0, h, 0.0), (0.0, 0.0, h)):
        da, db = step[0], np.array(step[1:])
        slope = (log_z(alpha * math.exp(da), beta * np.exp(db))
                 - log_z(alpha * math.exp(-da), beta * np.exp(-db))) / (2 * h)
        assert abs(slope) < 1e-4
