"""Where a dense Levenberg–Marquardt epoch goes, in jacnet and in torch-levenberg-marquardt.

Both run ``--epochs`` epochs of the same problem as ``bench_lm.py --sections epoch``
(8-h-h-1 tanh, N = 4000, float64, the same initial weights and μ schedule); each part's
functions are wrapped with a timer, so the parts are the epochs' own calls, not a
re-enactment. The report gives each part's milliseconds per epoch and its share, and the
multiply-add counts that bound the two large parts from below:

- forming the Gauss–Newton matrix: N·P²/2 multiply-adds for JᵀJ by a symmetric rank-N
  update (BLAS ``syrk``; N·P² by a general product, ``gemm``), or in the dual form
  (N < P) (N²/2)·P for JJᵀ (jacnet forms it from the factors in fewer);
- one Cholesky factorisation per μ trial: s³/6 (s = P, or N in the dual form).

Shares are load-independent to first order (a neighbour slows every part alike); the
absolute times are not.

Run:  .venv/bin/python benchmarks/profile_lm.py --threads 1 [--hidden 16 32 64]
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import time
from collections.abc import Callable
from typing import Any

import common  # noqa: F401  (first: sets the thread count before NumPy is imported)
import numpy as np
from bench_lm import package_available, package_lm, regression_data
from common import import_torch, markdown_table

from jacnet import mlp
from jacnet.losses import MSELoss
from jacnet.optim import LevenbergMarquardt

#: jacnet's parts: (label, module, dotted attribute) — whichever exist are timed.
JACNET_PARTS = [
    ("forward passes and loss (start + trials)", "jacnet.optim.second_order",
     "SecondOrderOptimizer._evaluate"),
    ("J: factored Jacobian written as rows", "jacnet.curvature", "_write_param_jacobian"),
    ("J: factored Jacobian written as rows", "jacnet.network", "_write_param_jacobian"),
    ("JᵀJ: symmetric products of the rows", "jacnet.curvature", "_add_gram"),
    ("JJᵀ: kernel from the factors (dual)", "jacnet.optim.second_order", "ntk"),
    ("damped matrix: copy and diagonal", "jacnet.optim.second_order", "_add_to_diagonal"),
    ("damped matrix: copy and diagonal", "jacnet.optim.second_order", "_damped_copy"),
    ("Cholesky factor and solve", "jacnet.optim.second_order", "_cholesky_solve"),
    ("Jᵀ(coefficients) (dual step)", "jacnet.optim.second_order", "jtv"),
]
PACKAGE_PARTS = [
    ("J: vmap(jacrev)", "torch_levenberg_marquardt.training",
     "LevenbergMarquardtModule._compute_jacobian"),
    ("Cholesky factor and solve", "torch_levenberg_marquardt.training",
     "LevenbergMarquardtModule._solve"),
    ("forward passes (trials)", "torch_levenberg_marquardt.training",
     "LevenbergMarquardtModule.forward"),
    ("damped matrix: JJ + μI", "torch_levenberg_marquardt.damping",
     "StandardDampingStrategy.apply"),
]


class Timers:
    """Wraps functions with accumulating timers (nested calls of timed parts count once)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = collections.defaultdict(float)
        self._depth = 0
        self._undo: list[Callable[[], None]] = []

    def wrap(self, label: str, module_name: str, dotted: str) -> None:
        module = importlib.import_module(module_name)
        owner: Any = module
        *path, name = dotted.split(".")
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                return
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            return
        function = original.__func__ if isinstance(original, staticmethod) else original

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.totals[label] += time.perf_counter() - began
                self._depth -= 1

        setattr(owner, name, staticmethod(timed) if isinstance(original, staticmethod) else timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def unwrap(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def profile(run: Callable[[], int], parts: list[tuple[str, str, str]], epochs: int
            ) -> tuple[float, dict[str, float], int]:
    """(ms per epoch, ms per epoch of each part, trials) of ``run`` (which runs the epochs
    and returns the number of μ trials)."""
    timers = Timers()
    for part in parts:
        timers.wrap(*part)
    try:
        began = time.perf_counter()
        trials = run()
        total = time.perf_counter() - began
    finally:
        timers.unwrap()
    return (total / epochs * 1e3, {k: v / epochs * 1e3 for k, v in timers.totals.items()},
            trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--n-samples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved; the faster kept")
    args = parser.parse_args()
    torch = import_torch()
    with_package = package_available()
    X, y = regression_data(args.n_samples)
    n = args.n_samples
    for hidden in args.hidden:
        start = mlp([8, hidden, hidden, 1], activation="tanh", seed=0, dtype="float64")
        p = start.n_params
        dual = n < p

        def run_jacnet(start: Any = start) -> int:
            model, lm = start.copy(), LevenbergMarquardt()
            state, trials, mu = None, 0, lm.mu
            for _ in range(args.epochs):
                state, info = lm.iterate(model, MSELoss(), X, y, state)
                trials += round(np.log10(info["mu"] / mu)) + 2
                mu = info["mu"]
            return trials

        def run_package(start: Any = start) -> int:
            module = package_lm(start, n)
            Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
            return sum(module.training_step(Xt, yt)[3]["attempts"] for _ in range(args.epochs))

        results: dict[str, tuple[float, dict[str, float], int]] = {}
        for _ in range(args.repeats):
            candidates = [("jacnet", run_jacnet, JACNET_PARTS)]
            if with_package:
                candidates.append(("package", run_package, PACKAGE_PARTS))
            for name, run, parts in candidates:
                result = profile(run, parts, args.epochs)
                if name not in results or result[0] < results[name][0]:
                    results[name] = result
        size = n if dual else p
        floor_gram = (n * n / 2 * p) if dual else n * p * p / 2
        floor_chol = size ** 3 / 6
        print(f"\n### 8-{hidden}-{hidden}-1, P = {p}, N = {n}, "
              f"{'dual (JJᵀ)' if dual else 'primal (JᵀJ)'}\n")
        print(f"Floors: Gram {floor_gram / 1e9:.2f} G multiply-adds (syrk; gemm twice that), "
              f"Cholesky {floor_chol / 1e9:.3f} G per trial.\n")
        rows = []
        for name, (total, parts, trials) in results.items():
            for label, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
                rows.append([name, label, f"{ms:.1f}", f"{ms / total:.0%}"])
            rest = total - sum(parts.values())
            rows.append([name, "rest (" + ("JᵀJ / JJᵀ product, " if name == "package" else "")
                         + "Python, small arrays)", f"{rest:.1f}", f"{rest / total:.0%}"])
            rows.append([name, f"**epoch** ({trials / args.epochs:.1f} trials)",
                         f"**{total:.1f}**", "100%"])
        print(markdown_table(["library", "part", "ms / epoch", "share"], rows))


if __name__ == "__main__":
    main()
