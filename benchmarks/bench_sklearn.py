"""jacnet.sklearn vs scikit-learn's MLP: same data, same settings, accuracy / R² and fit time.

For each seed the same split and the same estimator settings are given to
``jacnet.sklearn.MLP*`` (float32, its default) and ``sklearn.neural_network.MLP*``
(float64, what it uses for float64 data); the two fits of a seed run back to back in
alternating order, so a noisy neighbour slows both alike.

1. ``digits``   — test accuracy, ``MLPClassifier(hidden_layer_sizes=(100,), solver="adam")``;
   and jacnet's ``solver="lm"`` (Levenberg–Marquardt on the log-loss's generalised
   Gauss–Newton matrix, ``max_iter=30``) with 16 hidden units (1210 parameters: its
   P × P system is the cost) next to scikit-learn's ``adam`` and ``lbfgs`` of that size.
2. ``diabetes`` — test R², ``MLPRegressor`` with ``adam`` and ``lbfgs`` on both sides, plus
   jacnet's ``lm`` and ``br`` (scikit-learn has no such solvers).
3. ``sinc``     — the Levenberg–Marquardt benchmark through the estimator API:
   sin(10x)/(10x) on 1000 points of [−1, 1], 1-20-1 tanh, ``solver="lm"``; target: median
   training MSE < 1e-5 over the seeds (scikit-learn's L-BFGS with the same tol alongside).

Usage::

    .venv/bin/python benchmarks/bench_sklearn.py            # 5 seeds, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_sklearn.py --seeds 2  # quicker
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import common  # sets the thread variables before NumPy is imported
import numpy as np
from common import markdown_table


def _timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    est = fit()
    return est, time.perf_counter() - start


def _pair(make_ours: Callable[[], Any], make_theirs: Callable[[], Any], X: np.ndarray,
          y: np.ndarray, seed: int) -> tuple[tuple[Any, float], tuple[Any, float]]:
    """Fit both, in an order that alternates with the seed."""
    jobs = [("ours", make_ours), ("theirs", make_theirs)]
    if seed % 2:
        jobs.reverse()
    results = {name: _timed(lambda make=make: make().fit(X, y)) for name, make in jobs}
    return results["ours"], results["theirs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="read by common.py")
    args = parser.parse_args()

    from sklearn import neural_network as sk
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    import jacnet.sklearn as js

    warnings.simplefilter("ignore", ConvergenceWarning)
    rows: dict[str, dict[str, list[float]]] = {}

    def record(task: str, **values: float) -> None:
        bucket = rows.setdefault(task, {})
        for key, value in values.items():
            bucket.setdefault(key, []).append(value)

    Xd, yd = load_digits(return_X_y=True)
    Xr, yr = load_diabetes(return_X_y=True)
    x_sinc = np.linspace(-1.0, 1.0, 1000)[:, None]
    y_sinc = np.sinc(10.0 * x_sinc[:, 0] / np.pi)  # sin(10x) / (10x)

    for seed in range(args.seeds):
        # digits: accuracy
        Xtr, Xte, ytr, yte = train_test_split(Xd / 16.0, yd, test_size=0.25, stratify=yd,
                                              random_state=seed)
        settings = dict(hidden_layer_sizes=(100,), solver="adam", random_state=seed)
        (ours, t_ours), (theirs, t_theirs) = _pair(
            lambda s=settings: js.MLPClassifier(**s), lambda s=settings: sk.MLPClassifier(**s),
            Xtr, ytr, seed)
        record("digits adam (accuracy)", ours=ours.score(Xte, yte), theirs=theirs.score(Xte, yte),
               t_ours=t_ours, t_theirs=t_theirs, it_ours=ours.n_iter_, it_theirs=theirs.n_iter_)
        for sk_solver, extra in (("adam", dict(max_iter=200)), ("lbfgs", dict(max_iter=200))):
            settings = dict(hidden_layer_sizes=(16,), random_state=seed)
            (ours, t_ours), (theirs, t_theirs) = _pair(
                lambda s=settings: js.MLPClassifier(solver="lm", max_iter=30, **s),
                lambda s=settings, e=extra, k=sk_solver: sk.MLPClassifier(solver=k, **s, **e),
                Xtr, ytr, seed)
            record(f"digits (16,) lm vs sklearn {sk_solver} (accuracy)",
                   ours=ours.score(Xte, yte), theirs=theirs.score(Xte, yte), t_ours=t_ours,
                   t_theirs=t_theirs, it_ours=ours.n_iter_, it_theirs=theirs.n_iter_)

        # diabetes: R² (inputs standardised on the training part; targets as given)
        Xtr, Xte, ytr, yte = train_test_split(Xr, yr, test_size=0.25, random_state=seed)
        scaler = StandardScaler().fit(Xtr)
        Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
        for solver, extra in (("adam", dict(learning_rate_init=0.01, max_iter=1000)),
                              ("lbfgs", dict(max_iter=1000))):
            settings = dict(hidden_layer_sizes=(20,), solver=solver, random_state=seed, **extra)
            (ours, t_ours), (theirs, t_theirs) = _pair(
                lambda s=settings: js.MLPRegressor(**s), lambda s=settings: sk.MLPRegressor(**s),
                Xtr, ytr, seed)
            record(f"diabetes {solver} (R²)", ours=ours.score(Xte, yte),
                   theirs=theirs.score(Xte, yte), t_ours=t_ours, t_theirs=t_theirs,
                   it_ours=ours.n_iter_, it_theirs=theirs.n_iter_)
        for solver in ("lm", "br"):
            settings = dict(hidden_layer_sizes=(20,), solver=solver, random_state=seed,
                            max_iter=1000)
            ours, t_ours = _timed(
                lambda s=settings, X=Xtr, y=ytr: js.MLPRegressor(**s).fit(X, y))
            record(f"diabetes {solver} (R²)", ours=ours.score(Xte, yte), t_ours=t_ours,
                   it_ours=ours.n_iter_)

        # sinc through the API: training MSE
        settings = dict(hidden_layer_sizes=(20,), activation="tanh", tol=1e-6, max_iter=1000,
                        random_state=seed)
        (ours, t_ours), (theirs, t_theirs) = _pair(
            lambda s=settings: js.MLPRegressor(solver="lm", **s),
            lambda s=settings: sk.MLPRegressor(solver="lbfgs", **s), x_sinc, y_sinc, seed)
        record("sinc lm vs sklearn lbfgs (train MSE)",
               ours=float(np.mean((ours.predict(x_sinc) - y_sinc) ** 2)),
               theirs=float(np.mean((theirs.predict(x_sinc) - y_sinc) ** 2)),
               t_ours=t_ours, t_theirs=t_theirs, it_ours=ours.n_iter_, it_theirs=theirs.n_iter_)
        print(f"seed {seed} done", flush=True)

    def stat(values: list[float], task: str) -> str:
        if "MSE" in task:
            return f"{statistics.median(values):.2e} (max {max(values):.1e})"
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {spread:.4f}"

    table = []
    for task, v in rows.items():
        theirs = v.get("theirs")
        ratio = (statistics.median(v["t_theirs"]) / statistics.median(v["t_ours"])
                 if theirs else float("nan"))
        table.append([
            task,
            stat(v["ours"], task),
            stat(theirs, task) if theirs else "—",
            f"{statistics.median(v['t_ours']):.2f}",
            f"{statistics.median(v['t_theirs']):.2f}" if theirs else "—",
            f"{ratio:.1f}×" if theirs else "—",
            f"{statistics.median(v['it_ours']):.0f}"
            + (f" / {statistics.median(v['it_theirs']):.0f}" if theirs else ""),
        ])
    print(f"\n{args.seeds} seeds, OMP_NUM_THREADS={common.N_THREADS}; score: mean ± sd over seeds "
          "(MSE: median, max); times: median seconds per fit\n")
    print(markdown_table(
        ["task", "jacnet (float32)", "scikit-learn (float64)", "jacnet fit s",
         "sklearn fit s", "sklearn / jacnet time", "iterations jacnet / sklearn"], table))


if __name__ == "__main__":
    main()
