"""What subnormal floats cost, and what ``jacnet.flush_denormals`` changes.

1. ``product``: one float32 matrix product (512 × 1024 by 1024 × 1024), its left operand
   all normal or with every other column scaled into the subnormal range, computed
   inside ``flush_denormals()`` and outside it (interleaved, medians). With more than
   one BLAS thread the worker threads keep their own floating-point setting, which
   this shows.
2. ``epochs``: the bare jacnet training loop (784-256-10, Adam, batch 128, 60,000 ×
   784 uniform pixels, as ``bench_train.py``'s epoch) epoch after epoch, with and
   without flushing, each from the same initial weights: the time of each epoch, and
   the subnormal entries of the Adam moments after it.

Usage::

    cd benchmarks && ../.venv/bin/python bench_subnormal.py --threads 1
    cd benchmarks && ../.venv/bin/python bench_subnormal.py --threads 2 --only product
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from typing import Any

import common  # sets the thread variables before NumPy is imported
import numpy as np
from bench_train import jacnet_trainer, subnormal_count
from common import fmt_time, interleaved, machine_description, markdown_table, median, write_report

import jacnet


def flushing(flush: bool) -> Any:
    return jacnet.flush_denormals() if flush else nullcontext()


def bench_product(repeats: int) -> str:
    rng = np.random.default_rng(0)
    normal = rng.standard_normal((512, 1024)).astype(np.float32)
    subnormal = normal.copy()
    subnormal[:, ::2] *= np.float32(1e-39)
    weight = rng.standard_normal((1024, 1024)).astype(np.float32)
    out = np.empty((512, 1024), np.float32)

    def product(left: np.ndarray, flush: bool) -> Any:
        def run() -> None:
            with flushing(flush):
                np.matmul(left, weight.T, out=out)
        return run

    contenders = {f"{name}, {'flushed' if flush else 'not flushed'}": product(left, flush)
                  for name, left in (("normal", normal), ("half subnormal", subnormal))
                  for flush in (False, True)}
    samples = interleaved(contenders, repeats, warmup=1, budget=60.0)
    t = {k: median(v) for k, v in samples.items()}
    base = t["normal, not flushed"]
    rows = [[name, fmt_time(t[name]), f"{t[name] / base:.1f}"] for name in contenders]
    return markdown_table([f"512×1024 @ 1024×1024 float32, {common.N_THREADS} BLAS thread(s)",
                           "time", "÷ normal, not flushed"], rows)


def bench_epochs(n_epochs: int) -> str:
    rng = np.random.default_rng(0)
    n, batch = 60_000, 128
    X = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    runs = {}
    for flush in (False, True):
        model = jacnet.mlp([784, 256, 10], activation="relu", seed=0, dtype="float32")
        runs[flush] = (model, jacnet_trainer(model, "adam"), np.random.default_rng(0))
    rows = []
    for epoch in range(1, n_epochs + 1):
        row = [str(epoch)]
        for flush in (False, True):  # alternate, so the load falls on both alike
            model, step, order_rng = runs[flush]
            order = order_rng.permutation(n)
            started = time.perf_counter()
            with flushing(flush):
                for start in range(0, n, batch):
                    idx = order[start:start + batch]
                    step(X[idx], y[idx])
            row += [fmt_time(time.perf_counter() - started),
                    str(subnormal_count(model, step.optimizer))]
        rows.append(row)
        print(" | ".join(row), flush=True)
    return markdown_table(["epoch", "not flushed", "subnormal entries", "flushed",
                           "subnormal entries"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="product,epochs")
    parser.add_argument("--repeats", type=int, default=7, help="samples per product")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--markdown", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    sections = args.only.split(",")
    report = [f"# Subnormal floats, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
              "Command: `" + " ".join(["python", *sys.argv]) + "`", ""]
    report += [f"- {k}: {v}" for k, v in machine_description().items()] + [""]
    if "product" in sections:
        report += ["## One product", "", bench_product(args.repeats), ""]
    if "epochs" in sections:
        report += ["## Epoch after epoch, bare jacnet loop", "", bench_epochs(args.epochs), ""]
    write_report(report, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
