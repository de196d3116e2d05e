"""Levenberg–Marquardt vs scikit-learn's L-BFGS MLP vs jacnet Adam on sinc(10x).

The task of MATLAB's ``trainlm`` demos: y = sin(10x)/(10x) on 1000 points of [-1, 1],
a 1-20-1 tanh network (61 parameters), float64, one run per seed with the contenders
interleaved. Training MSE is mean((y − ŷ)²) for every contender (computed from the
predictions, not from each library's own loss scaling).

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_lm.py [--seeds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from jacnet import mlp
from jacnet.optim import BayesianRegularization, LevenbergMarquardt


def sinc_data() -> tuple[np.ndarray, np.ndarray]:
    try:
        from jacnet.data import load_dataset

        ds = load_dataset("sinc")
        X, y = np.asarray(ds.X, dtype=np.float64), np.asarray(ds.y, dtype=np.float64)
    except (ImportError, AttributeError, ValueError, TypeError):
        X = np.linspace(-1.0, 1.0, 1000).reshape(-1, 1)
        y = np.sinc(10.0 * X[:, 0] / np.pi)
    return X.reshape(-1, 1), y.reshape(-1)


def run_lm(X: np.ndarray, y: np.ndarray, seed: int, epochs: int, goal_mse: float = 0.0
           ) -> tuple[float, float, int]:
    model = mlp([1, 20, 1], activation="tanh", seed=seed, dtype="float64")
    start = time.perf_counter()
    # jacnet's MSE loss is ½ mean((y − ŷ)²), so trainlm's goal on the MSE is halved.
    history = LevenbergMarquardt(goal=goal_mse / 2).fit(model, X, y, epochs=epochs)
    elapsed = time.perf_counter() - start
    mse = float(np.mean((model(X)[:, 0] - y) ** 2))
    return mse, elapsed, len(history["loss"])


def run_br(X: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> tuple[float, float, int]:
    model = mlp([1, 20, 1], activation="tanh", seed=seed, dtype="float64")
    start = time.perf_counter()
    history = BayesianRegularization().fit(model, X, y, epochs=epochs)
    elapsed = time.perf_counter() - start
    mse = float(np.mean((model(X)[:, 0] - y) ** 2))
    run_br.gammas.append(history["gamma"][-1])  # type: ignore[attr-defined]
    return mse, elapsed, len(history["loss"])


run_br.gammas = []  # type: ignore[attr-defined]


def run_sklearn(X: np.ndarray, y: np.ndarray, seed: int, max_iter: int, tol: float = 1e-12
                ) -> tuple[float, float, int]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    reg = MLPRegressor(hidden_layer_sizes=(20,), activation="tanh", solver="lbfgs",
                       alpha=0.0, max_iter=max_iter, max_fun=10 * max_iter, tol=tol,
                       random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, y)
    elapsed = time.perf_counter() - start
    mse = float(np.mean((reg.predict(X) - y) ** 2))
    return mse, elapsed, int(reg.n_iter_)


def run_adam(X: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> tuple[float, float, int]:
    model = mlp([1, 20, 1], activation="tanh", seed=seed, dtype="float64")
    start = time.perf_counter()
    try:
        from jacnet.training import fit

        fit(model, X, y, loss="mse", optimizer="adam", lr=1e-2, epochs=epochs, batch_size=32,
            seed=seed)
    except ImportError:  # pragma: no cover - before the fit loop existed
        from jacnet.losses import MSELoss
        from jacnet.optim import Adam

        loss, opt, rng = MSELoss(), Adam(lr=1e-2), np.random.default_rng(seed)
        target = y.reshape(-1, 1)
        for _ in range(epochs):
            order = rng.permutation(len(X))
            for i in range(0, len(X), 32):
                rows = order[i:i + 32]
                _, grad = loss.value_and_grad(model.forward(X[rows]), target[rows])
                model.backward(grad, input_grad=False)
                opt.step(model.params, model.grads)
    elapsed = time.perf_counter() - start
    mse = float(np.mean((model(X)[:, 0] - y) ** 2))
    return mse, elapsed, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lm-epochs", type=int, default=1000, help="trainlm's default")
    parser.add_argument("--lbfgs-iter", type=int, default=20000)
    parser.add_argument("--goal", type=float, default=1e-5,
                        help="training MSE at which the second LM row stops (trainlm's goal)")
    parser.add_argument("--adam-epochs", type=int, default=200)
    parser.add_argument("--br-epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of every contender per seed, interleaved; the fastest "
                             "counts (the same seed gives the same result every run)")
    args = parser.parse_args()
    X, y = sinc_data()
    contenders = {
        "lm": lambda seed: run_lm(X, y, seed, args.lm_epochs),
        "lm_goal": lambda seed: run_lm(X, y, seed, args.lm_epochs, args.goal),
        "br": lambda seed: run_br(X, y, seed, args.br_epochs),
        "br100": lambda seed: run_br(X[::10], y[::10], seed, args.br_epochs),
        "sklearn_default": lambda seed: run_sklearn(X, y, seed, args.lbfgs_iter, tol=1e-4),
        "sklearn": lambda seed: run_sklearn(X, y, seed, args.lbfgs_iter),
        "adam": lambda seed: run_adam(X, y, seed, args.adam_epochs),
    }
    rows: dict[str, list[tuple[float, float, int]]] = {key: [] for key in contenders}
    run_lm(X, y, 0, 20)  # warm-up: the first call pays for imports and caches
    for seed in range(args.seeds):  # interleaved: each seed runs every contender in turn
        runs: dict[str, list[tuple[float, float, int]]] = {key: [] for key in contenders}
        for _ in range(args.repeats):
            for key, run in contenders.items():
                runs[key].append(run(seed))
        for key, results in runs.items():
            rows[key].append(min(results, key=lambda r: r[1]))
        # Repeats give the same γ: keep one (1000 points, 100 points) pair per seed.
        del run_br.gammas[2 * seed:-2]  # type: ignore[attr-defined]
        print(f"seed {seed}: " + ", ".join(
            f"{k} mse={v[-1][0]:.2e} t={v[-1][1]:.2f}s it={v[-1][2]}" for k, v in rows.items()),
            flush=True)

    names = {"lm": f"jacnet LevenbergMarquardt (trainlm defaults, ≤{args.lm_epochs} epochs)",
             "lm_goal": f"jacnet LevenbergMarquardt, goal MSE {args.goal:g}",
             "br": f"jacnet BayesianRegularization (trainbr defaults), {args.br_epochs} epochs",
             "br100": f"jacnet BayesianRegularization, 100 points (every 10th; MSE on them), "
                      f"{args.br_epochs} epochs",
             "sklearn_default": "sklearn MLPRegressor lbfgs, default tol 1e-4, run until it "
                                "stops (the reference time)",
             "sklearn": f"sklearn MLPRegressor lbfgs (tol 1e-12, ≤{args.lbfgs_iter} iter)",
             "adam": f"jacnet Adam lr 1e-2, batch 32, {args.adam_epochs} epochs"}
    t_sk = float(np.median([r[1] for r in rows["sklearn_default"]]))
    print(f"\nsinc(10x), 1000 points, 1-20-1 tanh (61 params), float64, {args.seeds} seeds, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| contender | median train MSE | worst MSE | median time (s) | time / sklearn (tol 1e-4) "
          "| median iterations |")
    print("|---|---|---|---|---|---|")
    for key, values in rows.items():
        mse = np.array([r[0] for r in values])
        t = float(np.median([r[1] for r in values]))
        iters = int(np.median([r[2] for r in values]))
        print(f"| {names[key]} | {np.median(mse):.2e} | {mse.max():.2e} | {t:.2f} | "
              f"{t / t_sk:.2f} | {iters} |")
    ratios = [g[1] / d[1] for g, d in zip(rows["lm_goal"], rows["sklearn_default"])]
    print(f"\nLM to MSE {args.goal:g} ÷ scikit-learn L-BFGS (tol 1e-4), per seed: "
          f"{np.round(ratios, 2)}; median of the seeds' times: "
          f"{np.median([r[1] for r in rows['lm_goal']]) / t_sk:.2f}")
    gammas = np.array(run_br.gammas).reshape(args.seeds, 2)  # type: ignore[attr-defined]
    print(f"\nBR effective parameters γ (of 61), per seed: 1000 points {np.round(gammas[:, 0], 1)}"
          f", 100 points {np.round(gammas[:, 1], 1)}")


if __name__ == "__main__":
    main()
