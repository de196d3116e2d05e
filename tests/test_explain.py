"""jacnet.explain: each step of back-propagation, its structure, and its checks."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest

from jacnet.cli import (
    add_explain_arguments,
    add_inspect_arguments,
    explain_command,
    inspect_command,
)
from jacnet.explain import default_sample, explain, inspect_model, seed_network
from jacnet.layers import Sigmoid
from jacnet.network import mlp


@pytest.fixture(scope="module")
def seed_explanation():
    return explain(seed_network(), np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.8]))


def test_seed_network_steps_have_the_seed_structure(seed_explanation):
    ex = seed_explanation
    assert ex["∂z/∂s"].structure == "diagonal"
    assert ex["∂y/∂u"].structure == "diagonal"
    assert ex["∂s/∂vec(W)"].structure == "Kronecker: I₂ ⊗ yᵀ"
    assert ex["∂s/∂vec(W)"].shape == (2, 8)
    assert ex["∂u/∂vec(V)"].shape == (4, 12)
    value = ex["∂z/∂s"].value
    assert np.count_nonzero(value - np.diag(np.diag(value))) == 0


def test_seed_network_numbers_follow_the_formulas(seed_explanation):
    ex = seed_explanation
    model = seed_network()
    x, d = np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.8])
    V, W = model[0].weight, model[2].weight
    u = V @ x
    y = 1 / (1 + np.exp(-u))
    s = W @ y
    z = 1 / (1 + np.exp(-s))
    delta = (z - d) * z * (1 - z)
    np.testing.assert_allclose(ex["∂E/∂z"].value[0], z - d, rtol=1e-12)
    np.testing.assert_allclose(ex["∂E/∂W"].value, np.outer(delta, y), rtol=1e-12)
    np.testing.assert_allclose(ex["∂E/∂y"].value[0], delta @ W, rtol=1e-12)
    delta1 = (delta @ W) * y * (1 - y)
    np.testing.assert_allclose(ex["∂E/∂V"].value, np.outer(delta1, x), rtol=1e-12)
    np.testing.assert_allclose(ex["∂s/∂vec(W)"].value, np.kron(np.eye(2), y), rtol=1e-12)
    assert ex.loss == pytest.approx(0.5 * np.sum((d - z) ** 2), rel=1e-12)
    assert ex.loss_after_step < ex.loss


def test_every_check_passes_and_finite_differences_are_reported(seed_explanation):
    ex = seed_explanation
    assert ex.passed and ex.n_checks == 24
    for step in ex.steps:
        if step.kind in ("jacobian", "gradient", "weight gradient"):
            assert step.fd_error is not None and step.fd_error < 1e-7, step.name


def test_a_wrong_gradient_is_caught(monkeypatch):
    # Break the sigmoid's derivative: the Jacobian and gradient checks must fail.
    monkeypatch.setattr(Sigmoid, "_derivative", lambda self, x, y: y * (1.0 - y) * 1.01)
    ex = explain()
    assert not ex.passed
    assert not ex["∂z/∂s"].passed
    assert "FAILED" in ex.to_text() and "SOME FAILED" in ex.summary()


def test_a_relu_input_on_its_kink_is_explained_not_failed():
    """At u = 0 ReLU has no derivative: finite differences across the corner disagree
    with the convention f′(0) = 0. Those checks are left out of the verdict and the
    report says why; every check that agrees (above the kink, or a perturbation that does
    not move u: V with x = 0) is kept."""
    model = mlp([2, 3, 1], activation="relu", seed=0, dtype="float64")
    model.layers[0].bias[...] = 0.0
    ex = explain(model, [0.0, 0.0], [1.0])
    assert ex.passed
    assert len(ex.caveats) == 1 and "layer 1 (ReLU), is at or near its kink at units 0, 1, 2" \
        in ex.caveats[0] and ex.caveats[0] in ex.to_text()
    for name in ("∂y/∂u", "∂E/∂u", "∂E/∂b₁", "∂E/∂x", "∂z/∂θ", "∂E/∂θ"):
        assert ex[name].fd_error is None and "cross a kink" in ex[name].note, name
    for name in ("∂E/∂V", "∂E/∂y", "∂E/∂W", "∂E/∂z"):
        assert ex[name].fd_error is not None and ex[name].fd_error < 1e-7, name
        assert "kink" not in ex[name].note
    # Away from the kink nothing is left out.
    plain = explain(model, [0.3, -0.2], [1.0])
    assert plain.passed and not plain.caveats
    assert all(step.fd_error is not None for step in plain.steps if step.kind != "value")


def test_a_check_near_a_kink_that_agrees_is_kept_and_a_wrong_derivative_still_fails(
        monkeypatch):
    from jacnet.layers import ReLU

    model = mlp([2, 3, 1], activation="relu", seed=0, dtype="float64")
    u = model.layers[0].weight @ np.array([0.4, -0.1]) + model.layers[0].bias
    model.layers[0].bias[0] -= u[0] - 1e-5  # unit 0 just off its kink, on the positive side
    ex = explain(model, [0.4, -0.1], [1.0])
    assert ex.passed and not ex.caveats  # near the kink, but the checks agree: all kept
    assert all(step.fd_error is not None for step in ex.steps if step.kind != "value")
    # A wrong derivative is still caught (its Jacobian disagrees with backward).
    monkeypatch.setattr(ReLU, "_derivative", lambda self, x, y: (y > 0) * 1.01)
    assert not explain(model, [0.4, -0.1], [1.0]).passed


def test_renders_to_markdown_text_and_rich(seed_explanation):
    md = seed_explanation.to_markdown()
    assert md.startswith("# Back-propagation, step by step")
    assert "**∂E/∂W = δ yᵀ** — outer product (rank 1), 2 × 4" in md
    assert "## Layer 2, the 2nd linear layer: s = W y" in md
    assert "passed" in str(seed_explanation)
    rich = pytest.importorskip("rich.console")
    console = rich.Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(seed_explanation.to_rich())
    assert "∂s/∂vec(W) = I₂ ⊗ yᵀ" in console.export_text()


def test_biases_deep_networks_and_cross_entropy():
    model = mlp([3, 5, 4, 3], activation="tanh", seed=1)
    ex = explain(model, [0.1, 0.2, -0.3], 2, loss="cross_entropy")
    assert ex.passed
    assert {"∂E/∂W₁", "∂E/∂b₁", "∂E/∂W₃", "∂E/∂b₃"} <= {s.name for s in ex.steps}
    assert ex["∂E/∂b₃"].formula == "δᵀ"
    assert ex.model.dtype == np.float64 and model.dtype == np.float32  # a copy was explained


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"x": np.zeros((2, 3))}, ValueError, r"one sample.*got \(2, 3\)"),
    ({"x": [1.0, 2.0]}, ValueError, "3"),
    ({"target": [0.1, 0.2, 0.3]}, ValueError, "target has 3 columns"),
    ({"lr": -1.0}, ValueError, "lr must be a number > 0"),
    ({"model": "seed"}, TypeError, "model must be a jacnet Sequential"),
])
def test_bad_input_is_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        explain(**kwargs)


def test_inspect_model_summarises_structure():
    model = mlp([2, 8, 8, 1], activation="relu", seed=0)
    X = np.random.default_rng(0).normal(size=(40, 2))
    info = inspect_model(model, X, np.zeros(40), max_samples=16)
    assert info.n_samples == 16
    assert [row["jacobian"] for row in info.layers][:2] == ["dense (the weight matrix itself)",
                                                            "diagonal"]
    relu_row = info.layers[1]
    assert relu_row["sigma_max"] == 1.0 and relu_row["sigma_min"] == 0.0
    assert info.network["param_jacobian_shape"] == (1, model.n_params)
    assert info.network["stored_bytes"] < info.network["dense_bytes"]
    assert info.layers[0]["grad_norm"] > 0 and info.network["loss"] > 0
    assert "| 1 | ReLU() |" in info.to_markdown()
    with pytest.raises(ValueError, match="y has 3 rows but X has 16"):
        inspect_model(model, X, np.zeros(3), max_samples=16)


def _parse(add, argv):
    return add(argparse.ArgumentParser()).parse_args(argv)


def test_explain_command_prints_and_writes_markdown(tmp_path, capsys):
    md = tmp_path / "out" / "explain.md"
    args = _parse(add_explain_arguments, ["--format", "text", "--markdown", str(md),
                                          "--sizes", "2,3,1", "--bias"])
    assert explain_command(args) == 0
    out = capsys.readouterr().out
    assert "∂s/∂vec(W) = I₁ ⊗ yᵀ" in out and "all passed" in out
    assert md.read_text(encoding="utf-8").startswith("# Back-propagation")


def test_explain_command_reports_bad_input(capsys):
    args = _parse(add_explain_arguments, ["--x", "1,oops"])
    assert explain_command(args) == 2
    assert "--x must be numbers" in capsys.readouterr().err


def test_inspect_command_with_a_saved_model(tmp_path, capsys):
    from jacnet.io import save_model

    model = mlp([2, 6, 2], seed=0)
    save_model(tmp_path / "model.npz", model)
    args = _parse(add_inspect_arguments, [str(tmp_path / "model.npz"), "--data", "moons",
                                          "--format", "text"])
    assert inspect_command(args) == 0
    out = capsys.readouterr().out
    assert "Linear(in_features=2, out_features=6, bias=True)" in out and "‖∂E/∂θ‖" in out


def test_inspect_applies_the_scaler_saved_by_jacnet_train(tmp_path, capsys):
    """A model trained on standardised inputs is inspected on standardised inputs."""
    from jacnet.cli import main
    from jacnet.data import load_dataset
    from jacnet.io import load_model
    from jacnet.losses import CrossEntropyLoss

    run = tmp_path / "run"
    assert main(["train", "--data", "iris", "--epochs", "5", "--no-progress",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    args = _parse(add_inspect_arguments, [str(run / "model.npz"), "--data", "iris",
                                          "--n-samples", "20", "--format", "text"])
    assert inspect_command(args) == 0
    tail = capsys.readouterr().out.rsplit("Loss on these samples:", 1)[1]
    reported = float(tail.split()[0].rstrip("."))
    saved, data = load_model(run / "model.npz"), load_dataset("iris")
    X = saved.preprocessing["X"].transform(data.X[:20])
    expected = CrossEntropyLoss()(saved.model.astype("float64")(X), data.y[:20])
    assert reported == pytest.approx(expected, rel=1e-4)


def test_inspect_command_missing_file(tmp_path, capsys):
    args = _parse(add_inspect_arguments, [str(tmp_path / "nope.json")])
    assert inspect_command(args) == 2
    assert "not found" in capsys.readouterr().err


def test_importing_explain_does_not_import_rich_or_matplotlib():
    code = ("import sys, jacnet.explain, jacnet.plot; "
            "print(any(m.split('.')[0] in ('rich', 'matplotlib') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_sample_is_the_guides_so_the_numbers_match(capsys):
    assert [list(v) for v in default_sample(seed_network())] == [[0.5, -1.0, 2.0], [0.1, 0.8]]
    ex = explain()
    np.testing.assert_allclose(ex["z"].value, [0.4321, 0.5062], atol=5e-5)  # docs/backprop.md
    assert round(ex.loss, 6) == 0.098286
    args = _parse(add_explain_arguments, ["--format", "text"])
    assert explain_command(args) == 0
    out = capsys.readouterr().out
    assert "[ 0.3321 -0.2938]" in out and "E = 0.0982864 before the step" in out
    assert "vector–Jacobian product (VJP" in out and "(JVP)" in out


def test_explain_model_uses_the_saved_loss_and_a_real_sample(tmp_path, capsys):
    from jacnet.cli import main
    from jacnet.data import load_dataset
    from jacnet.io import load_model

    run = tmp_path / "run"
    assert main(["train", "--data", "iris", "--epochs", "2", "--no-progress",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    args = _parse(add_explain_arguments, ["--model", str(run / "model.npz"), "--format", "text"])
    assert explain_command(args) == 0
    out = capsys.readouterr().out
    assert "loss cross-entropy" in out and "row 0 of iris" in out
    saved = load_model(run / "model.npz")
    x = saved.preprocessing["X"].transform(load_dataset("iris").X[:1])[0]
    assert _format_row(x) in out.replace("\n", " ")


def _format_row(x):
    with np.printoptions(precision=4, suppress=True, linewidth=100):
        return np.array2string(x)


def test_rich_panels_keep_the_structure_at_120_columns():
    pytest.importorskip("rich")
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(explain(seed_network(bias=True)).to_rich())
    text = console.export_text()
    assert "Kronecker: I₄ ⊗ xᵀ, 4 × 12" in text and "…" not in text


def test_figures_are_named_by_what_they_show_with_an_index(tmp_path):
    pytest.importorskip("matplotlib")
    from jacnet.plot import figure_name, plot_explanation, plot_jacobian

    ex = explain()
    names = [p.name for p in plot_explanation(ex, tmp_path)]
    assert "dz_ds_diag_gprime_s.png" in names and "ds_dvecW_I2_kron_yT.png" in names
    assert names[-2:] == ["graph.png", "index.md"]
    index = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert "| [dy_du_diag_fprime_u.png](dy_du_diag_fprime_u.png) | ∂y/∂u = diag(f′(u)) |" in index
    assert figure_name(ex["∂u/∂vec(V)"]) == "du_dvecV_I4_kron_xT"
    fig = plot_jacobian(ex["∂z/∂s"].operator)
    cells = [t.get_text() for t in fig.axes[0].texts]
    assert cells == ["0.245", "0", "0", "0.25"]  # values written in the small heat map
    assert len(plot_jacobian(np.ones((10, 10))).axes[0].texts) == 0


def test_graph_figure_shows_forward_values_and_backward_gradients():
    pytest.importorskip("matplotlib")
    from jacnet.plot import plot_graph

    texts = [t.get_text() for t in plot_graph(explain()).axes[0].texts]
    assert "(0.5, -1, 2)" in texts and "(0.43, 0.51)" in texts
    assert "∂E/∂z =\n(0.33, -0.29)" in texts and "E = 0.09829" in texts


def test_a_batch_shows_delta_and_the_summed_weight_gradient():
    model = seed_network(bias=True)
    ex = explain(model, batch=2)  # the guide's two rows (docs/backprop.md, section 7)
    X, D = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -1.0]]), np.array([[0.1, 0.8], [0.9, 0.2]])
    np.testing.assert_array_equal(ex["X"].value, X)
    # Oracle: the library's own batch backward with E = Σ_b E_b.
    from jacnet.losses import MSELoss

    oracle = model.copy()
    _, grad = MSELoss(reduction="sum").value_and_grad(oracle(X), D)
    oracle.backward(grad)
    slices = oracle.parameter_slices()
    np.testing.assert_allclose(ex["Σ_b ∂E_b/∂W"].value,
                               oracle.grads[slices["2.weight"]].reshape(2, 4), rtol=1e-12)
    np.testing.assert_allclose(ex["Σ_b ∂E_b/∂b₁"].value, oracle.grads[slices["0.bias"]], rtol=1e-12)
    # ... and the sum of the one-sample explanations, row by row of Δ.
    singles = [explain(model, X[b], D[b]) for b in range(2)]
    np.testing.assert_allclose(ex["Σ_b ∂E_b/∂V"].value, sum(s["∂E/∂V"].value for s in singles))
    np.testing.assert_allclose(ex["Δ₁"].value, np.vstack([s["∂E/∂u"].value for s in singles]))
    assert ex["Σ_b ∂E_b/∂W"].formula == "Σ_b δ_b y_bᵀ = Δᵀ Y"
    assert ex.passed and ex["∂E/∂W"].shape == (2, 4)  # the one-sample steps are unchanged
    assert [c.name for c in ex["Σ_b ∂E_b/∂W"].checks] == [
        "vs the one-sample gradients δ_b y_bᵀ, summed",
        "vs backward on the batch (model.grads['2.weight'])", "vs finite differences"]


def test_a_wrong_derivative_fails_the_batch_steps_too(monkeypatch):
    monkeypatch.setattr(Sigmoid, "_derivative", lambda self, x, y: y * (1.0 - y) * 1.01)
    ex = explain(batch=3)
    assert not ex["Σ_b ∂E_b/∂V"].passed and not ex["Δ₁"].passed


def test_a_batch_row_on_a_kink_is_named_not_failed():
    model = mlp([2, 3, 1], activation="relu", seed=0, dtype="float64")
    model.layers[0].bias[...] = 0.0
    ex = explain(model, [0.3, -0.2], [1.0], batch=([[0.3, -0.2], [0.0, 0.0]], [[1.0], [1.0]]))
    assert ex.passed and len(ex.caveats) == 1
    assert ex.caveats[0].startswith("u (sample 1 of the batch), the input of layer 1 (ReLU)")
    assert ex["Δ₁"].fd_error is None and "cross a kink" in ex["Δ₁"].note


@pytest.mark.parametrize(("batch", "error", "match"), [
    ("rows", TypeError, "batch must be a number of samples or a pair"),
    (([[0.0, 0.0, 0.0]] * 2, [[0.1, 0.8]] * 3), ValueError, "2 rows of X but 3 targets"),
    (0, ValueError, "positive number of samples; got 0"),
])
def test_a_bad_batch_is_named(batch, error, match):
    with pytest.raises(error, match=match):
        explain(batch=batch)


def test_explain_command_batch(capsys):
    # The guide's batch, so the guide's ∂E/∂W = Σ_b δ_b y_bᵀ (docs/backprop.md, section 7).
    args = _parse(add_explain_arguments, ["--batch", "2", "--format", "text"])
    assert explain_command(args) == 0
    out = capsys.readouterr().out
    assert "A batch of 2 samples: E = Σ_b E_b" in out
    assert "[[-0.0516  0.0356 -0.0128 -0.071 ]\n   [ 0.0479 -0.0318  0.0125  0.0656]]" in out
    args = _parse(add_explain_arguments, ["--batch", "0"])
    assert explain_command(args) == 2
    assert "--batch must be a positive number of samples; got 0" in capsys.readouterr().err
