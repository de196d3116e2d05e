"""Predictive uncertainty (``jacnet.laplace``): calibration, laplace-torch, real data, scale.

Sections (``--sections``, default all):

``synthetic``
    y = sin(3x) + 0.3x² + ε, ε ~ N(0, 0.1²), 300 training points x ~ U(-1, 1), a 1-16-1
    tanh network trained by Bayesian regularisation (200 epochs), ``--seeds`` seeds; then
    ``Laplace(model).fit`` (full GGN, α and β from the evidence). Reported per seed: the
    estimated noise σ̂ = 1/√β against 0.1, the share of 2000 held-out points inside
    [-1, 1] within ±2σ(x), and σ(x) at x = 0, 1.5, 3.
``torch``
    Against laplace-torch (``laplace.Laplace(..., subset_of_weights="all",
    hessian_structure="full")``, the Curvlinops GGN backend), float64, on the same trained
    network (jacnet LM, copied into a ``torch.nn.Sequential``) and data, the same prior
    precision and noise σ: the largest relative difference of the predictive standard
    deviations over the test points, and the time to fit the approximation and predict
    (interleaved, ``--repeats`` rounds, median and per-round ratio range).
``real``
    ``diabetes`` (regression, targets in their own units) and ``breast_cancer`` and
    ``digits`` (classification), ``--splits`` random 75/25 splits, features standardised
    on the training part. Test negative log-likelihood per point (Gaussian for regression,
    categorical for classification) and, for classifiers, the expected calibration error
    (15 equal-width bins of the top-class probability), for jacnet's estimators with and
    without the Laplace predictive (without: the network's probabilities; for
    regression the noise 1/β alone around the same mean), beside scikit-learn's
    ``BayesianRidge`` and ``GaussianProcessRegressor`` (RBF × constant + white noise,
    ``normalize_y``).
``scale``
    ``structure="last_layer"`` on networks of ≥ 100k parameters (50-300-300-1 regression,
    784-256-256-10 classification), random data: fit on 2000 rows and predict 1000,
    the peak of traced NumPy allocations (tracemalloc) beside the 8P² bytes one P × P
    float64 array would take.

Run:  .venv/bin/python benchmarks/bench_laplace.py --threads 1 [--quick]
      [--sections synthetic,torch,real,scale] [--markdown /tmp/laplace.md]
"""

from __future__ import annotations

import argparse
import math
import time
import tracemalloc
import warnings
from typing import Any

import common  # noqa: F401  (first: sets the thread count before NumPy is imported)
import numpy as np
from common import (
    N_THREADS,
    import_torch,
    interleaved,
    machine_description,
    markdown_table,
    median,
    parallelism,
    write_report,
)

from jacnet import mlp
from jacnet.laplace import Laplace
from jacnet.optim import BayesianRegularization, LevenbergMarquardt


def _truth(x: np.ndarray) -> np.ndarray:
    return np.sin(3 * x) + 0.3 * x**2


# --------------------------------------------------------------------------- synthetic
def section_synthetic(args: argparse.Namespace) -> str:
    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1, 1, (300, 1))
        y = _truth(X) + 0.1 * rng.standard_normal(X.shape)
        Xt = rng.uniform(-1, 1, (2000, 1))
        yt = _truth(Xt) + 0.1 * rng.standard_normal(Xt.shape)
        model = mlp([1, 16, 1], activation="tanh", seed=seed, dtype="float64")
        BayesianRegularization().fit(model, X, y, epochs=200)
        la = Laplace(model).fit(X, y)
        pred = la.predictive(Xt)
        coverage = float(np.mean(np.abs(yt - pred.mean) <= 2 * pred.std))
        far = la.predictive(np.array([[0.0], [1.5], [3.0]])).std[:, 0]
        noise = 1 / math.sqrt(la.beta_)
        rows.append([str(seed), f"{noise:.4f}", f"{100 * (noise - 0.1) / 0.1:+.1f}%",
                     f"{100 * coverage:.1f}%", f"{la.effective_n_params_:.1f}",
                     " / ".join(f"{v:.3f}" for v in far)])
        print(f"synthetic seed {seed}: noise {noise:.4f}, coverage {coverage:.3f}, "
              f"std(0, 1.5, 3) {far}", flush=True)
    return ("### Synthetic 1-D regression, noise σ = 0.1\n\n"
            "1-16-1 tanh, Bayesian regularisation 200 epochs, 300 training points in "
            "[-1, 1], `Laplace(model).fit(X, y)` (full, evidence α and β), 2000 held-out "
            "points in [-1, 1].\n\n"
            + markdown_table(["seed", "σ̂ = 1/√β", "vs 0.1", "±2σ coverage", "γ",
                              "σ(x) at x = 0 / 1.5 / 3"], rows) + "\n")


# --------------------------------------------------------------------------- torch
def _torch_net(torch: Any, sizes: list[int], model: Any) -> Any:
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    net = torch.nn.Sequential(*layers).double()
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.tensor(model.params), net.parameters())
    return net


def _contenders(torch_laplace: Any, backend: Any, model: Any, net: Any, X: np.ndarray,
                y: np.ndarray, Xt: np.ndarray, Xt_torch: Any, loader: Any, alpha: float,
                beta: float) -> tuple[Any, Any]:
    """Fit + predict σ(x) with jacnet and with laplace-torch, the same network and data."""
    def jacnet_run() -> np.ndarray:
        la = Laplace(model, structure="full", prior_precision=alpha, noise_precision=beta)
        return la.fit(X, y).predictive(Xt).std

    def torch_run() -> np.ndarray:
        la = torch_laplace(net, "regression", subset_of_weights="all",
                           hessian_structure="full", prior_precision=alpha,
                           sigma_noise=1 / math.sqrt(beta), backend=backend)
        la.fit(loader)
        _, f_var = la(Xt_torch, pred_type="glm")
        var = np.diagonal(f_var.detach().numpy(), axis1=1, axis2=2)
        return np.sqrt(var + 1 / beta)

    return jacnet_run, torch_run


def section_torch(args: argparse.Namespace) -> str:
    torch = import_torch()
    try:
        import laplace as laplace_torch
        from laplace.curvature import CurvlinopsGGN
    except ImportError:
        return "(torch section skipped: laplace-torch is not installed)\n"
    torch.set_default_dtype(torch.float64)
    cases = [([2, 8, 2], 50), ([4, 16, 16, 1], 500), ([8, 32, 32, 1], 1000)]
    if args.quick:
        cases = cases[:2]
    rows = []
    alpha, beta = 0.7, 30.0
    for sizes, n in cases:
        rng = np.random.default_rng(0)
        X = rng.uniform(-1, 1, (n, sizes[0]))
        y = np.column_stack([np.sin(3 * X[:, 0]) + X[:, -1] ** (k + 1)
                             for k in range(sizes[-1])]) + 0.1 * rng.standard_normal((n, sizes[-1]))
        Xt = rng.uniform(-2, 2, (200, sizes[0]))
        model = mlp(sizes, activation="tanh", seed=0, dtype="float64")
        LevenbergMarquardt().fit(model, X, y, epochs=20)
        net = _torch_net(torch, sizes, model)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(y)), batch_size=n)
        jacnet_run, torch_run = _contenders(laplace_torch.Laplace, CurvlinopsGGN, model, net,
                                            X, y, Xt, torch.tensor(Xt), loader, alpha, beta)
        ours, theirs = jacnet_run(), torch_run()
        rel = float(np.max(np.abs(ours - theirs) / theirs))
        times = interleaved({"jacnet": jacnet_run, "laplace-torch": torch_run},
                            args.repeats, warmup=1)
        ratios = [t / j for j, t in zip(times["jacnet"], times["laplace-torch"])]
        rows.append(["-".join(map(str, sizes)), str(model.n_params), str(n),
                     f"{rel:.1e}", f"{median(times['jacnet']) * 1e3:.1f} ms",
                     f"{median(times['laplace-torch']) * 1e3:.1f} ms",
                     f"{min(ratios):.2f}–{max(ratios):.2f}"])
        print("torch", rows[-1], flush=True)
    torch.set_default_dtype(torch.float32)
    return ("### Against laplace-torch (full GGN, float64)\n\n"
            f"α = {alpha}, σ = 1/√{beta:g}, tanh networks trained by jacnet LM (20 epochs), "
            "200 test points in [-2, 2]ᵈ; time = build the approximation on the training "
            f"rows + predict σ(x) on the test points; {args.repeats} interleaved rounds, "
            f"{N_THREADS} thread(s) each.\n\n"
            + markdown_table(["network", "P", "N", "max rel. diff of σ(x)", "jacnet",
                              "laplace-torch", "laplace-torch ÷ jacnet (range)"], rows) + "\n")


# --------------------------------------------------------------------------- real
def _gauss_nll(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    return float(np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5 * ((y - mean) / std) ** 2))


def _cat_nll(proba: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(proba[np.arange(len(labels)), labels], 1e-300, None)
    return float(-np.mean(np.log(p)))


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Σ_b (n_b / N) |accuracy_b − confidence_b| over equal-width bins of the top probability."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == labels
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def section_real(args: argparse.Namespace) -> str:
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.linear_model import BayesianRidge
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from jacnet.sklearn import MLPClassifier, MLPRegressor

    results: dict[tuple[str, str], list[tuple[float, ...]]] = {}

    def add(data: str, name: str, *values: float) -> None:
        results.setdefault((data, name), []).append(values)

    X, y = load_diabetes(return_X_y=True)
    for split in range(args.splits):
        Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.25, random_state=split)
        scaler = StandardScaler().fit(Xa)
        Xa, Xb = scaler.transform(Xa), scaler.transform(Xb)
        for solver in ("br", "lm"):
            reg = MLPRegressor(hidden_layer_sizes=(10,), activation="tanh", solver=solver,
                               max_iter=200, random_state=split, laplace="full")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reg.fit(Xa, ya)
            mean, std = reg.predict(Xb, return_std=True)
            rmse = float(np.sqrt(np.mean((mean - yb) ** 2)))
            noise = np.full_like(std, 1 / math.sqrt(reg.beta_))
            add("diabetes", f"MLPRegressor (10,) tanh, {solver}, Laplace",
                _gauss_nll(yb, mean, std), rmse)
            add("diabetes", f"MLPRegressor (10,) tanh, {solver}, noise 1/β only",
                _gauss_nll(yb, mean, noise), rmse)
        br = BayesianRidge().fit(Xa, ya)
        mean, std = br.predict(Xb, return_std=True)
        add("diabetes", "BayesianRidge", _gauss_nll(yb, mean, std),
            float(np.sqrt(np.mean((mean - yb) ** 2))))
        kernel = ConstantKernel() * RBF(length_scale=np.ones(X.shape[1])) + WhiteKernel()
        gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=split).fit(Xa, ya)
        mean, std = gp.predict(Xb, return_std=True)
        add("diabetes", "GaussianProcessRegressor (ARD RBF + white)", _gauss_nll(yb, mean, std),
            float(np.sqrt(np.mean((mean - yb) ** 2))))
        print(f"diabetes split {split} done", flush=True)

    for data, loader, hidden in (("breast_cancer", load_breast_cancer, (16,)),
                                 ("digits", load_digits, (32,))):
        X, y = loader(return_X_y=True)
        for split in range(args.splits):
            Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.25, random_state=split,
                                              stratify=y)
            scaler = StandardScaler().fit(Xa)
            Xa, Xb = scaler.transform(Xa), scaler.transform(Xb)
            for alpha in (1e-4, 1.0):
                clf = MLPClassifier(hidden_layer_sizes=hidden, solver="lbfgs", max_iter=300,
                                    alpha=alpha, random_state=split, laplace="auto")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf.fit(Xa, ya)
                structure = clf.laplace_.structure_
                with_laplace = clf.predict_proba(Xb)
                plain = clf.set_params(laplace=None).predict_proba(Xb)
                acc = float(np.mean(plain.argmax(axis=1) == yb))
                label = f"MLPClassifier {hidden} relu, lbfgs, alpha={alpha:g}"
                add(data, f"{label}, Laplace ({structure}, probit)", _cat_nll(with_laplace, yb),
                    acc, expected_calibration_error(with_laplace, yb))
                add(data, f"{label}, network's softmax", _cat_nll(plain, yb), acc,
                    expected_calibration_error(plain, yb))
            print(f"{data} split {split} done", flush=True)

    def cell(values: list[float], fmt: str) -> str:
        return f"{np.mean(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"

    rows = []
    for (data, name), runs in results.items():
        columns = list(zip(*runs))
        if data == "diabetes":
            rows.append([data, name, cell(list(columns[0]), ".3f"), cell(list(columns[1]), ".1f"),
                         "", ""])
        else:
            rows.append([data, name, cell(list(columns[0]), ".3f"), "",
                         cell(list(columns[1]), ".3f"), cell(list(columns[2]), ".3f")])
    return ("### Real data: test NLL and calibration\n\n"
            f"Mean (range) over {args.splits} random 75/25 splits; features standardised on "
            "the training part; diabetes targets in their own units (NLL per point of the "
            "Gaussian predictive, nats). Classifiers: scikit-learn's default `alpha=1e-4` "
            "and `alpha=1`, `max_iter=300`, the Laplace prior precision from the evidence; "
            "ECE with 15 bins.\n\n"
            + markdown_table(["data", "model", "test NLL", "test RMSE", "accuracy", "ECE"], rows)
            + "\n")


# --------------------------------------------------------------------------- scale
def section_scale(args: argparse.Namespace) -> str:
    rows = []
    rng = np.random.default_rng(0)
    cases = [("regression", [50, 300, 300, 1]), ("classification", [784, 256, 256, 10])]
    for likelihood, sizes in cases:
        model = mlp(sizes, seed=0)
        X = rng.standard_normal((2000, sizes[0])).astype(np.float32)
        Xt = rng.standard_normal((1000, sizes[0])).astype(np.float32)
        y = (rng.standard_normal((2000, 1)) if likelihood == "regression"
             else rng.integers(0, sizes[-1], 2000))
        prior = None if likelihood == "regression" else 1.0
        tracemalloc.start()
        started = time.perf_counter()
        la = Laplace(model, likelihood, structure="last_layer", prior_precision=prior).fit(X, y)
        out = la.predictive(Xt).std if likelihood == "regression" else la.predict_proba(Xt)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert np.all(np.isfinite(out))
        p = model.n_params
        rows.append([likelihood, "-".join(map(str, sizes)), f"{p:,}", f"{la.n_params_:,}",
                     f"{peak / 2**20:.1f} MiB", f"{8 * p * p / 2**30:,.0f} GiB",
                     f"{elapsed:.2f} s"])
        print("scale", rows[-1], flush=True)
    return ("### A scalable structure on ≥ 100k parameters\n\n"
            "`Laplace(model, structure=\"last_layer\")`: fit on 2000 random rows, predict "
            "1000 (float32 network, float64 approximation); peak of the NumPy allocations "
            "traced by tracemalloc during fit + predict.\n\n"
            + markdown_table(["likelihood", "network", "P", "P_last", "peak traced memory",
                              "one P × P float64 array", "fit + predict"], rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="for every library alike (read by common.py at import)")
    parser.add_argument("--sections", default="synthetic,torch,real,scale")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, 1 split")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--markdown", help="also write the report to this file")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.splits, args.repeats = 2, 1, 3
    sections = {s.strip() for s in args.sections.split(",")}
    info = machine_description()
    report = ["## Predictive uncertainty (`benchmarks/bench_laplace.py`)\n",
              "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "\n"]
    torch = import_torch()
    if torch is not None:
        a = np.random.default_rng(0).normal(size=(800, 800))
        ta = torch.from_numpy(a)
        report.append(f"Threads in use (CPU time ÷ wall time of an 800² matmul): NumPy "
                      f"{parallelism(lambda: a @ a):.2f}, torch "
                      f"{parallelism(lambda: ta @ ta):.2f} (asked: {N_THREADS}).\n")
    print("\n".join(report), flush=True)
    for name, section in (("synthetic", section_synthetic), ("torch", section_torch),
                          ("real", section_real), ("scale", section_scale)):
        if name in sections:
            report.append(section(args))
    write_report(report, args.markdown)


if __name__ == "__main__":
    main()
