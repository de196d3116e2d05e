"""Write the figures that docs/backprop.md and docs/uncertainty.md show.

Run from the repository root:  python docs/figures/make_figures.py [OUTPUT_DIR]
(default: this folder). tests/test_plot.py runs it into a temporary folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from jacnet.data import Dataset, load_dataset, train_test_split
from jacnet.explain import explain, seed_network
from jacnet.laplace import Laplace
from jacnet.network import Sequential, mlp
from jacnet.optim import SGD, BayesianRegularization
from jacnet.plot import (
    compare_gradient_flow,
    plot_decision_boundary,
    plot_gradient_flow,
    plot_history,
    plot_jacobian,
    plot_predictive,
)
from jacnet.training import History, fit

HERE = Path(__file__).resolve().parent

#: file name → (width, height) in pixels
SIZES = {
    "jacobian_dy_du.png": (600, 450),
    "jacobian_ds_dvecW.png": (600, 450),
    "jacobian_dz_dtheta.png": (600, 450),
    "gradient_flow.png": (1200, 400),
    "history.png": (1000, 350),
    "decision_boundary.png": (600, 500),
    "predictive_band.png": (700, 450),
}


def train_moons(epochs: int = 120) -> tuple[Sequential, History, Dataset]:
    """A small tanh network on two moons: SGD, step-decayed η, a validation split."""
    data = load_dataset("moons", n_samples=300, seed=0)
    X_train, X_val, y_train, y_val = train_test_split(data.X, data.y, test_size=0.3, seed=0)
    model = mlp([2, 16, 16, 2], activation="tanh", seed=0)
    history = fit(model, X_train, y_train, loss="cross_entropy",
                  optimizer=SGD(lr=0.2, momentum=0.9), epochs=epochs, batch_size=32, seed=0,
                  validation_data=(X_val, y_val),
                  schedule=("step", {"step_size": 40, "gamma": 0.5}), progress=False)
    return model, history, data


def main(out: Path = HERE) -> list[Path]:
    """Write every figure into ``out``; return their paths."""
    out = Path(out)
    ex = explain(seed_network(), np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.8]))
    for name, step, xlabel in (("jacobian_dy_du.png", "∂y/∂u", "input j"),
                               ("jacobian_ds_dvecW.png", "∂s/∂vec(W)", "entry j of vec(W)"),
                               ("jacobian_dz_dtheta.png", "∂z/∂θ", None)):
        s = ex[step]
        plot_jacobian(s.operator, out / name, title=f"{s.title}\n{s.structure}", xlabel=xlabel)

    plot_gradient_flow(compare_gradient_flow(epochs=5), out / "gradient_flow.png")

    model, history, data = train_moons()
    plot_history(history, out / "history.png", title="tanh 2-16-16-2 on moons, SGD")
    plot_decision_boundary(model, data.X, data.y, out / "decision_boundary.png",
                           title=f"tanh 2-16-16-2 on moons (validation accuracy "
                                 f"{history['val_accuracy'][-1]:.0%})")
    # docs/uncertainty.md: seed 0 of benchmarks/bench_laplace.py --sections synthetic
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (300, 1))
    y = np.sin(3 * X) + 0.3 * X**2 + 0.1 * rng.standard_normal(X.shape)
    net = mlp([1, 16, 1], activation="tanh", seed=0, dtype="float64")
    BayesianRegularization().fit(net, X, y, epochs=200)
    la = Laplace(net).fit(X, y)
    plot_predictive(la, X, y, out / "predictive_band.png",
                    title=f"1-16-1 tanh, Bayesian regularisation; noise σ̂ = "
                          f"{1 / np.sqrt(la.beta_):.3f} (true 0.1)")
    return [out / name for name in SIZES]


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
