"""The ``jacnet`` command: ``train``, ``evaluate``, ``predict``, ``export``, ``explain``
and ``inspect``.

``jacnet train`` with no arguments trains the seed's two-layer network (128 ReLU hidden
units, cross-entropy, Adam) on the built-in ``digits`` data and prints the test
accuracy. Each run writes a folder with the model (``model.npz``), the history
(``history.csv``, ``history.json``), a loss/metric figure (``curves.png``, when
matplotlib is installed) and, with ``--checkpoint-every``, a resumable ``checkpoint.npz``.

Exit codes: 0 success, 1 runtime error (bad file, divergence, ...), 2 usage error.
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

__all__ = ["main"]

_DEFAULTS: dict[str, Any] = {
    "data": "digits", "target": None, "task": None, "hidden": [128], "activation": "relu",
    "loss": "auto", "optimizer": "adam", "lr": None, "weight_decay": None, "epochs": 100,
    "batch_size": 32, "seed": 0, "dtype": "float32", "test_size": 0.2,
    "validation_split": 0.0, "early_stopping": False, "patience": 10, "out": None,
    "checkpoint_every": None, "progress": None, "no_header": False, "laplace": "last_layer",
    "solver": "auto",
}


class UsageError(Exception):
    """Bad command-line arguments: exit code 2."""


def _error_line(text: str) -> None:
    """Write one line to stderr in a single write: under mpiexec the ranks share the
    stream, and print's separate newline lets two ranks' lines run together."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: usage + exit 2
        self.print_usage(sys.stderr)
        _error_line(f"jacnet: error: {message}")
        raise SystemExit(2)


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden sizes must be integers like 64 or 128,64; got {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(
            f"hidden sizes must be one or more integers >= 1; got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jacnet`` command."""
    parser = _Parser(prog="jacnet", description="Neural networks in which back-propagation "
                     "is Jacobian algebra: train, evaluate, predict, export (ONNX), explain "
                     "(back-propagation step by step) and inspect from the command line.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser(
        "train", help="train a network and write a run folder",
        description="Train a multilayer perceptron. With no options: 128 ReLU units on the "
        "built-in digits data, printing the test accuracy. Defaults are in [brackets].")
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
    data = train.add_argument_group("data")
    data.add_argument("--data", default=None,
                      help="built-in name (digits, iris, wine, breast_cancer, diabetes, xor, sine, "
                      "sinc, spirals, moons, fashion-mnist) or a .csv/.npz path [digits]")
    data.add_argument("--target", default=None, help="CSV target column, name or index [last]")
    data.add_argument("--no-header", action="store_true", default=None,
                      help="the CSV file has no header line: every line is data, the columns "
                      "are x1, x2, ... and are matched by position later")
    data.add_argument("--task", choices=["classification", "regression"], default=None,
                      help="override the task inferred from a file")
    data.add_argument("--test-size", type=float, default=None,
                      help="fraction held out for testing (fashion-mnist: its official test set) [0.2]")
    data.add_argument("--validation-split", type=float, default=None,
                      help="fraction of the training rows used for validation [0]")
    model = train.add_argument_group("model")
    model.add_argument("--hidden", type=_hidden, default=None,
                       help="hidden sizes, e.g. 64 or 128,64 [128]")
    model.add_argument("--activation", default=None,
                       choices=["relu", "tanh", "sigmoid", "leaky_relu", "softplus", "gelu"],
                       help="hidden activation [relu]")
    model.add_argument("--loss", default=None, choices=["auto", "cross_entropy", "mse", "bce"],
                       help="auto: cross_entropy for classification, mse for regression [auto]")
    model.add_argument("--dtype", default=None, choices=["float32", "float64"], help="[float32]")
    opt = train.add_argument_group("optimization")
    opt.add_argument("--optimizer", default=None,
                     help="sgd, adam, adamw, rmsprop; full-batch lm, gn, br [adam]")
    opt.add_argument("--solver", default=None, choices=["auto", "dense", "cg"],
                     help="lm, gn, br: how each damped Gauss-Newton system is solved; dense "
                          "forms the P x P matrix (trainlm's exact step), cg is matrix-free "
                          "(K-FAC-preconditioned conjugate gradients), auto takes cg where the "
                          "dense system would cost more or not fit in memory [auto]")
    opt.add_argument("--lr", type=float, default=None, help="learning rate [the optimizer's default]")
    opt.add_argument("--weight-decay", type=float, default=None,
                     help="L2 penalty, not on biases [1e-3; 0 for lm, gn, br]")
    opt.add_argument("--epochs", type=int, default=None, help="[100]")
    opt.add_argument("--batch-size", type=int, default=None, help="[32]")
    opt.add_argument("--seed", type=int, default=None, help="seeds weights, split and shuffling [0]")
    opt.add_argument("--early-stopping", action="store_true", default=None,
                     help="stop when the validation loss stops improving; keep the best weights")
    opt.add_argument("--patience", type=int, default=None, help="epochs without improvement [10]")
    model.add_argument("--laplace", default=None, choices=["last_layer", "full", "auto", "none"],
                       help="regression: the Laplace approximation saved for predict --std, "
                            "and the noise estimate [last_layer]")
    run = train.add_argument_group("output")
    run.add_argument("--out", default=None, help="run folder [runs/<data>-<time>]")
    run.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                     help="write OUT/checkpoint.npz every N epochs")
    run.add_argument("--resume", default=None, metavar="CHECKPOINT",
                     help="continue a run from its checkpoint.npz (or its folder); the other "
                     "options are taken from the checkpoint unless given (e.g. more --epochs)")
    bar = run.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")

    evaluate = sub.add_parser(
        "evaluate", help="score a saved model on data",
        description="Print the loss and metrics of a saved model on DATA. When DATA is the "
        "model's own training data (the same built-in name or file), only the test rows "
        "that `jacnet train` held out are scored (same seed and test size); the output says "
        "which rows were scored.")
    evaluate.add_argument("model", metavar="MODEL", help="a model.npz written by jacnet train")
    evaluate.add_argument("data", metavar="DATA", help="built-in name or .csv/.npz path")
    evaluate.add_argument("--target", default=None, help="CSV target column [the training one]")
    evaluate.add_argument("--no-header", action="store_true",
                          help="the CSV file has no header line (columns by position)")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    evaluate.add_argument("--all-rows", action="store_true",
                          help="score every row of DATA, even when it is the model's training "
                          "data (by default only the test rows that train held out are scored)")
    evaluate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    predict = sub.add_parser("predict", help="predict with a saved model",
                             description="Write predictions for DATA as CSV or NPZ. CSV "
                             "columns are matched to the model's features by name (any order; "
                             "the training target column, if present, is ignored; other "
                             "columns are refused); an NPZ's array X (by its feature_names, else by "
                             "position) or a .npy file (by position). Files are read in "
                             "blocks, so memory does not grow with the file.")
    predict.add_argument("model", metavar="MODEL", help="a model.npz written by jacnet train")
    predict.add_argument("data", metavar="DATA", help="built-in name or .csv/.npz/.npy path")
    predict.add_argument("--target", default=None, help="CSV target column to drop [the training one]")
    predict.add_argument("--no-header", action="store_true",
                         help="the CSV file has no header line (columns by position)")
    predict.add_argument("--out", "-o", default=None,
                         help="output .csv or .npz file [CSV on standard output]")
    predict.add_argument("--std", action="store_true",
                         help="regression: add each output's predictive standard deviation "
                              "(Laplace: the network's uncertainty and the noise), in target units")
    predict.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    export = sub.add_parser(
        "export", help="write a saved model as an ONNX file",
        description="Write a model trained by `jacnet train` as ONNX, for onnxruntime and other "
        "ONNX runtimes: the standardisation is part of the graph, a classifier returns its "
        "label and class probabilities, a regressor its prediction in target units, and the "
        "task and class names are kept as metadata. Needs pip install 'jacnet[onnx]'.")
    export.add_argument("model", metavar="MODEL", help="a model.npz written by jacnet train")
    export.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=None, help="ONNX operator set [17]")
    export.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    explain = sub.add_parser(
        "explain", help="back-propagation of one sample, step by step, in the seed's notation",
        description="Follow one sample through a network (default: the seed's two-layer "
        "network) and print every Jacobian of back-propagation with its structure, its "
        "numbers and its check against finite differences.")
    add_explain_arguments(explain)
    explain.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    inspect = sub.add_parser(
        "inspect", help="architecture, parameter count and Jacobian summary of a saved model",
        description="Summarise a saved model: its layers, parameters and the structure and "
        "singular values of its Jacobians on some data.")
    add_inspect_arguments(inspect)
    inspect.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return parser


def _version() -> str:
    from jacnet import __version__

    return f"jacnet {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jacnet`` command; returns the exit code (also used by ``python -m jacnet``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        handler = {"train": _train, "evaluate": _evaluate, "predict": _predict,
                   "export": _export, "explain": explain_command,
                   "inspect": inspect_command}[args.command]
        return handler(args)
    except UsageError as exc:
        if args.debug:
            raise
        _error_line(f"jacnet {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _error_line("jacnet: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`jacnet predict ... | head`): not an error of ours. Point
        # stdout at devnull so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        _error_line(f"jacnet {args.command}: error: {message}")
        return 1


# --------------------------------------------------------------------------- train
def _weight_decay(options: dict[str, Any]) -> float:
    """The L2 penalty: as given, else 1e-3 for mini-batch optimizers and 0 for lm/gn/br.

    The full-batch optimizers regularise in their own way (Levenberg–Marquardt's damping,
    Bayesian regularisation's evidence-based α), and gn/br take no weight decay at all.
    """
    if options["weight_decay"] is not None:
        return float(options["weight_decay"])
    from jacnet.optim import OPTIMIZERS

    chosen = OPTIMIZERS.get(str(options["optimizer"]).lower())
    return 0.0 if getattr(chosen, "full_batch", False) else 1e-3


def _resolve_train_options(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    given = {k: getattr(args, k) for k in _DEFAULTS if getattr(args, k, None) is not None}
    checkpoint = None
    if args.resume is not None:
        from jacnet.io import load_checkpoint

        path = Path(args.resume)
        if path.is_dir():
            path = path / "checkpoint.npz"
        checkpoint = (path, load_checkpoint(path))
        saved = dict(checkpoint[1].state.get("cli_options") or {})
        if not saved:
            raise UsageError(f"{path} was not written by `jacnet train`; resume it from Python "
                             "with fit(..., resume_from=).")
        # A run saved before --solver existed solved with the optimizers' own default.
        saved.setdefault("solver", "dense")
        options = {**_DEFAULTS, **saved, **given}
        if "out" not in given:
            options["out"] = str(path.parent)
        changed = [k for k in given if k not in ("epochs", "out", "progress", "checkpoint_every")
                   and given[k] != saved.get(k)]
        if changed:
            raise UsageError(f"--resume continues the saved run; only --epochs, --out, "
                             f"--checkpoint-every and --progress may change, not {changed}.")
    else:
        options = {**_DEFAULTS, **given}
    _check_options(options, None if checkpoint is None else checkpoint[0], given)
    if checkpoint is not None:
        path = checkpoint[0]
        done = _checkpoint_epoch(checkpoint[1].state, path)
        if options["epochs"] <= done:
            raise UsageError(
                f"{path} has already trained {done} epochs, so --epochs {options['epochs']} leaves "
                f"nothing to do; pass --epochs greater than {done} to train further (--epochs "
                "is the total, not the number of epochs to add).")
    if options["early_stopping"] and not options["validation_split"]:
        options["validation_split"] = 0.1
    return options, checkpoint


_CHOICES = {"activation": ("relu", "tanh", "sigmoid", "leaky_relu", "softplus", "gelu"),
            "loss": ("auto", "cross_entropy", "mse", "bce"), "dtype": ("float32", "float64"),
            "task": (None, "classification", "regression"), "solver": ("auto", "dense", "cg")}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_options(options: dict[str, Any], saved_in: Path | None = None,
                   given: Any = ()) -> None:
    """Every training option, whether typed now or read back from a checkpoint, checked
    once at the boundary: one line naming the option, the rule and the value."""
    def fail(name: str, rule: str) -> None:
        where = f" (saved in {saved_in})" if saved_in is not None and name not in given else ""
        raise UsageError(f"--{name.replace('_', '-')} must be {rule}; got {options[name]!r}{where}.")

    for name in ("epochs", "batch_size", "patience"):
        if not _is_int(options[name]) or options[name] < 1:
            fail(name, "an integer >= 1")
    if options["checkpoint_every"] is not None and (
            not _is_int(options["checkpoint_every"]) or options["checkpoint_every"] < 1):
        fail("checkpoint_every", "an integer >= 1")
    if not _is_int(options["seed"]) or not 0 <= options["seed"] < 2**63:
        fail("seed", "an integer from 0 to 2**63 - 1")
    hidden = options["hidden"]
    if not isinstance(hidden, list) or not hidden or not all(_is_int(h) and h >= 1 for h in hidden):
        fail("hidden", "one or more integers >= 1, e.g. 64 or 128,64")
    for name in ("test_size", "validation_split"):
        if isinstance(options[name], bool) or not isinstance(options[name], (int, float)):
            fail(name, "a fraction")
    if not 0.0 < options["test_size"] < 1.0:
        fail("test_size", "a fraction in (0, 1)")
    if not 0.0 <= options["validation_split"] < 1.0:
        fail("validation_split", "a fraction in [0, 1)")
    for name, low in (("lr", "> 0"), ("weight_decay", ">= 0")):
        value = options[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not np.isfinite(value) or (value <= 0 if low == "> 0" else value < 0):
            fail(name, f"a finite number {low}")
    for name, choices in _CHOICES.items():
        if options[name] not in choices:
            fail(name, "one of " + ", ".join(repr(c) for c in choices if c is not None))
    for name in ("optimizer", "data"):
        if not isinstance(options[name], str) or not options[name]:
            fail(name, "a name")
    if options["target"] is not None and not isinstance(options["target"], (str, int)):
        fail("target", "a column name or index")
    for name in ("early_stopping", "no_header"):
        if not isinstance(options[name], bool):
            fail(name, "true or false")
    if "solver" in given:
        from jacnet.optim import OPTIMIZERS

        if not getattr(OPTIMIZERS.get(options["optimizer"].lower()), "full_batch", False):
            raise UsageError(f"--solver applies to the full-batch optimizers lm, gn and br; "
                             f"--optimizer is {options['optimizer']!r}. Drop --solver, or "
                             "pass --optimizer lm.")


def _checkpoint_epoch(state: Any, path: Path) -> int:
    """The epoch a `jacnet train` checkpoint reached, after checking that it holds what
    resuming needs (so that a damaged file is one line, not a KeyError from inside fit)."""
    needed = {"epoch": int, "history": dict, "rng": dict, "optimizer": dict}
    wrong = [key for key, kind in needed.items()
             if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    if wrong:
        raise ValueError(f"{path} is damaged: its training state lacks valid {wrong}; it cannot "
                         "be resumed. Start a new run (or resume an earlier checkpoint).")
    epoch = int(state["epoch"])
    if epoch < 0:
        raise ValueError(f"{path} is damaged: it claims epoch {epoch}.")
    return epoch


class _Shard:
    """What a rank that read only its own training rows knows of the whole training set."""

    def __init__(self, n_train: int, y_train: np.ndarray, n_test: int) -> None:
        self.n_train, self.y_train, self.n_test = n_train, y_train, n_test


def _load_data(options: dict[str, Any]) -> tuple[Any, Any]:
    """(train, test) Datasets for the run."""
    from jacnet import data as jdata

    spec = options["data"]
    if jdata._canonical_name(str(spec)) == "fashion-mnist" and not Path(spec).is_file():
        return jdata.load_fashion_mnist()
    dataset = jdata.load(spec, target=_target_arg(options["target"]), task=options["task"],
                         seed=options["seed"], header=not options["no_header"])
    parts = jdata.split(dataset, test_size=options["test_size"], seed=options["seed"])
    return parts.train, parts.test


def _load_rank_rows(options: dict[str, Any], comm: Any) -> tuple[Any, Any, _Shard | None]:
    """(train, test, shard): under ``mpiexec`` with a CSV or NPZ file, this rank's block of
    the training rows and of the test rows read from the file, and the shard's view of
    the whole; otherwise every row, as :func:`_load_data` gives them, and None.

    The split is drawn from the targets alone (every rank reads the target column whole:
    the stratified split needs every label), exactly as one process draws it; rank r
    keeps block r of the training rows in that order (:func:`shard_rows`), which is the
    block a single-process run's data-parallel loop would give it."""
    from jacnet import data as jdata
    from jacnet.distributed import shard_rows

    rows = None
    if comm.size > 1:
        rows = jdata.open_rows(options["data"], target=_target_arg(options["target"]),
                               task=options["task"], header=not options["no_header"])
    if rows is None:
        return (*_load_data(options), None)
    train_rows, _, test_rows = jdata.split_rows(rows.y, rows.task, test_size=options["test_size"],
                                                seed=options["seed"])
    if len(train_rows) < comm.size:  # fit needs rows on every rank; say so before it does
        raise ValueError(
            f"{options['data']} has {len(train_rows)} training rows (after the test split) for "
            f"{comm.size} ranks; every rank needs at least one: run with mpiexec -n "
            f"{len(train_rows)} or fewer, or pass a smaller --test-size.")
    mine = train_rows[shard_rows(len(train_rows), comm.rank, comm.size)]
    train = rows.dataset(mine)
    test = rows.dataset(test_rows[shard_rows(len(test_rows), comm.rank, comm.size)])
    return train, test, _Shard(len(train_rows), rows.y[train_rows], len(test_rows))


def _as_columns(y: np.ndarray) -> np.ndarray:
    """Targets as an (n, m) matrix; unlike ``reshape(len(y), -1)`` also for a rank that
    holds no rows (NumPy cannot infer -1 from a size of 0)."""
    return y if y.ndim == 2 else y.reshape(-1, 1)


def _target_arg(target: Any) -> Any:
    if isinstance(target, str) and target.lstrip("-").isdigit():
        return int(target)
    return target


def _train(args: argparse.Namespace) -> int:
    import jacnet
    from jacnet.data import StandardScaler
    from jacnet.distributed import world

    options, checkpoint = _resolve_train_options(args)
    started = time.perf_counter()
    # Under `mpiexec -n k` the k processes train as one run, each on its block of the
    # training rows (same split, scaling and batches as one process); rank 0 writes.
    comm = world()
    shard, error = None, None
    try:
        train, test, shard = _load_rank_rows(options, comm)
    except Exception as exc:
        error = exc
    if comm.size > 1:
        comm.agree(error)
    elif error is not None:
        raise error
    classification = train.task == "classification"
    loss = options["loss"]
    if loss == "auto":
        loss = "cross_entropy" if classification else "mse"
    if classification and loss == "mse":
        raise UsageError("--loss mse needs a regression target; this data set is classification.")
    if not classification and loss in ("cross_entropy", "bce"):
        raise UsageError(f"--loss {loss} needs class labels; this data set is regression "
                         "(use --task classification for numeric labels).")
    n_classes = 0
    if classification:
        n_classes = train.n_classes if shard is None or train.target_names is not None else \
            int(shard.y_train.max()) + 1
    n_out = (n_classes if loss == "cross_entropy" else 1) if classification else \
        (1 if train.y.ndim == 1 else train.y.shape[1])
    if train.n_features < 1 or n_out < 1:
        raise ValueError(f"{options['data']} has {train.n_features} feature columns and "
                         f"{n_out} target columns; training needs at least one of each.")
    if classification and loss == "bce" and n_classes > 2:
        raise UsageError(f"--loss bce is for two classes; this data set has {n_classes}.")

    if shard is None:
        x_scaler = StandardScaler().fit(train.X)
    else:  # the statistics of every rank's rows, merged in rank order on every rank
        x_scaler = StandardScaler.from_moments(comm.allgather(StandardScaler.moments(train.X)))
    y_all = train.y if shard is None else shard.y_train
    y_scaler = None if classification else StandardScaler().fit(_as_columns(y_all))
    X_train = x_scaler.transform(train.X)
    y_train = train.y if y_scaler is None else y_scaler.transform(_as_columns(train.y))
    model = jacnet.mlp([train.n_features, *options["hidden"], n_out],
                       activation=options["activation"], seed=options["seed"], dtype=options["dtype"])

    out = Path(options["out"] or f"runs/{train.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    created: list[Path] = []
    before: set[str] = set()
    error = None
    if comm.rank == 0:  # rank 0 makes the folder; every rank learns of a failure
        try:
            created, before = _make_run_folder(out)
        except Exception as exc:
            error = exc
    comm.agree(error)
    if comm.size > 1:  # every rank takes rank 0's folder, which now exists
        out = Path(comm.allgather(str(out))[0])
    try:
        return _train_in(out, options, checkpoint, started, train, test, model, loss,
                         x_scaler, y_scaler, X_train, y_train, comm, shard)
    except KeyboardInterrupt:
        if comm.rank == 0:
            _remove_failed_run(out, created, before, keep_checkpoint=True)
        raise
    except Exception:
        if comm.rank == 0:
            _remove_failed_run(out, created, before, keep_checkpoint=checkpoint is not None)
        raise


_RUN_FILES = ("model.npz", "history.csv", "history.json", "curves.png", "checkpoint.npz")


def _make_run_folder(out: Path) -> tuple[list[Path], set[str]]:
    """Create the run folder; return the folders this made and the names already inside."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; the run folder must be a folder (or a new name).")
    missing = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the run folder {out}: {exc.strerror or exc}.") from None
    return missing, {path.name for path in out.iterdir()}


def _remove_failed_run(out: Path, created: list[Path], before: set[str], *,
                       keep_checkpoint: bool) -> None:
    """After a failed train, remove what this run wrote (never what was there before; a
    checkpoint survives an interrupt, since it can be resumed) and the folders it made if
    they are left empty, so that a failure leaves no empty run folder."""
    for name in _RUN_FILES:
        path = out / name
        if name in before or (keep_checkpoint and name == "checkpoint.npz"):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
    for folder in created:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            break


def _train_in(out: Path, options: dict[str, Any], checkpoint: Any, started: float, train: Any,
              test: Any, model: Any, loss: str, x_scaler: Any, y_scaler: Any,
              X_train: np.ndarray, y_train: np.ndarray, comm: Any,
              shard: _Shard | None = None) -> int:
    """Train on this rank's block of the training rows (all of them without mpiexec); rank 0
    writes and reports. With a shard, X_train, y_train and test are already this rank's rows,
    and the test scores and the noise estimate are summed over the ranks; without, every
    rank holds every row."""
    from jacnet.distributed import shard_rows

    rows = slice(None) if shard is not None else shard_rows(len(X_train), comm.rank, comm.size)
    from jacnet.io import save_model
    from jacnet.optim import OPTIMIZERS
    from jacnet.training import DivergenceWarning, fit, resolve_optimizer

    full_batch = getattr(OPTIMIZERS.get(options["optimizer"].lower()), "full_batch", False)
    optimizer = resolve_optimizer(options["optimizer"], model, lr=options["lr"],
                                  weight_decay=_weight_decay(options),
                                  **({"solver": options["solver"]} if full_batch else {}))
    ckpt_path = out / "checkpoint.npz"
    cli_options = {k: v for k, v in options.items() if k not in ("out", "progress")}

    from jacnet.training import Callback

    class _Remember(Callback):  # the options travel with every checkpoint
        def on_train_begin(self, logs: dict[str, Any]) -> None:
            self.state.extra_state["cli_options"] = cli_options

    # A divergence is reported once, below, from the history's stop reason: not as a raw
    # warning, nor as NumPy's overflow warnings from the diverging steps.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", DivergenceWarning)
        history = fit(
            model, X_train[rows], y_train[rows], loss=loss, optimizer=optimizer, lr=None,
            epochs=options["epochs"], batch_size=options["batch_size"], seed=options["seed"],
            validation_split=options["validation_split"],
            early_stopping=options["early_stopping"], patience=options["patience"],
            callbacks=[_Remember()],
            progress=options["progress"],
            checkpoint=ckpt_path if (options["checkpoint_every"] or checkpoint) else None,
            checkpoint_every=options["checkpoint_every"] or (1 if checkpoint else None),
            resume_from=None if checkpoint is None else checkpoint[0], comm=comm,
        )
    diverged = bool(history.stop_reason and history.stop_reason.startswith("diverged"))
    wants_noise = y_scaler is not None and options["laplace"] != "none"
    noise: dict[str, Any] = {}
    scores: dict[str, float] = {}
    n_test = test.n_samples if shard is None else shard.n_test
    if shard is not None and not (diverged and len(history) == 0):
        # Every rank scores its share of the test rows and the noise estimate of its
        # training rows; the sums are combined over the ranks.
        if wants_noise:
            noise = _noise_estimate(model, X_train, y_train, y_scaler, options["laplace"], comm)
        with np.errstate(over="ignore", invalid="ignore"):
            scores = _score(model, loss, x_scaler, y_scaler, test.X, test.y, comm=comm)
    if comm.rank != 0:
        return 1 if diverged else 0
    if diverged and len(history) == 0:
        raise ValueError(f"{history.stop_reason} Nothing was trained, so no run folder is kept.")
    elapsed = time.perf_counter() - started
    if shard is None:
        with np.errstate(over="ignore", invalid="ignore"):  # targets near the float maximum
            scores = _score(model, loss, x_scaler, y_scaler, test.X, test.y)
    metadata = {
        "task": train.task, "loss": loss, "data": train.name, "feature_names": train.feature_names,
        "named_features": not options["no_header"] and _named_columns(
            str(options["data"]), train.feature_names, False),
        "target_column": train.target_column,
        "target_names": train.target_names, "target": options["target"], "options": cli_options,
        "test_scores": scores, "epochs_trained": len(history), "train_seconds": elapsed,
        "split": {"n_train": train.n_samples if shard is None else shard.n_train,
                  "n_test": n_test,
                  "test_size": options["test_size"], "seed": options["seed"]},
        "stop_reason": history.stop_reason,
    }
    if wants_noise:
        metadata.update(noise if shard is not None else
                        _noise_estimate(model, X_train, y_train, y_scaler, options["laplace"]))
    save_model(out / "model.npz", model, preprocessing={"X": x_scaler, "y": y_scaler},
               metadata=metadata)
    history.to_csv(out / "history.csv")
    history.to_json(out / "history.json")
    plotted = _plot(history, out / "curves.png")

    per_epoch = sum(r["time"] for r in history.records) / max(len(history), 1)
    headline = (f"test accuracy {scores['accuracy']:.4f}" if "accuracy" in scores
                else f"test r2 {scores['r2']:.4f}, mse {scores['mse']:.4g}")
    print(f"{headline} on {n_test} samples ({train.name}; {len(history)} epochs, "
          f"{per_epoch:.3f} s/epoch, {elapsed:.1f} s)")
    print(f"run folder: {out}  (model.npz, history.csv, history.json"
          f"{', curves.png' if plotted else ''})")
    if not plotted:
        print("note: matplotlib is not installed, so curves.png was skipped "
              "(pip install 'jacnet[plot]').", file=sys.stderr)
    if diverged:
        _error_line(f"jacnet train: error: {history.stop_reason}")
        return 1
    if history.stop_reason:
        print(f"stopped: {history.stop_reason}")
    if "noise_std" in metadata:
        print("noise std (Laplace evidence, target units): "
              + ", ".join(f"{v:.4g}" for v in metadata["noise_std"]))
    return 0


def _noise_estimate(model: Any, X: np.ndarray, y: np.ndarray, y_scaler: Any,
                    structure: str, comm: Any = None) -> dict[str, Any]:
    """The Laplace approximation on the (scaled) training rows, for ``predict --std``, and
    the evidence's noise standard deviation per output in target units. With ``comm``,
    X and y are this rank's rows and every rank takes part (the sums are allreduced)."""
    from jacnet.laplace import Laplace

    try:
        approx = Laplace(model, "regression", structure=structure).fit(
            X, y, allreduce=None if comm is None else comm.allreduce)
    except ValueError as exc:
        if comm is None or comm.rank == 0:
            print(f"note: no noise estimate or --std for this model: {exc}", file=sys.stderr)
        return {}
    noise = np.asarray(y_scaler.scale_, dtype=np.float64) / np.sqrt(approx.beta_)
    return {"noise_std": noise.tolist(), "laplace": approx.state_dict()}


def _score(model: Any, loss: str, x_scaler: Any, y_scaler: Any, X: np.ndarray,
           y: np.ndarray, block: int = 65536, comm: Any = None) -> dict[str, float]:
    """Loss and metrics on original-scale targets (regression metrics in target units).

    Rows are scaled and scored ``block`` at a time, so that no scaled copy of the whole
    matrix exists; the loss is the row-weighted mean of the blocks' losses and regression
    metrics are taken on all predictions at once. With ``comm``, X and y are this rank's
    share of the rows and every rank gets the scores of all of them (see _score_shards)."""
    from jacnet.losses import get_loss
    from jacnet.metrics import default_metrics
    from jacnet.training import evaluate

    if comm is not None:
        return _score_shards(model, loss, x_scaler, y_scaler, X, y, block, comm)

    n = len(X)
    totals: dict[str, float] = {}
    predictions = []
    for start in range(0, n, block):
        X_scaled = x_scaler.transform(X[start:start + block])
        part_y = y[start:start + block]
        if y_scaler is None:
            part = evaluate(model, X_scaled, part_y, loss=loss)
        else:
            part = evaluate(model, X_scaled, y_scaler.transform(part_y.reshape(len(part_y), -1)),
                            loss=loss, metrics=[])
            predictions.append(_predict_values(model, X_scaled, y_scaler))
        for key, value in part.items():
            totals[key] = totals.get(key, 0.0) + value * len(X_scaled)
    scores = {key: value / n for key, value in totals.items()}
    if y_scaler is not None:
        prediction = np.concatenate(predictions)
        for metric in default_metrics(get_loss(loss)):
            scores[metric.name] = metric(prediction, y.reshape(len(y), -1))
    return scores


def _score_shards(model: Any, loss: str, x_scaler: Any, y_scaler: Any, X: np.ndarray,
                  y: np.ndarray, block: int, comm: Any) -> dict[str, float]:
    """_score over every rank's rows: the row-weighted loss sums and each metric's running
    totals (Metric.totals / set_totals) are summed over the ranks in one Allreduce each,
    so that rank r needs only its own rows. The same scores as _score on the stacked rows,
    up to the order of the sums."""
    from jacnet.losses import get_loss
    from jacnet.metrics import default_metrics
    from jacnet.training import evaluate

    loss_fn = get_loss(loss)
    metrics = default_metrics(loss_fn)
    keys = ["loss"] + ([m.name for m in metrics] if y_scaler is None else [])
    sums = np.zeros(1 + len(keys))
    for metric in metrics:
        metric.reset()
    error = None
    try:  # a failure here is this rank's alone: the others must hear of it, not wait
        for start in range(0, len(X), block):
            X_scaled = x_scaler.transform(X[start:start + block])
            part_y = y[start:start + block]
            if y_scaler is None:
                part = evaluate(model, X_scaled, part_y, loss=loss)
            else:
                target = _as_columns(part_y)
                part = evaluate(model, X_scaled, y_scaler.transform(target), loss=loss,
                                metrics=[])
                prediction = _predict_values(model, X_scaled, y_scaler)
                for metric in metrics:
                    metric.update(prediction, metric._shape_target(target, prediction))
            sums += [len(X_scaled), *(part[key] * len(X_scaled) for key in keys)]
    except Exception as exc:
        error = exc
    comm.agree(error)
    comm.allreduce(sums)
    scores = {key: float(total / sums[0]) for key, total in zip(keys, sums[1:])}
    if y_scaler is not None:
        for metric in metrics:
            metric.set_totals(comm.allreduce(np.ascontiguousarray(
                metric.totals(model.out_features), dtype=np.float64)))
            scores[metric.name] = metric.result()
    return scores


def _predict_values(model: Any, X_scaled: np.ndarray, y_scaler: Any) -> np.ndarray:
    model.eval()
    out = model(X_scaled)
    return out if y_scaler is None else y_scaler.inverse_transform(out.astype(np.float64))


def _plot(history: Any, path: Path) -> bool:
    """The run's curves (loss, metric, learning rate or μ) as PNG; False without matplotlib."""
    from jacnet.plot import plot_history

    try:
        plot_history(history, path)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- evaluate / predict
def _load_saved(path: str) -> Any:
    from jacnet.io import load_model

    saved = load_model(path)
    meta = saved.metadata
    if not {"task", "loss"} <= set(meta) or not isinstance(saved.preprocessing, dict):
        raise ValueError(f"{path} is a jacnet model but not one written by `jacnet train`; "
                         "use jacnet.io.load_model from Python.")
    return saved


def _dataset_for(saved: Any, spec: str, target: Any, *, header: bool = True) -> Any:
    """DATA as a Dataset whose columns are the model's features, in the model's order."""
    from jacnet import data as jdata

    meta = saved.metadata
    is_csv = str(spec).lower().endswith((".csv", ".csv.gz"))
    if target is None:
        # The training file's target column by name (its position may differ here).
        target = meta.get("target_column") if header else None
        target = target if target is not None else meta.get("target")
    target = _target_arg(target)
    dataset = jdata.load(spec, target=target if is_csv else None, header=header,
                         task=meta["task"] if (is_csv or str(spec).lower().endswith(".npz")) else None)
    if dataset.task != meta["task"]:
        raise ValueError(f"{spec} holds {dataset.task} data but the model does {meta['task']}.")
    return _align(dataset, saved, spec, by_name=header or not is_csv)


def _align(dataset: Any, saved: Any, spec: str, *, by_name: bool = True) -> Any:
    """The dataset with the model's feature columns in the model's order."""
    from jacnet import data as jdata

    is_csv = str(spec).lower().endswith((".csv", ".csv.gz"))
    by_name = by_name and _named_columns(spec, dataset.feature_names, is_csv)
    order = _feature_order(dataset.feature_names, saved, spec, by_name=by_name, extra=None)
    if order != list(range(dataset.n_features)):
        dataset = jdata.Dataset(dataset.X[:, order], dataset.y, dataset.task, name=dataset.name,
                                feature_names=[dataset.feature_names[j] for j in order],
                                target_names=dataset.target_names,
                                description=dataset.description,
                                target_column=dataset.target_column)
    return dataset


def _named_columns(spec: str, names: list[str], is_csv: bool) -> bool:
    """Whether the data's column names are real (a CSV header, an NPZ's feature_names, a
    built-in set) rather than the x1, x2, ... made up for a file without names."""
    if is_csv:
        return True
    generated = [f"x{j + 1}" for j in range(len(names))]
    return not (str(spec).lower().endswith(".npz") and names == generated)


def _model_names(saved: Any) -> list[str] | None:
    """The model's feature names when training saw real ones (scikit-learn's feature_names_in_)."""
    meta = saved.metadata
    names = meta.get("feature_names")
    if meta.get("named_features") is False or not isinstance(names, list):
        return None
    return [str(n) for n in names]


def _feature_order(columns: list[str], saved: Any, spec: str, *, by_name: bool,
                   extra: str | None) -> list[int]:
    """Indices of the model's features among ``columns``: by name when both sides have real
    names (reordering as needed; ``extra``, the target column, may also be present), else by
    position. Unknown or missing names are refused with the expected list."""
    n_in = saved.model.in_features
    names = _model_names(saved)
    if by_name and names is not None:
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"{spec}: the columns {repeated} appear more than once; name each "
                             "column once.")
        allowed = set(names) | ({extra} if extra else set())
        unknown = [c for c in columns if c not in allowed]
        missing = [n for n in names if n not in columns]
        if unknown or missing:
            problems = "; ".join(part for part in (
                f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "")
                if part)
            target = f" (and optionally the target {extra!r})" if extra else ""
            raise ValueError(f"{spec}: its columns do not match the model's features: {problems}. "
                             f"The model expects the columns {names}{target}, in any order.")
        return [columns.index(n) for n in names]
    if len(columns) != n_in:
        raise ValueError(f"{spec} has {len(columns)} feature columns but the model takes "
                         f"{n_in}; pass --target to name the target column.")
    return list(range(n_in))


def _class_codes(dataset: Any, meta: dict[str, Any]) -> np.ndarray:
    """The data's class codes in the model's class numbering (by class name when known)."""
    saved_names, names = meta.get("target_names"), dataset.target_names
    if saved_names is None or names is None or names == saved_names:
        return np.asarray(dataset.y)
    index = {name: i for i, name in enumerate(saved_names)}
    unknown = sorted({names[c] for c in dataset.y} - set(index))
    if unknown:
        raise ValueError(f"the data has classes {unknown} the model was not trained on "
                         f"(it knows {saved_names}).")
    return np.array([index[names[c]] for c in dataset.y], dtype=np.int64)


def _same_source(spec: str, trained_on: Any) -> bool:
    """Whether DATA names the data a model was trained on (a built-in name or the same file)."""
    from jacnet.data import _canonical_name

    if not isinstance(trained_on, str):
        return False
    if Path(spec).is_file() or Path(trained_on).is_file():
        try:
            return Path(spec).resolve() == Path(trained_on).resolve()
        except OSError:
            return False
    name = _canonical_name(spec)
    return name is not None and name == _canonical_name(trained_on)


def _held_out(saved: Any, spec: str) -> tuple[Any, str] | None:
    """The test rows `jacnet train` held out when DATA is the model's training data, with a
    phrase saying which rows they are; None when DATA is other data."""
    meta = saved.metadata
    options, split = meta.get("options"), meta.get("split")
    if not isinstance(options, dict) or not _same_source(spec, options.get("data")):
        return None
    train, test = _load_data({**_DEFAULTS, **options})
    if isinstance(split, dict) and (split.get("n_test"), split.get("n_train")) != (
            test.n_samples, train.n_samples):
        raise ValueError(
            f"{spec} splits into {train.n_samples} training and {test.n_samples} test rows, but "
            f"the model was trained on {split.get('n_train')} and tested on {split.get('n_test')}: "
            "the data changed since training. Pass --all-rows to score every row.")
    how = (f"test_size {options.get('test_size')}, seed {options.get('seed')}"
           if _canonical_name_of(spec) != "fashion-mnist" else "its official test set")
    return test, f"the {test.n_samples} test rows train held out ({how})"


def _canonical_name_of(spec: str) -> str | None:
    from jacnet.data import _canonical_name

    return None if Path(spec).is_file() else _canonical_name(spec)


def _evaluate(args: argparse.Namespace) -> int:
    saved = _load_saved(args.model)
    meta, prep = saved.metadata, saved.preprocessing
    held_out = None if args.all_rows or args.target is not None else _held_out(saved, args.data)
    if held_out is not None:
        dataset, rows = held_out
        dataset = _align(dataset, saved, args.data)
    else:
        dataset = _dataset_for(saved, args.data, args.target, header=not args.no_header)
        rows = f"all {dataset.n_samples} rows"
    y = _class_codes(dataset, meta) if meta["task"] == "classification" else dataset.y
    scores = _score(saved.model, meta["loss"], prep["X"], prep.get("y"), dataset.X, y)
    if args.json:
        print(json.dumps({"n_samples": dataset.n_samples,
                          "rows": "test" if held_out is not None else "all", **scores}))
    else:
        print(f"{dataset.n_samples} samples ({rows} of {args.data}): "
              + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return 0


def _csv_feature_blocks(saved: Any, spec: str, target: Any, *, header: bool
                        ) -> Iterator[np.ndarray]:
    """The model's feature columns of a CSV file, block by block (memory flat in rows).

    With real names on both sides, columns are matched by name (the training target
    column may be present: it is never read); otherwise by position, all columns or all
    but the target."""
    from jacnet._readers import CsvReader, column_floats

    meta = saved.metadata
    n_in = saved.model.in_features
    with CsvReader(spec, header=header, no_header_hint="--no-header") as reader:
        columns = reader.columns
        if header and _model_names(saved) is not None:
            extra = (target if isinstance(target, str) and target in columns
                     else meta.get("target_column"))
            select = _feature_order(columns, saved, spec, by_name=True, extra=extra)
        elif len(columns) == n_in + 1:
            where = _target_arg(target if target is not None else meta.get("target"))
            drop = where % len(columns) if isinstance(where, int) else (
                columns.index(where) if where in columns else len(columns) - 1)
            select = [j for j in range(len(columns)) if j != drop]
        else:
            select = _feature_order(columns, saved, spec, by_name=False, extra=None)
        names = [columns[j] for j in select]
        n_rows = 0
        for cells, lines in reader.blocks():
            n_rows += len(lines)
            yield column_floats(cells[:, select], lines, names, reader.path)
    if n_rows == 0:
        raise ValueError(f"{spec} has a header but no data rows.")


def _array_feature_blocks(saved: Any, spec: str) -> Iterator[np.ndarray]:
    """The model's features from an NPZ file (array X) or a .npy file, block by block.

    The array is streamed from the file (jacnet._readers.ArrayRows: a compressed member is
    decompressed as it goes), so memory does not grow with the rows. An NPZ's
    ``feature_names`` match the columns by name; a .npy file's columns go by position."""
    from jacnet._readers import npy_array, npz_members
    from jacnet._validation import check_array, check_ndim

    is_npy = str(spec).lower().endswith(".npy")
    if is_npy:
        X_rows, raw = npy_array(spec), None
    else:
        members = npz_members(spec)
        if "X" not in members:
            raise ValueError(f"{spec} has no array named 'X'; found {list(members)}.")
        X_rows = members["X"]
        raw = members["feature_names"].read() if "feature_names" in members else None
    check_ndim(X_rows.shape, "X", ndim=2, owner=str(spec))  # without reading the array
    n_columns = X_rows.shape[1]
    named = (raw is not None and raw.dtype.kind in "US" and raw.ndim == 1
             and len(raw) == n_columns)
    by_name = named and not is_npy and _model_names(saved) is not None
    n_in = saved.model.in_features
    if not by_name and n_columns != n_in:
        # Checked before naming the columns x1, x2, ...: a header of 0 rows may claim 2**40.
        raise ValueError(f"{spec}: X has {n_columns} columns but the model takes {n_in} "
                         f"features; save X with the model's {n_in} feature columns, in the "
                         "order it was trained on.")
    names = ([str(n) for n in raw.tolist()] if named and raw is not None
             else [f"x{j + 1}" for j in range(n_columns)])
    order = _feature_order(names, saved, spec, by_name=by_name and _named_columns(spec, names, False),
                           extra=None)
    start = 0
    blocks = X_rows.blocks()
    for block in blocks:
        try:
            X = check_array(block, "X", ndim=2, dtype=np.float64, owner=str(spec))
        except ValueError:  # name the position in the file, not in the block
            row, column = (int(i) for i in np.argwhere(~np.isfinite(block.astype(np.float64)))[0])
            # A damaged member can read as NaN before its CRC, checked at its end, fails:
            # read on, so that damage is reported as damage, not as the data's NaN.
            for _ in blocks if X_rows.member is not None else ():
                pass
            raise ValueError(f"{spec}: X contains NaN or infinity (first at index "
                             f"[{start + row}, {column}]: {block[row, column]}). Remove or "
                             "impute those values before predicting.") from None
        start += len(block)
        yield X[:, order]
    if start == 0:  # as a CSV file with a header and no rows: nothing to predict is an error
        raise ValueError(f"{spec}: X has no rows (shape {tuple(X_rows.shape)}); predict needs "
                         "at least one row of features.")


def _prediction_columns(saved: Any, X: np.ndarray, laplace: Any = None, *,
                        source: str = "X", first_row: int = 0) -> dict[str, np.ndarray]:
    """What `jacnet predict` writes for feature rows X: labels and class probabilities, or
    predictions in target units (and, given the saved Laplace approximation, their
    standard deviations). ``source`` and ``first_row`` (X's first row in it) name a value
    that the model's dtype cannot hold."""
    meta, prep = saved.metadata, saved.preprocessing
    X_scaled = prep["X"].transform(X)
    limit = np.finfo(saved.model.dtype).max
    if limit < np.finfo(X_scaled.dtype).max and not np.all(np.abs(X_scaled) <= limit):
        row, column = (int(i) for i in np.argwhere(~(np.abs(X_scaled) <= limit))[0])
        raise ValueError(
            f"{source}: the value {X[row, column]:.6g} at index [{first_row + row}, {column}] "
            f"is {X_scaled[row, column]:.3g} after the model's scaling, beyond the "
            f"{saved.model.dtype} range of this model (about ±{limit:.2g}); check the value, "
            "or train with --dtype float64 to take such values.")
    out = _predict_values(saved.model, X_scaled, prep.get("y"))
    columns: dict[str, np.ndarray] = {}
    if meta["task"] == "classification":
        names = meta.get("target_names")
        if out.shape[1] == 1:
            prob1 = 1.0 / (1.0 + np.exp(-out[:, 0].astype(np.float64)))
            codes = (prob1 > 0.5).astype(np.int64)
            probs = np.stack([1.0 - prob1, prob1], axis=1)
        else:
            shifted = out.astype(np.float64) - out.max(axis=1, keepdims=True)
            probs = np.exp(shifted)
            probs /= probs.sum(axis=1, keepdims=True)
            codes = probs.argmax(axis=1)
        columns["prediction"] = np.array(names)[codes] if names else codes
        for k in range(probs.shape[1]):
            columns[f"p_{names[k] if names else k}"] = probs[:, k]
    else:
        std = None if laplace is None else _predictive_std(saved, laplace, X_scaled)
        for k in range(out.shape[1]):
            columns["prediction" if out.shape[1] == 1 else f"prediction_{k}"] = out[:, k]
            if std is not None:
                columns["std" if out.shape[1] == 1 else f"std_{k}"] = std[:, k]
    return columns


def _predict(args: argparse.Namespace) -> int:
    from jacnet.io import atomic_write

    out = None if args.out is None else str(args.out)
    if out is not None and not out.lower().endswith((".csv", ".npz")):
        raise UsageError(f"--out must end in .csv or .npz; got {args.out!r}.")
    saved = _load_saved(args.model)
    laplace = _saved_laplace(saved) if args.std else None
    spec = args.data
    if str(spec).lower().endswith((".csv", ".csv.gz")) and Path(spec).exists():
        blocks: Iterator[np.ndarray] = _csv_feature_blocks(saved, spec, args.target,
                                                           header=not args.no_header)
    else:
        if args.no_header:
            raise UsageError("--no-header applies only to CSV files.")
        if str(spec).lower().endswith((".npz", ".npy")):
            blocks = _array_feature_blocks(saved, spec)
        else:
            blocks = iter([np.asarray(_dataset_for(saved, spec, args.target).X)])
    def predictions() -> Iterator[dict[str, np.ndarray]]:
        start = 0
        for X in blocks:
            yield _prediction_columns(saved, X, laplace, source=str(spec), first_row=start)
            start += len(X)

    if out is not None and out.lower().endswith(".npz"):
        parts = list(predictions())
        columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        with atomic_write(out) as f:
            cast(Any, np.savez)(f, **columns)
        return 0
    with (atomic_write(out, "w") if out is not None else contextlib.nullcontext(sys.stdout)) as f:
        writer = csv.writer(f, lineterminator="\n")
        for i, columns in enumerate(predictions()):
            if i == 0:
                writer.writerow(columns)
            writer.writerows(zip(*(col.tolist() for col in columns.values())))
    return 0


def _saved_laplace(saved: Any) -> Any:
    """The Laplace approximation saved by train, for ``predict --std``."""
    from jacnet.laplace import Laplace

    if saved.metadata["task"] == "classification":
        raise UsageError("--std is for regression models (a standard deviation in target "
                         "units); this model is a classifier, whose p_ columns are its answer.")
    state = saved.metadata.get("laplace")
    if state is None:
        raise ValueError("this model has no Laplace approximation (trained with --laplace none, "
                         "or before jacnet saved one); train it again to use --std.")
    return Laplace(saved.model, "regression").load_state_dict(state)


def _predictive_std(saved: Any, laplace: Any, X_scaled: np.ndarray) -> np.ndarray:
    """σ(x) per output in target units from the saved Laplace approximation."""
    scale = np.asarray(saved.preprocessing["y"].scale_, dtype=np.float64)
    return np.asarray(laplace.predictive(X_scaled.astype(np.float64)).std * scale)


# --------------------------------------------------------------------------- export
def _export(args: argparse.Namespace) -> int:
    """ONNX with what `jacnet predict` computes: standardised inputs, then labels and
    probabilities (classification) or predictions in target units (regression)."""
    from jacnet.onnx import DEFAULT_OPSET, export

    saved = _load_saved(args.model)
    meta, prep, model = saved.metadata, saved.preprocessing, saved.model
    classes = None
    if meta["task"] == "classification":
        classes = meta.get("target_names") or list(range(max(model.out_features, 2)))
    metadata = {"task": meta["task"], "loss": meta["loss"], "class_names": classes,
                "feature_names": meta.get("feature_names"), "data": meta.get("data")}
    export(model, args.onnx, preprocessing={"X": prep.get("X"), "y": prep.get("y")},
           classes=classes, metadata={k: v for k, v in metadata.items() if v is not None},
           opset=DEFAULT_OPSET if args.opset is None else args.opset)
    outputs = "label, probabilities" if classes is not None else "output"
    print(f"wrote {args.onnx}: input X ({model.dtype}, N x {model.in_features}), outputs {outputs}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


# ======================================================================================
# explain and inspect: the command-line bodies of jacnet.explain.explain / inspect_model
# (one self-contained block: its own helpers, imports made when a command runs)
# ======================================================================================


def _floats(text: str, name: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in text.replace(",", " ").split()], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{name} must be numbers separated by commas, e.g. '0.5,-1,2'; "
                         f"got {text!r}.") from exc


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise ValueError(f"--sizes must be integers separated by commas, e.g. '3,4,2'; "
                         f"got {text!r}.") from exc
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"--sizes needs at least two positive widths, e.g. '3,4,2'; got {text!r}.")
    return sizes


def _atomic_write_text(path: Path, text: str) -> None:
    from jacnet.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _load_any_model(path: str) -> tuple[Any, Any, dict[str, Any]]:
    """The model, its preprocessing and its metadata from a file written by :mod:`jacnet.io`."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"model file {path} not found; 'jacnet train' writes one as RUN_FOLDER/model.npz.")
    from jacnet.io import load_model

    saved = load_model(path)
    return saved.model, saved.preprocessing, dict(saved.metadata or {})


def _scaler(preprocessing: Any, key: str) -> Any:
    """The scaler ``jacnet train`` saved for the inputs ("X") or targets ("y"), if any."""
    return preprocessing.get(key) if isinstance(preprocessing, dict) else None


def _emit(report: Any, args: argparse.Namespace) -> None:
    """Print a report in the chosen format and, with --markdown, also write it as Markdown."""
    _print_report(report, args.format)
    if args.markdown:
        _atomic_write_text(Path(args.markdown), report.to_markdown())


def _print_report(report: Any, fmt: str) -> None:
    if fmt == "markdown":
        print(report.to_markdown())
        return
    if fmt in ("auto", "rich"):
        try:
            from rich.console import Console
        except ImportError:
            if fmt == "rich":
                raise ImportError("--format rich needs rich: pip install 'jacnet[cli]'.") from None
        else:
            Console().print(report.to_rich())
            return
    print(report.to_text())


def add_explain_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``jacnet explain`` to ``parser`` and return it."""
    parser.add_argument("--model", metavar="PATH", help="a saved model (default: the seed's "
                        "two-layer network built from --sizes)")
    parser.add_argument("--sizes", default="3,4,2", help="widths n,h,m of the default network "
                        "(default: 3,4,2)")
    parser.add_argument("--activation", default="sigmoid", help="hidden activation f (default: sigmoid)")
    parser.add_argument("--output-activation", default="sigmoid",
                        help="output activation g, or 'none' for a linear output (default: sigmoid)")
    parser.add_argument("--bias", action="store_true", help="give the default network biases")
    parser.add_argument("--x", metavar="VALUES", help="the sample, comma-separated (default: "
                        "the guide's 0.5,-1,2 repeated to the input width; with --model, row 0 "
                        "of the saved training data when it can be read)")
    parser.add_argument("--target", metavar="VALUES", help="the target d, comma-separated "
                        "(a class label for cross-entropy)")
    parser.add_argument("--loss", default=None, help="mse, cross_entropy, bce (default: the "
                        "loss saved with --model, else mse)")
    parser.add_argument("--lr", type=float, default=0.5, help="η of the gradient step shown (0.5)")
    parser.add_argument("--batch", type=int, metavar="N", help="also show a batch of N samples: "
                        "Δ, ∂E/∂W = Σ_b δ_b y_bᵀ = Δᵀ Y (the guide's two rows, then random "
                        "ones; with --model, rows 0..N-1 of the saved data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the default network's weights")
    parser.add_argument("--format", choices=("auto", "rich", "text", "markdown"), default="auto",
                        help="terminal output (auto: rich when installed)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the explanation as Markdown")
    parser.add_argument("--figures", metavar="DIR", help="write a heat map (PNG) of each Jacobian")
    return parser


def _saved_sample(metadata: dict[str, Any], preprocessing: Any, loss: Any, n_rows: int = 1
                  ) -> tuple[np.ndarray, Any, str] | None:
    """Rows 0..n_rows-1 of the data a saved model was trained on, scaled as in training,
    with their targets as the loss takes them, and a line saying where they came from; None
    when the data cannot be read again (a moved file, a data set that would need a download)."""
    saved_options = metadata.get("options")
    options: dict[str, Any] = saved_options if isinstance(saved_options, dict) else {}
    spec = options.get("data") or metadata.get("data")
    if not isinstance(spec, str) or "fashion" in spec.lower():
        return None
    from jacnet.data import load

    try:
        dataset = load(spec, target=options.get("target"), seed=options.get("seed", 0))
    except (ValueError, TypeError, OSError):
        return None
    x_scaler, y_scaler = _scaler(preprocessing, "X"), _scaler(preprocessing, "y")
    rows = slice(0, n_rows)
    X = dataset.X[rows] if x_scaler is None else x_scaler.transform(dataset.X[rows])
    if loss.takes_labels:
        target: Any = np.asarray(dataset.y[rows]).astype(np.int64)
    else:
        y = np.asarray(dataset.y[rows], dtype=np.float64).reshape(len(X), -1)
        target = y if y_scaler is None else y_scaler.transform(y)
    scaled = " (scaled as in training)" if x_scaler is not None else ""
    batch = f"; the batch is rows 0 to {len(X) - 1}" if n_rows > 1 else ""
    return X, target, (f"The sample is row 0 of {spec}, the model's training "
                       f"data{scaled}{batch}.")


def explain_command(args: argparse.Namespace) -> int:
    """Body of ``jacnet explain``: 0 when every check passed, 1 when one failed, 2 on bad input."""
    from dataclasses import replace

    from jacnet.explain import explain, seed_network
    from jacnet.losses import get_loss

    note = ""
    try:
        if args.batch is not None and args.batch < 1:
            raise ValueError(f"--batch must be a positive number of samples; got {args.batch}.")
        x: Any = None if args.x is None else _floats(args.x, "--x")
        target: Any = None
        batch: Any = args.batch
        if args.model:
            model, preprocessing, metadata = _load_any_model(args.model)
            # The loss the model was trained with (cross-entropy for a classifier).
            loss = get_loss(args.loss or metadata.get("loss") or "mse")
            saved = _saved_sample(metadata, preprocessing, loss, args.batch or 1) \
                if x is None else None
            if saved is not None and args.target is None:
                rows, targets, note = saved
                x, target = rows[0], targets[0]
                if args.batch:
                    batch = (rows, targets)
        else:
            output = None if str(args.output_activation).lower() == "none" else args.output_activation
            model = seed_network(_sizes(args.sizes), args.activation, output, bias=args.bias,
                                 seed=args.seed)
            loss = get_loss(args.loss or "mse")
        if args.target is not None:
            target = _floats(args.target, "--target")
            if loss.takes_labels:
                target = target.astype(np.int64)
        result = explain(model, x, target, loss=loss, lr=args.lr, seed=args.seed, batch=batch)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        _error_line(f"jacnet explain: error: {exc}")
        return 2
    if note:
        result = replace(result, caveats=(note, *result.caveats))
    _emit(result, args)
    if args.figures:
        from jacnet.plot import plot_explanation
        for path in plot_explanation(result, args.figures):
            print(f"wrote {path}")
    return 0 if result.passed else 1


def add_inspect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``jacnet inspect MODEL`` to ``parser`` and return it."""
    parser.add_argument("model", metavar="MODEL", help="a saved model file")
    parser.add_argument("--data", metavar="DATA", help="a built-in data set name or a CSV/NPZ "
                        "file (default: standard-normal inputs)")
    parser.add_argument("--n-samples", type=int, default=32,
                        help="rows at which the Jacobians are taken (default: 32)")
    parser.add_argument("--loss", default=None, help="with --data: the loss for gradient norms "
                        "(default: mse for regression, cross_entropy for classification)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("auto", "rich", "text", "markdown"), default="auto")
    parser.add_argument("--markdown", metavar="PATH", help="also write the summary as Markdown")
    parser.add_argument("--figures", metavar="DIR",
                        help="write heat maps of ∂z/∂x and ∂z/∂θ of the first sample (PNG)")
    return parser


def inspect_command(args: argparse.Namespace) -> int:
    """Body of ``jacnet inspect``: 0 on success, 2 on bad input."""
    from jacnet.explain import inspect_model
    from jacnet.network import jacobian

    if args.n_samples < 1:
        print(f"jacnet inspect: error: --n-samples must be an integer >= 1; got {args.n_samples}.",
              file=sys.stderr)
        return 2
    try:
        model, preprocessing, metadata = _load_any_model(args.model)
        y = None
        loss: Any = args.loss or metadata.get("loss") or "mse"
        if args.data:
            from jacnet.data import load

            dataset = load(args.data, seed=args.seed)
            # The network sees data as it was trained on: scaled with the saved statistics.
            x_scaler, y_scaler = _scaler(preprocessing, "X"), _scaler(preprocessing, "y")
            X = dataset.X if x_scaler is None else x_scaler.transform(dataset.X)
            if dataset.task == "classification" and model.out_features > 1:
                y, loss = dataset.y, args.loss or metadata.get("loss") or "cross_entropy"
            elif dataset.task == "regression":
                y = dataset.y.reshape(len(dataset.y), -1)
                y = y if y_scaler is None else y_scaler.transform(y)
        else:
            X = np.random.default_rng(args.seed).normal(size=(args.n_samples, model.in_features))
        info = inspect_model(model, X, y, loss=loss, max_samples=args.n_samples)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        _error_line(f"jacnet inspect: error: {exc}")
        return 2
    _emit(info, args)
    if args.figures:
        from jacnet.plot import plot_jacobian

        out = Path(args.figures)
        X0 = info.model.check_input(X[:1])
        for wrt in ("input", "params"):
            path = out / f"jacobian_{wrt}.png"
            plot_jacobian(jacobian(info.model, X0, wrt=wrt, structured=True), path,
                          title=f"∂z/∂{'x' if wrt == 'input' else 'θ'} of the first sample")
            print(f"wrote {path}")
    return 0
