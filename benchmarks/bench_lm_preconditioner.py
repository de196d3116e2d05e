"""Matrix-free LM's CG preconditioners: the training loss against products with G and CPU time.

The setting of ``bench_lm_scaling.py``'s "matrix-free ÷ dense" figures: an 8-h-h-1 tanh
MLP (``seed=0``), its regression data (N rows), float64, half mean squared error,
``LevenbergMarquardt(solver="cg", preconditioner=..., cg_max_iter=...)``, one epoch after
another until ``--budget`` seconds of this process's CPU time (one BLAS thread: the
process's own CPU time, whatever else the machine runs); with ``--classes K``,
cross-entropy on K classes of the same rows instead. Reports, per configuration, the
loss after the last epoch within each product count and each CPU time, and the first
epoch at or below ``--target`` (dense LM's loss after 100 epochs at h = 96, N = 4000).
A loss marked * is the run's last: it ended (budget or a stopping rule) before that
count or time.

Run:  .venv/bin/python benchmarks/bench_lm_preconditioner.py --threads 1
      [--configs jacobi:100 jacobi:300 kfac:100] [--budget 65] [--hidden 96]
      [--n-samples 4000] [--target 1.65e-7] [--classes 3] [--json log.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import common  # noqa: F401  (first: sets the thread count before NumPy is imported)
import numpy as np
from bench_lm_scaling import LOSS, regression_data
from common import machine_description, markdown_table

from jacnet import mlp
from jacnet.losses import CrossEntropyLoss
from jacnet.optim import LevenbergMarquardt

PRODUCTS = (100, 500, 1000, 2000, 5000)
SECONDS = (2.0, 10.0, 30.0, 60.0)


def run(preconditioner: str, max_iter: int, hidden: int, n_samples: int, budget: float,
        classes: int) -> list[tuple[int, int, float, float]]:
    """(epoch, products with G so far, CPU seconds so far, loss) after every epoch."""
    X, y = regression_data(n_samples)
    loss: Any = LOSS
    if classes:  # labels: the largest of ``classes`` random sine features of a row
        directions = np.random.default_rng(0).normal(size=(X.shape[1], classes))
        y, loss = np.sin(X @ directions).argmax(axis=1), CrossEntropyLoss()
    model = mlp([8, hidden, hidden, classes or 1], activation="tanh", seed=0,
                dtype="float64")
    lm = LevenbergMarquardt(solver="cg", preconditioner=preconditioner, cg_max_iter=max_iter)
    state: Any = None
    log: list[tuple[int, int, float, float]] = []
    products, elapsed = 0, 0.0
    while elapsed < budget and lm.stop_reason is None:
        began = time.process_time()
        state, info = lm.iterate(model, loss, X, y, state)
        elapsed += time.process_time() - began
        products += int(info["cg_iterations"])
        log.append((len(log) + 1, products, elapsed, float(info["loss"])))
    return log


def last_within(log: list[tuple[int, int, float, float]], column: int, limit: float) -> str:
    """The loss after the last epoch with at most ``limit`` products (column 1) or CPU
    seconds (column 2); marked * where the run ended before reaching ``limit``."""
    kept = [entry for entry in log if entry[column] <= limit]
    if not kept:
        return "—"
    return f"{kept[-1][3]:.2g}" + ("*" if log[-1][column] < limit else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="for every library alike (read by common.py at import)")
    parser.add_argument("--configs", nargs="+", default=["jacobi:100", "jacobi:300", "kfac:100"],
                        help="preconditioner:cg_max_iter")
    parser.add_argument("--budget", type=float, default=65.0, help="CPU seconds per config")
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--n-samples", type=int, default=4000)
    parser.add_argument("--target", type=float, default=1.65e-7)
    parser.add_argument("--classes", type=int, default=0,
                        help="cross-entropy on this many classes instead of the regression")
    parser.add_argument("--json", help="write every epoch's (epoch, products, CPU s, loss)")
    args = parser.parse_args()
    info = machine_description()
    print("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "\n", flush=True)
    rows, logs = [], {}
    for config in args.configs:
        preconditioner, max_iter = config.split(":")
        log = logs[config] = run(preconditioner, int(max_iter), args.hidden, args.n_samples,
                                 args.budget, args.classes)
        reached = next((entry for entry in log if entry[3] <= args.target), None)
        rows.append([f"`{preconditioner}`, cg_max_iter {max_iter}",
                     *(last_within(log, 1, p) for p in PRODUCTS),
                     *(last_within(log, 2, s) for s in SECONDS),
                     "not reached" if reached is None else
                     f"{reached[2]:.2f} s ({reached[1]} products, epoch {reached[0]})",
                     f"{log[-1][3]:.2g} ({log[-1][1]} products, {log[-1][2]:.0f} s)"])
        print(" | ".join(rows[-1]), flush=True)
    print()
    print(markdown_table(["CG preconditioner", *(f"loss ≤ {p} products" for p in PRODUCTS),
                          *(f"loss ≤ {s:g} s CPU" for s in SECONDS),
                          f"CPU to {args.target:g}", "last epoch"], rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(logs, f)


if __name__ == "__main__":
    main()
