"""Levenberg–Marquardt: jacnet vs the PyTorch package ``torch-levenberg-marquardt``, and
the estimators' defaults vs scikit-learn's L-BFGS.

Sections (``--sections``, default all):

``epoch``
    Time per LM epoch, jacnet's dense path (``LevenbergMarquardt().epoch``: JᵀJ from
    the factored Jacobian, or the dual JJᵀ when N·m < P, Cholesky) against the package's
    ``LevenbergMarquardtModule.training_step`` (J by ``torch.func.vmap(jacrev)``, then
    JᵀJ or JJᵀ, Cholesky), on 8-h-h-1 tanh networks, N = 4000, float64, the same initial
    weights and the same μ schedule (the package normalises JᵀJ by 1/N, so its μ is
    jacnet's divided by N: the steps are the same; its μ is a float32 tensor, so the
    trajectories agree to about 1e-8). Each repeat runs ``--epochs`` epochs of both from
    the same start, interleaved in rotating order; the report gives the median time per
    epoch, the trials per epoch (the μ loop's solves) and the per-repeat ratios'
    range. P grows until the package runs past ``--max-epoch-seconds`` per epoch or
    out of memory.
``sinc``
    sin(10x)/(10x), 1000 points, 1-20-1 tanh (61 parameters), float64, ``--seeds``
    seeds: jacnet LM to MSE 1e-5 (trainlm's ``goal``) and the package for the same
    number of epochs from the same weights; trainlm defaults (≤ 1000 epochs); the
    estimators with their defaults (``MLPRegressor(hidden_layer_sizes=(20,),
    activation="tanh", solver="lm", max_iter=1000)``, float64 input) against
    scikit-learn's ``solver="lbfgs"`` with the same arguments (same initial weights);
    Bayesian regularisation; jacnet Adam.
``digits``
    ``MLPClassifier(hidden_layer_sizes=(32,), solver="lm")`` on scikit-learn's digits
    (X / 16, a stratified 75/25 split), stopped after ``--digits-iters`` iterations each
    (the default ``max_iter=200`` takes minutes with the dense solver), with
    scikit-learn's ``solver="lbfgs"`` as the reference: test accuracy and time.

``estimator``
    The estimator with its defaults, ``MLPClassifier(hidden_layer_sizes=(32,),
    solver="lm")`` (``lm_solver="auto"``, which takes CG there), on digits with X / 16
    and ``train_test_split(test_size=0.2, random_state=0, stratify=y)``, for
    ``random_state`` 0 … ``--seeds`` − 1: test accuracy, wall and CPU time, iterations
    and why it stopped; ``--estimator-dense`` adds ``lm_solver="dense"`` for seed 0.

Run:  .venv/bin/python benchmarks/bench_lm.py --threads 1 [--quick]
      [--sections epoch,sinc,digits,estimator] [--markdown /tmp/lm.md]
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import common  # noqa: F401  (first: sets the thread count before NumPy is imported)
import numpy as np
from common import (
    N_THREADS,
    import_torch,
    machine_description,
    markdown_table,
    parallelism,
    write_report,
)

from jacnet import mlp
from jacnet.losses import MSELoss
from jacnet.optim import BayesianRegularization, LevenbergMarquardt


# --------------------------------------------------------------------------- the package
def torch_copy(model: Any) -> Any:
    """A float64 ``torch.nn.Sequential`` (Linear/Tanh) with a copy of a jacnet tanh MLP's weights."""
    torch = import_torch()
    linears = [layer for layer in model.layers if layer.n_params]
    modules: list[Any] = []
    for i, layer in enumerate(linears):
        linear = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(layer.weight)))
            linear.bias.copy_(torch.from_numpy(np.array(layer.bias)))
        modules.append(linear)
        if i < len(linears) - 1:
            modules.append(torch.nn.Tanh())
    return torch.nn.Sequential(*modules)


def package_lm(model: Any, n_samples: int) -> Any:
    """The package's LM module on a copy of ``model``, with jacnet's μ schedule.

    Its JᵀJ (or JJᵀ) and Jᵀe are divided by N, so μ₀ = 1e-3 / N, the bounds 1e-20 / N
    and 1e10 / N; Cholesky, as jacnet; enough attempts per step that only μ_max ends
    the μ loop, as in jacnet.
    """
    from torch_levenberg_marquardt.damping import StandardDampingStrategy
    from torch_levenberg_marquardt.training import LevenbergMarquardtModule

    damping = StandardDampingStrategy(starting_value=1e-3 / n_samples,
                                      min_value=1e-20 / n_samples,
                                      max_value=1e10 / n_samples)
    return LevenbergMarquardtModule(torch_copy(model), damping_strategy=damping,
                                    solve_method="cholesky", attempts_per_step=100)


def package_available() -> bool:
    try:
        import torch_levenberg_marquardt  # noqa: F401
    except ImportError:
        return False
    return import_torch() is not None


def trials_from_mu(mus: list[float], mu0: float = 1e-3) -> float:
    """Solves per epoch of jacnet's μ loop: k failures (×10 each) then a success (×0.1)."""
    previous, trials = mu0, []
    for mu in mus:
        trials.append(round(math.log10(mu / previous)) + 2)
        previous = mu
    return float(np.mean(trials))


# --------------------------------------------------------------------------- epoch
def regression_data(n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n_samples, 8))
    directions = rng.normal(size=(8, 3))
    return X, np.sin(X @ directions).sum(axis=1, keepdims=True) / 3.0


def section_epoch(args: argparse.Namespace) -> str:
    torch = import_torch()
    X, y = regression_data(args.n_samples)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss = MSELoss()
    rows = []
    for hidden in args.hidden:
        start = mlp([8, hidden, hidden, 1], activation="tanh", seed=0, dtype="float64")
        n_params = start.n_params
        form = "dual (JJᵀ)" if args.n_samples < n_params else "primal (JᵀJ)"
        times: dict[str, list[float]] = {"jacnet": [], "package": []}
        trials: dict[str, float] = {}
        status = ""

        def run_jacnet(start: Any = start, times: dict[str, list[float]] = times,
                       trials: dict[str, float] = trials) -> None:
            model, lm = start.copy(), LevenbergMarquardt()
            mus = []
            began = time.perf_counter()
            for _ in range(args.epochs):
                mus.append(lm.epoch(model, loss, X, y)["mu"])
            times["jacnet"].append((time.perf_counter() - began) / args.epochs)
            trials["jacnet"] = trials_from_mu(mus)

        def run_package(start: Any = start, times: dict[str, list[float]] = times,
                        trials: dict[str, float] = trials) -> None:
            module = package_lm(start, args.n_samples)
            attempts = []
            began = time.perf_counter()
            for _ in range(args.epochs):
                attempts.append(module.training_step(Xt, yt)[3]["attempts"])
            times["package"].append((time.perf_counter() - began) / args.epochs)
            trials["package"] = float(np.mean(attempts))

        runs: list[tuple[str, Callable[[], None]]] = [("jacnet", run_jacnet),
                                                       ("package", run_package)]
        try:
            for r in range(args.repeats):
                for _, run in runs[r % 2:] + runs[:r % 2]:
                    run()
                    gc.collect()
                if times["package"] and times["package"][-1] > args.max_epoch_seconds:
                    status = f"stopped: the package took over {args.max_epoch_seconds:g} s/epoch"
                    break
        except (MemoryError, RuntimeError) as exc:  # the package (or jacnet) ran out
            status = f"stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        if not times["jacnet"] or not times["package"]:
            rows.append([f"8-{hidden}-{hidden}-1", str(n_params), form, "", "", "", "",
                         status or "did not run"])
            break
        n = min(len(times["jacnet"]), len(times["package"]))
        ratios = [a / b for a, b in zip(times["jacnet"][:n], times["package"][:n])]
        tj, tp = float(np.median(times["jacnet"])), float(np.median(times["package"]))
        rows.append([f"8-{hidden}-{hidden}-1", str(n_params), form,
                     f"{tj * 1e3:.1f} ({trials['jacnet']:.1f})",
                     f"{tp * 1e3:.1f} ({trials['package']:.1f})", f"**{tj / tp:.2f}**",
                     f"{min(ratios):.2f}–{max(ratios):.2f}", status])
        print(" | ".join(rows[-1]), flush=True)
        if status:
            break
    table = markdown_table(
        ["network", "P", "form", "jacnet ms/epoch (trials)", "package ms/epoch (trials)",
         "ratio of medians", "ratio range", "note"], rows)
    return (f"### Time per LM epoch, N = {args.n_samples}, float64, {args.epochs} epochs × "
            f"{args.repeats} interleaved repeats\n\n{table}\n")


# --------------------------------------------------------------------------- sinc
def sinc_data(n_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    X = np.linspace(-1.0, 1.0, n_points).reshape(-1, 1)
    return X, np.sinc(10.0 * X[:, 0] / np.pi)


def _mse(prediction: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(prediction).reshape(-1) - y) ** 2))


def run_lm(X: np.ndarray, y: np.ndarray, seed: int, epochs: int, goal_mse: float = 0.0
           ) -> tuple[float, float, int]:
    model = mlp([1, 20, 1], activation="tanh", seed=seed, dtype="float64")
    start = time.perf_counter()
    # jacnet's MSE loss is ½ mean((y − ŷ)²), so trainlm's goal on the MSE is halved.
    history = LevenbergMarquardt(goal=goal_mse / 2).fit(model, X, y, epochs=epochs)
    elapsed = time.perf_counter() - start
    return _mse(model(X), y), elapsed, len(history["loss"])


def run_package(X: np.ndarray, y: np.ndarray, seed: int, epochs: int
                ) -> tuple[float, float, int]:
    torch = import_torch()
    module = package_lm(mlp([1, 20, 1], activation="tanh", seed=seed, dtype="float64"),
                        X.shape[0])
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.reshape(-1, 1))
    start = time.perf_counter()
    for _ in range(epochs):
        if module.training_step(Xt, yt)[2]:
            break
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        prediction = module.model(Xt).numpy()
    return _mse(prediction, y), elapsed, epochs


def run_br(X: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> tuple[float, float, int]:
    model = mlp([1, 20, 1], activation="tanh", seed=seed, dtype="float64")
    start = time.perf_counter()
    history = BayesianRegularization().fit(model, X, y, epochs=epochs)
    elapsed = time.perf_counter() - start
    return _mse(model(X), y), elapsed, len(history["loss"])


def run_estimator(X: np.ndarray, y: np.ndarray, seed: int, solver: str, library: str,
                  **kwargs: Any) -> tuple[float, float, int]:
    from sklearn.exceptions import ConvergenceWarning

    if library == "jacnet":
        from jacnet.sklearn import MLPRegressor
    else:
        from sklearn.neural_network import MLPRegressor  # type: ignore[assignment]
    reg = MLPRegressor(hidden_layer_sizes=(20,), activation="tanh", solver=solver,
                       random_state=seed, **kwargs)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, y)
    elapsed = time.perf_counter() - start
    return _mse(reg.predict(X), y), elapsed, int(reg.n_iter_)


def run_adam(X: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> tuple[float, float, int]:
    from jacnet.training import fit

    model = mlp([1, 20, 1], activation="tanh", seed=seed, dtype="float64")
    start = time.perf_counter()
    fit(model, X, y, loss="mse", optimizer="adam", lr=1e-2, epochs=epochs, batch_size=32,
        seed=seed, metrics=[], progress=False)
    elapsed = time.perf_counter() - start
    return _mse(model(X), y), elapsed, epochs


def section_sinc(args: argparse.Namespace) -> str:
    X, y = sinc_data()
    goal = args.goal
    has_package = package_available()
    goal_epochs: dict[int, int] = {}

    def lm_goal(seed: int) -> tuple[float, float, int]:
        result = run_lm(X, y, seed, args.lm_epochs, goal)
        goal_epochs[seed] = result[2]
        return result

    contenders: dict[str, Callable[[int], tuple[float, float, int]]] = {
        "lm_goal": lm_goal,
        "lm": lambda seed: run_lm(X, y, seed, args.lm_epochs),
        "est_lm": lambda seed: run_estimator(X, y, seed, "lm", "jacnet", max_iter=1000,
                                             dtype="float64"),
        "est_lbfgs": lambda seed: run_estimator(X, y, seed, "lbfgs", "sklearn", max_iter=1000),
        "br": lambda seed: run_br(X, y, seed, args.br_epochs),
        "adam": lambda seed: run_adam(X, y, seed, args.adam_epochs),
    }
    if has_package:  # after lm_goal: the same number of epochs, from the same weights
        contenders["package"] = lambda seed: run_package(X, y, seed, goal_epochs[seed])
    names = {
        "lm_goal": f"jacnet `LevenbergMarquardt(goal=)`, to MSE {goal:g}",
        "package": "torch-levenberg-marquardt, same weights and epochs as the row above",
        "lm": f"jacnet `LevenbergMarquardt()`, trainlm defaults (≤ {args.lm_epochs} epochs)",
        "est_lm": "jacnet `MLPRegressor(solver=\"lm\", max_iter=1000)`, defaults, float64",
        "est_lbfgs": "scikit-learn `MLPRegressor(solver=\"lbfgs\", max_iter=1000)`, defaults "
                     "(the reference time)",
        "br": f"jacnet `BayesianRegularization()`, {args.br_epochs} epochs",
        "adam": f"jacnet Adam lr 1e-2, batch 32, {args.adam_epochs} epochs",
    }
    rows: dict[str, list[tuple[float, float, int]]] = {key: [] for key in contenders}
    run_lm(X, y, 0, 20)  # warm-up: imports and first-call costs
    order = list(contenders)
    for seed in range(args.seeds):
        runs: dict[str, list[tuple[float, float, int]]] = {key: [] for key in contenders}
        for r in range(args.repeats):  # rotating order; lm_goal before the package
            shift = r % (len(order) - 1)
            rotated = order[1:][shift:] + order[1:][:shift]
            rotated.insert(0, "lm_goal")
            for key in rotated:
                runs[key].append(contenders[key](seed))
        for key, results in runs.items():
            rows[key].append(min(results, key=lambda result: result[1]))
        print(f"seed {seed}: " + ", ".join(
            f"{k} mse={v[-1][0]:.2e} t={v[-1][1]:.3f}s it={v[-1][2]}" for k, v in rows.items()),
            flush=True)
    t_ref = float(np.median([r[1] for r in rows["est_lbfgs"]]))
    table_rows = []
    for key in names:
        if key not in rows:
            continue
        values = rows[key]
        mse = np.array([r[0] for r in values])
        t = float(np.median([r[1] for r in values]))
        table_rows.append([names[key], f"{np.median(mse):.2e}", f"{mse.max():.2e}",
                           f"{t:.3f}", f"{t / t_ref:.2f}",
                           str(int(np.median([r[2] for r in values])))])
    out = [f"### sinc(10x), 1000 points, 1-20-1 tanh, float64, {args.seeds} seeds "
           f"(fastest of {args.repeats} interleaved runs per seed)\n",
           markdown_table(["contender", "median train MSE", "worst MSE", "median time (s)",
                           "time / lbfgs", "median iterations"], table_rows)]
    if has_package:
        ratios = [a[1] / b[1] for a, b in zip(rows["lm_goal"], rows["package"])]
        out.append(f"\njacnet LM ÷ package, same epochs, per seed: {np.round(ratios, 2).tolist()}")
    est = [a[1] / b[1] for a, b in zip(rows["est_lm"], rows["est_lbfgs"])]
    out.append(f"\njacnet MLPRegressor lm ÷ scikit-learn lbfgs, per seed: "
               f"{np.round(est, 2).tolist()}; median lm MSE "
               f"{np.median([r[0] for r in rows['est_lm']]):.2e}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- digits
def section_digits(args: argparse.Namespace) -> str:
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkClassifier

    from jacnet.sklearn import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25,
                                                        random_state=0, stratify=y)
    rows = []

    def measure(label: str, clf: Any) -> None:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_train, y_train)
        elapsed = time.perf_counter() - start
        rows.append([label, f"{clf.score(X_test, y_test):.4f}", f"{elapsed:.2f}",
                     str(clf.n_iter_), f"{elapsed / clf.n_iter_:.3f}"])
        print(" | ".join(rows[-1]), flush=True)

    measure("scikit-learn lbfgs, defaults", SkClassifier((32,), solver="lbfgs", random_state=0))
    for iters in args.digits_iters:
        measure(f"jacnet lm, max_iter={iters}",
                MLPClassifier((32,), solver="lm", max_iter=iters, random_state=0))
    return ("### digits, MLPClassifier(hidden_layer_sizes=(32,)), 2,410 parameters, "
            "float64\n\n" + markdown_table(
                ["contender", "test accuracy", "time (s)", "iterations", "s / iteration"],
                rows) + "\n")


def section_estimator(args: argparse.Namespace) -> str:
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split

    from jacnet.sklearn import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.2,
                                                        random_state=0, stratify=y)
    runs = [("auto", seed) for seed in range(args.seeds)]
    if args.estimator_dense:
        runs.append(("dense", 0))
    rows = []
    for lm_solver, seed in runs:
        clf = MLPClassifier((32,), solver="lm", lm_solver=lm_solver, random_state=seed)
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_train, y_train)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append([f'lm_solver="{lm_solver}"', str(seed), f"{clf.score(X_test, y_test):.4f}",
                     f"{wall:.2f}", f"{cpu:.2f}", str(clf.n_iter_), str(clf.stop_reason_)])
        print(" | ".join(rows[-1]), flush=True)
    return ("### digits, MLPClassifier(hidden_layer_sizes=(32,), solver=\"lm\"), defaults, "
            "80/20 split\n\n" + markdown_table(
                ["lm_solver", "seed", "test accuracy", "wall (s)", "CPU (s)", "iterations",
                 "stop"], rows) + "\n")


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="for every library alike (read by common.py at import)")
    parser.add_argument("--sections", default="epoch,sinc,digits")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small P, 2 seeds")
    parser.add_argument("--n-samples", type=int, default=4000)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64, 96, 128, 160],
                        help="h of the 8-h-h-1 networks (P = h² + 11h + 1)")
    parser.add_argument("--epochs", type=int, default=4, help="LM epochs per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-epoch-seconds", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--goal", type=float, default=1e-5, help="training MSE of trainlm's goal")
    parser.add_argument("--lm-epochs", type=int, default=1000, help="trainlm's default")
    parser.add_argument("--br-epochs", type=int, default=300)
    parser.add_argument("--adam-epochs", type=int, default=200)
    parser.add_argument("--digits-iters", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--estimator-dense", action="store_true",
                        help="the estimator section also runs lm_solver='dense' (seed 0)")
    parser.add_argument("--markdown", help="also write the report to this file")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.epochs, args.repeats = [16, 32], 2, 2
        args.seeds, args.digits_iters = 2, [3]
    sections = {s.strip() for s in args.sections.split(",")}
    info = machine_description()
    torch = import_torch()
    report = ["## Levenberg–Marquardt (`benchmarks/bench_lm.py`)\n",
              "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "\n"]
    if torch is not None:
        a = np.random.default_rng(0).normal(size=(800, 800))
        ta = torch.from_numpy(a)
        report.append(f"Threads in use (CPU time ÷ wall time of an 800² matmul): NumPy "
                      f"{parallelism(lambda: a @ a):.2f}, torch "
                      f"{parallelism(lambda: ta @ ta):.2f} (asked: {N_THREADS}).\n")
    print("\n".join(report), flush=True)
    if "epoch" in sections:
        if package_available():
            report.append(section_epoch(args))
        else:
            report.append("(epoch section skipped: torch-levenberg-marquardt is not installed)\n")
    if "sinc" in sections:
        report.append(section_sinc(args))
    if "digits" in sections:
        report.append(section_digits(args))
    if "estimator" in sections:
        report.append(section_estimator(args))
    write_report(report, args.markdown)


if __name__ == "__main__":
    main()
