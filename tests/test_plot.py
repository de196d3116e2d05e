"""jacnet.plot: the figures are produced, as PNGs of the expected size."""

from __future__ import annotations

import builtins
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from jacnet.explain import explain
from jacnet.network import mlp
from jacnet.plot import (
    GradientFlow,
    gradient_flow,
    plot_decision_boundary,
    plot_explanation,
    plot_gradient_flow,
    plot_history,
    plot_jacobian,
)

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 2000, f"{path} is suspiciously small"
    return struct.unpack(">II", data[16:24])


def test_make_figures_writes_every_figure_of_the_guide(tmp_path):
    spec = importlib.util.spec_from_file_location("make_figures", FIGURES / "make_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths = module.main(tmp_path)
    assert [p.name for p in paths] == list(module.SIZES)
    for path in paths:
        assert png_size(path) == module.SIZES[path.name], path.name


class FakeHistory:
    def to_dict(self):
        return {"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.25], "val_loss": [1.1, 0.7, 0.4],
                "accuracy": [0.5, 0.7, 0.9], "mu": [1e-2, 1e-3, 1e-4]}


def test_plot_history_takes_the_fit_loops_history(tmp_path):
    """The History that jacnet.training.fit returns, not a stand-in for it."""
    from jacnet.training import fit

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    history = fit(mlp([2, 4, 2], seed=0), X, y, loss="cross_entropy", epochs=3,
                  validation_split=0.25, progress=False)
    fig = plot_history(history, tmp_path / "fit.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "lr"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), history["loss"])


def test_plot_history_takes_a_history_or_a_dict(tmp_path):
    fig = plot_history(FakeHistory(), tmp_path / "h.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "mu"]
    assert png_size(tmp_path / "h.png") == (1000, 350)
    assert len(plot_history({"loss": [3.0, 2.0]}).axes) == 1
    with pytest.raises(ValueError, match="history has no 'loss'"):
        plot_history({"acc": [1.0]})
    with pytest.raises(TypeError, match="History"):
        plot_history([1.0, 2.0])


def test_plot_jacobian_accepts_arrays_and_operators(tmp_path):
    ex = explain()
    fig = plot_jacobian(ex["∂z/∂θ"].operator, tmp_path / "j.png", title="dz/dθ")
    assert png_size(tmp_path / "j.png") == (600, 450)
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(image, ex["∂z/∂θ"].value)
    top_labels = [t.get_text() for t in fig.axes[0].child_axes[0].get_xticklabels()]
    assert top_labels == ["0.weight", "2.weight"]
    plot_jacobian(np.ones((3, 2, 4)), sample=2)
    with pytest.raises(ValueError, match="matrix"):
        plot_jacobian(np.ones(3))
    with pytest.raises(ValueError, match=r"sample must be in 0\.\.0"):
        plot_jacobian(ex["∂z/∂s"].operator, sample=1)
    assert len(plot_explanation(ex, tmp_path / "ex")) == 9  # 7 heat maps, graph, index


def test_gradient_flow_records_and_plots(tmp_path):
    X = np.random.default_rng(0).normal(size=(64, 3))
    flow = gradient_flow(mlp([3, 6, 6, 6, 1], activation="sigmoid", seed=0), X, X[:, :1],
                         epochs=2, name="sigmoid")
    assert flow.epochs == [0, 1, 2] and len(flow.loss) == 3
    assert flow.grad_norms.shape == (3, 4)
    assert flow.singular_values[0].shape == (4, 1)
    plot_gradient_flow({"sigmoid": flow}, tmp_path / "g.png")
    assert png_size(tmp_path / "g.png") == (1200, 400)
    with pytest.raises(TypeError, match="GradientFlow"):
        plot_gradient_flow([1, 2])
    with pytest.raises(ValueError, match="y has 3 rows"):
        gradient_flow(mlp([3, 1]), X, np.zeros(3))
    assert isinstance(flow, GradientFlow)


def test_sigmoid_gradients_vanish_and_relu_gradients_do_not():
    X = np.random.default_rng(1).normal(size=(128, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    norms = {}
    for act in ("sigmoid", "relu"):
        model = mlp([4] + [16] * 6 + [2], activation=act, seed=0, dtype="float64")
        norms[act] = gradient_flow(model, X, y, loss="cross_entropy", epochs=1).grad_norms[0]
    assert norms["sigmoid"][0] / norms["sigmoid"][-1] < 1e-3
    assert norms["relu"][0] / norms["relu"][-1] > 1e-2


def test_plot_decision_boundary(tmp_path):
    X = np.random.default_rng(0).normal(size=(50, 2))
    y = (X[:, 0] > 0).astype(int)
    fig = plot_decision_boundary(mlp([2, 4, 1], output_activation="sigmoid", seed=0), X, y,
                                 tmp_path / "d.png", resolution=50)
    assert png_size(tmp_path / "d.png") == (600, 500)
    assert fig.axes[0].get_xlabel() == "x₁"
    with pytest.raises(ValueError, match="2 inputs"):
        plot_decision_boundary(mlp([3, 2]), np.zeros((4, 3)), np.zeros(4))


def test_missing_matplotlib_gives_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'jacnet\[plot\]'"):
        plot_history({"loss": [1.0]})


def test_plot_predictive_band_contains_the_mean_and_grows_outside(tmp_path):
    from jacnet.laplace import Laplace
    from jacnet.plot import plot_predictive

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 1))
    y = np.sin(3 * X) + 0.1 * rng.standard_normal(X.shape)
    la = Laplace(mlp([1, 8, 1], seed=0, dtype="float64"), prior_precision=1.0,
                 noise_precision=100.0).fit(X, y)
    path = tmp_path / "band.png"
    fig = plot_predictive(la, X, y, path)
    assert png_size(path) == (700, 450)
    ax = fig.axes[0]
    xs, mean = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    np.testing.assert_allclose(mean, la.predictive(xs.reshape(-1, 1)).mean[:, 0])
    total, weights = ax.collections[0], ax.collections[1]
    for band, var in ((total, la.predictive(xs.reshape(-1, 1)).var[:, 0]),
                      (weights, la.predictive(xs.reshape(-1, 1)).epistemic_var[:, 0])):
        vertices = band.get_paths()[0].vertices  # the outline: lower and upper edge
        at = [vertices[vertices[:, 0] == x, 1] for x in xs]
        lower, upper = np.array([v.min() for v in at]), np.array([v.max() for v in at])
        assert np.all(lower < mean) and np.all(mean < upper)
        np.testing.assert_allclose(upper - mean, 2 * np.sqrt(var), rtol=1e-6)
        np.testing.assert_allclose(mean - lower, 2 * np.sqrt(var), rtol=1e-6)
    width = upper - mean
    assert width[0] > width[len(xs) // 2] and width[-1] > width[len(xs) // 2]  # outside the data


def test_plot_predictive_takes_an_estimator_and_checks_its_input():
    from jacnet.plot import plot_predictive

    class Constant:
        def predict(self, X, return_std=False):
            return np.zeros(len(X)), np.full(len(X), 0.5)

    X, y = np.linspace(0, 1, 10), np.zeros(10)
    fig = plot_predictive(Constant(), X, y, grid=np.linspace(-1, 2, 7))
    np.testing.assert_allclose(fig.axes[0].collections[0].get_paths()[0].vertices[:, 1].max(), 1.0)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 1\)"):
        plot_predictive(Constant(), np.zeros((10, 2)), y)
    with pytest.raises(ValueError, match="y must have 10 rows"):
        plot_predictive(Constant(), X, np.zeros(7))
    with pytest.raises(TypeError, match="predict\\(X, return_std=True\\)"):
        plot_predictive(object(), X, y)
