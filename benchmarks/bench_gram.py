"""JᵀJ of a 64-128-10 tanh MLP at batch 256: jacnet's factored form vs torch.func.

torch.func materialises the parameter Jacobian (vmap(jacrev) → (B·m, P)) and multiplies;
jacnet's ``gauss_newton`` works on the Kronecker factors and never forms J. Each is
timed twice, like for like: returning a new (P, P) array, and writing into a reused
buffer (jacnet's ``out=``, as Levenberg–Marquardt does every epoch; torch's
``matmul(..., out=)``). On this machine the first write to 739 MB of fresh memory costs
more than jacnet's arithmetic. Both in float64 and float32, interleaved, with a check
that they agree.

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_gram.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import numpy as np

from jacnet.curvature import gauss_newton
from jacnet.network import mlp


def torch_gram(model, X: np.ndarray):  # type: ignore[no-untyped-def]
    import torch
    from torch.func import functional_call, jacrev, vmap

    dtype = torch.float64 if X.dtype == np.float64 else torch.float32
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(),
                              torch.nn.Linear(128, 10)).to(dtype)
    params = {name: torch.tensor(value.copy()) for name, value in model.named_parameters()}
    names = list(params)
    inputs = torch.tensor(X)

    def single(p, x):  # type: ignore[no-untyped-def]
        return functional_call(net, p, (x[None],))[0]

    def run(out: torch.Tensor | None = None) -> np.ndarray:
        jac = vmap(jacrev(single), in_dims=(None, 0))(params, inputs)
        J = torch.cat([jac[k].reshape(X.shape[0], 10, -1) for k in names], dim=2)
        J = J.reshape(X.shape[0] * 10, -1)
        if out is None:
            return (J.T @ J).numpy()
        return torch.matmul(J.T, J, out=out).numpy()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print(f"JᵀJ, 64-128-10 tanh MLP ({mlp([64, 128, 10]).n_params} params), batch {args.batch}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{args.repeats} repeats (median)\n")
    print("| dtype | jacnet, new array (s) | torch.func, new array (s) | speed-up | jacnet, "
          "reused buffer (s) | torch.func, reused buffer (s) | speed-up | max rel. difference |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in ("float64", "float32"):
        model = mlp([64, 128, 10], activation="tanh", seed=0, dtype=dtype)
        X = np.random.default_rng(0).normal(size=(args.batch, 64)).astype(dtype)
        run_torch = torch_gram(model, X)
        times: dict[str, list[float]] = {"ours": [], "ours_out": [], "theirs": [],
                                         "theirs_out": []}
        buffer = np.empty((model.n_params, model.n_params), dtype=dtype)
        buffer.fill(0.0)  # touch every page (np.zeros maps untouched zero pages)
        torch_buffer = torch.zeros(model.n_params, model.n_params,
                                   dtype=torch.float64 if dtype == "float64" else torch.float32)
        gauss_newton(model, X, out=buffer)  # warm-up of both contenders
        run_torch(torch_buffer)
        contenders = {
            "ours": partial(gauss_newton, model, X),
            "ours_out": partial(gauss_newton, model, X, out=buffer),
            "theirs": run_torch,
            "theirs_out": partial(run_torch, torch_buffer),
        }
        for _ in range(args.repeats):  # interleaved
            for key, run in contenders.items():
                start = time.perf_counter()
                result = run()
                times[key].append(time.perf_counter() - start)
                del result
        jtj, _ = gauss_newton(model, X)
        reference = run_torch()
        diff = float(np.abs(jtj - reference).max() / np.abs(reference).max())
        del jtj, reference
        t = {key: float(np.median(values)) for key, values in times.items()}
        print(f"| {dtype} | {t['ours']:.2f} | {t['theirs']:.2f} | {t['theirs'] / t['ours']:.1f}× "
              f"| {t['ours_out']:.2f} | {t['theirs_out']:.2f} | "
              f"{t['theirs_out'] / t['ours_out']:.1f}× | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
