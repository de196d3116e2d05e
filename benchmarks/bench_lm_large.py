"""Matrix-free Levenberg–Marquardt on a network of ≥ 100k parameters: time and peak memory.

784-128-10 tanh (101,770 parameters), cross-entropy, float64, on Fashion-MNIST's 60,000
training images when ``--data`` points at a folder with ``train-images-idx3-ubyte`` and
``train-labels-idx1-ubyte`` (optionally gzipped), else on a synthetic stand-in of the
same shape (60,000 × 784 uniform [0, 1) pixels, labels from a fixed random linear map;
the report says which). ``LevenbergMarquardt(solver="cg")`` runs ``--epochs`` epochs
through ``iterate`` with the solver state, under ``tracemalloc`` (NumPy reports its
allocations to it): the report gives the data's size, the peak traced above it, that
peak over the data's size, P·8 bytes, and time per epoch with its CG iterations.
The dense path would need a P × P float64 matrix, 8·P² bytes (83 GB here).

Run:  .venv/bin/python benchmarks/bench_lm_large.py --threads 1 [--epochs 3] [--data DIR]
      [--n-samples 60000]
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
import tracemalloc

import common  # noqa: F401  (first: sets the thread count before NumPy is imported)
import numpy as np
from common import machine_description

from jacnet import mlp
from jacnet.losses import CrossEntropyLoss
from jacnet.optim import LevenbergMarquardt


def _idx(path: str) -> np.ndarray:
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            opener = gzip.open if candidate.endswith(".gz") else open
            with opener(candidate, "rb") as f:
                raw = f.read()
            n_dims = raw[3]
            shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(n_dims))
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)
    raise FileNotFoundError(path)


def load(data: str | None, n_samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    if data is not None:
        try:
            images = _idx(os.path.join(data, "train-images-idx3-ubyte"))
            labels = _idx(os.path.join(data, "train-labels-idx1-ubyte"))
            X = images.reshape(images.shape[0], -1)[:n_samples].astype(np.float64) / 255.0
            return X, labels[:n_samples].astype(np.int64), f"Fashion-MNIST ({data})"
        except FileNotFoundError:
            pass
    rng = np.random.default_rng(0)
    X = rng.random((n_samples, 784))
    labels = (X @ rng.normal(size=(784, 10))).argmax(axis=1)
    return X, labels, "synthetic stand-in (uniform pixels, linear labels): no Fashion-MNIST found"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=60000)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--preconditioner", default="jacobi", choices=["jacobi", "kfac"])
    args = parser.parse_args()
    X, y, source = load(args.data, args.n_samples)
    model = mlp([784, 128, 10], activation="tanh", seed=0, dtype="float64")
    loss, lm = CrossEntropyLoss(), LevenbergMarquardt(solver="cg", preconditioner=args.preconditioner)
    data_bytes = X.nbytes + y.nbytes
    print("Machine: " + "; ".join(f"{k} {v}" for k, v in machine_description().items()))
    print(f"data: {source}; X {X.shape}, {data_bytes / 2**20:.0f} MiB; "
          f"784-128-10 tanh, P = {model.n_params}, P·8 bytes = {model.n_params * 8 / 2**20:.2f} MiB; "
          f"CG preconditioner {args.preconditioner}")
    tracemalloc.start()
    state = None
    for epoch in range(args.epochs):
        began = time.perf_counter()
        state, info = lm.iterate(model, loss, X, y, state)
        print(f"epoch {epoch + 1}: {time.perf_counter() - began:.1f} s, loss {info['loss']:.4f}, "
              f"CG iterations {info['cg_iterations']:.0f}, matrix_free {info['matrix_free']:.0f}",
              flush=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"peak traced above the data: {peak / 2**20:.0f} MiB = {peak / data_bytes:.2f} × the data "
          f"({data_bytes / 2**20:.0f} MiB); accuracy on the training rows "
          f"{float(np.mean(model(X).argmax(axis=1) == y)):.3f}")


if __name__ == "__main__":
    main()
