"""Matrix-free curvature products against one training gradient: G·v, Jᵀu, diag(G).

For each network (N samples, float64) the contenders run interleaved, in rotating order:

- **gradient**: a forward pass, the loss's gradient and a backward pass (one training
  step's derivative work) — the unit of the report;
- **G·v**: ``ggn_vector_product`` (a forward pass carrying J v, H applied per sample, a
  backward pass);
- **Jᵀu, one pass**: ``jtv`` (a forward and a backward pass of u, shape N × m);
- **Jᵀu, factored**: the route ``jtv`` took before, Σ_l ((u L)ᵀ X) from the factored
  Jacobian (the back-propagated factors L_b, m rows per sample), kept here as the
  reference;
- **diag(G)**: ``ggn_diagonal`` (from the factored Jacobian: once per θ, for a Jacobi
  preconditioner).

Each repeat times every contender once; the report gives the median and the fastest
time, the ratio of the fastest times to the fastest gradient (on a loaded machine the
least disturbed call of each), and the median and range of the per-repeat ratio to the
gradient of the same repeat. The one-pass and factored Jᵀu are
checked to agree first. Thread use is measured (CPU ÷ wall time) and printed.

Run:  .venv/bin/python benchmarks/bench_ggn.py --threads 1 [--repeats 7] [--quick]
      [--markdown /tmp/ggn.md]
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import common  # noqa: F401  (first: sets the thread count before NumPy is imported)
import numpy as np
from common import N_THREADS, fmt_time, interleaved, machine_description, markdown_table, parallelism

from jacnet import mlp
from jacnet.curvature import _factors, ggn_diagonal, ggn_vector_product, jtv
from jacnet.losses import Loss, get_loss

NETWORKS = [
    # sizes, hidden activation, loss
    ([8, 64, 64, 1], "tanh", "mse"),
    ([8, 128, 128, 1], "tanh", "mse"),
    ([64, 128, 10], "tanh", "cross_entropy"),
    ([64, 256, 256, 10], "tanh", "cross_entropy"),
    ([784, 128, 10], "relu", "cross_entropy"),
]


def factored_jtv(model: Any, X: np.ndarray, u: np.ndarray, chunk_size: int = 1024
                 ) -> np.ndarray:
    """Σ_b J_bᵀ u_b from the factored Jacobian, block l = ((u L)ᵀ X): the former route."""
    total = np.zeros(model.n_params, dtype=model.dtype)
    for start in range(0, X.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        parts = []
        for block in _factors(model, X[rows], model.dtype):
            v = u[rows] if block.left is None else np.einsum("bm,bmk->bk", u[rows], block.left)
            parts.append((v.T @ block.x).ravel())
        total += np.concatenate(parts)
    return total


def gradient(model: Any, loss: Loss, X: np.ndarray, target: np.ndarray) -> np.ndarray:
    prediction = model.forward(X)
    _, grad = loss.value_and_grad(prediction, target)
    model.backward(grad, input_grad=False)
    return model.grads


def data(sizes: list[int], loss_name: str, n_samples: int, seed: int = 0
         ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, sizes[0]))
    if loss_name == "cross_entropy":
        return X, rng.integers(0, sizes[-1], size=n_samples)
    return X, np.sin(X.sum(axis=1, keepdims=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for every BLAS pool (read before NumPy is imported)")
    parser.add_argument("--n-samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="the two smaller networks only")
    parser.add_argument("--markdown", help="also write the report to this file")
    args = parser.parse_args()

    info = machine_description()
    lines = [f"Matrix-free curvature products, N = {args.n_samples}, float64, "
             f"{N_THREADS} thread(s), {args.repeats} interleaved repeats",
             "", "; ".join(f"{k}: {v}" for k, v in info.items()), ""]
    rows = []
    for sizes, activation, loss_name in NETWORKS[:2] if args.quick else NETWORKS:
        model = mlp(sizes, activation=activation, seed=0, dtype="float64")
        loss = get_loss(loss_name)
        X, y = data(sizes, loss_name, args.n_samples)
        target = loss.prepare_target(y, model.out_features, dtype=model.dtype)
        rng = np.random.default_rng(1)
        v = rng.normal(size=model.n_params)
        u = rng.normal(size=(args.n_samples, model.out_features))
        one_pass, factored = jtv(model, X, u), factored_jtv(model, X, u)
        agree = float(np.linalg.norm(one_pass - factored) / np.linalg.norm(factored))
        contenders = {
            "gradient": partial(gradient, model, loss, X, target),
            "G·v": partial(ggn_vector_product, model, loss, X, target, v),
            "Jᵀu, one pass": partial(jtv, model, X, u),
            "Jᵀu, factored": partial(factored_jtv, model, X, u),
            "diag(G)": partial(ggn_diagonal, model, loss, X, target),
        }
        busy = parallelism(contenders["gradient"])
        samples = interleaved(contenders, args.repeats, warmup=1, min_time=0.05)
        base = samples["gradient"]
        name = "-".join(map(str, sizes)) + f" {activation}, {loss_name}, P = {model.n_params}"
        for key, values in samples.items():
            ratios = [t / b for t, b in zip(values, base)]
            rows.append([name, key, fmt_time(float(np.median(values))), fmt_time(min(values)),
                         f"{min(values) / min(base):.2f}",
                         f"{np.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})",
                         f"{busy:.1f}" if key == "gradient" else
                         (f"{agree:.0e}" if key.startswith("Jᵀu, f") else "")])
            name = ""
        print(markdown_table(["network", "product", "median time", "fastest",
                              "fastest ÷ fastest gradient", "÷ gradient per repeat, median (range)",
                              "threads busy (gradient) / one-pass vs factored Jᵀu rel. diff."],
                             rows[-len(samples):]), flush=True)
    lines.append(markdown_table(["network", "product", "median time", "fastest",
                                 "fastest ÷ fastest gradient",
                                 "÷ gradient per repeat, median (range)",
                                 "threads busy (gradient) / one-pass vs factored Jᵀu rel. diff."],
                                rows))
    report = "\n".join(lines)
    print("\n" + report)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
