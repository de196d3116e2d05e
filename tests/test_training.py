"""The fit loop: learning, validation, callbacks, early stopping, divergence, checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import jacnet
from jacnet.io import load_checkpoint
from jacnet.layers import Dropout, Linear, Tanh
from jacnet.optim import SGD, Adam
from jacnet.training import Callback, DivergenceWarning, History, LambdaCallback, evaluate, fit


def regression_data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 2))
    y = np.sin(2 * X[:, :1]) + 0.5 * X[:, 1:] ** 2
    return X, y


def classification_data(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = rng.normal(0, 0.5, (n, 2)) + np.array([[0, 2], [2, -1], [-2, -1]])[y]
    return X, y


class ParamRecorder(Callback):
    """Remembers the parameters after every epoch."""

    def __init__(self) -> None:
        self.params: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.params.append(self.state.model.params.copy())


def test_fit_reduces_the_loss_and_reports_regression_metrics():
    X, y = regression_data()
    model = jacnet.mlp([2, 16, 1], seed=0)
    history = fit(model, X, y, epochs=30, lr=0.01, progress=False)
    assert len(history) == 30
    assert history["loss"][-1] < 0.2 * history["loss"][0]
    assert set(history.columns) == {"epoch", "loss", "mse", "mae", "r2", "lr", "time"}
    assert history["r2"][-1] > 0.8
    assert history.stop_reason is None


def test_classification_reaches_high_accuracy_with_default_metric():
    X, y = classification_data()
    model = jacnet.mlp([2, 8, 3], seed=1)
    history = fit(model, X, y, loss="cross_entropy", epochs=40, lr=0.02, progress=False)
    assert history["accuracy"][-1] > 0.9
    scores = evaluate(model, X, y, loss="cross_entropy")
    assert scores["accuracy"] > 0.9 and set(scores) == {"loss", "accuracy"}


def test_float32_stays_float32():
    X, y = regression_data()
    model = jacnet.mlp([2, 8, 1], seed=0, dtype="float32")
    optimizer = Adam(lr=0.01)
    history = fit(model, X, y, optimizer=optimizer, epochs=3, progress=False,
                  validation_split=0.25, clip_norm=1.0)
    assert model.params.dtype == np.float32
    assert all(v.dtype == np.float32 for v in optimizer.state_dict().values()
               if isinstance(v, np.ndarray))
    assert all(type(v) is float for v in history["loss"] + history["val_loss"])


def test_validation_split_holds_out_rows_reproducibly():
    X, y = regression_data(80)
    runs = []
    for _ in range(2):
        model = jacnet.mlp([2, 8, 1], seed=0)
        runs.append(fit(model, X, y, epochs=4, lr=0.01, validation_split=0.25, seed=3,
                        progress=False))
    assert runs[0]["val_loss"] == runs[1]["val_loss"]
    assert {"val_loss", "val_mse", "val_mae", "val_r2"} <= set(runs[0].columns)
    assert runs[0].monitor == "val_loss"
    # The held-out quarter is scored on 20 rows: compare with evaluate on the same rows.
    order = np.random.default_rng([3, 1]).permutation(80)
    val_rows = np.sort(order[:20])
    model = jacnet.mlp([2, 8, 1], seed=0)
    fit(model, X, y, epochs=4, lr=0.01, validation_split=0.25, seed=3, progress=False)
    assert evaluate(model, X[val_rows], y[val_rows])["loss"] == pytest.approx(runs[0]["val_loss"][-1])


def test_callbacks_are_called_in_order():
    X, y = regression_data(16)
    calls: list[tuple] = []
    cb = LambdaCallback(on_train_begin=lambda logs: calls.append(("begin",)),
                        on_epoch_end=lambda epoch, logs: calls.append(("epoch", epoch, logs["epoch"])),
                        on_train_end=lambda logs: calls.append(("end", logs.get("epoch"))))
    fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=3, callbacks=[cb], progress=False)
    assert calls == [("begin",), ("epoch", 1, 1), ("epoch", 2, 2), ("epoch", 3, 3), ("end", 3)]


def test_a_callback_can_stop_training():
    class StopAtTwo(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 2:
                self.state.stop("enough")

    X, y = regression_data(16)
    history = fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=10, callbacks=[StopAtTwo()],
                  progress=False)
    assert len(history) == 2 and history.stop_reason == "enough"


def test_early_stopping_restores_the_best_weights():
    X, y = regression_data(64)
    X_val, y_val = X[:16], -y[:16]  # the better the fit, the worse on these
    recorder = ParamRecorder()
    model = jacnet.mlp([2, 16, 1], seed=0)
    history = fit(model, X, y, epochs=200, lr=0.01, validation_data=(X_val, y_val),
                  early_stopping=True, patience=3, callbacks=[recorder], progress=False)
    assert history.stop_reason.startswith("early stopping")
    assert len(history) < 200
    best = history.best_epoch
    assert best == int(np.argmin(history["val_loss"])) + 1
    assert len(history) == best + 3
    np.testing.assert_array_equal(model.params, recorder.params[best - 1])
    assert not np.array_equal(model.params, recorder.params[-1])


def test_early_stopping_without_restore_keeps_the_last_weights():
    X, y = regression_data(64)
    recorder = ParamRecorder()
    model = jacnet.mlp([2, 16, 1], seed=0)
    fit(model, X, y, epochs=200, lr=0.01, validation_data=(X[:16], -y[:16]), early_stopping=True,
        patience=3, restore_best=False, callbacks=[recorder], progress=False)
    np.testing.assert_array_equal(model.params, recorder.params[-1])


def test_divergence_stops_with_a_clear_message_and_keeps_last_good_weights():
    X, y = regression_data(64)
    y = y * 1e3
    recorder = ParamRecorder()
    model = jacnet.mlp([2, 16, 1], seed=0, dtype="float32")
    with pytest.warns(DivergenceWarning, match=r"diverged at epoch \d+: .*Lower the learning rate"):
        history = fit(model, X, y, optimizer=SGD(lr=5.0), epochs=50, batch_size=8,
                      callbacks=[recorder], progress=False)
    assert history.stop_reason.startswith("diverged")
    assert np.isfinite(model.params).all()
    assert len(history) < 50
    good = recorder.params[-1] if recorder.params else None
    if good is not None:
        np.testing.assert_array_equal(model.params, good)
    assert all(np.isfinite(history["loss"]))


def test_history_round_trips_through_csv_and_json(tmp_path):
    X, y = classification_data()
    history = fit(jacnet.mlp([2, 4, 3], seed=0), X, y, loss="cross_entropy", epochs=3,
                  validation_split=0.2, progress=False)
    history.to_csv(tmp_path / "h.csv")
    history.to_json(tmp_path / "h.json")
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].split(",") == history.columns and len(lines) == 4
    assert float(lines[2].split(",")[1]) == history["loss"][1]
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["columns"]["val_accuracy"] == history["val_accuracy"]
    assert History.from_dict(data).records == history.records
    assert data["best_epoch"] == history.best_epoch


def test_schedule_weight_decay_and_lr_are_wired_in():
    X, y = regression_data(32)
    history = fit(jacnet.mlp([2, 4, 1], seed=0), X, y, optimizer="sgd", lr=0.1, epochs=4,
                  schedule=("step", {"step_size": 2, "gamma": 0.5}), weight_decay=0.01,
                  progress=False)
    assert history["lr"] == [0.1, 0.1, 0.05, 0.05]


def test_weight_decay_skips_biases():
    model = jacnet.mlp([2, 3, 1], seed=0)
    X, y = np.zeros((4, 2)), np.zeros(4)  # zero data: only decay moves the weights
    model.params[:] = 1.0
    fit(model, X, y, optimizer="sgd", lr=0.1, weight_decay=0.5, epochs=1, batch_size=4,
        progress=False)
    slices = model.parameter_slices()
    np.testing.assert_allclose(model.params[slices["0.weight"]], 0.95, rtol=1e-6)
    # Zero inputs still give the output bias a gradient; the hidden bias gets none from decay.
    np.testing.assert_allclose(model.params[slices["0.bias"]], 1.0 - 0.1 * model.grads[slices["0.bias"]],
                               rtol=1e-6)


def test_sample_weight_two_equals_a_duplicated_row():
    X, y = regression_data(12)
    weights = np.ones(12)
    weights[0] = 2.0
    a = jacnet.mlp([2, 4, 1], seed=0, dtype="float64")
    b = a.copy()
    ha = fit(a, X, y, optimizer="sgd", lr=0.1, epochs=3, batch_size=100, sample_weight=weights,
             progress=False)
    hb = fit(b, np.vstack([X, X[:1]]), np.vstack([y, y[:1]]), optimizer="sgd", lr=0.1, epochs=3,
             batch_size=100, progress=False)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12)
    # Σ wᵢ ℓᵢ / Σ wᵢ over 12 weighted rows is the plain mean over the 13 rows.
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-12)


class FullBatchGD:
    """A stand-in for the full-batch second-order optimizers' contract."""

    full_batch = True
    name = "fullgd"

    def __init__(self) -> None:
        self.stop_reason = None
        self.calls = 0

    def epoch(self, model, loss, X, target):
        out = model.forward(X)
        value, grad = loss.value_and_grad(out, target)
        model.backward(grad, input_grad=False)
        model.params -= 0.1 * model.grads
        self.calls += 1
        if self.calls == 3:
            self.stop_reason = "gradient below tolerance"
        return {"loss": value, "mu": 0.01 * self.calls}


def test_full_batch_optimizer_contract():
    X, y = regression_data(20)
    opt = FullBatchGD()
    history = fit(jacnet.mlp([2, 4, 1], seed=0), X, y, optimizer=opt, epochs=10, progress=False)
    assert opt.calls == 3 and len(history) == 3
    assert history["mu"] == [0.01, 0.02, 0.03]
    assert history.stop_reason == "gradient below tolerance"
    assert "r2" in history.columns and "lr" not in history.columns


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1"),
        ({"validation_split": 0.2, "validation_data": (np.zeros((2, 2)), np.zeros(2))},
         ValueError, "not both"),
        ({"validation_split": 1.5}, ValueError, "validation_split must be a fraction"),
        ({"optimizer": "nope"}, ValueError, "Unknown optimizer 'nope'"),
        ({"checkpoint_every": 2}, ValueError, "checkpoint_every= needs checkpoint="),
        ({"sample_weight": -np.ones(8)}, ValueError, "sample_weight must have one non-negative"),
        ({"clip_norm": 0}, ValueError, "clip_norm must be a number > 0"),
        ({"schedule": 3}, TypeError, "schedule must be None"),
    ],
)
def test_bad_arguments_fail_before_training(kwargs, error, match):
    X, y = regression_data(8)
    with pytest.raises(error, match=match):
        fit(jacnet.mlp([2, 1], seed=0), X, y, progress=False, **kwargs)


def test_mismatched_rows_name_the_problem():
    with pytest.raises(ValueError, match="X has 8 rows but y has 7"):
        fit(jacnet.mlp([2, 1]), np.zeros((8, 2)), np.zeros(7), progress=False)


def _resumable_setup():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    layers = [Linear(3, 8, seed=0), Tanh(), Dropout(0.2, seed=1), Linear(8, 3, seed=2)]
    return X, y, jacnet.Sequential(layers)


RESUME_KWARGS = dict(loss="cross_entropy", optimizer="adam", lr=0.01, batch_size=8, seed=5,
                     validation_split=0.25, early_stopping=True, patience=50,
                     schedule="cosine", progress=False)


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path):
    X, y, full = _resumable_setup()
    history_full = fit(full, X, y, epochs=8, **RESUME_KWARGS)

    X, y, first = _resumable_setup()
    ckpt = tmp_path / "ckpt.npz"
    # A run of 8 epochs that is "killed" after epoch 5: stop it from a callback.
    stopper = LambdaCallback(on_epoch_end=lambda e, logs: (_ for _ in ()).throw(KeyboardInterrupt)
                             if e == 6 else None)
    with pytest.raises(KeyboardInterrupt):
        fit(first, X, y, epochs=8, checkpoint=ckpt, checkpoint_every=5, callbacks=[stopper],
            **RESUME_KWARGS)
    assert load_checkpoint(ckpt).state["epoch"] == 5

    X, y, resumed = _resumable_setup()
    history = fit(resumed, X, y, epochs=8, checkpoint=ckpt, resume_from=ckpt,
                  callbacks=[LambdaCallback()], **RESUME_KWARGS)
    np.testing.assert_array_equal(resumed.params, full.params)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in history.records]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in history_full.records]
    assert load_checkpoint(ckpt).state["epoch"] == 8


def test_resume_refuses_another_architecture(tmp_path):
    X, y = regression_data(16)
    ckpt = tmp_path / "c.npz"
    fit(jacnet.mlp([2, 3, 1], seed=0), X, y, epochs=1, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="different network"):
        fit(jacnet.mlp([2, 5, 1], seed=0), X, y, epochs=2, resume_from=ckpt, progress=False)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import jacnet
    from jacnet.training import fit, LambdaCallback
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)); y = X @ np.arange(1.0, 5.0)
    model = jacnet.mlp([4, 16, 1], seed=0)
    slow = LambdaCallback(on_epoch_end=lambda e, logs: time.sleep(0.005))
    fit(model, X, y, epochs=EPOCHS, lr=0.01, batch_size=8, checkpoint=sys.argv[1],
        checkpoint_every=1, callbacks=[slow], progress=False)
""")


def test_sigkill_during_training_leaves_a_checkpoint_that_resumes(tmp_path):
    epochs = 400
    script = KILL_SCRIPT.replace("EPOCHS", str(epochs))
    ckpt = tmp_path / "run.npz"
    env = {**os.environ, "PYTHONPATH": str(Path(jacnet.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script, str(ckpt)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.3)  # let it rewrite the checkpoint many times, then kill it mid-flight
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved = load_checkpoint(ckpt)  # whatever moment the kill hit, the file is whole
    done = saved.state["epoch"]
    assert 1 <= done < epochs

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    y = X @ np.arange(1.0, 5.0)
    kwargs = dict(epochs=epochs, lr=0.01, batch_size=8, progress=False)
    resumed = jacnet.mlp([4, 16, 1], seed=0)
    history = fit(resumed, X, y, resume_from=ckpt, callbacks=[LambdaCallback()], **kwargs)
    full = jacnet.mlp([4, 16, 1], seed=0)
    fit(full, X, y, callbacks=[LambdaCallback()], **kwargs)
    assert len(history) == epochs
    np.testing.assert_array_equal(resumed.params, full.params)


def test_progress_bar_runs_without_a_terminal(capsys):
    X, y = regression_data(16)
    fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=2, progress=True)
    assert "epoch" in capsys.readouterr().err


def test_progress_is_off_when_stderr_is_not_a_terminal(capsys):
    X, y = regression_data(16)
    fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=2)
    assert capsys.readouterr().err == ""


def test_sum_reduction_reports_the_summed_loss_on_one_scale():
    """With reduction="sum" the epoch loss is Σ over samples, like val_loss on the same rows."""
    from jacnet.losses import MSELoss

    X, y = regression_data(40)
    h = fit(jacnet.mlp([2, 1], seed=0), X, y, loss=MSELoss("sum"), validation_data=(X, y),
            batch_size=10, optimizer="sgd", lr=1e-30, shuffle=False, epochs=1, progress=False)
    assert h["loss"][0] == pytest.approx(h["val_loss"][0], rel=1e-5)


def test_a_missing_checkpoint_folder_fails_before_training(tmp_path):
    X, y = regression_data(16)
    calls = []
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=2, checkpoint=tmp_path / "no" / "c.npz",
            callbacks=[LambdaCallback(on_epoch_end=lambda e, logs: calls.append(e))],
            progress=False)
    assert calls == []


def test_resume_refuses_changed_settings(tmp_path):
    X, y = regression_data(32)
    ckpt = tmp_path / "c.npz"
    fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=2, lr=0.01, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match=r"trained with batch_size=32 \(now 8\).*lr=0\.01"):
        fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=4, lr=0.5, batch_size=8, resume_from=ckpt,
            progress=False)
    resumed = fit(jacnet.mlp([2, 1], seed=0), X, y, epochs=4, resume_from=ckpt, progress=False)
    assert resumed["lr"] == [0.01] * 4  # lr left out: the checkpoint's


def test_a_diverged_run_cannot_be_resumed(tmp_path):
    X, y = regression_data(32)
    y = y * 1e30
    ckpt = tmp_path / "c.npz"
    with pytest.warns(DivergenceWarning):
        fit(jacnet.mlp([2, 4, 1], seed=0), X, y, epochs=5, lr=10.0, optimizer="sgd",
            checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="resuming it would repeat the same steps"):
        fit(jacnet.mlp([2, 4, 1], seed=0), X, y, epochs=6, lr=10.0, optimizer="sgd",
            resume_from=ckpt, progress=False)


def test_a_schedule_of_another_optimizer_is_refused():
    from jacnet.optim import Adam, StepLR

    X, y = regression_data(16)
    other = Adam(lr=0.01)
    with pytest.raises(ValueError, match="drives another optimizer object"):
        fit(jacnet.mlp([2, 1], seed=0), X, y, optimizer="adam", lr=0.01,
            schedule=StepLR(other, step_size=1), epochs=2, progress=False)
    mine = Adam(lr=0.01)
    h = fit(jacnet.mlp([2, 1], seed=0), X, y, optimizer=mine,
            schedule=StepLR(mine, step_size=1, gamma=0.5), epochs=3, progress=False)
    assert h["lr"] == [0.01, 0.005, 0.0025]


# --------------------------------------------------------------------------- full-batch (LM, BR)
def _lm_data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-1, 1, n)[:, None]
    noise = 0.05 * np.random.default_rng(seed).normal(size=(n, 1))
    return x, np.sinc(5 * x / np.pi) + noise


def test_lm_validation_stop_is_trainlms_max_fail_and_restores_the_best():
    from jacnet.optim import LevenbergMarquardt

    X, y = _lm_data()
    X_val = X[::3] + 0.01
    y_val = np.random.default_rng(1).normal(size=(X_val.shape[0], 1))  # unrelated: val fails
    recorder = ParamRecorder()
    lm = LevenbergMarquardt(max_fail=4)
    model = jacnet.mlp([1, 12, 1], seed=0, dtype="float64")
    history = fit(model, X, y, optimizer=lm, epochs=200, validation_data=(X_val, y_val),
                  callbacks=[recorder], progress=False)
    val = history["val_loss"]
    best = int(np.argmin(val))
    # patience is the optimizer's max_fail: stop 4 epochs after the best one ...
    assert len(history) == best + 1 + 4 and history.stop_reason.startswith("early stopping")
    # ... and the best validation network is the one kept.
    np.testing.assert_array_equal(model.params, recorder.params[best])
    # The user's patience wins; early_stopping=False switches the rule off.
    short = fit(jacnet.mlp([1, 12, 1], seed=0, dtype="float64"), X, y,
                optimizer=LevenbergMarquardt(max_fail=4), epochs=200, patience=1,
                validation_data=(X_val, y_val), progress=False)
    assert len(short) == int(np.argmin(short["val_loss"])) + 2
    off = fit(jacnet.mlp([1, 12, 1], seed=0, dtype="float64"), X, y,
              optimizer=LevenbergMarquardt(max_fail=4), epochs=len(history) + 3,
              early_stopping=False, validation_data=(X_val, y_val), progress=False)
    assert len(off) == len(history) + 3


def test_br_has_no_validation_stop_by_default():
    X, y = _lm_data()
    history = fit(jacnet.mlp([1, 8, 1], seed=0, dtype="float64"), X, y, optimizer="br",
                  epochs=12, validation_split=0.3, progress=False)
    assert len(history) == 12 and "gamma" in history.columns and "val_loss" in history.columns


def test_sample_weight_for_a_full_batch_optimizer_is_repeated_rows():
    X, y = _lm_data(30)
    counts = np.arange(30) % 3
    a = jacnet.mlp([1, 6, 1], seed=0, dtype="float64")
    b = a.copy()
    ha = fit(a, X, y, optimizer="lm", epochs=8, sample_weight=counts, progress=False)
    hb = fit(b, np.repeat(X, counts, axis=0), np.repeat(y, counts, axis=0), optimizer="lm",
             epochs=8, progress=False)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-8)
    unweighted = jacnet.mlp([1, 6, 1], seed=0, dtype="float64")
    fit(unweighted, X, y, optimizer="lm", epochs=8, progress=False)
    assert not np.allclose(a.params, unweighted.params, rtol=1e-3)  # the weights mattered
    with pytest.raises(ValueError, match="BayesianRegularization does not take sample_weight"):
        fit(jacnet.mlp([1, 6, 1], seed=0, dtype="float64"), X, y, optimizer="br", epochs=2,
            sample_weight=counts, progress=False)


@pytest.mark.parametrize("name", ["lm", "br"])
def test_a_full_batch_run_resumes_bit_for_bit(tmp_path, name):
    X, y = _lm_data()
    kwargs = dict(optimizer=name, seed=3, validation_split=0.25, progress=False)
    full = jacnet.mlp([1, 10, 1], seed=0, dtype="float64")
    history_full = fit(full, X, y, epochs=12, **kwargs)

    ckpt = tmp_path / "ckpt.npz"
    stopper = LambdaCallback(on_epoch_end=lambda e, logs: (_ for _ in ()).throw(KeyboardInterrupt)
                             if e == 7 else None)
    with pytest.raises(KeyboardInterrupt):
        fit(jacnet.mlp([1, 10, 1], seed=0, dtype="float64"), X, y, epochs=12, checkpoint=ckpt,
            checkpoint_every=5, callbacks=[stopper], **kwargs)
    assert load_checkpoint(ckpt).state["epoch"] == 5

    resumed = jacnet.mlp([1, 10, 1], seed=0, dtype="float64")
    history = fit(resumed, X, y, epochs=12, checkpoint=ckpt, resume_from=ckpt,
                  callbacks=[LambdaCallback()], **kwargs)
    np.testing.assert_array_equal(resumed.params, full.params)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in history.records]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in history_full.records]
    assert len(history) == 12 and "mu" in history.columns


def test_resolve_optimizer_passes_constructor_options_of_a_named_optimizer():
    from jacnet import mlp
    from jacnet.training import resolve_optimizer

    model = mlp([2, 3, 1], seed=0)
    lm = resolve_optimizer("lm", model, solver="cg", cg_max_iter=7)
    assert (lm.solver, lm.cg_max_iter) == ("cg", 7)
    with pytest.raises(ValueError, match=r"optimizer 'adam' takes no solver=; drop it\."):
        resolve_optimizer("adam", model, solver="cg")
    with pytest.raises(ValueError, match=r"optimizer 'lm' takes no learning rate"):
        resolve_optimizer("lm", model, lr=0.1)
    with pytest.raises(ValueError, match=r"solver= applies only when optimizer is given by "
                                         r"name"):
        resolve_optimizer(lm, model, solver="dense")
