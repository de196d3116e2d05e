"""Checkpoint a run every few epochs, interrupt it, and resume it exactly.

Run: .venv/bin/python examples/resume_training.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import jacnet
from jacnet.training import LambdaCallback, fit


def interrupt_at(epoch: int) -> LambdaCallback:
    def stop(current: int, logs: dict) -> None:
        if current == epoch:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C

    return LambdaCallback(on_epoch_end=stop)


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (256, 2))
    y = np.sin(3 * X[:, :1]) * X[:, 1:]
    kwargs = dict(lr=0.01, epochs=30, batch_size=16, seed=0, progress=False)
    checkpoint = Path(tempfile.mkdtemp()) / "checkpoint.npz"

    model = jacnet.mlp([2, 32, 1], seed=0)
    try:
        fit(model, X, y, checkpoint=checkpoint, checkpoint_every=5,
            callbacks=[interrupt_at(12)], **kwargs)
    except KeyboardInterrupt:
        print("interrupted after epoch 12; the last checkpoint is epoch 10")

    resumed = jacnet.mlp([2, 32, 1], seed=0)
    history = fit(resumed, X, y, resume_from=checkpoint, callbacks=[LambdaCallback()], **kwargs)
    straight = jacnet.mlp([2, 32, 1], seed=0)
    fit(straight, X, y, callbacks=[LambdaCallback()], **kwargs)
    same = np.array_equal(resumed.params, straight.params)
    print(f"resumed to epoch {len(history)}; identical to an uninterrupted run: {same}")


if __name__ == "__main__":
    main()
