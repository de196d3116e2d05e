"""How Levenberg–Marquardt scales with the number of parameters P, next to L-BFGS and Adam.

8-h-h-1 tanh networks (P = h² + 11h + 1) on a smooth regression target (the data of
``bench_lm.py``'s epoch section), N = 4000 and N = 60,000 rows, float64, half mean
squared error. For every (N, P) and method:

- **time per epoch** (LM: one damped step with its μ loop; L-BFGS: one iteration;
  Adam: one pass in batches of 128, lr 1e-3), the median over the run;
- **peak memory** above the data, by ``tracemalloc`` (NumPy reports its allocations to
  it) over the first epochs of a separate, untimed run;
- **time to a fixed training loss**: the loss dense LM reaches after ``--target-epochs``
  epochs from the same initial weights (where dense LM cannot run that many within the
  budget or memory, the target of the next smaller P is kept), within ``--budget``
  seconds per method.

Methods: dense LM (``LevenbergMarquardt()``: JᵀJ or the dual JJᵀ, Cholesky);
matrix-free LM (``LevenbergMarquardt(solver="cg")``, when the installed jacnet has it;
the column says so otherwise: its default preconditioner, K-FAC on main), the same with
``preconditioner="jacobi"`` ("matrix-free LM (Jacobi)") and, by name only (it is the
default now), with ``preconditioner="kfac"`` ("matrix-free LM (K-FAC)"); L-BFGS
(``scipy.optimize.minimize(method="L-BFGS-B")`` on jacnet's loss and gradient, as
scikit-learn's ``solver="lbfgs"``); jacnet Adam (``training.fit``).

Run:  .venv/bin/python benchmarks/bench_lm_scaling.py --threads 1 [--quick]
      [--n-samples 4000 60000] [--hidden 16 32 64 96 128 192 256 320] [--budget 120]
      [--methods "dense LM" "matrix-free LM" "matrix-free LM (Jacobi)" L-BFGS Adam]
      [--dense-max-madds 2e11]
      [--clock cpu] [--reference dense.json]

``--clock cpu`` times with the process's CPU time instead of the wall clock: with one
thread it is what the method itself spent, whatever else the machine runs (a shared,
loaded machine inflates wall times several-fold, CPU times barely). ``--reference FILE``
keeps dense LM's reference run (its losses and epoch times, per N, P and target epochs)
in a JSON file: a later run with the same file reuses it instead of training again, so
a long reference (100 dense epochs at P = 10k) is measured once.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import common  # noqa: F401  (first: sets the thread count before NumPy is imported)
import numpy as np
from common import machine_description, markdown_table, write_report

from jacnet import mlp
from jacnet.losses import MSELoss
from jacnet.optim import LevenbergMarquardt

LOSS = MSELoss()
#: The clock the driver reads (``--clock``): wall time, or this process's CPU time.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
METHODS = ("dense LM", "matrix-free LM", "matrix-free LM (Jacobi)", "L-BFGS", "Adam")
#: Run only when named in --methods.
EXTRA_METHODS = ("matrix-free LM (K-FAC)",)


def dense_madds(n_samples: int, n_params: int) -> float:
    """Multiply-adds of one dense LM epoch's system: JᵀJ (N·P²) or the dual JJᵀ (N²·P),
    whichever is smaller, and its Cholesky factorisation (side³/3)."""
    side = min(n_samples, n_params)
    return float(n_samples) * n_params * side + side ** 3 / 3.0


def regression_data(n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n_samples, 8))
    directions = rng.normal(size=(8, 3))
    return X, np.sin(X @ directions).sum(axis=1, keepdims=True) / 3.0


def has_cg() -> bool:
    return "solver" in inspect.signature(LevenbergMarquardt).parameters


def has_kfac() -> bool:
    return "preconditioner" in inspect.signature(LevenbergMarquardt).parameters


# --------------------------------------------------------------------------- the methods
# Each is a generator factory: run(model, X, y) yields the training loss after every
# epoch (or iteration); the driver times the steps between yields.
def lm_steps(solver: str | None, **options: Any) -> Callable[[Any, np.ndarray, np.ndarray], Any]:
    def run(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
        lm = (LevenbergMarquardt() if solver is None
              else LevenbergMarquardt(solver=solver, **options))
        # The explicit solver state (as jacnet.training.fit carries it), where installed:
        # an epoch then starts from the accepted trial's forward pass.
        state = None
        while True:
            if hasattr(lm, "iterate"):
                state, info = lm.iterate(model, LOSS, X, y, state)
            else:
                info = lm.epoch(model, LOSS, X, y)
            yield info["loss"]
            if lm.stop_reason is not None:
                return
    return run


def lbfgs_steps(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """scipy's L-BFGS-B, one yield per iteration (the loss at its new point)."""
    import queue
    import threading

    import scipy.optimize

    params, grads = model.params, model.grads

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        params[...] = theta
        value, grad = LOSS.value_and_grad(model.forward(X), y)
        model.backward(grad, input_grad=False)
        return float(value), grads.copy()

    # scipy drives the loop: run it in a thread that hands each iteration's loss over
    # and waits for the go-ahead, so the driver times iterations like epochs.
    losses: queue.Queue[float | None] = queue.Queue(maxsize=1)
    go: queue.Queue[bool] = queue.Queue(maxsize=1)

    def callback(intermediate_result: Any) -> None:
        losses.put(float(intermediate_result.fun))
        if not go.get():
            raise StopIteration

    def work() -> None:
        try:
            scipy.optimize.minimize(objective, params.copy(), jac=True, method="L-BFGS-B",
                                    callback=callback,
                                    options={"maxiter": 10**6, "maxfun": 10**7, "gtol": 0.0,
                                             "ftol": 0.0})
        finally:
            losses.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (value := losses.get()) is not None:
            yield value
            go.put(True)
    finally:
        if thread.is_alive():
            go.put(False)
            thread.join()


def adam_steps(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    from jacnet.optim import Adam

    opt, rng, n = Adam(lr=1e-3), np.random.default_rng(0), X.shape[0]
    while True:
        order = rng.permutation(n)
        for start in range(0, n, 128):
            rows = order[start:start + 128]
            _, grad = LOSS.value_and_grad(model.forward(X[rows]), y[rows])
            model.backward(grad, input_grad=False)
            opt.step(model.params, model.grads)
        yield LOSS(model.forward(X), y)


# --------------------------------------------------------------------------- the driver
def drive(run: Callable[..., Any], model: Any, X: np.ndarray, y: np.ndarray, *,
          target: float | None, max_epochs: int, budget: float,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Epoch times, the losses, and the time at which the loss first reached ``target``."""
    times, losses, reached = [], [], None
    elapsed = 0.0
    steps = run(model, X, y)
    try:
        while len(times) < max_epochs and elapsed < budget:
            began = clock()
            try:
                value = next(steps)
            except StopIteration:
                break
            step = clock() - began
            elapsed += step
            times.append(step)
            losses.append(float(value))
            if target is not None and reached is None and value <= target:
                reached = elapsed
                break
    finally:
        steps.close()
    return {"times": times, "losses": losses, "reached": reached, "elapsed": elapsed}


def peak_memory(run: Callable[..., Any], model: Any, X: np.ndarray, y: np.ndarray,
                epochs: int) -> float:
    """Peak bytes traced while ``epochs`` epochs run (the data allocated before)."""
    gc.collect()
    tracemalloc.start()
    try:
        steps = run(model, X, y)
        for _ in range(epochs):
            try:
                next(steps)
            except StopIteration:
                break
        steps.close()
        return float(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="for every library alike (read by common.py at import)")
    parser.add_argument("--n-samples", type=int, nargs="+", default=[4000, 60000])
    parser.add_argument("--hidden", type=int, nargs="+",
                        default=[16, 32, 64, 96, 128, 192, 256, 320])
    parser.add_argument("--target-epochs", type=int, default=20,
                        help="the fixed loss: dense LM's after this many epochs")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds per method and network")
    parser.add_argument("--max-epochs", type=int, default=100000)
    parser.add_argument("--memory-epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="N = 4000, h = 16, 32, 64, 5 target epochs, 20 s budgets")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"a subset of {', '.join(METHODS + EXTRA_METHODS)}")
    parser.add_argument("--dense-max-madds", type=float, default=None,
                        help="skip dense LM where one epoch's JᵀJ (or JJᵀ) and Cholesky "
                             "would cost more multiply-adds than this (the table says so)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (see the docstring)")
    parser.add_argument("--reference",
                        help="a JSON file that keeps dense LM's reference runs to reuse")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    if args.quick:
        args.n_samples, args.hidden = [4000], [16, 32, 64]
        args.target_epochs, args.budget = 5, 20.0
    cg = has_cg()
    every: dict[str, Callable[..., Any] | None] = {
        "dense LM": lm_steps(None),
        "matrix-free LM": lm_steps("cg") if cg else None,
        "matrix-free LM (Jacobi)": lm_steps("cg", preconditioner="jacobi") if has_kfac() else None,
        "matrix-free LM (K-FAC)": lm_steps("cg", preconditioner="kfac") if has_kfac() else None,
        "L-BFGS": lbfgs_steps,
        "Adam": adam_steps,
    }
    methods = {name: every[name] for name in METHODS + EXTRA_METHODS if name in args.methods}
    clock = CLOCKS[args.clock]
    saved: dict[str, Any] = {}
    if args.reference and os.path.exists(args.reference):
        with open(args.reference) as f:
            saved = json.load(f)
    info = machine_description()
    report = ["## P-scaling (`benchmarks/bench_lm_scaling.py`)\n",
              "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "\n"]
    if not cg:
        report.append("Matrix-free LM: not in the installed jacnet (no "
                      "`LevenbergMarquardt(solver=\"cg\")`); its column is empty.\n")
    print("\n".join(report), flush=True)
    for n_samples in args.n_samples:
        X, y = regression_data(n_samples)
        rows = []
        target: float | None = None
        for hidden in args.hidden:
            start = mlp([8, hidden, hidden, 1], activation="tanh", seed=0, dtype="float64")
            row = [f"8-{hidden}-{hidden}-1", str(start.n_params)]
            # The fixed loss: dense LM's after --target-epochs epochs (else the last one's).
            reference = None
            too_costly = (args.dense_max_madds is not None
                          and dense_madds(n_samples, start.n_params) > args.dense_max_madds)
            key = f"N={n_samples} P={start.n_params} epochs={args.target_epochs} {args.clock}"
            with contextlib.suppress(MemoryError):  # dense LM refuses a P × P too large
                if not too_costly:
                    reference = saved.get(key) or drive(
                        lm_steps(None), start.copy(), X, y, target=None,
                        max_epochs=args.target_epochs, budget=args.budget, clock=clock)
            if args.reference and reference is not None and key not in saved:
                saved[key] = reference
                with open(args.reference, "w") as f:
                    json.dump(saved, f)
            carried = target is not None
            if reference is not None and len(reference["losses"]) == args.target_epochs:
                target, carried = reference["losses"][-1], False
            row.append("—" if target is None else
                       f"{target:.3g}" + (" (the smaller P's)" if carried else ""))
            for name, run in methods.items():
                if run is None:
                    row.append("n/a")
                    continue
                if name == "dense LM" and too_costly:
                    row.append(f"not run: {dense_madds(n_samples, start.n_params):.1e} "
                               "multiply-adds per epoch")
                    continue
                try:
                    if name == "dense LM" and reference is not None:
                        result = reference  # its run to the target is the reference run
                        reached = (sum(result["times"]) if target == result["losses"][-1]
                                   else None)
                    else:
                        result = drive(run, start.copy(), X, y, target=target,
                                       max_epochs=args.max_epochs, budget=args.budget,
                                       clock=clock)
                        reached = result["reached"]
                    memory = peak_memory(run, start.copy(), X, y, args.memory_epochs)
                except MemoryError as exc:
                    row.append(f"out of memory ({str(exc)[:40]}…)")
                    continue
                per_epoch = float(np.median(result["times"])) if result["times"] else float("nan")
                last = f", loss {result['losses'][-1]:.3g}" if result["losses"] else ""
                reach = (f"{reached:.2f} s" if reached is not None
                         else f"not in {result['elapsed']:.0f} s ({len(result['times'])} ep.{last})")
                row.append(f"{per_epoch * 1e3:.1f} ms · {memory / 2**20:.0f} MiB · {reach}")
                gc.collect()
            rows.append(row)
            print(" | ".join(row), flush=True)
        report.append(
            f"### N = {n_samples} (data {X.nbytes / 2**20:.1f} MiB), float64; each cell: "
            f"time per epoch · peak memory above the data · time to the target loss "
            f"(dense LM's after {args.target_epochs} epochs), budget {args.budget:g} s, "
            f"{args.clock} clock\n\n"
            + markdown_table(["network", "P", "target loss", *methods], rows) + "\n")
    write_report(report, args.markdown)


if __name__ == "__main__":
    main()
