"""Strong scaling of data-parallel training: the same run on 1 and on 2 MPI ranks.

Two runs, each launched as ``mpiexec -n k python bench_distributed.py --worker CASE``
with one BLAS thread per rank (``OMP_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1``,
``MKL_NUM_THREADS=1``, checked with threadpoolctl in every rank):

- ``lm``: dense Levenberg–Marquardt on N = 200,000 rows, 8-222-1 tanh (P = 2,221),
  ``--lm-epochs`` epochs (default 2): per epoch each rank forms JᵀJ and Jᵀe of its
  100,000 rows, one Allreduce of P(P+1)/2 + P floats, every rank solves the same system;
- ``adam``: one Adam epoch, 784-256-10 ReLU, batch 128, float32, on Fashion-MNIST's 60,000
  training images (``/usr/share/datasets/fashion-mnist``) or, when they are absent, a
  synthetic 60,000 × 784 stand-in with the same shapes (the report says which); each step
  Allreduces the P = 203,530 gradient floats;
- ``read`` (memory, not time): what ``mpiexec -n k jacnet train --data FILE`` holds per rank
  after reading its rows of a 50,000 × 64 float64 NPZ and CSV file (25.6 MB of features):
  the peak traced memory (tracemalloc) while reading, and the rank's peak resident set
  (``resource.getrusage(...).ru_maxrss``, which also counts the interpreter, NumPy and
  MPI, given beside the same figure taken before reading). One run per rank count.

The time is the ``fit`` call between two barriers on rank 0 (the data are built and the
processes started before the clock starts). After the fit, the Allreduce alone is timed:
of one step's gradient (Adam; 50 times) or of one epoch's P × P system and Jᵀg (LM; 5
times); on one rank it is a no-op. The 1-minute load average after each run is
recorded: on a machine whose cores other work also uses, two ranks cannot both run, and
the figure says so. Runs alternate 1, 2, 1, 2, ... ranks for
``--repeats`` rounds; the report gives the median and range per rank count and the
speed-up of the medians.

Usage::

    .venv/bin/python benchmarks/bench_distributed.py --repeats 3 --markdown /tmp/dist.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _read_worker(path: str) -> None:
    """Read this rank's rows as `jacnet train` does; rank 0 prints every rank's figures."""
    import resource
    import tracemalloc

    sys.path.insert(0, str(REPO / "src"))
    from jacnet import cli
    from jacnet.distributed import world

    comm = world()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    train, test, _ = cli._load_rank_rows({**cli._DEFAULTS, "data": path}, comm)
    traced = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = comm.allgather({"rank": comm.rank, "traced_mb": traced, "rss_before_mb": before,
                              "rss_mb": after, "rows": train.n_samples + test.n_samples})
    if comm.rank == 0:
        print(json.dumps({"case": "read", "ranks": comm.size, "file": Path(path).suffix,
                          "per_rank": figures}), flush=True)


def _read_files(folder: Path) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(50_000, 64)), 4)
    y = X @ rng.normal(size=64)
    np.savez(folder / "read.npz", X=X, y=y)
    with open(folder / "read.csv", "w") as handle:
        handle.write(",".join([*(f"x{j}" for j in range(64)), "y"]) + "\n")
        np.savetxt(handle, np.column_stack([X, y]), fmt="%.4f", delimiter=",")
    return [folder / "read.npz", folder / "read.csv"]


def _read_table(runs: list[dict]) -> str:
    lines = ["| file (50,000 × 64 float64, 25.6 MB of features) | ranks | rows held per rank | "
             "traced peak while reading, MB per rank | ru_maxrss after (before) reading, MB |",
             "|---|---|---|---|---|"]
    for run in runs:
        ranks = run["per_rank"]
        lines.append(f"| {run['file']} | {run['ranks']} | "
                     + ", ".join(str(r["rows"]) for r in ranks) + " | "
                     + ", ".join(f"{r['traced_mb']:.1f}" for r in ranks) + " | "
                     + ", ".join(f"{r['rss_mb']:.0f} ({r['rss_before_mb']:.0f})" for r in ranks)
                     + " |")
    return "\n".join(lines)


def _worker(case: str, lm_epochs: int) -> None:
    sys.path.insert(0, str(REPO / "src"))
    import numpy as np

    from jacnet import data as jdata
    from jacnet.distributed import shard_rows, world
    from jacnet.network import mlp
    from jacnet.training import fit

    comm = world()
    try:
        from threadpoolctl import threadpool_info
        blas_threads = sorted({int(p["num_threads"]) for p in threadpool_info()})
    except ImportError:
        blas_threads = []
    source = ""
    if case == "lm":
        n_rows, n_in = 200_000, 8
        rng = np.random.default_rng(0)
        rows = shard_rows(n_rows, comm.rank, comm.size)
        X = rng.uniform(-1, 1, size=(n_rows, n_in))[rows]
        y = np.sinc(3 * X[:, 0]) * np.cos(2 * X[:, 1]) + 0.1 * X[:, 2:].sum(axis=1)
        model = mlp([n_in, 222, 1], activation="tanh", dtype="float64", seed=0)
        kwargs = {"optimizer": "lm", "epochs": lm_epochs}
        source = "synthetic"
    else:
        if FASHION.is_dir():
            train, _ = jdata.load_fashion_mnist()
            X_all, y_all = np.asarray(train.X, dtype=np.float32) / 255.0, np.asarray(train.y)
            source = "Fashion-MNIST"
        else:
            rng = np.random.default_rng(0)
            X_all = rng.uniform(0, 1, size=(60_000, 784)).astype(np.float32)
            y_all = (X_all[:, :392].sum(axis=1) * 10 // 392 % 10).astype(np.int64)
            source = "synthetic 60000x784 stand-in"
        rows = shard_rows(X_all.shape[0], comm.rank, comm.size)
        X, y = X_all[rows], y_all[rows]
        model = mlp([784, 256, 10], activation="relu", dtype="float32", seed=0)
        kwargs = {"optimizer": "adam", "epochs": 1, "batch_size": 128, "loss": "cross_entropy",
                  "metrics": []}
    comm.allreduce_scalar(0.0)  # barrier: every rank has its data
    started = time.perf_counter()
    history = fit(model, X, y, seed=0, progress=False, comm=comm, **kwargs)
    comm.allreduce_scalar(0.0)
    seconds = time.perf_counter() - started
    # The communication alone: the Allreduce of one step's gradient (first order) or of
    # one epoch's P × P system and Jᵀg (LM), timed by itself.
    buffer = (np.zeros_like(model.grads) if case == "adam"
              else np.zeros(model.n_params * (model.n_params + 1)))
    repeats = 50 if case == "adam" else 5
    comm.allreduce_scalar(0.0)
    clock = time.perf_counter()
    for _ in range(repeats):
        comm.allreduce(buffer)
    allreduce_ms = 1e3 * (time.perf_counter() - clock) / repeats
    if comm.rank == 0:
        print(json.dumps({"case": case, "ranks": comm.size, "seconds": seconds,
                          "epochs": len(history), "loss": history["loss"][-1],
                          "n_params": model.n_params, "blas_threads": blas_threads,
                          "source": source, "allreduce_ms": allreduce_ms}), flush=True)


def _launch(case: str, ranks: int, lm_epochs: int, path: Path | None = None) -> dict:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec")
    if mpiexec is None:
        raise SystemExit("bench_distributed needs mpiexec: pip install 'jacnet[mpi]'.")
    env = {**os.environ, **SINGLE_THREAD}
    extra = ["--read", str(path)] if path is not None else []
    done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, str(HERE), "--worker", case,
                           "--lm-epochs", str(lm_epochs), *extra], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{case} on {ranks} ranks failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=["lm", "adam", "read"])
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--cases", default="adam,lm,read",
                        help="comma-separated: adam, lm (timed), read (memory per rank)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lm-epochs", type=int, default=2)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.worker == "read":
        _read_worker(args.read)
        return
    if args.worker:
        _worker(args.worker, args.lm_epochs)
        return
    cases = args.cases.split(",")
    read_runs = []
    if "read" in cases:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            for path in _read_files(Path(folder)):
                for ranks in (1, 2):
                    read_runs.append(_launch("read", ranks, args.lm_epochs, path))
                    print(json.dumps(read_runs[-1]), flush=True)
        cases.remove("read")
    results: dict[tuple[str, int], list[dict]] = {}
    for case in cases:
        for repeat in range(args.repeats):
            for ranks in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                run = _launch(case, ranks, args.lm_epochs)
                run["load_average"] = round(os.getloadavg()[0], 1)
                print(json.dumps(run), flush=True)
                results.setdefault((case, ranks), []).append(run)
    lines = ["| run | ranks | fit seconds, median (range) | speed-up | final loss | "
             "one Allreduce, ms (median) | BLAS threads/rank | load average |",
             "|---|---|---|---|---|---|---|---|"]
    for case in cases:
        one = statistics.median(r["seconds"] for r in results[(case, 1)])
        for ranks in (1, 2):
            runs = results[(case, ranks)]
            times = [r["seconds"] for r in runs]
            first = runs[0]
            label = (f"LM, N=200,000, P={first['n_params']}, {first['epochs']} epochs"
                     if case == "lm" else
                     f"Adam epoch, {first['source']}, P={first['n_params']}, batch 128")
            lines.append(f"| {label} | {ranks} | {statistics.median(times):.2f} "
                         f"({min(times):.2f}–{max(times):.2f}) | "
                         f"{one / statistics.median(times):.2f}× | {first['loss']:.6g} | "
                         f"{statistics.median(r['allreduce_ms'] for r in runs):.2f} | "
                         f"{first['blas_threads']} | "
                         f"{min(r['load_average'] for r in runs)}–"
                         f"{max(r['load_average'] for r in runs)} |")
    table = "\n".join(lines) if cases else ""
    if read_runs:
        table = (table + "\n\n" if table else "") + _read_table(read_runs)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
