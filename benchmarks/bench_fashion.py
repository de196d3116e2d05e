"""Fashion-MNIST, 784-256-10 ReLU, Adam, batch 128: jacnet's fit vs scikit-learn vs PyTorch.

The same data (the official 60,000/10,000 split, pixels scaled to [0, 1], float32), the
same architecture, batch size, optimizer and learning rate for all three; jacnet and
PyTorch start from the same initial weights. Each contender trains for ``--epochs``
epochs; the whole comparison is repeated ``--rounds`` times in a rotating order, and the
report gives the median time per epoch, the ratios, and the test accuracy after the
last epoch of the first round.

Needs Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``).

Run:  .venv/bin/python benchmarks/bench_fashion.py [--epochs 10] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from common import (  # (sets the thread count before NumPy is imported)
    N_THREADS,
    fmt_time,
    import_torch,
    machine_description,
    markdown_table,
    median,
    torch_mlp,
)

from jacnet import mlp
from jacnet.data import load_fashion_mnist
from jacnet.training import evaluate, fit

HIDDEN, BATCH, LR = 256, 128, 1e-3


def run_jacnet(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, epochs: int
               ) -> tuple[list[float], float]:
    model = mlp([784, HIDDEN, 10], activation="relu", seed=0)
    history = fit(model, X, y, loss="cross_entropy", optimizer="adam", lr=LR, epochs=epochs,
                  batch_size=BATCH, seed=0, progress=False)
    accuracy = evaluate(model, Xt, yt, loss="cross_entropy")["accuracy"]
    return [float(t) for t in history["time"]], float(accuracy)


def run_sklearn(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, epochs: int
                ) -> tuple[list[float], float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), solver="adam", learning_rate_init=LR,
                        alpha=0.0, batch_size=BATCH, random_state=0, shuffle=True)
    times = []
    classes = np.arange(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(epochs):  # partial_fit: one epoch, keeping Adam's state
            start = time.perf_counter()
            clf.partial_fit(X, y, classes=classes)
            times.append(time.perf_counter() - start)
    return times, float(clf.score(Xt, yt))


def run_torch(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, epochs: int
              ) -> tuple[list[float], float]:
    torch = import_torch()
    net = torch_mlp(mlp([784, HIDDEN, 10], activation="relu", seed=0))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt_, yt_ = torch.from_numpy(X), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(X), generator=generator)
        for i in range(0, len(X), BATCH):
            rows = order[i:i + BATCH]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(Xt_[rows]), yt_[rows])
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        predicted = net(torch.from_numpy(Xt)).argmax(dim=1).numpy()
    return times, float(np.mean(predicted == yt))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=N_THREADS, help="for every library")
    args = parser.parse_args()

    train, test = load_fashion_mnist()
    X, y = train.X.astype(np.float32), train.y
    Xt, yt = test.X.astype(np.float32), test.y
    contenders: dict[str, Callable[..., tuple[list[float], float]]] = {
        "jacnet fit": run_jacnet, "scikit-learn MLPClassifier": run_sklearn,
        "PyTorch loop": run_torch,
    }
    names = list(contenders)
    epoch_times: dict[str, list[float]] = {name: [] for name in names}
    accuracy: dict[str, float] = {}
    for r in range(args.rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times, acc = contenders[name](X, y, Xt, yt, args.epochs)
            epoch_times[name] += times
            accuracy.setdefault(name, acc)
            print(f"round {r + 1}: {name}: {fmt_time(median(times))}/epoch, test accuracy "
                  f"{acc:.4f}", flush=True)

    info: dict[str, Any] = machine_description()
    print(f"\nFashion-MNIST (60,000 train / 10,000 test), 784-{HIDDEN}-10 ReLU, Adam lr {LR}, "
          f"batch {BATCH}, {args.epochs} epochs × {args.rounds} rounds, float32, "
          f"{args.threads} threads; {info.get('cpu', '')}\n")
    base = median(epoch_times["jacnet fit"])
    rows = [[name, fmt_time(median(epoch_times[name])),
             f"{median(epoch_times[name]) / base:.2f}", f"{accuracy[name]:.4f}"]
            for name in names]
    print(markdown_table(["contender", "time per epoch (median)", "÷ jacnet",
                          f"test accuracy after {args.epochs} epochs"], rows))


if __name__ == "__main__":
    main()
