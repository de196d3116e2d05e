"""flush_denormals: subnormal floats flushed to zero inside the block, restored after it."""

from __future__ import annotations

import platform
import sys
import threading

import numpy as np
import pytest

import jacnet
from jacnet import denormals_flushed, flush_denormals
from jacnet.training import LambdaCallback, fit

SUPPORTED = sys.platform.startswith("linux") and platform.machine().lower() in (
    "x86_64", "amd64", "aarch64", "arm64")
needs_control = pytest.mark.skipif(not SUPPORTED, reason="no flush-to-zero control here")

TINY = np.float32(1e-38)  # below float32's smallest normal number, 1.18e-38: subnormal


def tiny_product() -> np.float32:
    return TINY * np.float32(0.01)  # 1e-40, subnormal; 0 when results are flushed


@needs_control
def test_flushes_inside_and_restores_on_exit():
    assert tiny_product() > 0 and not denormals_flushed()
    with flush_denormals() as flushing:
        assert flushing is True
        assert tiny_product() == 0
        assert denormals_flushed()
        if platform.machine().lower() in ("x86_64", "amd64"):
            # DAZ: a subnormal operand counts as zero
            assert TINY * np.float32(1.0) == 0
    assert tiny_product() > 0 and not denormals_flushed()
    assert TINY * np.float32(1.0) == TINY


@needs_control
def test_restored_after_an_exception():
    with pytest.raises(KeyError), flush_denormals():
        assert tiny_product() == 0
        raise KeyError("inside")
    assert tiny_product() > 0


@needs_control
def test_blocks_nest():
    with flush_denormals():
        with flush_denormals():
            pass
        assert tiny_product() == 0  # the inner block put back the outer's setting
    assert tiny_product() > 0


@needs_control
def test_the_setting_belongs_to_the_calling_thread():
    # A thread already running (as BLAS's workers are) keeps its own setting; a thread
    # started inside the block inherits the block's (POSIX threads copy the creator's
    # floating-point environment).
    go, seen = threading.Event(), {}

    def look(key):
        go.wait()
        seen[key] = float(tiny_product())

    running = threading.Thread(target=look, args=("running",))
    running.start()
    with flush_denormals():
        started = threading.Thread(target=look, args=("started inside",))
        started.start()
        go.set()
        running.join()
        started.join()
        assert tiny_product() == 0
    assert seen["running"] > 0 and seen["started inside"] == 0


def test_no_control_yields_false_and_changes_nothing(monkeypatch):
    from jacnet import fpu

    env = fpu._Environment()
    env.word, env.reason = -1, "no control (simulated)"
    monkeypatch.setattr(fpu, "_ENV", env)
    with flush_denormals() as flushing:
        assert flushing is False
        assert tiny_product() > 0


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    return X, (X[:, :1] * X[:, 1:2] > 0).astype(int).ravel()


@needs_control
def test_fit_flushes_for_the_run_and_only_when_asked():
    X, y = _data()
    seen: dict[bool, list[bool]] = {True: [], False: []}
    for flush in (True, False):
        watch = LambdaCallback(on_epoch_end=lambda e, logs, f=flush: seen[f].append(
            denormals_flushed()))
        fit(jacnet.mlp([5, 8, 2], seed=0), X, y, loss="cross_entropy", epochs=2,
            callbacks=[watch], progress=False, flush_denormals=flush)
        assert not denormals_flushed()  # put back after the run
    assert seen == {True: [True, True], False: [False, False]}


@needs_control
def test_fit_restores_the_setting_when_a_callback_raises():
    X, y = _data()

    def fail(epoch, logs):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        fit(jacnet.mlp([5, 8, 2], seed=0), X, y, loss="cross_entropy", epochs=2,
            callbacks=[LambdaCallback(on_epoch_end=fail)], progress=False)
    assert tiny_product() > 0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fit_on_normal_data_is_bit_identical_without_flushing(optimizer):
    # No value gets near 1e-38 in a short run on standard-normal data, so flushing must
    # change nothing at all (a wrong bit set with it, e.g. a rounding mode, would).
    X, y = _data()
    runs = []
    for flush in (True, False):
        model = jacnet.mlp([5, 16, 16, 2], seed=0)
        history = fit(model, X, y, loss="cross_entropy", optimizer=optimizer, epochs=5,
                      batch_size=16, progress=False, flush_denormals=flush)
        runs.append((model.params.copy(), history["loss"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


@needs_control
def test_fit_flushes_subnormal_values_of_a_run_that_makes_them():
    # From zero weights, targets of 1e-37 make per-row MSE gradients of 2e-39, which
    # are subnormal: flushed, the bias gradient (their sum) is 0 and the bias stays 0;
    # kept, it sums to 2e-37, a normal number, and SGD moves the bias by that.
    X, _ = _data()
    target = np.full((X.shape[0], 1), 1e-37, dtype=np.float32)
    bias = {}
    for flush in (True, False):
        model = jacnet.mlp([5, 1], activation="identity", seed=0)
        model.params[...] = 0.0
        fit(model, X, target, optimizer="sgd", lr=1.0, epochs=1, batch_size=X.shape[0],
            shuffle=False, progress=False, flush_denormals=flush)
        bias[flush] = float(model.params[-1])
    assert bias[True] == 0.0
    assert bias[False] == pytest.approx(2e-37, rel=1e-3)


def test_fit_checks_flush_denormals():
    X, y = _data()
    with pytest.raises(TypeError, match="flush_denormals must be True or False; got 'no'"):
        fit(jacnet.mlp([5, 2], seed=0), X, y, epochs=1, progress=False, flush_denormals="no")


@needs_control
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # two iterations on purpose
def test_the_estimators_stochastic_solvers_flush(monkeypatch):
    from jacnet import sklearn as jsk

    seen = []
    step = jsk._StochasticSolver.step

    def watching(self, params, grads):
        seen.append(denormals_flushed())
        step(self, params, grads)

    monkeypatch.setattr(jsk._StochasticSolver, "step", watching)
    X, y = _data()
    jsk.MLPClassifier((4,), solver="adam", max_iter=2, random_state=0).fit(X, y)
    assert seen and all(seen)
    assert not denormals_flushed()
