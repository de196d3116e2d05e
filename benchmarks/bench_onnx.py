"""Inference latency: jacnet, onnxruntime on jacnet's ONNX export, scikit-learn's MLP, one network.

One float32 ReLU classifier per architecture, its weights copied into every contender:

- ``jacnet forward``: ``model(X)``, the checked forward pass of the ``Sequential`` (logits);
- ``jacnet predict``: ``jacnet.sklearn.MLPClassifier.predict`` (labels);
- ``onnxruntime``: ``InferenceSession.run`` on the file ``jacnet.onnx.export(model, path,
  classes=...)`` wrote (labels and probabilities);
- ``sklearn predict``: ``sklearn.neural_network.MLPClassifier.predict`` with the same
  ``coefs_``/``intercepts_`` (labels).

All four give the same labels (checked before timing). Batches of 1 and 1,000 rows;
contenders run round-robin in a rotating order (``common.interleaved``); the table gives
medians and each one's time relative to onnxruntime. Every library gets the same thread
count: ``--threads`` sets the BLAS/OpenMP variables before NumPy is imported and
onnxruntime's ``intra_op_num_threads`` (with ``inter_op_num_threads=1``). Neither
library's idle threads spin (onnxruntime's ``allow_spinning=0``, OpenBLAS's
``OPENBLAS_THREAD_TIMEOUT=4``): spinning threads keep the cores from the contender that
runs next, which halved onnxruntime's speed or cut NumPy's tenfold on 2 cores.

Usage::

    cd benchmarks && ../.venv/bin/python bench_onnx.py                # ~1 min on 2 cores
    cd benchmarks && ../.venv/bin/python bench_onnx.py --threads 1 --repeats 15
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

# Idle OpenBLAS threads spin for 2^28 cycles by default (~0.1 s), keeping the cores from
# onnxruntime when it runs next; 2^4 lets them sleep at once. Set before NumPy loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import common  # sets the thread variables before NumPy is imported
import numpy as np
from common import fmt_time, interleaved, markdown_table, median

ARCHITECTURES = [(64, [32], 10), (64, [128], 10), (784, [256, 256], 10)]
BATCHES = (1, 1000)


def _contenders(n_in: int, hidden: list[int], n_out: int, batch: int, folder: Path
                ) -> dict[str, Any]:
    import onnxruntime
    from sklearn.neural_network import MLPClassifier as SkMLP

    import jacnet
    from jacnet.onnx import export
    from jacnet.sklearn import MLPClassifier

    rng = np.random.default_rng(0)
    model = jacnet.mlp([n_in, *hidden, n_out], activation="relu", seed=0).eval()
    classes = np.arange(n_out)
    X_fit = rng.normal(size=(4 * n_out, n_in)).astype(np.float32)
    y_fit = np.tile(classes, 4)
    weights = [(layer.weight, layer.bias) for layer in model.layers if layer.n_params]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one iteration: only the shapes are wanted
        ours = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", max_iter=1,
                             random_state=0).fit(X_fit, y_fit)
        theirs = SkMLP(hidden_layer_sizes=hidden, activation="relu", max_iter=1,
                       random_state=0).fit(X_fit, y_fit)
    for est in (ours, theirs):
        est.coefs_ = [np.array(w.T) for w, _ in weights]
        est.intercepts_ = [np.array(b) for _, b in weights]

    path = folder / f"mlp-{n_in}-{'-'.join(map(str, hidden))}-{n_out}.onnx"
    export(model, path, classes=classes)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = common.N_THREADS
    options.inter_op_num_threads = 1
    # Idle onnxruntime threads spin by default, taking the cores from the BLAS threads
    # of the contender that runs next (10x slower NumPy products seen on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    X = rng.normal(size=(batch, n_in)).astype(np.float32)
    labels = {
        "jacnet forward": model(X).argmax(axis=1),
        "jacnet predict": ours.predict(X),
        "onnxruntime": session.run(None, {"X": X})[0],
        "sklearn predict": theirs.predict(X),
    }
    reference = labels["jacnet forward"]
    for name, got in labels.items():
        if not np.array_equal(got, reference):
            raise RuntimeError(f"{name} disagrees with jacnet on the labels: not the same network.")
    return {
        "jacnet forward": lambda: model(X),
        "jacnet predict": lambda: ours.predict(X),
        "onnxruntime": lambda: session.run(None, {"X": X}),
        "sklearn predict": lambda: theirs.predict(X),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="read by common.py")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()

    info = common.machine_description()
    import onnxruntime

    info["onnxruntime"] = onnxruntime.__version__
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n_in, hidden, n_out in ARCHITECTURES:
            for batch in BATCHES:
                contenders = _contenders(n_in, hidden, n_out, batch, Path(folder))
                samples = interleaved(contenders, args.repeats, warmup=3, min_time=0.02)
                medians = {name: median(values) for name, values in samples.items()}
                base = medians["onnxruntime"]
                rows.append([f"{n_in}-{'-'.join(map(str, hidden))}-{n_out}", str(batch)]
                            + [f"{fmt_time(t)} ({t / base:.2f}×)" for t in medians.values()])
                print(rows[-1], flush=True)
    header = ["network (ReLU, float32)", "batch", *contenders]
    table = markdown_table(header, rows)
    lines = [f"- {key}: {value}" for key, value in info.items()]
    report = "\n".join(lines) + "\n\n" + table + "\n\n(time per call, median of interleaved " \
        "repeats; in brackets: relative to onnxruntime)\n"
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
