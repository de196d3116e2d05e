"""Train the seed's two-layer network on the digits data from Python, save it, load it back.

Run: .venv/bin/python examples/train_digits.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jacnet
from jacnet.data import StandardScaler, load_dataset, split
from jacnet.io import load_model, save_model
from jacnet.training import evaluate, fit


def main() -> None:
    train, _, test = split(load_dataset("digits"), test_size=0.2, seed=0)
    scaler = StandardScaler().fit(train.X)
    model = jacnet.mlp([64, 64, 10], activation="relu", seed=0)
    history = fit(model, scaler.transform(train.X), train.y, loss="cross_entropy",
                  optimizer="adam", weight_decay=1e-3, epochs=100, batch_size=32,
                  validation_split=0.1, early_stopping=True, patience=20)
    scores = evaluate(model, scaler.transform(test.X), test.y, loss="cross_entropy")
    print(f"{len(history)} epochs (best {history.best_epoch}), test accuracy {scores['accuracy']:.4f}")

    path = Path(tempfile.mkdtemp()) / "digits.npz"
    save_model(path, model, preprocessing=scaler, metadata={"classes": list(range(10))})
    loaded, prep, metadata = load_model(path)
    again = evaluate(loaded, prep.transform(test.X), test.y, loss="cross_entropy")
    print(f"reloaded from {path}: test accuracy {again['accuracy']:.4f}, {metadata}")


if __name__ == "__main__":
    main()
