"""Levenberg–Marquardt, Gauss–Newton and Bayesian regularisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from jacnet.network import jacobian, mlp
from jacnet.optim import (
    OPTIMIZERS,
    BayesianRegularization,
    GaussNewton,
    LevenbergMarquardt,
    get_optimizer,
)


def _data(n_samples, n_in, n_out, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n_samples, n_in))
    Y = np.sin(2 * X.sum(axis=1, keepdims=True) + np.arange(n_out))
    return X, Y


@pytest.mark.parametrize("sizes, n_samples", [
    ([1, 5, 1], 50),      # primal, one output
    ([2, 6, 3], 40),      # primal, multi-output
    ([2, 8, 2], 5),       # dual: 10 residuals < 42 parameters
])
def test_lm_step_matches_dense_reference(sizes, n_samples):
    model = mlp(sizes, seed=0, dtype="float64")
    X, Y = _data(n_samples, sizes[0], sizes[-1])
    lm = LevenbergMarquardt()
    for _ in range(3):
        before = model.params.copy()
        J = jacobian(model, X, wrt="params").reshape(Y.size, -1)
        e = (model.forward(X) - Y).ravel()
        info = lm.epoch(model, MSELoss(), X, Y)
        used = info["mu"] / lm.mu_dec  # the accepted μ, before the final decrease
        reference = np.linalg.solve(J.T @ J + used * np.eye(J.shape[1]), J.T @ e)
        step = before - model.params
        rel = np.linalg.norm(step - reference) / np.linalg.norm(reference)
        assert rel <= 1e-9, rel


def test_lm_dual_and_primal_agree():
    X, Y = _data(6, 2, 2)
    a = mlp([2, 8, 2], seed=3, dtype="float64")
    b = a.copy()
    lm_dual, lm_primal = LevenbergMarquardt(), LevenbergMarquardt()
    lm_primal._use_dual = lambda model, X: False  # type: ignore[method-assign]
    for _ in range(3):
        lm_dual.epoch(a, MSELoss(), X, Y)
        lm_primal.epoch(b, MSELoss(), X, Y)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-9, atol=1e-10)


def test_mu_schedule():
    model = mlp([1, 5, 1], seed=0, dtype="float64")
    X, Y = _data(50, 1, 1)
    lm = LevenbergMarquardt(mu=1e-3)
    info = lm.epoch(model, MSELoss(), X, Y)
    assert lm.mu == pytest.approx(1e-4) and info["mu"] == lm.mu  # success: ×0.1


def test_mu_grows_to_mu_max_when_no_step_helps(monkeypatch):
    model = mlp([1, 5, 1], seed=0, dtype="float64")
    X, Y = _data(50, 1, 1)
    lm = LevenbergMarquardt(mu=1.0, mu_max=1e3)
    original = lm._evaluate
    calls = []

    def every_trial_fails(model, loss, X, target):
        residuals, value = original(model, loss, X, target)
        calls.append(value)
        return residuals, value + (0.0 if len(calls) == 1 else 1.0)

    monkeypatch.setattr(lm, "_evaluate", every_trial_fails)
    start = model.params.copy()
    info = lm.epoch(model, MSELoss(), X, Y)
    assert lm.stop_reason == "mu_max"
    assert info["mu"] == pytest.approx(1e4)  # 1, 10, 100, 1000 tried, then > μ_max
    assert len(calls) == 1 + 4
    assert np.array_equal(model.params, start)


def test_lm_failure_increases_mu(monkeypatch):
    model = mlp([1, 5, 1], seed=0, dtype="float64")
    X, Y = _data(50, 1, 1)
    lm = LevenbergMarquardt(mu=1e-3)
    calls = []
    original = lm._evaluate

    def worse_first(model, loss, X, target):
        residuals, value = original(model, loss, X, target)
        calls.append(value)
        return residuals, value + (1.0 if len(calls) == 2 else 0.0)  # the first trial fails

    monkeypatch.setattr(lm, "_evaluate", worse_first)
    lm.epoch(model, MSELoss(), X, Y)
    assert lm.mu == pytest.approx(1e-3)  # ×10 after the failure, ×0.1 after the success


def test_lm_solves_sinc():
    x = np.linspace(-1, 1, 1000).reshape(-1, 1)
    y = np.sinc(10 * x / np.pi)
    model = mlp([1, 20, 1], seed=0, dtype="float64")
    # goal is on jacnet's ½·MSE: stop once the MSE is below 8e-6.
    history = LevenbergMarquardt(goal=4e-6).fit(model, x, y, epochs=150)
    assert history["stop_reason"] == "goal"
    assert float(np.mean((model(x) - y) ** 2)) < 1e-5


def test_lm_float32_stays_float32():
    x = np.linspace(-1, 1, 200, dtype=np.float32).reshape(-1, 1)
    model = mlp([1, 8, 1], seed=0, dtype="float32")
    history = LevenbergMarquardt().fit(model, x, np.sin(3 * x), epochs=30)
    assert model.params.dtype == np.float32
    assert history["loss"][-1] < 1e-3


def test_lm_validation_max_fail_restores_best():
    X, Y = _data(40, 1, 1)
    rng = np.random.default_rng(5)
    X_val, Y_val = X[:10] + 0.01, rng.normal(size=(10, 1))  # unrelated targets: val fails
    model = mlp([1, 12, 1], seed=0, dtype="float64")
    history = LevenbergMarquardt(max_fail=3).fit(model, X, Y, epochs=200, X_val=X_val,
                                                 y_val=Y_val)
    assert history["stop_reason"] == "max_fail"
    best = min(history["val_loss"])
    residuals = model(X_val) - Y_val
    assert 0.5 * float(np.mean(np.sum(residuals ** 2, axis=1))) == pytest.approx(best)


def test_gauss_newton_line_search_never_increases_loss():
    X, Y = _data(40, 1, 1, seed=1)
    model = mlp([1, 4, 1], seed=1, dtype="float64")
    start = 0.5 * float(np.mean((model(X) - Y) ** 2))
    gn = GaussNewton()
    history = gn.fit(model, X, Y, epochs=25)
    losses = np.array(history["loss"])
    assert losses[0] <= start
    assert np.all(np.diff(losses) <= 0)
    assert losses[-1] < start
    assert all(0 < t <= 1 for t in history["step_size"][:-1])


def test_bayesian_regularization_gamma():
    X, Y = _data(30, 1, 1, seed=2)
    Y = Y + 0.05 * np.random.default_rng(2).normal(size=Y.shape)
    model = mlp([1, 30, 1], seed=2, dtype="float64")  # 91 parameters, 30 residuals
    br = BayesianRegularization()
    history = br.fit(model, X, Y, epochs=40)
    gamma = np.array(history["gamma"])
    assert np.all((gamma > 0) & (gamma <= model.n_params))
    # Far fewer effective parameters than the 91 there are (and than the 30 residuals).
    assert gamma[-1] < 30 < model.n_params
    assert br.alpha > 0 and br.beta > 0
    state = br.state_dict()
    assert set(state) == {"n_epochs", "mu", "alpha", "beta", "gamma", "forcing_grad_norm",
                          "forcing_tolerance"}
    clone = BayesianRegularization()
    clone.load_state_dict(state)
    assert clone.gamma == br.gamma and clone.n_epochs == br.n_epochs


def test_bayesian_regularization_dual_matches_primal():
    X, Y = _data(8, 1, 1, seed=3)
    a = mlp([1, 6, 1], seed=3, dtype="float64")  # 19 parameters, 8 residuals: dual
    b = a.copy()
    dual, primal = BayesianRegularization(), BayesianRegularization()
    primal._use_dual = lambda model, X: False  # type: ignore[method-assign]
    for _ in range(3):
        info_d = dual.epoch(a, MSELoss(), X, Y)
        info_p = primal.epoch(b, MSELoss(), X, Y)
        assert info_d["gamma"] == pytest.approx(info_p["gamma"], rel=1e-8)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-8, atol=1e-10)


def test_registry_and_config():
    assert {"lm", "gn", "br"} <= set(OPTIMIZERS)
    lm = get_optimizer("lm", mu=0.01)
    assert isinstance(lm, LevenbergMarquardt) and lm.full_batch  # type: ignore[attr-defined]
    rebuilt = get_optimizer("lm", **lm.get_config())
    assert rebuilt.get_config() == lm.get_config()
    assert isinstance(get_optimizer("br"), BayesianRegularization)
    assert isinstance(get_optimizer("gn"), GaussNewton)


def test_fit_loop_accepts_second_order():
    training = pytest.importorskip("jacnet.training")
    x = np.linspace(-1, 1, 100).reshape(-1, 1)
    model = mlp([1, 6, 1], seed=0, dtype="float64")
    history = training.fit(model, x, np.sin(2 * x), optimizer="lm", epochs=5)
    assert "mu" in history.columns


def test_error_paths():
    model = mlp([2, 3, 2], seed=0, dtype="float64")
    X, Y = _data(10, 2, 2)
    with pytest.raises(TypeError, match="MSELoss"):
        BayesianRegularization().epoch(model, CrossEntropyLoss(), X, Y)
    with pytest.raises(TypeError, match=r"a jacnet\.losses\.Loss with a curvature"):
        LevenbergMarquardt().epoch(model, "mse", X, Y)
    with pytest.raises(ValueError, match="sample_weight must hold one non-negative weight"):
        LevenbergMarquardt().epoch(model, MSELoss(), X, Y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight must hold one non-negative weight"):
        LevenbergMarquardt().epoch(model, MSELoss(), X, Y, sample_weight=-np.ones(10))
    with pytest.raises(ValueError, match="BayesianRegularization does not take sample_weight"):
        BayesianRegularization().epoch(model, MSELoss(), X, Y, sample_weight=np.ones(10))
    with pytest.raises(ValueError, match=r"weight_decay_mask has shape \(3,\)"):
        LevenbergMarquardt(weight_decay=1.0, weight_decay_mask=np.ones(3, dtype=bool)).epoch(
            model, MSELoss(), X, Y)
    with pytest.raises(TypeError, match="'weight_decay_mask' parameter of LevenbergMarquardt"):
        LevenbergMarquardt(weight_decay_mask=np.ones(3))
    with pytest.raises(ValueError, match=r"target must have shape .*\(10, 2\)"):
        LevenbergMarquardt().epoch(model, MSELoss(), X, Y[:, :1])
    with pytest.raises(ValueError, match="columns"):
        LevenbergMarquardt().epoch(model, MSELoss(), X[:, :1], Y)
    with pytest.raises(ValueError, match="'mu' parameter of LevenbergMarquardt"):
        LevenbergMarquardt(mu=-1.0)
    with pytest.raises(ValueError, match="'mu_dec'"):
        LevenbergMarquardt(mu_dec=2.0)
    with pytest.raises(ValueError, match="both X_val and y_val"):
        LevenbergMarquardt().fit(model, X, Y, X_val=X)
    with pytest.raises(ValueError, match="needs"):
        LevenbergMarquardt().load_state_dict({"mu": 1.0})


# --------------------------------------------------------------------------- any loss
def _dense_step(model, loss, X, target, mu, weights=None, decay=None):
    """The GGN step from a materialised J and H: (JᵀHJ + μI + D)⁻¹ (Jᵀg + Dθ), on Σ wᵢ ℓᵢ."""
    z = model.forward(X)
    n = X.shape[0]
    unscale = n if loss.reduction == "mean" else 1.0
    J = jacobian(model, X, wrt="params")  # (N, m, P)
    H = loss.curvature(z, target).dense() * unscale  # (N, m, m)
    g = loss.grad(z, target) * unscale  # (N, m)
    w = np.ones(n) if weights is None else weights
    jhj = np.einsum("b,bmp,bmk,bkq->pq", w, J, H, J)
    jtg = np.einsum("b,bmp,bm->p", w, J, g)
    D = np.zeros(J.shape[2]) if decay is None else decay
    theta = model.params
    return np.linalg.solve(jhj + np.diag(mu + D), jtg + D * theta)


def _check_steps(model, loss, X, target, lm, weights=None, decay=None, n_steps=3):
    worst = 0.0
    for _ in range(n_steps):
        before = model.params.copy()
        probe = model.copy()
        info = lm.epoch(model, loss, X, target, sample_weight=weights)
        used = info["mu"] / lm.mu_dec
        reference = _dense_step(probe, loss, X, target, used, weights, decay)
        step = before - model.params
        rel = np.linalg.norm(step - reference) / np.linalg.norm(reference)
        worst = max(worst, rel)
    return worst


@pytest.mark.parametrize("loss, sizes, labels", [
    (CrossEntropyLoss(), [2, 6, 3], True),          # softmax: S = diag(√p) − √p pᵀ
    (CrossEntropyLoss(reduction="sum"), [2, 5, 4], True),
    (BCEWithLogitsLoss(), [2, 6, 1], True),          # one logit: a scalar C_b
    (BCEWithLogitsLoss(), [2, 5, 3], False),         # multi-label: a diagonal C_b
])
def test_lm_any_loss_matches_dense_ggn(loss, sizes, labels):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (40, sizes[0]))
    m = sizes[-1]
    if isinstance(loss, CrossEntropyLoss):
        target = rng.integers(0, m, 40)
    else:
        target = (rng.uniform(size=(40, m)) < 0.5).astype(float)
    model = mlp(sizes, seed=0, dtype="float64")
    worst = _check_steps(model, loss, X, target, LevenbergMarquardt())
    assert worst <= 1e-9, worst


def test_lm_cross_entropy_lowers_the_loss_and_classifies():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 2))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)  # three classes
    model = mlp([2, 8, 3], seed=0, dtype="float64")
    history = LevenbergMarquardt().fit(model, X, y, loss=CrossEntropyLoss(), epochs=30)
    assert np.all(np.diff(history["loss"]) <= 0) and history["loss"][-1] < 0.1 * history["loss"][0]
    assert np.mean(model(X).argmax(axis=1) == y) > 0.95


@pytest.mark.parametrize("sizes, n_samples, loss", [
    ([1, 5, 1], 30, MSELoss()),          # primal, scalar √w on the inputs
    ([2, 8, 2], 5, MSELoss()),           # dual: ĴĴᵀ = S K S
    ([2, 6, 3], 30, CrossEntropyLoss()),
])
def test_lm_sample_weight_matches_dense_reference(sizes, n_samples, loss):
    X, Y = _data(n_samples, sizes[0], sizes[-1])
    target = Y.argmax(axis=1) if isinstance(loss, CrossEntropyLoss) else Y
    weights = np.random.default_rng(4).uniform(0, 2, n_samples)
    weights[0] = 0.0
    model = mlp(sizes, seed=0, dtype="float64")
    worst = _check_steps(model, loss, X, target, LevenbergMarquardt(), weights)
    assert worst <= 1e-9, worst


def test_lm_integer_weights_equal_repeated_rows():
    X, Y = _data(12, 1, 1)
    counts = np.arange(12) % 3  # 0, 1 or 2 copies
    a = mlp([1, 4, 1], seed=0, dtype="float64")
    b = a.copy()
    lm_w, lm_r = LevenbergMarquardt(), LevenbergMarquardt()
    for _ in range(3):
        lm_w.epoch(a, MSELoss(), X, Y, sample_weight=counts.astype(float))
        lm_r.epoch(b, MSELoss(), np.repeat(X, counts, axis=0), np.repeat(Y, counts, axis=0))
    np.testing.assert_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)


def test_lm_weight_decay_mask_matches_dense_reference():
    X, Y = _data(30, 2, 2)
    model = mlp([2, 6, 2], seed=0, dtype="float64")
    names = model.parameter_slices()
    mask = np.zeros(model.n_params, dtype=bool)
    for name, cols in names.items():
        mask[cols] = name.endswith(".weight")
    lam = 0.3
    lm = LevenbergMarquardt(weight_decay=lam, weight_decay_mask=mask)
    worst = _check_steps(model, MSELoss(), X, Y, lm, decay=lam * X.shape[0] * mask)
    assert worst <= 1e-9, worst
    # The penalty leaves the biases alone: ½λ‖W‖², not ½λ‖θ‖².
    info = lm.epoch(model, MSELoss(), X, Y)
    data = 0.5 * float(np.mean(np.sum((model(X) - Y) ** 2, axis=1)))
    weights = model.params[mask]
    assert info["loss"] == pytest.approx(data + 0.5 * lam * float(weights @ weights), rel=1e-12)
    assert get_optimizer("lm", **lm.get_config()).weight_decay_mask is not None


def test_gauss_newton_any_loss():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(float)
    model = mlp([2, 6, 1], seed=0, dtype="float64")
    history = GaussNewton().fit(model, X, y, loss=BCEWithLogitsLoss(), epochs=10)
    assert np.all(np.diff(history["loss"]) <= 0) and history["loss"][-1] < history["loss"][0]


# --------------------------------------------------------------------------- BR robustness
@pytest.mark.parametrize("seed", range(5))
def test_bayesian_regularization_fits_sinc_on_100_points(seed):
    """From Glorot-small weights trainbr's α₀ = γ/(2E_W) collapsed every seed to γ ≈ 1."""
    x = np.linspace(-1, 1, 100).reshape(-1, 1)
    y = np.sinc(10 * x / np.pi)
    model = mlp([1, 20, 1], seed=seed, dtype="float64")
    history = BayesianRegularization().fit(model, x, y, epochs=100)
    assert float(np.mean((model(x) - y) ** 2)) < 1e-4
    assert history["gamma"][-1] > 8


def test_a_reused_optimizer_starts_each_fit_afresh():
    """mu (and BR's alpha, beta, gamma) from a previous fit must not leak into the next."""
    x = np.linspace(-1, 1, 100)[:, None]
    lm = LevenbergMarquardt(min_grad=0.0)
    lm.fit(mlp([1, 4, 1], activation="identity", dtype="float64", seed=0), x, 2 * x + 1)
    assert lm.stop_reason == "mu_max"
    fresh = mlp([1, 6, 1], seed=1, dtype="float64")
    start = fresh.params.copy()
    history = lm.fit(fresh, x, np.sin(3 * x), epochs=20)
    assert len(history["loss"]) == 20 and not np.array_equal(fresh.params, start)


def test_an_epoch_without_state_sees_data_changed_in_place():
    rng = np.random.default_rng(0)
    X, t = rng.normal(size=(30, 2)), rng.normal(size=(30, 1))
    model = mlp([2, 5, 1], seed=0, dtype="float64")
    lm, loss = LevenbergMarquardt(), MSELoss()
    lm.epoch(model, loss, X, t)
    t[...] = 100.0  # same arrays and loss object, new targets
    before, start = loss(model(X), t), model.params.copy()
    info = lm.epoch(model, loss, X, t)
    # judged against the loss on the new targets (a remembered small loss would reject
    # every step until mu_max)
    assert lm.stop_reason is None and not np.array_equal(model.params, start)
    assert info["loss"] < before


def test_a_system_too_large_for_memory_is_refused_with_the_way_out(monkeypatch):
    from jacnet.optim import second_order

    monkeypatch.setattr(second_order, "_physical_memory", lambda: 1000)
    x = np.linspace(-1, 1, 50)[:, None]
    with pytest.raises(MemoryError, match=r"JᵀJ \(P × P, float64\) needs .* dual form"):
        LevenbergMarquardt().fit(mlp([1, 4, 1], seed=0, dtype="float64"), x, x, epochs=1)


def test_br_warns_when_it_collapses_to_a_constant_fit():
    """Small-amplitude targets let the prior win (γ → 1): say so instead of failing quietly."""
    from jacnet.optim.second_order import CollapseWarning

    x = np.linspace(-1, 1, 200)[:, None]
    y = 0.01 * np.sinc(10 * x / np.pi)
    with pytest.warns(CollapseWarning, match="standardise or min-max scale the targets"):
        BayesianRegularization().fit(mlp([1, 20, 1], activation="tanh", seed=0,
                                         dtype="float64"), x, y, epochs=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)  # unit-scale targets: no warning
        BayesianRegularization().fit(mlp([1, 20, 1], activation="tanh", seed=0,
                                         dtype="float64"), x, y / 0.01, epochs=100)


@pytest.mark.parametrize("weighted", [False, True])
def test_lm_masked_decay_in_the_dual_form_matches_dense_reference(weighted, monkeypatch):
    """Fewer residuals than parameters and a weights-only decay: Woodbury with two dampings."""
    from jacnet.optim import second_order

    X, Y = _data(8, 2, 2)
    model = mlp([2, 12, 2], seed=0, dtype="float64")  # 62 parameters, 16 residuals
    mask = np.zeros(model.n_params, dtype=bool)
    for name, cols in model.parameter_slices().items():
        mask[cols] = name.endswith(".weight")
    lam = 0.3
    weights = np.random.default_rng(2).uniform(0.5, 2.0, 8) if weighted else None
    dual_systems = []
    original = second_order._NormalEquations.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        dual_systems.append(self.dual and self.mask is not None)

    monkeypatch.setattr(second_order._NormalEquations, "__init__", spy)
    lm = LevenbergMarquardt(weight_decay=lam, weight_decay_mask=mask)
    total = X.shape[0] if weights is None else float(weights.sum())
    worst = _check_steps(model, MSELoss(), X, Y, lm, weights, decay=lam * total * mask)
    assert all(dual_systems) and dual_systems
    assert worst <= 1e-9, worst


@pytest.mark.parametrize("data", ["float64", "float32 data", "float32 weights"])
def test_lm_hands_its_forward_pass_to_the_next_epoch(monkeypatch, data):
    """iterate's state: after an epoch whose trial step was accepted at once, the next
    epoch builds J from that trial's forward pass: one forward pass per trial, none for
    J. Data converted for the float64 network (a new array each epoch) changes nothing."""
    from jacnet.network import Sequential

    passes = [0]
    forward = Sequential.forward

    def counting(self, X):
        passes[0] += 1
        return forward(self, X)

    monkeypatch.setattr(Sequential, "forward", counting)
    x = np.linspace(-1, 1, 200)[:, None]
    y = np.sinc(5 * x / np.pi)
    model, lm, loss = mlp([1, 8, 1], seed=0, dtype="float64"), LevenbergMarquardt(), MSELoss()
    reference, lm_ref = model.copy(), LevenbergMarquardt()
    weights = np.linspace(0.5, 1.5, 200, dtype=np.float32) if data == "float32 weights" else None
    if data == "float32 data":
        x = x.astype(np.float32)
    state, _ = lm.iterate(model, loss, x, y, sample_weight=weights)
    lm_ref.epoch(reference, loss, x, y, sample_weight=weights)
    single_trials = 0
    for _ in range(12):
        mu, before = lm.mu, passes[0]
        state, info = lm.iterate(model, loss, x, y, state, sample_weight=weights)
        if np.isclose(lm.mu, mu * lm.mu_dec):  # one trial, accepted
            single_trials += 1
            assert passes[0] - before == 1
        # the same steps as epochs that each start with their own forward pass
        ref_info = lm_ref.epoch(reference, loss, x, y, sample_weight=weights)
        np.testing.assert_array_equal(model.params, reference.params)
        assert info == ref_info
    assert single_trials


def _other_pass(kind):
    other = np.random.default_rng(0).uniform(-1, 1, (120, 1))
    return {
        "forward": lambda model: model.forward(other),
        "jvp": lambda model: model.jvp(other, param_tangent=np.ones(model.n_params)),
        "a layer": lambda model: model[0].forward(other),
        "fewer rows": lambda model: model.jvp(other[:50]),
        "new parameters": lambda model: model.params.__imul__(1.01),
    }[kind]


@pytest.mark.parametrize("kind", ["forward", "jvp", "a layer", "fewer rows", "new parameters"])
def test_lm_state_survives_other_passes_in_between(kind):
    """A pass on other data between epochs (a validation loss, a directional derivative,
    a look at hidden activations) overwrites the layers' caches: the state puts its own
    back. Parameters changed in between (a callback) make the state stale: the epoch
    evaluates afresh. Either way the steps are those of stateless epochs."""
    from jacnet.layers import Dropout, Linear, Tanh
    from jacnet.network import Sequential

    x = np.linspace(-1, 1, 120)[:, None]
    y = np.sinc(5 * x / np.pi)
    a = Sequential([Linear(1, 6, seed=0), Tanh(), Dropout(0.0), Linear(6, 1, seed=1)],
                   dtype="float64")
    b = a.copy()
    lm_a, lm_b, loss = LevenbergMarquardt(), LevenbergMarquardt(), MSELoss()
    state = None
    for _ in range(4):
        lm_a.epoch(a, loss, x, y)
        state, _ = lm_b.iterate(b, loss, x, y, state)
        _other_pass(kind)(b)
        _other_pass(kind)(a)
    np.testing.assert_array_equal(a.params, b.params)


def _fresh_epoch(model, lm, x, y):
    """The epoch a new optimizer with the same μ takes from the same θ on the same data."""
    clone = model.copy()
    LevenbergMarquardt(mu=lm.mu).epoch(clone, MSELoss(), x.copy(), y.copy())
    return clone.params


def test_lm_sees_sample_weights_changed_in_place():
    """LM never raises the loss it is given: after the weights change in place, the
    epoch must judge its step by the loss under the new weights, not a remembered one."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (300, 3))
    y = np.sin(3 * X @ [1.0, 2.0, -1.0])[:, None]
    model, lm, loss = mlp([3, 6, 1], seed=1, dtype="float64"), LevenbergMarquardt(mu=1e-6), MSELoss()
    w = np.ones(300)
    lm.epoch(model, loss, X, y, sample_weight=w)
    r = np.abs((model.forward(X) - y)[:, 0])
    w[...] = np.where(r < np.quantile(r, 0.2), 1.0, 1e-3)  # same array: the well-fit rows count

    def weighted_loss():
        residuals = (model.forward(X) - y)[:, 0]
        return 0.5 * float(w @ residuals**2) / w.sum()

    before = weighted_loss()
    lm.epoch(model, loss, X, y, sample_weight=w)
    assert weighted_loss() <= before


def test_lm_sees_the_switch_to_evaluation_mode():
    """A Dropout network trained one epoch in training mode, then switched to eval():
    the state's loss and caches (with dropped units) no longer describe it."""
    from jacnet.layers import Dropout, Linear, Tanh
    from jacnet.network import Sequential

    x = np.linspace(-1, 1, 80)[:, None]
    y = np.sinc(5 * x / np.pi)
    model = Sequential([Linear(1, 8, seed=0), Tanh(), Dropout(0.5, seed=1), Linear(8, 1, seed=2)],
                       dtype="float64")
    lm, loss = LevenbergMarquardt(), MSELoss()
    state, _ = lm.iterate(model, loss, x, y)
    model.eval()
    expected = _fresh_epoch(model, lm, x, y)
    lm.iterate(model, loss, x, y, state)
    np.testing.assert_allclose(model.params, expected, rtol=1e-12, atol=1e-14)


def test_lm_sees_data_permuted_in_place():
    """Rows of X and y permuted in place keep every sum; the step must still be the one
    for the data as it now is (compared with a fresh optimizer)."""
    x = (np.arange(-60, 60) / 64.0)[:, None]  # dyadic: any permutation keeps the sums exact
    y = np.round(np.sinc(5 * x / np.pi) * 1024) / 1024
    model, lm, loss = mlp([1, 6, 1], seed=0, dtype="float64"), LevenbergMarquardt(), MSELoss()
    lm.epoch(model, loss, x, y)
    perm = np.random.default_rng(0).permutation(len(x))
    x[...], y[...] = x[perm], y[perm]
    expected = _fresh_epoch(model, lm, x, y)
    lm.epoch(model, loss, x, y)
    np.testing.assert_allclose(model.params, expected, rtol=1e-12, atol=1e-14)


def test_a_non_finite_loss_is_refused_with_the_way_out():
    model = mlp([1, 4, 1], seed=0, dtype="float32")
    model.params[:] = 1e38
    x = np.linspace(-1, 1, 20)[:, None].astype(np.float32) * 1e3
    for optimizer in (LevenbergMarquardt(), GaussNewton(), BayesianRegularization()):
        with pytest.raises(ValueError, match=r"the loss at the current parameters is (inf|nan)"
                                             r".*StandardScaler"):
            optimizer.epoch(model, MSELoss(), x, np.zeros_like(x))


def test_cholesky_solve_raises_for_a_matrix_that_is_not_positive_definite():
    from jacnet.optim.second_order import _cholesky_solve

    rhs = np.ones(3)
    for matrix in (np.diag([1.0, -1.0, 2.0]), np.diag([1.0, np.nan, 1.0]), np.zeros((3, 3))):
        with pytest.raises(np.linalg.LinAlgError):
            _cholesky_solve(matrix.copy(), rhs)
    spd = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    np.testing.assert_allclose(_cholesky_solve(spd.copy(), rhs), np.linalg.solve(spd, rhs))


# --------------------------------------------------------------------------- a user's loss
class _LogCosh(Loss):
    """ℓ = Σ_k log cosh(z_k − d_k), a robust loss jacnet does not ship: only its value,
    gradient and curvature factor √(sech²) are defined."""

    def value_and_grad(self, prediction, target):
        r = prediction - target
        scale = self._scale(r.shape[0])
        value = float(np.sum(np.logaddexp(r, -r) - np.log(2.0)))
        return scale * value, scale * np.tanh(r)

    def curvature_sqrt(self, prediction, target):
        return 1.0 / np.cosh(prediction - target)


class _HalfSquares(Loss):
    """½‖z − d‖² written by a user: a least-squares loss, its curvature factor the identity."""

    def value_and_grad(self, prediction, target):
        r = prediction - target
        scale = self._scale(r.shape[0])
        return 0.5 * scale * float(np.vdot(r, r)), scale * r

    def curvature_sqrt(self, prediction, target):
        return np.ones_like(prediction)


def test_lm_trains_a_user_defined_loss_with_the_exact_ggn_step():
    X, Y = _data(40, 2, 2)
    model, loss, lm = mlp([2, 6, 2], seed=0, dtype="float64"), _LogCosh(), LevenbergMarquardt()
    for _ in range(3):
        z = model.forward(X)
        J = jacobian(model, X, wrt="params").reshape(Y.size, -1)
        root = loss.curvature_sqrt(z, Y).ravel()  # diagonal: H = diag(root²)
        g = loss.value_and_grad(z, Y)[1].ravel() * X.shape[0]
        before = model.params.copy()
        info = lm.epoch(model, loss, X, Y)
        used = info["mu"] / lm.mu_dec
        reference = np.linalg.solve((J.T * root**2) @ J + used * np.eye(J.shape[1]), J.T @ g)
        step = before - model.params
        assert np.linalg.norm(step - reference) <= 1e-9 * np.linalg.norm(reference)
    history = GaussNewton().fit(model, X, Y, loss=loss, epochs=5)
    assert np.all(np.diff(history["loss"]) <= 0)
    with pytest.raises(TypeError, match="least-squares loss, one whose curvature_sqrt"):
        BayesianRegularization().epoch(model, loss, X, Y)


@pytest.mark.parametrize("optimizer", [LevenbergMarquardt, GaussNewton, BayesianRegularization])
@pytest.mark.parametrize("n_samples", [40, 6])  # primal; dual (12 residuals < 42 parameters)
def test_a_user_defined_least_squares_loss_trains_as_mse_does(optimizer, n_samples):
    """Nothing in the optimizers asks which loss they have: a user's least-squares loss
    (identity curvature factor) takes MSE's path, dual form and BR's evidence included."""
    X, Y = _data(n_samples, 2, 2)
    a = mlp([2, 8, 2], seed=0, dtype="float64")
    b = a.copy()
    mine, theirs = optimizer(), optimizer()
    for _ in range(4):
        info_a = mine.epoch(a, _HalfSquares(), X, Y)
        info_b = theirs.epoch(b, MSELoss(), X, Y)
        assert info_a == pytest.approx(info_b, rel=1e-12)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
    assert not np.array_equal(a.params, mlp([2, 8, 2], seed=0, dtype="float64").params)


# --------------------------------------------------------------------------- data parallelism
class _TwoProcesses:
    """An in-place sum over two 'processes' (threads): what an MPI Allreduce does."""

    def __init__(self):
        import threading

        self.barrier = threading.Barrier(2, timeout=60)
        self.parts = [None, None]
        self.calls = [0, 0]

    def allreduce(self, rank):
        def reduce(array):
            assert array.dtype == np.float64
            self.calls[rank] += 1
            self.parts[rank] = array.copy()
            self.barrier.wait()
            total = self.parts[0] + self.parts[1]
            self.barrier.wait()  # both have read the parts before either writes anew
            array[...] = total
        return reduce


def _split_run(make, model, loss, X, Y, weights, epochs):
    """Each half of the rows in its own thread, summed by a fake allreduce."""
    import threading

    world = _TwoProcesses()
    halves = [slice(0, len(X) // 2), slice(len(X) // 2, None)]
    models = [model.copy(), model.copy()]
    infos = [[], []]
    errors = []

    def run(rank):
        try:
            opt = make(world.allreduce(rank))
            rows = halves[rank]
            state = None
            for _ in range(epochs):
                w = None if weights is None else weights[rows]
                state, info = opt.iterate(models[rank], loss, X[rows], Y[rows], state,
                                          sample_weight=w)
                infos[rank].append(info)
        except BaseException as error:  # reported below, in the main thread
            errors.append(error)
            world.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    assert world.calls[0] == world.calls[1] > 0
    np.testing.assert_array_equal(models[0].params, models[1].params)
    return models[0], infos[0]


@pytest.mark.parametrize("make, loss, weighted", [
    (lambda reduce: LevenbergMarquardt(allreduce=reduce), MSELoss(), False),
    (lambda reduce: LevenbergMarquardt(allreduce=reduce), MSELoss(), True),
    (lambda reduce: LevenbergMarquardt(weight_decay=0.01, allreduce=reduce),
     CrossEntropyLoss(), False),
    (lambda reduce: GaussNewton(allreduce=reduce), MSELoss(reduction="sum"), False),
    (lambda reduce: BayesianRegularization(allreduce=reduce), MSELoss(), False),
    (lambda reduce: LevenbergMarquardt(solver="cg", allreduce=reduce), MSELoss(), True),
    (lambda reduce: BayesianRegularization(solver="cg", allreduce=reduce), MSELoss(), False),
    (lambda reduce: LevenbergMarquardt(solver="cg", preconditioner="kfac", allreduce=reduce),
     CrossEntropyLoss(), True),
    (lambda reduce: LevenbergMarquardt(solver="cg", preconditioner="jacobi", allreduce=reduce),
     MSELoss(), True),
])
def test_allreduce_over_two_halves_equals_the_single_run(make, loss, weighted):
    """The data-parallel hook: each process's half of the rows, every sum taken through
    allreduce, gives the steps of one process with all the rows."""
    X, Y = _data(60, 2, 3)
    target = Y.argmax(axis=1) if isinstance(loss, CrossEntropyLoss) else Y
    weights = np.random.default_rng(3).uniform(0.5, 2.0, 60) if weighted else None
    single, opt = None, make(None)
    # Undamped Gauss–Newton amplifies the sums' rounding by JᵀJ's condition number (to
    # 1e-7 in five epochs of a 2-6-3 tanh network, whose line search takes t ≈ 1e-3): a
    # linear model for it, well conditioned.
    model = mlp([2, 3] if isinstance(opt, GaussNewton) else [2, 6, 3], seed=0,
                dtype="float64")
    single, state, expected, epochs = model.copy(), None, [], 5
    for _ in range(epochs):
        state, info = opt.iterate(single, loss, X, target, state, sample_weight=weights)
        expected.append(info)
    split, infos = _split_run(make, model, loss, X, target, weights, epochs)
    assert not np.array_equal(single.params, model.params)
    # K-FAC's eigendecompositions of the summed factors carry the sums' rounding into
    # every CG iteration: measured 2e-10 relative after five epochs, held to 1e-9.
    tol = 1e-9 if opt.solver == "cg" and opt.preconditioner == "kfac" else 1e-12
    np.testing.assert_allclose(split.params, single.params, rtol=tol, atol=tol)
    for got, want in zip(infos, expected):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=tol, abs=tol), key


def test_allreduce_must_be_callable():
    with pytest.raises(TypeError, match="allreduce must be a callable that sums"):
        LevenbergMarquardt(allreduce=1.0)


# --------------------------------------------------------------------------- matrix-free path
@pytest.mark.parametrize("preconditioner", ["jacobi", "kfac"])
@pytest.mark.parametrize("loss, sizes", [(MSELoss(), [2, 8, 2]), (CrossEntropyLoss(), [2, 6, 3])])
def test_cg_step_solves_the_damped_system_to_its_documented_tolerance(loss, sizes,
                                                                       preconditioner):
    """solver="cg": each step Δ satisfies ‖(JᵀHJ + μI)Δ − Jᵀg‖ ≤ η ‖Jᵀg‖ with
    Eisenstat and Walker's forcing term η (choice 2: 0.5 first, then 0.9 times the squared
    ratio of successive gradient norms, safeguarded, at most 0.9; or stopped at
    cg_max_iter), whichever preconditioner CG uses."""
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (40, sizes[0]))
    target = (rng.integers(0, sizes[-1], 40) if isinstance(loss, CrossEntropyLoss)
              else _data(40, sizes[0], sizes[-1])[1])
    model = mlp(sizes, seed=0, dtype="float64")
    lm = LevenbergMarquardt(solver="cg", preconditioner=preconditioner)
    previous = None
    for _ in range(4):
        probe = model.copy()
        before = model.params.copy()
        info = lm.epoch(model, loss, X, target)
        used = info["mu"] / lm.mu_dec
        z = probe.forward(X)
        J = jacobian(probe, X, wrt="params")
        H = loss.curvature(z, target).dense() * X.shape[0]
        g = np.einsum("bmp,bm->p", J, loss.grad(z, target) * X.shape[0])
        system = np.einsum("bmp,bmk,bkq->pq", J, H, J) + used * np.eye(model.n_params)
        step = before - model.params
        residual = np.linalg.norm(system @ step - g) / np.linalg.norm(g)
        if previous is None:
            eta = 0.5
        else:
            eta = 0.9 * (info["grad_norm"] / previous[0]) ** 2
            if 0.9 * previous[1] ** 2 > 0.1:
                eta = max(eta, 0.9 * previous[1] ** 2)
            eta = min(eta, 0.9)
        previous = info["grad_norm"], eta
        assert info["cg_tolerance"] == pytest.approx(eta, rel=1e-12)
        assert info["matrix_free"] == 1.0 and info["cg_iterations"] > 0
        assert residual <= eta * (1 + 1e-9) or info["cg_iterations"] >= lm.cg_max_iter, residual


@pytest.mark.parametrize("mu", [0.3, 0.0])
@pytest.mark.parametrize("loss, sizes, output_activation, weighted", [
    (MSELoss(), [3, 4, 5, 2], None, False),
    (MSELoss(), [3, 4, 5, 2], None, True),  # C_b = √w_b, a scalar per row
    (MSELoss(), [3, 5, 2], "sigmoid", False),  # the output layer's L is not the identity
    (CrossEntropyLoss(), [2, 5, 3], None, False),
    (BCEWithLogitsLoss(), [3, 4, 2], None, False)])
def test_kfac_preconditioner_is_the_exact_inverse_of_its_kronecker_blocks(
        loss, sizes, output_activation, weighted, mu):
    """preconditioner="kfac": M⁻¹r with M, per Linear layer (weight and bias together,
    θ's order (k, n) row-major then the k biases), c A⊗B/t + μI, A = Σ_b L_bᵀH_bL_b
    (L_b = ∂z_b/∂(the layer's output), from the materialised Jacobian),
    B = Σ_b t_b [x_b, 1][x_b, 1]ᵀ (x_b the layer's input) and t = Σ_b t_b with
    t_b = tr(L_bᵀH_bL_b), against a dense solve; undamped (μ = 0, Gauss–Newton), μ is
    10⁻⁴ of the block's mean diagonal instead."""
    from jacnet.layers import Linear
    from jacnet.optim.second_order import _MatrixFree

    rng = np.random.default_rng(3)
    n = 30
    X = rng.uniform(-1, 1, (n, sizes[0]))
    target = (rng.integers(0, sizes[-1], n) if isinstance(loss, CrossEntropyLoss)
              else rng.integers(0, 2, (n, sizes[-1])).astype(float)
              if isinstance(loss, BCEWithLogitsLoss) else rng.normal(size=(n, sizes[-1])))
    model = mlp(sizes, output_activation=output_activation, seed=0, dtype="float64")
    lm = LevenbergMarquardt(solver="cg")
    target = loss.prepare_target(target, sizes[-1], dtype=model.dtype)
    z = model.forward(X)
    J = jacobian(model, X, wrt="params")  # (N, m, P)
    H = loss.curvature(z, target).dense() * n  # on the optimizer's scale Σ ℓ_b
    lm._totals = (n, float(n))
    if weighted:
        weights = rng.uniform(0.5, 2.0, n)
        lm._sample_weight, H = weights, H * weights[:, None, None]
    rows, sqrt_h, _ = lm._curvature(loss, model.forward(X), target)
    system = _MatrixFree(model, rows, sqrt_h, None, 10, preconditioner="kfac")
    r = rng.normal(size=model.n_params)
    c = 0.7
    got = system._preconditioner(c, np.full(model.n_params, mu))(r)
    start, inputs = 0, X
    for layer in model.layers:
        if not isinstance(layer, Linear):
            inputs = layer.forward(inputs)
            continue
        k, width = layer.out_features, layer.in_features
        weight = np.arange(start, start + k * width).reshape(k, width)
        bias = np.arange(start + k * width, start + k * width + k)
        order = np.concatenate([weight, bias[:, None]], axis=1).ravel()
        left = J[:, :, bias]  # ∂z/∂b = L_b
        per_row = np.einsum("bmi,bmr,brj->bij", left, H, left)
        A, t = per_row.sum(axis=0), np.trace(per_row, axis1=1, axis2=2)
        tilde = np.concatenate([inputs, np.ones((n, 1))], axis=1)
        B = (tilde * t[:, None]).T @ tilde / t.sum()
        damping = mu or 1e-4 * c * np.trace(A) / k * np.trace(B) / (width + 1)
        M = c * np.kron(A, B) + damping * np.eye(order.size)
        np.testing.assert_allclose(got[order], np.linalg.solve(M, r[order]),
                                   rtol=1e-9, atol=1e-12)
        start += order.size
        inputs = layer.forward(inputs)
    assert start == model.n_params


def test_kfac_preconditioner_must_be_known():
    with pytest.raises(ValueError, match="The 'preconditioner' parameter of GaussNewton "
                                         "must be one of 'jacobi', 'kfac'; got 'ilu'"):
        GaussNewton(preconditioner="ilu")
    lm = LevenbergMarquardt(solver="cg", preconditioner="kfac")
    assert get_optimizer("lm", **lm.get_config()).preconditioner == "kfac"


def test_cg_with_a_tight_tolerance_takes_the_dense_step():
    X, Y = _data(40, 2, 2)
    a = mlp([2, 6, 2], seed=0, dtype="float64")
    b = a.copy()
    dense, cg = LevenbergMarquardt(), LevenbergMarquardt(solver="cg", cg_tol=1e-13,
                                                          cg_max_iter=10_000)
    for _ in range(3):
        start = a.params.copy()
        info_d = dense.epoch(a, MSELoss(), X, Y)
        info_c = cg.epoch(b, MSELoss(), X, Y)
        assert info_d["mu"] == info_c["mu"] and info_d["matrix_free"] == 0.0
        np.testing.assert_allclose(b.params - start, a.params - start, rtol=1e-7, atol=1e-10)
        b.params[...] = a.params  # the next epoch from the same θ


def test_cg_reuses_the_epochs_search_directions_for_the_next_damping():
    """A μ trial after the first starts from the Galerkin solution over the directions the
    earlier solves of the epoch searched (same G, another damping): when they span the
    space, the new damped system is solved exactly without a single new product with G."""
    from jacnet.optim.second_order import _MatrixFree

    X, Y = _data(40, 2, 1)
    model = mlp([2, 3, 1], seed=0, dtype="float64")  # P = 13
    J = jacobian(model, X, wrt="params").reshape(40, -1)
    system = _MatrixFree(model, model.forward(X) - Y, None, None, 200)
    system.tolerance = 1e-12
    system.solve(1.0, 1e-3)
    used = system.iterations
    assert 0 < used <= 200
    for mu in (1e-2, 1e-1, 1.0):
        step = system.solve(1.0, mu)
        exact = np.linalg.solve(J.T @ J + mu * np.eye(13), system.jte)
        np.testing.assert_allclose(step, exact, rtol=1e-8, atol=1e-12)
        assert system.iterations == used  # no new product
    # a damping vector and another right-hand side (a weight-decay term) alike
    decay = np.linspace(0.0, 0.5, 13)
    step = system.solve(1.0, 0.3 + decay, decay, model.params.copy())
    exact = np.linalg.solve(J.T @ J + np.diag(0.3 + decay), system.jte + decay * model.params)
    np.testing.assert_allclose(step, exact, rtol=1e-8, atol=1e-12)
    assert system.iterations == used


def test_cg_recycled_start_is_a_descent_step_at_any_tolerance():
    """Truncated after the recycled start, the step still lowers the quadratic model (so
    −Δ is a descent direction for the μ loop): rᵀΔ > ½ Δᵀ(G + μI)Δ > 0."""
    from jacnet.optim.second_order import _MatrixFree

    X, Y = _data(60, 2, 2)
    model = mlp([2, 8, 2], seed=0, dtype="float64")
    J = jacobian(model, X, wrt="params").reshape(120, -1)
    system = _MatrixFree(model, model.forward(X) - Y, None, None, 5)
    system.tolerance = 1e-3
    for mu in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0):
        step = system.solve(1.0, mu)
        curvature = step @ (J.T @ (J @ step)) + mu * step @ step
        assert system.jte @ step > 0.5 * curvature > 0.0, mu
        system.max_iter = 1  # the later trials: the recycled start and one step from it
    assert system.iterations == 10 and system._n_kept == 5  # kept: at most cg_max_iter


def test_cg_never_forms_a_p_by_p_array():
    """Memory O(N·m + P): a 4801-parameter network, whose JᵀJ would be 184 MB, trains an
    epoch with a peak far below it."""
    import tracemalloc

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 8))
    y = np.sin(X.sum(axis=1, keepdims=True))
    model = mlp([8, 64, 64, 1], seed=0, dtype="float64")
    lm = LevenbergMarquardt(solver="cg", cg_max_iter=20)
    lm.epoch(model, MSELoss(), X, y)  # warm-up: first-call allocations
    tracemalloc.start()
    try:
        info = lm.epoch(model, MSELoss(), X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info["matrix_free"] == 1.0
    assert peak < 8 * model.n_params ** 2 / 20, peak  # < 9 MB; JᵀJ alone is 184 MB


def test_auto_picks_the_solver_by_size_and_memory_and_says_so(monkeypatch):
    from jacnet.optim import second_order

    X, Y = _data(200, 8, 1)
    small, large = mlp([8, 4, 1], seed=0, dtype="float64"), mlp([8, 64, 64, 1], seed=0,
                                                                 dtype="float64")
    auto = LevenbergMarquardt(solver="auto")
    assert auto.epoch(small, MSELoss(), X, Y)["matrix_free"] == 0.0
    # 4801 parameters, 4000 rows: N·P² + P³/3 ≈ 1.3e11 multiply-adds dense against
    # 5·N·P·(cg_max_iter + 2) ≈ 1e10 by CG
    assert auto._matrix_free(large, np.zeros((4000, 8)), dual=False)
    # 200 rows, the dual form: N²·P + N³/3 ≈ 2e8 against ≈ 5e8 by CG
    assert not auto._matrix_free(large, X, dual=True)
    assert not LevenbergMarquardt(solver="dense")._matrix_free(large, np.zeros((4000, 8)), False)
    monkeypatch.setattr(second_order, "_physical_memory", lambda: 1000)
    history = LevenbergMarquardt(solver="auto").fit(small, X, Y, epochs=2)
    assert history["matrix_free"] == [1.0, 1.0] and min(history["cg_iterations"]) > 0


def test_bayesian_regularization_on_the_cg_path_estimates_gamma():
    """γ = Σ βλ/(βλ + α) by stochastic Lanczos quadrature (10 probes, 20 steps, seed 0):
    measured within 4% of the exact value here (sinc, 100 points, 1-20-1 at BR's
    α and β after 50 epochs); the bound asserted is 10%. The same seed gives the same γ."""
    from jacnet.optim.second_order import _MatrixFree

    x = np.linspace(-1, 1, 100).reshape(-1, 1)
    y = np.sinc(10 * x / np.pi)
    model = mlp([1, 20, 1], seed=0, dtype="float64")
    br = BayesianRegularization()
    br.fit(model, x, y, epochs=50)
    J = jacobian(model, x, wrt="params").reshape(100, -1)
    eig = np.clip(np.linalg.eigvalsh(J.T @ J), 0, None)
    alpha, beta = br.alpha, br.beta
    exact = float(np.sum(beta * eig / (beta * eig + alpha)))
    system = _MatrixFree(model, model.forward(x) - y, None, None, 100)
    estimate = system.effective_parameters(beta, alpha, 0, 10, 20)
    assert abs(estimate - exact) <= 0.1 * exact, (estimate, exact)
    assert estimate == system.effective_parameters(beta, alpha, 0, 10, 20)
    # and it trains: sinc to a good fit with a sensible γ
    model = mlp([1, 20, 1], seed=0, dtype="float64")
    history = BayesianRegularization(solver="cg").fit(model, x, y, epochs=100)
    assert float(np.mean((model(x) - y) ** 2)) < 1e-3
    assert 5 < history["gamma"][-1] < model.n_params and history["matrix_free"][-1] == 1.0


@pytest.mark.parametrize("optimizer", [LevenbergMarquardt, GaussNewton])
def test_cg_path_trains_a_user_defined_loss(optimizer):
    X, Y = _data(60, 2, 2)
    model = mlp([2, 6, 2], seed=0, dtype="float64")
    history = optimizer(solver="cg").fit(model, X, Y, loss=_LogCosh(), epochs=15)
    assert np.all(np.diff(history["loss"]) <= 0) and history["loss"][-1] < 0.5 * history["loss"][0]


def test_solver_arguments_are_checked():
    with pytest.raises(ValueError, match="'solver' parameter of LevenbergMarquardt must be one of"):
        LevenbergMarquardt(solver="lu")
    with pytest.raises(ValueError, match="'cg_tol' parameter of GaussNewton"):
        GaussNewton(cg_tol=1.5)
    with pytest.raises(ValueError, match="'cg_max_iter' parameter of BayesianRegularization"):
        BayesianRegularization(cg_max_iter=0)
    lm = LevenbergMarquardt(solver="cg", cg_tol=1e-3, cg_max_iter=7)
    assert get_optimizer("lm", **lm.get_config()).get_config() == lm.get_config()


@pytest.mark.parametrize("n_samples", [60, 5])  # primal, dual
def test_every_trial_factors_in_one_buffer_kept_from_epoch_to_epoch(n_samples, monkeypatch):
    # A fresh (P, P) copy per μ trial cost more than the copy itself; the trials write
    # c·JᵀJ + D (or K + μI) into the optimizer's buffer and factor it there.
    from jacnet.optim import second_order

    factored = []
    solve = second_order._cholesky_solve
    monkeypatch.setattr(second_order, "_cholesky_solve",
                        lambda matrix, rhs: (factored.append(matrix), solve(matrix, rhs))[1])
    X, Y = _data(n_samples, 2, 1)
    model, lm = mlp([2, 6, 1], seed=0, dtype="float64"), LevenbergMarquardt(mu=1e-6)
    lm.mu_inc = 1e3  # a rejected first trial too
    state = None
    for _ in range(3):
        state, _ = lm.iterate(model, MSELoss(), X, Y, state)
    size = min(n_samples, model.n_params)
    assert len(factored) > 3 and all(matrix is lm._factor for matrix in factored)
    assert lm._factor.shape == (size, size)


def test_lm_reads_only_the_lower_triangle_that_syrk_writes():
    # 289 parameters, chunks of 256 rows: BLAS syrk accumulates JᵀJ's lower triangle and
    # the upper one is never written; NaN there would spread into any solve that read it.
    pytest.importorskip("scipy")
    X, Y = _data(600, 8, 1)
    model = mlp([8, 16, 8, 1], seed=0, dtype="float64")
    lm = LevenbergMarquardt(chunk_size=256)
    lm._buffer = np.full((model.n_params,) * 2, np.nan)
    for _ in range(2):
        before = model.params.copy()
        J = jacobian(model, X, wrt="params").reshape(Y.size, -1)
        e = (model.forward(X) - Y).ravel()
        info = lm.epoch(model, MSELoss(), X, Y)
        used = info["mu"] / lm.mu_dec
        reference = np.linalg.solve(J.T @ J + used * np.eye(J.shape[1]), J.T @ e)
        step = before - model.params
        assert np.linalg.norm(step - reference) / np.linalg.norm(reference) <= 1e-9
    assert np.isnan(lm._buffer[0, -1])  # the upper triangle: never written


@pytest.mark.parametrize("sizes, loss", [([2, 6, 1], MSELoss()), ([2, 6, 3], MSELoss()),
                                         ([2, 5, 3], CrossEntropyLoss())])
def test_jtj_in_chunks_reads_the_epochs_forward_pass_instead_of_running_it_again(
        sizes, loss, monkeypatch):
    # 40 rows in chunks of 7: the factors come from views of the pass the epoch starts
    # with, so an epoch whose first trial is accepted runs two forward passes (its start
    # and the trial), and the step is still the exact one.
    from jacnet.network import Sequential

    calls = []
    forward = Sequential.forward
    monkeypatch.setattr(Sequential, "forward",
                        lambda self, X, *a, **k: (calls.append(len(X)), forward(self, X, *a, **k))[1])
    X, Y = _data(40, sizes[0], sizes[-1])
    target = np.argmax(Y, axis=1) if isinstance(loss, CrossEntropyLoss) else Y
    model = mlp(sizes, seed=0, dtype="float64")
    chunked, whole = LevenbergMarquardt(mu=10.0, chunk_size=7), LevenbergMarquardt(mu=10.0)
    reference = model.copy()
    info = chunked.epoch(model, loss, X, target)
    assert calls == [40, 40] and info["mu"] == pytest.approx(1.0)
    whole.epoch(reference, loss, X, target)
    np.testing.assert_allclose(model.params, reference.params, rtol=1e-12, atol=1e-12)


def test_dense_solve_ignores_what_the_stale_upper_triangle_holds():
    """JᵀJ's upper triangle is left as the reused buffer held it (syrk writes the lower
    one): whatever it holds, even values that overflow when scaled, the damped solve
    neither warns nor changes (only the lower triangle is read)."""
    pytest.importorskip("scipy")
    from jacnet.optim import second_order

    model = mlp([1, 20, 1], seed=0, dtype="float64")  # 61 parameters
    X, Y = _data(5000, 1, 1)  # one chunk of 5000 × 61 rows: syrk's lower triangle
    rows = model.forward(X) - Y
    solves = []
    for fill in (0.0, 1e308):
        buffer = np.full((model.n_params, model.n_params), fill)
        system = second_order._NormalEquations(model, X, rows, 5000, False, buffer=buffer)
        assert buffer[0, -1] == fill  # the upper triangle was indeed not written
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            solves.append(system.solve(10.0, 1e-3))
    np.testing.assert_array_equal(solves[0], solves[1])
