"""Peak memory of `jacnet train`, `evaluate` and `predict` on large CSV files.

``--formats`` also (or only) measures ``predict`` on the same rows as a ``.npy`` file, a
stored ``.npz`` and a compressed ``.npz`` (array X), which predict streams block by block
as it does a CSV file.

Each command runs in a fresh child process; its peak resident set size is read from
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a fresh wrapper process, so that one
measurement never includes another. The figure to compare with is the float64 matrix of
the file (rows x columns x 8 bytes); the interpreter with NumPy imported is measured too,
as the floor every command pays.

    PYTHONPATH=src python benchmarks/bench_csv.py --rows 1000000 --cols 20 \
        --predict-rows 100000 1000000 --folder /tmp/bench_csv

Writing the files takes a while (np.savetxt); they are kept in --folder and reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_WRAPPER = (
    "import resource, subprocess, sys, json, time\n"
    "t = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'code': code, 'peak_mb': kb / 1024, 'seconds': time.perf_counter() - t}))\n"
)


def peak(argv: list[str]) -> dict[str, float]:
    """Run argv in a fresh process; its exit code, peak RSS in MiB and wall time."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True,
                         text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def write_csv(path: Path, rows: int, cols: int, *, target: bool, seed: int = 0) -> None:
    """Features x1..x{cols-1} and a regression target y (or cols features, no target)."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    n_features = cols - 1 if target else cols
    weights = rng.normal(size=n_features)
    names = [f"x{j + 1}" for j in range(n_features)] + (["y"] if target else [])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.write(",".join(names) + "\n")
        for start in range(0, rows, 100_000):
            X = rng.normal(size=(min(100_000, rows - start), n_features))
            block = np.column_stack([X, X @ weights]) if target else X
            np.savetxt(handle, block, delimiter=",", fmt="%.6g")
    tmp.replace(path)


def write_array(path: Path, rows: int, cols: int, *, seed: int = 1) -> None:
    """The predict rows as .npy, .npz or compressed .npz (``*_z.npz``), written in one go."""
    if path.exists():
        return
    X = np.random.default_rng(seed).normal(size=(rows, cols))
    tmp = path.with_name("tmp_" + path.name)
    if path.suffix == ".npy":
        np.save(tmp, X)
    else:
        (np.savez_compressed if path.stem.endswith("_z") else np.savez)(tmp, X=X)
    tmp.replace(path)


_SUFFIX = {"csv": ".csv", "npy": ".npy", "npz": ".npz", "npz-compressed": "_z.npz"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=20)
    parser.add_argument("--predict-rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--folder", default="/tmp/bench_csv")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--formats", default="csv",
                        help="predict files: comma-separated csv, npy, npz, npz-compressed [csv]")
    args = parser.parse_args()
    formats = args.formats.split(",")
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_csv = folder / f"train_{args.rows}x{args.cols}.csv"
    started = time.perf_counter()
    write_csv(train_csv, args.rows, args.cols, target=True)
    for n in args.predict_rows:
        for kind in formats:
            path = folder / f"predict_{n}x{args.cols - 1}{_SUFFIX[kind]}"
            if kind == "csv":
                write_csv(path, n, args.cols - 1, target=False, seed=1)
            else:
                write_array(path, n, args.cols - 1)
    print(f"files ready in {time.perf_counter() - started:.0f} s")
    matrix_mb = args.rows * args.cols * 8 / 2**20
    jacnet = [sys.executable, "-m", "jacnet"]
    run = folder / "run"
    results = {
        "python + numpy": peak([sys.executable, "-c", "import numpy, jacnet.cli"]),
        "train": peak([*jacnet, "train", "--data", str(train_csv), "--hidden", "16",
                       "--epochs", str(args.epochs), "--batch-size", "1024", "--no-progress",
                       "--out", str(run)]),
        "evaluate (held-out rows)": peak([*jacnet, "evaluate", str(run / "model.npz"),
                                          str(train_csv)]),
        "evaluate (all rows)": peak([*jacnet, "evaluate", str(run / "model.npz"),
                                     str(train_csv), "--all-rows"]),
    }
    for kind in formats:
        for n in args.predict_rows:
            rows_file = folder / f"predict_{n}x{args.cols - 1}{_SUFFIX[kind]}"
            results[f"predict {n} rows ({kind})"] = peak(
                [*jacnet, "predict", str(run / "model.npz"), str(rows_file),
                 "--out", str(folder / "predictions.csv")])
    print(f"{args.rows} rows x {args.cols} columns: float64 matrix {matrix_mb:.0f} MiB")
    print(f"{'command':28s} {'exit':>4s} {'peak MiB':>9s} {'x matrix':>9s} {'seconds':>8s}")
    for name, r in results.items():
        print(f"{name:28s} {int(r['code']):4d} {r['peak_mb']:9.0f} {r['peak_mb'] / matrix_mb:9.2f} "
              f"{r['seconds']:8.1f}")


if __name__ == "__main__":
    main()
