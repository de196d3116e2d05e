"""Data-parallel training under ``mpiexec``: each case runs once in this process and once
as ``mpiexec -n k python tests/test_distributed.py SPEC`` (this file is also the worker),
and the two must agree to rounding. The MPI tests skip cleanly without mpi4py or mpiexec.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jacnet
from jacnet.distributed import Communicator, SingleProcess, shard_rows, world
from jacnet.metrics import MSE, R2, Accuracy
from jacnet.network import mlp
from jacnet.training import Callback, fit

HERE = Path(__file__).resolve()


# --------------------------------------------------------------------------- the cases
def make_data(case: dict[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(case.get("data_seed", 0))
    n, n_in = case["n_rows"], case.get("n_in", 3)
    X = rng.normal(size=(n, n_in))
    if case.get("loss") == "cross_entropy":
        y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    elif case.get("smooth"):
        y = 2.0 * np.tanh(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=n)
    else:
        y = np.sin(X @ np.arange(1.0, n_in + 1)) + 0.1 * rng.normal(size=n)
    data = {"X": X, "y": y}
    if case.get("weighted"):
        data["w"] = rng.uniform(0.0, 2.0, size=n)
    if case.get("validation_data"):
        data["X_val"] = rng.normal(size=(37, n_in))
        data["y_val"] = (np.sin(data["X_val"] @ np.arange(1.0, n_in + 1))
                         if case.get("loss") != "cross_entropy" else
                         (data["X_val"][:, 0] > 0).astype(np.int64))
    return data


class _Fail(Callback):
    """Kill this process (SIGKILL) or raise at the end of an epoch, on one rank."""

    def __init__(self, rank: int, epoch: int, how: str) -> None:
        self.rank, self.epoch, self.how = rank, epoch, how

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.state.comm.rank == self.rank and epoch == self.epoch:
            if self.how == "kill":
                os.kill(os.getpid(), 9)
            raise ValueError(f"a planned failure at epoch {epoch}")


def run_case(case: dict[str, Any], comm: Communicator) -> dict[str, Any]:
    """Train the case's network on this rank's shard; return θ and the history."""
    data = make_data(case)
    rows = shard_rows(case["n_rows"], comm.rank, comm.size)
    X, y = data["X"][rows], data["y"][rows]
    if case.get("bad_shard_rank") == comm.rank:
        X = X[:, :-1]
    n_out = 3 if case.get("loss") == "cross_entropy" else 1
    sizes = [X.shape[1] if case.get("bad_shard_rank") is None else data["X"].shape[1],
             *case.get("hidden", [6]), n_out]
    model = mlp(sizes, activation="tanh", dtype=case.get("dtype", "float64"), seed=1)
    kwargs: dict[str, Any] = {}
    if "w" in data:
        kwargs["sample_weight"] = data["w"][rows]
    if "X_val" in data:
        val_rows = shard_rows(data["X_val"].shape[0], comm.rank, comm.size)
        kwargs["validation_data"] = (data["X_val"][val_rows], data["y_val"][val_rows])
    callbacks = []
    if "fail" in case:
        callbacks.append(_Fail(**case["fail"]))
    optimizer: Any = case["optimizer"]
    if "solver" in case:  # the matrix-free path: every G·v product summed over the ranks
        from jacnet.optim import OPTIMIZERS
        optimizer = OPTIMIZERS[optimizer](solver=case["solver"])
    history = fit(model, X, y, loss=case.get("loss", "mse"), optimizer=optimizer,
                  lr=case.get("lr"), epochs=case["epochs"], batch_size=case.get("batch_size", 32),
                  seed=3, validation_split=case.get("validation_split", 0.0),
                  early_stopping=case.get("early_stopping"), patience=case.get("patience"),
                  clip_norm=case.get("clip_norm"), metrics=case.get("metrics"),
                  checkpoint=case.get("checkpoint"), resume_from=case.get("resume_from"),
                  callbacks=callbacks, progress=False, comm=comm, **kwargs)
    model.eval()
    outputs = model(data["X"])
    if n_out > 1:  # softmax ignores a shift of every logit (θ moves freely along it)
        outputs = outputs - outputs.mean(axis=1, keepdims=True)
    return {"params": model.params.copy(), "history": history.records,
            "stop_reason": history.stop_reason, "outputs": outputs,
            "invariant": n_out > 1}


def fit_estimator_on_shard(case: dict[str, Any], rank: int, size: int) -> np.ndarray:
    """An estimator fitted on one rank's shard, as in an MPI job: its predictions."""
    from jacnet.sklearn import MLPRegressor

    data = make_data(case)
    rows = shard_rows(case["n_rows"], rank, size)
    est = MLPRegressor(hidden_layer_sizes=(5,), solver=case["estimator_solver"], max_iter=8,
                       random_state=0, tol=0.0)
    with pytest.warns(Warning):  # the ConvergenceWarning of 8 iterations
        est.fit(data["X"][rows], data["y"][rows])
    return est.predict(data["X"])


def save_result(result: dict[str, Any], out: str, size: int) -> None:
    np.save(out + ".npy", result["params"])
    np.save(out + ".outputs.npy", result["outputs"])
    keep = [{k: v for k, v in r.items() if k != "time"} for r in result["history"]]
    Path(out + ".json").write_text(json.dumps(
        {"history": keep, "stop_reason": result["stop_reason"], "size": size}))


def main(spec_path: str) -> None:
    case = json.loads(Path(spec_path).read_text())
    comm = world()
    if "cases" in case:  # several runs in one launch
        for i, each in enumerate(case["cases"]):
            result = run_case(each, comm)
            if comm.rank == 0:
                save_result(result, f"{case['out']}.{i}", comm.size)
        return
    if case.get("communicator"):  # the communicator's operations, checked on every rank
        x = np.full(5, comm.rank + 1, dtype=np.float32)
        same = comm.allreduce(x) is x and x.dtype == np.float32
        b = np.arange(3.0) * (comm.rank == 0)
        comm.broadcast(b)
        checks = {"same_array": same, "sum": x.tolist(), "scalar": comm.allreduce_scalar(comm.rank),
                  "broadcast": b.tolist(), "gathered": comm.allgather(comm.rank)}
        Path(f"{case['out']}.rank{comm.rank}.json").write_text(json.dumps(checks))
        return
    if "estimator_solver" in case:  # an estimator per rank: no communication
        np.save(f"{case['out']}.rank{comm.rank}.npy",
                fit_estimator_on_shard(case, comm.rank, comm.size))
        return
    result = run_case(case, comm)
    if comm.rank == 0:
        save_result(result, case["out"], comm.size)


# --------------------------------------------------------------------------- launching
def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="needs mpi4py and mpiexec (pip install 'jacnet[mpi]')")


def launch(case: dict[str, Any], n_ranks: int, tmp_path: Path,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / f"spec{len(list(tmp_path.glob('spec*')))}.json"
    spec.write_text(json.dumps(case))
    env = dict(os.environ)
    src = str(Path(jacnet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    # One BLAS thread per rank: the ranks share the machine's cores.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    mpiexec = _mpiexec()
    assert mpiexec is not None
    return subprocess.run([mpiexec, "-n", str(n_ranks), sys.executable, str(HERE), str(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def load_result(out: str) -> dict[str, Any]:
    return {"params": np.load(out + ".npy"), "outputs": np.load(out + ".outputs.npy"),
            **json.loads(Path(out + ".json").read_text())}


def run_mpi(case: dict[str, Any], n_ranks: int, tmp_path: Path) -> dict[str, Any]:
    case = {**case, "out": str(tmp_path / f"out{n_ranks}")}
    done = launch(case, n_ranks, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    saved = load_result(case["out"])
    assert saved["size"] == n_ranks
    return saved


def assert_same_run(single: dict[str, Any], parallel: dict[str, Any], rtol: float) -> None:
    if not single["invariant"]:
        scale = np.abs(single["params"]).max()
        np.testing.assert_allclose(parallel["params"], single["params"], rtol=0,
                                   atol=rtol * scale)
    scale = np.abs(single["outputs"]).max()
    np.testing.assert_allclose(parallel["outputs"], single["outputs"], rtol=0, atol=rtol * scale)
    assert len(parallel["history"]) == len(single["history"])
    assert parallel["stop_reason"] == single["stop_reason"]
    for mine, theirs in zip(parallel["history"], single["history"]):
        keys = sorted(k for k in theirs if k != "time")
        assert sorted(k for k in mine if k != "time") == keys
        for key in keys:
            # R² = 1 − SS_res/SS_tot from running sums (SS_tot = Σy² − n ȳ²) and the
            # gradient norm near a minimum are small differences of large sums: they lose a
            # few digits to cancellation, whatever order the rows are summed in.
            tol = max(100 * rtol, 1e-10) if key.endswith("r2") or key == "grad_norm" else rtol
            np.testing.assert_allclose(mine[key], theirs[key], rtol=tol, atol=1e-300,
                                       err_msg=key)


ADAM = {"optimizer": "adam", "lr": 0.01, "n_rows": 301, "batch_size": 30, "epochs": 10}


# --------------------------------------------------------------------------- the tests
@needs_mpi
def test_adam_on_two_ranks_is_the_single_process_run(tmp_path: Path) -> None:
    # 301 rows in batches of 30: 11 steps an epoch (the last one a single row), 110 steps;
    # shards of 150 and 151 rows, so most batches are split unevenly between the ranks.
    single = run_case(ADAM, SingleProcess())
    assert_same_run(single, run_mpi(ADAM, 2, tmp_path), rtol=1e-10)


@needs_mpi
def test_mpi_communicator_sums_in_place_in_the_arrays_dtype(tmp_path: Path) -> None:
    out = str(tmp_path / "comm")
    done = launch({"communicator": True, "out": out}, 3, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in range(3):
        checks = json.loads(Path(f"{out}.rank{rank}.json").read_text())
        assert checks == {"same_array": True, "sum": [6.0] * 5, "scalar": 3.0,
                          "broadcast": [0.0, 1.0, 2.0], "gathered": [0, 1, 2]}


@needs_mpi
def test_float32_gradients_are_summed_in_float32(tmp_path: Path) -> None:
    case = {**ADAM, "dtype": "float32", "epochs": 3}
    single = run_case(case, SingleProcess())
    assert single["params"].dtype == np.float32
    parallel = run_mpi(case, 2, tmp_path)
    assert parallel["params"].dtype == np.float32
    assert_same_run(single, parallel, rtol=1e-4)  # float32 sums in another order


@needs_mpi
def test_weighted_classifier_with_validation_split_and_early_stopping(tmp_path: Path) -> None:
    case = {"optimizer": "adam", "lr": 0.05, "n_rows": 240, "batch_size": 25, "epochs": 30,
            "loss": "cross_entropy", "weighted": True, "validation_split": 0.25,
            "early_stopping": True, "patience": 3, "clip_norm": 0.5, "hidden": [5]}
    single = run_case(case, SingleProcess())
    assert {"val_loss", "val_accuracy", "accuracy"} <= set(single["history"][0])
    assert_same_run(single, run_mpi(case, 3, tmp_path), rtol=1e-10)


@needs_mpi
def test_regression_metrics_and_validation_data_over_three_ranks(tmp_path: Path) -> None:
    case = {**ADAM, "epochs": 4, "validation_data": True, "metrics": ["mse", "mae", "r2"]}
    single = run_case(case, SingleProcess())
    assert_same_run(single, run_mpi(case, 3, tmp_path), rtol=1e-10)


@needs_mpi
def test_a_killed_rank_ends_the_job_and_the_checkpoint_resumes(tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "run.ckpt.npz")
    case = {**ADAM, "checkpoint": checkpoint, "fail": {"rank": 1, "epoch": 4, "how": "kill"}}
    done = launch({**case, "out": str(tmp_path / "never")}, 2, tmp_path, timeout=60)
    assert done.returncode != 0
    assert "Killed (signal 9)" in done.stdout + done.stderr
    assert not (tmp_path / "never.json").exists()
    saved = str(tmp_path / "saved.ckpt.npz")
    shutil.copy(checkpoint, saved)
    single = run_case(ADAM, SingleProcess())
    resumed = run_mpi({**ADAM, "checkpoint": checkpoint, "resume_from": checkpoint}, 2, tmp_path)
    assert_same_run(single, resumed, rtol=1e-10)
    # The checkpoint is the run's, not the ranks': one process resumes it as well.
    assert_same_run(single, run_case({**ADAM, "resume_from": saved}, SingleProcess()), rtol=1e-10)


@needs_mpi
def test_an_error_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    case = {**ADAM, "fail": {"rank": 1, "epoch": 2, "how": "raise"}, "out": str(tmp_path / "x")}
    done = launch(case, 2, tmp_path, timeout=60)
    assert done.returncode != 0
    assert "rank 1 of 2 failed, stopping every rank" in done.stderr
    assert "a planned failure at epoch 2" in done.stderr


@needs_mpi
def test_a_bad_shard_raises_on_every_rank(tmp_path: Path) -> None:
    case = {**ADAM, "bad_shard_rank": 1, "out": str(tmp_path / "x")}
    done = launch(case, 2, tmp_path, timeout=60)
    assert done.returncode != 0
    assert "rank(s) 1 of 2 failed" in done.stderr  # rank 0's error
    assert "X must have 3 columns (features); got shape (151, 2)" in done.stderr


@needs_mpi
def test_jacnet_train_under_mpiexec_is_one_run(tmp_path: Path) -> None:
    from jacnet.cli import main as cli_main
    from jacnet.io import load_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    np.savez(tmp_path / "big.npz", X=X, y=np.sin(X @ np.arange(1.0, 5.0)))
    args = ["train", "--data", str(tmp_path / "big.npz"), "--hidden", "6", "--epochs", "4",
            "--dtype", "float64", "--validation-split", "0.1", "--checkpoint-every", "2"]
    assert cli_main([*args, "--out", str(tmp_path / "one")]) == 0
    env = dict(os.environ)
    src = str(Path(jacnet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([str(_mpiexec()), "-n", "2", sys.executable, "-m", "jacnet", *args,
                           "--out", str(tmp_path / "two")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("run folder:") == 1  # rank 0 alone reports and writes
    one, two = (load_model(tmp_path / name / "model.npz") for name in ("one", "two"))
    scale = np.abs(one.model.params).max()
    np.testing.assert_allclose(two.model.params, one.model.params, rtol=0, atol=1e-10 * scale)
    history = json.loads((tmp_path / "two" / "history.json").read_text())
    assert len(history["records"]) == 4 and "val_loss" in history["records"][0]
    assert (tmp_path / "two" / "checkpoint.npz").exists()


def _mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(jacnet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _sharded_data(tmp_path: Path, kind: str) -> tuple[Path, list[str]]:
    """A data file whose columns have offsets and spreads far from 0 and 1, so that the
    scaler's statistics are worth comparing."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(403, 3)) * [1.0, 250.0, 0.01] + [0.0, 1e4, -3.0]
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    if kind == "csv":  # text class labels: stratified split, names read from the file
        labels = np.array(["low", "mid", "high"])[np.digitize(z[:, 0] + z[:, 1], [-0.5, 0.5])]
        path = tmp_path / "table.csv"
        lines = [f"{a!r},{b!r},{c!r},{label}" for (a, b, c), label in zip(X.tolist(), labels)]
        path.write_text("a,b,c,kind\n" + "\n".join(lines) + "\n")
        return path, ["--optimizer", "adam", "--epochs", "3", "--batch-size", "40"]
    y = np.stack([np.sin(z @ [1.0, 2.0, 0.5]), z[:, 2] ** 2], axis=1) * [3.0, 100.0] + [5.0, 0.0]
    path = tmp_path / "table.npz"
    (np.savez_compressed if kind == "compressed" else np.savez)(path, X=X, y=y)
    return path, ["--optimizer", "lm", "--epochs", "5"] if kind == "npz" else \
        ["--optimizer", "adam", "--epochs", "3", "--batch-size", "50"]


@needs_mpi
@pytest.mark.parametrize("kind", ["npz", "compressed", "csv"])
def test_jacnet_train_reading_each_ranks_rows_matches_one_process(tmp_path: Path,
                                                                  kind: str) -> None:
    # Under mpiexec each rank reads only its rows of the file; the split is drawn from the
    # targets alone, the scaler merged from every rank's moments, the Laplace noise
    # estimate summed: the run folder must be that of one process to rounding.
    from jacnet.cli import main as cli_main
    from jacnet.io import load_model

    path, extra = _sharded_data(tmp_path, kind)
    args = ["train", "--data", str(path), "--hidden", "4", "--dtype", "float64",
            "--validation-split", "0.1", "--no-progress", *extra]
    assert cli_main([*args, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run([str(_mpiexec()), "-n", "2", sys.executable, "-m", "jacnet", *args,
                           "--out", str(tmp_path / "two")], capture_output=True, text=True,
                          env=_mpi_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    one, two = (load_model(tmp_path / name / "model.npz") for name in ("one", "two"))
    scale = np.abs(one.model.params).max()
    # LM solves with the damped JᵀJ of this 3-4-2 network, whose conditioning turns the
    # sums' rounding into 3e-8 of θ (2.5e-8 when every rank held every row, as before);
    # Adam's steps keep it near 1e-15.
    tol = 1e-6 if kind == "npz" else 1e-10
    np.testing.assert_allclose(two.model.params, one.model.params, rtol=0, atol=tol * scale)
    for key in ("X", "y"):
        if one.preprocessing[key] is None:
            assert two.preprocessing[key] is None
            continue
        # Merging the ranks' (n, mean, M2) changes only the order of the sums.
        np.testing.assert_allclose(two.preprocessing[key].mean_, one.preprocessing[key].mean_,
                                   rtol=1e-13, atol=0)
        np.testing.assert_allclose(two.preprocessing[key].scale_,
                                   one.preprocessing[key].scale_, rtol=1e-12, atol=0)
    meta_one, meta_two = one.metadata, two.metadata
    assert meta_two["split"] == meta_one["split"]
    assert meta_two["target_names"] == meta_one["target_names"]
    for key, value in meta_one["test_scores"].items():
        np.testing.assert_allclose(meta_two["test_scores"][key], value, rtol=100 * tol,
                                   err_msg=key)
    if "noise_std" in meta_one:
        np.testing.assert_allclose(meta_two["noise_std"], meta_one["noise_std"], rtol=100 * tol)
    else:
        assert "noise_std" not in meta_two


@needs_mpi
def test_a_bad_cell_in_one_ranks_rows_stops_every_rank_with_one_line_each(tmp_path: Path) -> None:
    # Only the rank that holds the row converts it: that rank names the cell, the other
    # names the failed rank, and neither prints a traceback or hangs.
    rows = [f"{i / 7:.4f},{(i % 5) / 3:.4f},{i % 3 / 2:.4f}" for i in range(60)]
    rows[40] = "0.5,?,1.0"
    (tmp_path / "bad.csv").write_text("a,b,y\n" + "\n".join(rows) + "\n")
    done = subprocess.run([str(_mpiexec()), "-n", "2", sys.executable, "-m", "jacnet", "train",
                           "--data", str(tmp_path / "bad.csv"), "--epochs", "1", "--no-progress",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          env=_mpi_env(), timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert sum("line 42, column 'b': feature value '?' is not a finite number" in line
               for line in lines) == 1, done.stderr
    assert sum("of 2 failed (see their error); every rank stops" in line
               for line in lines) == 1, done.stderr
    assert not (tmp_path / "run").exists()


def _train_under_mpiexec(n: int, path: Path, out: Path, *extra: str,
                         timeout: int = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(_mpiexec()), "-n", str(n), sys.executable, "-m", "jacnet",
                               "train", "--data", str(path), "--hidden", "3", "--no-progress",
                               "--out", str(out), *extra], capture_output=True, text=True,
                              env=_mpi_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mpiexec -n {n} jacnet train --data {path.name} hung")


@needs_mpi
def test_more_ranks_than_training_rows_is_one_line_not_a_hang(tmp_path: Path) -> None:
    # 3 rows on 3 ranks: 2 training rows, so one rank would hold none. That rank used to
    # fail alone (NumPy's "cannot reshape array of size 0") while the others waited in
    # their next Allreduce forever; every rank must refuse it, saying how to fix it.
    X = np.array([[0.0, 1.0], [2.0, 5.0], [4.0, 4.0]])
    np.savez(tmp_path / "three.npz", X=X, y=X @ [2.0, -1.0] + 1.0)
    done = _train_under_mpiexec(3, tmp_path / "three.npz", tmp_path / "run", "--epochs", "1")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all("three.npz has 2 training rows (after the test split) for 3 ranks; "
                         "every rank needs at least one: run with mpiexec -n 2 or fewer"
                         in line for line in lines), done.stderr
    assert not (tmp_path / "run").exists()


@needs_mpi
def test_a_test_row_that_fails_on_one_rank_stops_every_rank_without_a_hang(tmp_path: Path
                                                                          ) -> None:
    # Each rank scores its block of the test rows. A value that the float32 model cannot
    # take (1e300), in a test row of rank 1's block, failed there alone while rank 0
    # waited in the scores' Allreduce for ever, its run folder left behind.
    from jacnet import data as jdata

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    y = X @ [1.0, 2.0]
    _, _, test_rows = jdata.split_rows(y, "regression", test_size=0.2, seed=0)
    X[test_rows[-1], 0] = 1e300  # the last test row: rank 1's block
    np.savez(tmp_path / "extreme.npz", X=X, y=y)
    done = _train_under_mpiexec(2, tmp_path / "extreme.npz", tmp_path / "run", "--epochs", "1")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert sum("X contains NaN or infinity" in line for line in lines) == 1, done.stderr
    assert sum("rank(s) 1 of 2 failed (see their error); every rank stops." in line
               for line in lines) == 1, done.stderr
    assert not (tmp_path / "run").exists()


_HOLDS = """
import json, sys, tracemalloc
import numpy as np
from jacnet import cli, data
from jacnet.distributed import world
comm = world()
options = {**cli._DEFAULTS, "data": sys.argv[1]}
tracemalloc.start()
train, test, shard = cli._load_rank_rows(options, comm)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
json.dump({"peak": peak, "X": train.X.tolist(), "test_X": test.X.tolist(),
           "n_train": shard.n_train, "n_test": shard.n_test},
          open(sys.argv[2] + f".{comm.rank}.json", "w"))
"""


@needs_mpi
@pytest.mark.parametrize("suffix", ["npz", "csv"])
def test_each_rank_holds_only_its_own_rows(tmp_path: Path, suffix: str) -> None:
    # 24,000 rows of 64 features (12.3 MB as float64) on 3 ranks. Each rank must hold
    # exactly its block of the training rows and of the test rows, and never have
    # allocated the whole matrix: its peak traced memory while reading stays below 70% of
    # it (its share is 33%; the targets and indices of every row and one read buffer add
    # about 20%). Reading every row and then keeping a rank's peaks above 100%.
    from jacnet import data as jdata
    from jacnet.distributed import shard_rows

    rng = np.random.default_rng(2)
    X = np.round(rng.normal(size=(24_000, 64)), 3)
    y = np.round(X @ rng.normal(size=64), 3)
    path = tmp_path / f"rows.{suffix}"
    if suffix == "npz":
        np.savez(path, X=X, y=y)
    else:
        header = ",".join([*(f"x{j}" for j in range(64)), "y"])
        path.write_text("\n".join([header] + [
            ",".join(map(repr, row)) for row in np.column_stack([X, y]).tolist()]) + "\n")
    script = tmp_path / "holds.py"
    script.write_text(_HOLDS)
    done = subprocess.run([str(_mpiexec()), "-n", "3", sys.executable, str(script), str(path),
                           str(tmp_path / "held")], capture_output=True, text=True,
                          env=_mpi_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    train_rows, _, test_rows = jdata.split_rows(y, "regression", test_size=0.2, seed=0)
    for rank in (0, 1, 2):
        held = json.loads((tmp_path / f"held.{rank}.json").read_text())
        mine = train_rows[shard_rows(len(train_rows), rank, 3)]
        np.testing.assert_array_equal(np.array(held["X"]), X[mine])
        mine = test_rows[shard_rows(len(test_rows), rank, 3)]
        np.testing.assert_array_equal(np.array(held["test_X"]), X[mine])
        assert (held["n_train"], held["n_test"]) == (len(train_rows), len(test_rows))
        assert held["peak"] < 0.7 * X.nbytes, (rank, held["peak"], X.nbytes)


@needs_mpi
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
def test_estimators_fit_each_ranks_shard_inside_an_mpi_job(tmp_path: Path) -> None:
    # "lm" runs in jacnet.training.fit: without comm= it stays one process per rank.
    for solver in ("lm",):
        case = {"estimator_solver": solver, "n_rows": 120, "out": str(tmp_path / solver)}
        done = launch(case, 2, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        for rank in (0, 1):
            np.testing.assert_array_equal(np.load(f"{case['out']}.rank{rank}.npy"),
                                          fit_estimator_on_shard(case, rank, 2))


FULL_BATCH = [
    {"optimizer": "lm", "n_rows": 241, "epochs": 20, "smooth": True, "hidden": [3]},
    {"optimizer": "lm", "n_rows": 241, "epochs": 20, "weighted": True, "validation_data": True,
     "metrics": ["mse", "r2"], "smooth": True, "hidden": [3]},
    # Softmax ignores a shift of every logit, so JᵀHJ is singular and, as μ falls, LM's
    # step along its near-null directions is set by rounding: 1e-10 there (see docs).
    {"optimizer": "lm", "n_rows": 200, "epochs": 20, "loss": "cross_entropy", "hidden": [3],
     "rtol": 1e-10},
    {"optimizer": "gn", "n_rows": 241, "epochs": 20, "smooth": True, "hidden": [2]},
    {"optimizer": "br", "n_rows": 241, "epochs": 20, "smooth": True, "hidden": [3]},
    # Truncated CG (a Krylov method, its stopping test on summed residuals) carries the
    # rounding of the sums further: measured 1e-11 in the loss, held to 1e-10.
    {"optimizer": "lm", "solver": "cg", "n_rows": 241, "epochs": 20, "smooth": True,
     "hidden": [3], "rtol": 1e-10},
    {"optimizer": "br", "solver": "cg", "n_rows": 241, "epochs": 20, "smooth": True,
     "hidden": [3], "rtol": 1e-10},
]


@needs_mpi
@pytest.mark.parametrize("n_ranks", [2, 3])
def test_full_batch_lm_gn_br_on_several_ranks_are_the_single_process_run(
        tmp_path: Path, n_ranks: int) -> None:
    # N·m > P throughout, so one process solves the same primal system as the ranks.
    out = str(tmp_path / "full")
    done = launch({"cases": FULL_BATCH, "out": out}, n_ranks, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for i, case in enumerate(FULL_BATCH):
        single = run_case(case, SingleProcess())
        assert len(single["history"]) == 20 or single["stop_reason"], case
        parallel = load_result(f"{out}.{i}")
        assert parallel["size"] == n_ranks
        assert_same_run(single, parallel, rtol=case.get("rtol", 1e-12))
        if case["optimizer"] == "br":
            assert {"gamma", "alpha", "beta"} <= set(parallel["history"][-1])


@needs_mpi
def test_auto_solver_chooses_from_all_rows_on_every_rank(tmp_path: Path) -> None:
    # 3-80-1 (P = 401) on 600 rows: the dense system costs fewer multiply-adds than the
    # worst-case CG solve for the 600 rows, not for one rank's 300; every rank must choose
    # as one process choosing for all 600 does.
    case = {"optimizer": "lm", "solver": "auto", "n_rows": 600, "epochs": 3, "smooth": True,
            "hidden": [80]}
    single = run_case(case, SingleProcess())
    assert [r["matrix_free"] for r in single["history"]] == [0.0] * 3
    parallel = run_mpi(case, 2, tmp_path)
    assert [r["matrix_free"] for r in parallel["history"]] == [0.0] * 3
    # A 401-parameter system is less well conditioned than the small ones above (θ agrees
    # to about 4e-11); the other solver would differ in the first digit.
    assert_same_run(single, parallel, rtol=1e-8)


def test_a_full_batch_optimizer_without_allreduce_is_refused() -> None:
    class Plain:
        full_batch = True

        def epoch(self, model: Any, loss: Any, X: Any, target: Any) -> dict[str, float]:
            return {"loss": 0.0}

    class TwoRanks(SingleProcess):
        size = 2

    with pytest.raises(TypeError, match="Plain cannot train data-parallel"):
        fit(mlp([1, 1]), np.zeros((4, 1)), np.zeros(4), optimizer=Plain(), comm=TwoRanks())


# --------------------------------------------------------------------------- Dask
needs_dask = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None or importlib.util.find_spec("sklearn") is None,
    reason="needs dask[distributed] and scikit-learn")


@needs_dask
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_on_a_dask_cluster_finds_the_n_jobs_1_parameters() -> None:
    import pickle

    import joblib
    from dask.distributed import Client, LocalCluster
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV

    from jacnet.sklearn import MLPClassifier, MLPRegressor

    X, y = make_classification(n_samples=150, n_features=5, random_state=0)
    for est in (MLPClassifier((4,), max_iter=20, random_state=0),
                MLPRegressor(hidden_layer_sizes=(4,), max_iter=20, random_state=0)):
        # The workers receive the estimators pickled; a fitted one keeps its predictions.
        fitted = est.fit(X, y)
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict(X),
                                      fitted.predict(X))
    grid = {"alpha": [1e-4, 0.3], "hidden_layer_sizes": [(2,), (6,)], "solver": ["adam", "lm"]}
    est = MLPClassifier((4,), max_iter=20, random_state=0)
    serial = GridSearchCV(est, grid, cv=3, n_jobs=1).fit(X, y)
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(jacnet.__file__).resolve().parents[1])}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, env=env) as cluster, Client(cluster) as client:
        with joblib.parallel_backend("dask"):
            parallel = GridSearchCV(est, grid, cv=3, n_jobs=-1).fit(X, y)
        workers = client.run(lambda: __import__("jacnet").__file__)
    assert len(workers) == 2
    assert parallel.best_params_ == serial.best_params_
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"], rtol=1e-12)


# --------------------------------------------------------------------------- one process
def test_single_process_communicator_is_the_identity() -> None:
    comm = world()
    assert isinstance(comm, SingleProcess) and (comm.size, comm.rank) == (1, 0)
    x = np.arange(3.0, dtype=np.float32)
    assert comm.allreduce(x) is x and x.dtype == np.float32
    assert comm.allgather("a") == ["a"]
    comm.agree(None)
    with pytest.raises(ValueError, match="boom"), comm.failing_together():
        raise ValueError("boom")


def test_shards_cover_the_rows_in_order() -> None:
    for n, k in [(10, 3), (7, 7), (5, 2), (2, 3)]:
        parts = [np.arange(n)[shard_rows(n, r, k)] for r in range(k)]
        np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="rank must be in"):
        shard_rows(10, 3, 3)


def test_metric_totals_add_up_to_the_whole() -> None:
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    for make in (MSE, R2, Accuracy):
        whole = make()(pred, target)
        parts = [make(), make(), make()]
        for part, rows in zip(parts, (slice(0, 7), slice(7, 20), slice(20, 20))):
            if rows.start < rows.stop:
                part.update(pred[rows], target[rows])
        total = sum(p.totals(2) for p in parts)
        parts[2].set_totals(total)
        assert parts[2].result() == pytest.approx(whole, rel=1e-12)


if __name__ == "__main__":
    main(sys.argv[1])


def test_the_dense_system_is_summed_as_one_packed_lower_triangle() -> None:
    """Two simulated ranks: one Allreduce of P(P+1)/2 + P floats gives both ranks' sum in
    the lower triangle the solver reads, and in Jᵀg."""
    from jacnet.optim.second_order import _allreduce_lower

    rng = np.random.default_rng(0)
    n = 7
    parts = []
    for _ in range(2):
        j = rng.normal(size=(30, n))
        parts.append((j.T @ j, j.T @ rng.normal(size=30)))
    other = np.concatenate([*(parts[1][0][i, : i + 1] for i in range(n)), parts[1][1]])
    sizes: list[int] = []

    def allreduce(array: np.ndarray) -> None:
        sizes.append(array.size)
        array += other

    jtj, jte = parts[0][0].copy(), parts[0][1].copy()
    _allreduce_lower(allreduce, jtj, jte)
    assert sizes == [n * (n + 1) // 2 + n]
    lower = np.tril_indices(n)
    np.testing.assert_allclose(jtj[lower], (parts[0][0] + parts[1][0])[lower], rtol=1e-15)
    np.testing.assert_allclose(jte, parts[0][1] + parts[1][1], rtol=1e-15)
