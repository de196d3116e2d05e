"""Data sets, file loaders, splitting and scaling: everything before the network.

Built-in data sets (:func:`load_dataset`) need no download: five are bundled with
scikit-learn (an optional dependency, imported only when one of them is asked for),
five are generated here with NumPy, and Fashion-MNIST is read from the Debian package
``dataset-fashion-mnist``. User data comes in as CSV (:func:`load_csv`), NPZ
(:func:`load_npz`) or IDX (:func:`load_idx`); :func:`load` picks the right one from a
name or a path, for the command line. :func:`open_rows` opens a CSV or NPZ file so that
chosen rows can be read without the rest (each process of a data-parallel run reads its
own), and :func:`split_rows` draws :func:`split`'s parts from the targets alone.

Every loader returns a :class:`Dataset`: ``X`` of shape (n_samples, n_features) in
float64 and ``y`` as int64 class codes (classification) or float64 targets
(regression). :func:`train_test_split` / :func:`split` divide it (stratified for
classification) and :class:`StandardScaler` standardises features using statistics of
the training rows only.
"""

from __future__ import annotations

import difflib
import gzip
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jacnet._readers import (
    CHUNK_ROWS,
    CsvReader,
    check_file,
    check_unchanged,
    column_floats,
    count_lines,
    file_stamp,
    npz_members,
    open_npz,
    parse_number,
    read_npz_arrays,
)
from jacnet._validation import check_array, check_choice, check_ndim, check_positive_int

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "Dataset",
    "FileRows",
    "Splits",
    "StandardScaler",
    "encode_labels",
    "list_datasets",
    "load",
    "load_csv",
    "load_dataset",
    "load_fashion_mnist",
    "load_idx",
    "load_npz",
    "one_hot",
    "open_rows",
    "split",
    "split_rows",
    "train_test_split",
]

TASKS = ("classification", "regression")
SeedLike = int | np.random.Generator | None

# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A table of samples: features ``X``, targets ``y`` and what they mean.

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
        Features, stored as float64. NaN and infinity are rejected.
    y : array-like, shape (n_samples,) or (n_samples, n_outputs)
        Classification: int64 class codes ``0 .. n_classes - 1``, shape (n_samples,).
        Regression: float64 targets, shape (n_samples,) or (n_samples, n_outputs).
    task : {"classification", "regression"}
    name : str, default "dataset"
    feature_names : list of str, optional
        One per column of ``X``; defaults to ``["x1", "x2", ...]``.
    target_names : list of str or None, optional
        Classification: the class names, ``target_names[code]``. Regression: the
        name of each output column, or None.
    description : str, default ""
        One line saying where the data come from.
    target_column : str or None, optional
        The name of the file column the targets were read from (CSV files).

    Examples
    --------
    >>> ds = Dataset([[0.0, 1.0], [1.0, 0.0]], [0, 1], "classification", name="toy")
    >>> ds
    Dataset(name='toy', task='classification', n_samples=2, n_features=2, n_classes=2)
    >>> ds.X.dtype, ds.y.dtype, ds.feature_names
    (dtype('float64'), dtype('int64'), ['x1', 'x2'])
    """

    X: np.ndarray
    y: np.ndarray
    task: str
    name: str = "dataset"
    feature_names: list[str] = field(default_factory=list)
    target_names: list[str] | None = None
    description: str = ""
    target_column: str | None = None

    def __post_init__(self) -> None:
        owner = f"Dataset {self.name!r}"
        task = check_choice(self.task, "task", TASKS)
        X = check_array(self.X, "X", ndim=2, dtype=np.float64, owner=owner)
        if task == "classification":
            y = _as_class_codes(self.y, "y", owner=owner)
        else:
            y = check_array(self.y, "y", ndim=(1, 2), dtype=np.float64, owner=owner)
        if y.shape[0] != X.shape[0]:
            raise ValueError(
                f"{owner}: X has {X.shape[0]} rows but y has {y.shape[0]}; "
                "they must describe the same samples."
            )
        feature_names = [str(n) for n in self.feature_names] or [f"x{i + 1}" for i in range(X.shape[1])]
        if len(feature_names) != X.shape[1]:
            raise ValueError(
                f"{owner}: got {len(feature_names)} feature_names for {X.shape[1]} "
                "columns of X; give one name per column."
            )
        target_names = None if self.target_names is None else [str(n) for n in self.target_names]
        if (
            task == "classification"
            and target_names is not None
            and y.size
            and int(y.max()) >= len(target_names)
        ):
            raise ValueError(
                f"{owner}: y holds class code {int(y.max())} but only "
                f"{len(target_names)} target_names were given."
            )
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "feature_names", feature_names)
        object.__setattr__(self, "target_names", target_names)

    @property
    def n_samples(self) -> int:
        """Number of rows of ``X``."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns of ``X``."""
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (classification only): ``len(target_names)`` when known.

        Raises
        ------
        AttributeError
            For a regression data set.
        """
        if self.task != "classification":
            raise AttributeError(
                f"n_classes is defined only for classification; {self.name!r} is a regression data set."
            )
        if self.target_names is not None:
            return len(self.target_names)
        return int(self.y.max()) + 1 if self.y.size else 0

    def subset(self, indices: Any) -> Dataset:
        """Return the rows ``indices`` (integer array or boolean mask) as a new Dataset.

        >>> load_dataset("xor", n_samples=8).subset([0, 1, 2]).n_samples
        3
        """
        index = np.asarray(indices)
        if index.dtype.kind not in "biu":
            raise TypeError(f"indices must be integers or a boolean mask; got dtype {index.dtype}.")
        return Dataset(
            self.X[index],
            self.y[index],
            self.task,
            name=self.name,
            feature_names=list(self.feature_names),
            target_names=None if self.target_names is None else list(self.target_names),
            description=self.description,
            target_column=self.target_column,
        )

    def __repr__(self) -> str:
        extra = f", n_classes={self.n_classes}" if self.task == "classification" else ""
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}{extra})"
        )


def _as_class_codes(labels: Any, name: str, *, owner: str | None = None) -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array of non-negative class codes, or raise."""
    prefix = f"{owner}: " if owner else ""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(
            f"{prefix}{name} must be a 1-D array of class labels of shape (n_samples,); "
            f"got shape {arr.shape}. For one-hot rows use y.argmax(axis=1)."
        )
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
            raise ValueError(
                f"{prefix}{name} must hold integer class labels; got {arr[bad].item()!r} at index "
                f"{bad}. Use encode_labels(y) to turn arbitrary labels into codes."
            )
    elif arr.dtype.kind not in "iu":
        raise TypeError(
            f"{prefix}{name} must hold integer class labels; got dtype {arr.dtype}. "
            "Use encode_labels(y) to turn text labels into integer codes."
        )
    codes = arr.astype(np.int64)
    if codes.size and codes.min() < 0:
        bad = int(np.argmin(codes))
        raise ValueError(
            f"{prefix}{name} must hold class codes >= 0; got {codes[bad]} at index {bad}. "
            "Use encode_labels(y) to map labels to 0 .. n_classes - 1."
        )
    return codes


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


def encode_labels(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary labels to integer codes ``0 .. n_classes - 1``.

    Parameters
    ----------
    y : array-like, shape (n_samples,)
        Labels of any sortable kind (strings, integers, floats).

    Returns
    -------
    codes : numpy.ndarray of int64, shape (n_samples,)
        ``classes[codes]`` gives ``y`` back.
    classes : numpy.ndarray, shape (n_classes,)
        The distinct labels, sorted.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D.

    Examples
    --------
    >>> codes, classes = encode_labels(["cat", "dog", "cat", "bird"])
    >>> codes
    array([1, 2, 1, 0])
    >>> classes.tolist()
    ['bird', 'cat', 'dog']
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels; got shape {arr.shape}.")
    classes, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), classes


def one_hot(y: Any, n_classes: int | None = None, *, dtype: Any = np.float64) -> np.ndarray:
    """Encode integer class codes as one-hot rows.

    Parameters
    ----------
    y : array-like of int, shape (n_samples,)
        Class codes in ``0 .. n_classes - 1`` (floats are accepted when integral).
    n_classes : int, optional
        Number of columns; defaults to ``max(y) + 1``.
    dtype : dtype, default float64

    Returns
    -------
    numpy.ndarray, shape (n_samples, n_classes)
        Row ``i`` is zero except for a one in column ``y[i]``; ``argmax(axis=1)``
        gives ``y`` back.

    Raises
    ------
    TypeError
        Non-integer labels (text): use :func:`encode_labels` first.
    ValueError
        Fractional, negative or too large labels, or ``y`` not 1-D.

    Examples
    --------
    >>> one_hot([0, 2, 1])
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]])
    >>> one_hot([0, 3], n_classes=3)
    Traceback (most recent call last):
    ...
    ValueError: y holds class 3 at index 1, outside 0 .. 2 for n_classes=3. ...
    """
    codes = _as_class_codes(y, "y")
    if n_classes is None:
        n_classes = int(codes.max()) + 1 if codes.size else 0
    else:
        n_classes = check_positive_int(n_classes, "n_classes")
    if codes.size and codes.max() >= n_classes:
        bad = int(np.argmax(codes))
        raise ValueError(
            f"y holds class {codes[bad]} at index {bad}, outside 0 .. {n_classes - 1} for "
            f"n_classes={n_classes}. Pass a larger n_classes or check the labels."
        )
    out = np.zeros((codes.shape[0], n_classes), dtype=dtype)
    out[np.arange(codes.shape[0]), codes] = 1
    return out


# --------------------------------------------------------------------------------------
# Built-in data sets
# --------------------------------------------------------------------------------------

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_SKLEARN_SETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")

_DESCRIPTIONS = {
    "digits": "8x8 images of handwritten digits: 1797 samples, 64 features, 10 classes (scikit-learn)",
    "iris": "iris flowers: 150 samples, 4 features, 3 classes (scikit-learn)",
    "wine": "wine cultivars: 178 samples, 13 features, 3 classes (scikit-learn)",
    "breast_cancer": "breast tumours, malignant or benign: 569 samples, 30 features, "
    "2 classes (scikit-learn)",
    "diabetes": "diabetes progression after one year: 442 samples, 10 features, "
    "regression (scikit-learn)",
    "xor": "4 Gaussian clusters at (±1, ±1) labelled by the XOR of their signs: 2 features, 2 classes",
    "sine": "y = sin(x) + noise, x uniform on [-π, π]: 1 feature, regression",
    "sinc": "y = sin(10x)/(10x) on 1000 evenly spaced points of [-1, 1], the "
    "Levenberg-Marquardt benchmark: 1 feature, regression",
    "spirals": "two interleaved spirals: 2 features, 2 classes",
    "moons": "two interleaving half circles: 2 features, 2 classes",
    "fashion-mnist": "Zalando clothing images, 28x28 grey levels in [0, 1]: the 60000 "
    "training samples, 784 features, 10 classes (Debian package dataset-fashion-mnist)",
}

# Generated sets: (default n_samples, default noise standard deviation).
_GENERATED_DEFAULTS = {
    "xor": (200, 0.2),
    "sine": (200, 0.1),
    "sinc": (1000, 0.0),
    "spirals": (200, 0.05),
    "moons": (200, 0.1),
}


def list_datasets() -> dict[str, str]:
    """Return the built-in data sets as ``{name: one-line description}``.

    Examples
    --------
    >>> sets = list_datasets()
    >>> sorted(sets)[:4]
    ['breast_cancer', 'diabetes', 'digits', 'fashion-mnist']
    >>> sets["sinc"]
    'y = sin(10x)/(10x) on 1000 evenly spaced points ...'
    """
    return dict(_DESCRIPTIONS)


def _canonical_name(name: str) -> str | None:
    """Return the registered spelling of ``name`` ("Fashion_MNIST" -> "fashion-mnist")."""
    key = name.strip().lower().replace("-", "_")
    for known in _DESCRIPTIONS:
        if known.replace("-", "_") == key:
            return known
    return None


def _unknown_name_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), list(_DESCRIPTIONS), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    names = ", ".join(_DESCRIPTIONS)
    return f"Unknown data set {name!r}.{hint} Built-in data sets: {names}."


def load_dataset(
    name: str,
    *,
    n_samples: int | None = None,
    noise: float | None = None,
    seed: SeedLike = 0,
) -> Dataset:
    """Load a built-in data set by name; nothing is downloaded.

    Parameters
    ----------
    name : str
        One of :func:`list_datasets` (case, ``-`` and ``_`` are ignored).
    n_samples : int, optional
        Generated sets: how many samples to draw (defaults: ``sinc`` 1000, the others
        200). Bundled sets: a random subset of this size (default: all rows).
    noise : float, optional
        Generated sets only: standard deviation of the Gaussian noise added to ``X``
        (classification) or ``y`` (regression). Defaults: xor 0.2, sine 0.1, sinc 0,
        spirals 0.05, moons 0.1.
    seed : int or numpy.random.Generator, default 0
        Same seed, same data.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Unknown name (with the closest valid one), bad ``n_samples`` or ``noise``.
    ImportError
        A scikit-learn set was asked for and scikit-learn is not installed.
    FileNotFoundError
        ``fashion-mnist`` without its files (see :func:`load_fashion_mnist`).

    Examples
    --------
    >>> ds = load_dataset("sinc")
    >>> ds.X.shape, ds.y.shape, ds.task
    ((1000, 1), (1000,), 'regression')
    >>> load_dataset("moons", n_samples=50, seed=1).n_classes
    2
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'iris'; got {name!r}.")
    canonical = _canonical_name(name)
    if canonical is None:
        raise ValueError(_unknown_name_message(name))
    rng = np.random.default_rng(seed)
    if canonical in _GENERATED_DEFAULTS:
        default_n, default_noise = _GENERATED_DEFAULTS[canonical]
        n = default_n if n_samples is None else check_positive_int(n_samples, "n_samples")
        if canonical in ("xor", "spirals", "moons") and n < 2:
            raise ValueError(f"n_samples must be >= 2 for {canonical!r} (two classes); got {n}.")
        sigma = default_noise if noise is None else _check_noise(noise)
        return _GENERATORS[canonical](n, sigma, rng)
    if noise is not None:
        raise ValueError(
            f"noise applies only to the generated data sets "
            f"({', '.join(_GENERATED_DEFAULTS)}); {canonical!r} is real data. Drop noise=."
        )
    dataset = _load_sklearn(canonical) if canonical in _SKLEARN_SETS else load_fashion_mnist()[0]
    if n_samples is None:
        return dataset
    n = check_positive_int(n_samples, "n_samples")
    if n > dataset.n_samples:
        raise ValueError(f"n_samples={n} is more than the {dataset.n_samples} samples of {canonical!r}.")
    return dataset.subset(np.sort(rng.permutation(dataset.n_samples)[:n]))


def _check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise must be a number >= 0; got {noise!r}.")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0; got {noise}.")
    return float(noise)


def _load_sklearn(name: str) -> Dataset:
    try:
        from sklearn import datasets as sk_datasets
    except ImportError as exc:
        raise ImportError(
            f"The {name!r} data set ships with scikit-learn, which is not installed. "
            "Install it with: pip install 'jacnet[sklearn]'"
        ) from exc
    bunch = getattr(sk_datasets, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float64)
    names = getattr(bunch, "feature_names", None)
    feature_names = [] if names is None else [str(n) for n in names]
    if name == "diabetes":
        return Dataset(
            X,
            np.asarray(bunch.target, dtype=np.float64),
            "regression",
            name=name,
            feature_names=feature_names,
            target_names=["disease progression"],
            description=_DESCRIPTIONS[name],
        )
    return Dataset(
        X,
        np.asarray(bunch.target, dtype=np.int64),
        "classification",
        name=name,
        feature_names=feature_names,
        target_names=[str(t) for t in bunch.target_names],
        description=_DESCRIPTIONS[name],
    )


def _make_xor(n: int, noise: float, rng: np.random.Generator) -> Dataset:
    centers = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    cluster = rng.permutation(np.arange(n) % 4)
    X = centers[cluster] + noise * rng.standard_normal((n, 2))
    y = (centers[cluster, 0] * centers[cluster, 1] < 0).astype(np.int64)
    return Dataset(
        X,
        y,
        "classification",
        name="xor",
        feature_names=["x1", "x2"],
        target_names=["same sign", "different sign"],
        description=_DESCRIPTIONS["xor"],
    )


def _make_sine(n: int, noise: float, rng: np.random.Generator) -> Dataset:
    x = rng.uniform(-np.pi, np.pi, n)
    y = np.sin(x) + noise * rng.standard_normal(n)
    return Dataset(
        x[:, None],
        y,
        "regression",
        name="sine",
        feature_names=["x"],
        target_names=["sin(x)"],
        description=_DESCRIPTIONS["sine"],
    )


def _make_sinc(n: int, noise: float, rng: np.random.Generator) -> Dataset:
    x = np.linspace(-1.0, 1.0, n)
    # np.sinc(t) = sin(πt)/(πt), so sin(10x)/(10x) is np.sinc(10x/π); it is 1 at x = 0.
    y = np.sinc(10.0 * x / np.pi)
    if noise:
        y = y + noise * rng.standard_normal(n)
    return Dataset(
        x[:, None],
        y,
        "regression",
        name="sinc",
        feature_names=["x"],
        target_names=["sinc(10x)"],
        description=_DESCRIPTIONS["sinc"],
    )


def _make_spirals(n: int, noise: float, rng: np.random.Generator) -> Dataset:
    n_first = n // 2
    y = np.concatenate([np.zeros(n_first, np.int64), np.ones(n - n_first, np.int64)])
    # sqrt spreads the points evenly along the arms; the offset keeps the centre clear.
    angle = (0.15 + 0.85 * np.sqrt(rng.uniform(size=n))) * 3.0 * np.pi
    radius = angle / (3.0 * np.pi)
    sign = np.where(y == 0, 1.0, -1.0)
    X = sign[:, None] * radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
    X = X + noise * rng.standard_normal((n, 2))
    order = rng.permutation(n)
    return Dataset(
        X[order],
        y[order],
        "classification",
        name="spirals",
        feature_names=["x1", "x2"],
        target_names=["spiral 0", "spiral 1"],
        description=_DESCRIPTIONS["spirals"],
    )


def _make_moons(n: int, noise: float, rng: np.random.Generator) -> Dataset:
    n_upper = n // 2
    n_lower = n - n_upper
    t_upper = np.linspace(0.0, np.pi, n_upper)
    t_lower = np.linspace(0.0, np.pi, n_lower)
    upper = np.column_stack([np.cos(t_upper), np.sin(t_upper)])
    lower = np.column_stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)])
    X = np.vstack([upper, lower]) + noise * rng.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n_upper, np.int64), np.ones(n_lower, np.int64)])
    order = rng.permutation(n)
    return Dataset(
        X[order],
        y[order],
        "classification",
        name="moons",
        feature_names=["x1", "x2"],
        target_names=["upper", "lower"],
        description=_DESCRIPTIONS["moons"],
    )


_GENERATORS = {
    "xor": _make_xor,
    "sine": _make_sine,
    "sinc": _make_sinc,
    "spirals": _make_spirals,
    "moons": _make_moons,
}

# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------


def load_csv(
    path: str | Path,
    target: str | int | None = None,
    *,
    delimiter: str = ",",
    task: str | None = None,
    header: bool = True,
) -> Dataset:
    """Read a CSV file into a :class:`Dataset`, block by block (memory ~ the arrays).

    Parameters
    ----------
    path : str or Path
        The file (``.csv`` or gzip-compressed ``.csv.gz``), UTF-8.
    target : str or int, optional
        The target column, by name or by index (negative counts from the end).
        Default: the last column.
    delimiter : str, default ","
    task : {"classification", "regression"}, optional
        Default: decided from the target column as a whole: regression when every
        cell is a finite number, classification when every cell is text (encoded with
        :func:`encode_labels`; the labels become ``target_names``). A column that mixes
        the two is refused with the offending cells listed. Pass ``"classification"``
        for numeric (or mixed) labels.
    header : bool, default True
        True: the first line names the columns, and a first line of numbers is
        refused (it looks like data). False: every line is data and the columns are
        named ``x1, x2, ...``.

    Returns
    -------
    Dataset
        ``X`` is every column but the target, float64; ``target_column`` names the target.

    Raises
    ------
    ValueError
        A missing header, unknown target column (the message lists the columns), a row
        of the wrong length, a feature cell that is not a finite number (the message
        names the column, the 1-based line number and the value), or a target column
        that mixes numbers with text or empty cells (the message lists them).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "pets.csv").write_text("weight,height,kind\\n4.0,25,cat\\n30,60,dog\\n")
    >>> ds = load_csv(folder / "pets.csv", target="kind")
    >>> ds.X, ds.y, ds.target_names, ds.task
    (array([[ 4., 25.],
           [30., 60.]]), array([0, 1]), ['cat', 'dog'], 'classification')
    """
    path = Path(path)
    if task is not None:
        task = check_choice(task, "task", TASKS)
    with CsvReader(path, delimiter=delimiter, header=header) as reader:
        columns = reader.columns
        if len(columns) < 2:
            raise ValueError(
                f"{path} has a single column {columns[0]!r}; a data set needs at least one "
                "feature column and a target column."
            )
        target_index = _target_index(columns, target, path)
        feature_index = [j for j in range(len(columns)) if j != target_index]
        feature_names = [columns[j] for j in feature_index]
        capacity = count_lines(reader.path)
        X = np.empty((capacity, len(feature_index)))
        target_cells = _TargetColumn(capacity)
        n = 0
        for cells, lines in reader.blocks():
            rows = len(lines)
            X[n:n + rows] = column_floats(cells[:, feature_index], lines, feature_names, path)
            target_cells.add(cells[:, target_index], lines, n)
            n += rows
    if n == 0:
        raise ValueError(f"{path} has a header but no data rows.")
    X.resize((n, len(feature_index)), refcheck=False)
    name = columns[target_index]
    y, task, target_names = target_cells.finish(n, task, f"{path}: the target column {name!r}")
    return Dataset(
        X,
        y,
        task,
        name=path.name.split(".")[0],
        feature_names=feature_names,
        target_names=[name] if task == "regression" else target_names,
        description=f"CSV file {path}, target column {name!r}",
        target_column=name,
    )


class _TargetColumn:
    """A CSV target column read block by block: numbers as float64, text as codes into a
    small label table, never one Python string per row. :meth:`finish` decides the task
    from the whole column."""

    _SHOWN = 8

    def __init__(self, capacity: int) -> None:
        self.values = np.full(capacity, np.nan)
        self.text_codes: np.ndarray | None = None  # -1 where the cell is a number
        self.labels: dict[str, int] = {}
        self.text_cells: list[tuple[int, str]] = []  # (line, cell), the first few
        self.number_cells: list[tuple[int, str]] = []
        self.n_text = 0
        self.empty_lines: list[int] = []
        self.n_empty = 0

    def add(self, cells: np.ndarray, lines: np.ndarray, start: int) -> None:
        rows = len(cells)
        if len(self.number_cells) < self._SHOWN:
            for i in range(min(rows, self._SHOWN)):
                if parse_number(str(cells[i])) is not None:
                    self.number_cells.append((int(lines[i]), str(cells[i])))
            del self.number_cells[self._SHOWN:]
        try:
            values = cells.astype(np.float64)
        except ValueError:
            values = None
        if values is not None and np.isfinite(values).all():
            self.values[start:start + rows] = values
            return
        for i, cell in enumerate(cells.tolist()):
            value = parse_number(cell)
            if value is not None:
                self.values[start + i] = value
                continue
            if not cell:
                self.n_empty += 1
                if len(self.empty_lines) < self._SHOWN:
                    self.empty_lines.append(int(lines[i]))
                continue
            if self.text_codes is None:
                self.text_codes = np.full(len(self.values), -1, dtype=np.int32)
            self.text_codes[start + i] = self.labels.setdefault(cell, len(self.labels))
            self.n_text += 1
            if len(self.text_cells) < self._SHOWN:
                self.text_cells.append((int(lines[i]), cell))

    @staticmethod
    def _cells(cells: list[tuple[int, str]], total: int) -> str:
        shown = ", ".join(f"line {line} {cell!r}" for line, cell in cells)
        return shown + (f" and {total - len(cells)} more" if total > len(cells) else "")

    def finish(self, n: int, task: str | None, where: str
               ) -> tuple[np.ndarray, str, list[str] | None]:
        if self.n_empty:
            lines = ", ".join(map(str, self.empty_lines))
            hidden = self.n_empty - len(self.empty_lines)
            more = f" and {hidden} more" if hidden else ""
            raise ValueError(f"{where} is empty on {self.n_empty} line(s): {lines}{more}. "
                             "Fill in those targets or drop those rows.")
        n_numbers = n - self.n_text
        if task is None and self.n_text and n_numbers:
            if n_numbers >= self.n_text:
                raise ValueError(
                    f"{where} holds numbers, but {self.n_text} of its {n} cells are not finite "
                    f"numbers: {self._cells(self.text_cells, self.n_text)}. Fix or drop those "
                    "rows; if the column holds class labels, pass task='classification' "
                    "(jacnet train --task classification).")
            raise ValueError(
                f"{where} holds text labels, but {n_numbers} of its {n} cells are numbers: "
                f"{self._cells(self.number_cells, n_numbers)}. Check those cells; to use every "
                "value as a class label, pass task='classification' (jacnet train --task "
                "classification).")
        if task is None:
            task = "classification" if self.n_text else "regression"
        values = self.values[:n]
        if task == "regression":
            if self.n_text:
                raise ValueError(
                    f"{where}: {self.n_text} of its {n} cells are not finite numbers, as a "
                    f"regression target must be: {self._cells(self.text_cells, self.n_text)}. "
                    "Fix or drop those rows, or pass task='classification' for class labels.")
            return values.copy(), task, None
        if not self.n_text:
            codes, classes = encode_labels(values)
            return codes, task, [_label_text(c) for c in classes.tolist()]
        # Text labels, possibly mixed with numbers (task='classification' was asked).
        assert self.text_codes is not None
        text_codes = self.text_codes[:n]
        numeric = text_codes < 0
        number_labels, number_codes = np.unique(values[numeric], return_inverse=True)
        number_names = [_label_text(v) for v in number_labels.tolist()]
        text_names = list(self.labels)
        names = sorted(set(number_names) | set(text_names))
        position = {name: k for k, name in enumerate(names)}
        y = np.empty(n, dtype=np.int64)
        y[~numeric] = np.array([position[t] for t in text_names], dtype=np.int64)[text_codes[~numeric]]
        if number_names:
            y[numeric] = np.array([position[t] for t in number_names],
                                  dtype=np.int64)[number_codes.reshape(-1)]
        return y, task, names


def _label_text(label: Any) -> str:
    """Name a class label: 2.0 -> "2", 0.5 -> "0.5", "cat" -> "cat"."""
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


def _target_index(header: list[str], target: str | int | None, path: Path) -> int:
    columns = ", ".join(repr(h) for h in header)
    if target is None:
        return len(header) - 1
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not -len(header) <= target < len(header):
            raise ValueError(
                f"target column index {target} is out of range for the {len(header)} "
                f"columns of {path}: {columns}."
            )
        return int(target) % len(header)
    if isinstance(target, str):
        matches = [j for j, h in enumerate(header) if h == target.strip()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(
                f"target column {target!r} appears {len(matches)} times in the header of "
                f"{path}; pass its index instead."
            )
        close = difflib.get_close_matches(target, header, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"target column {target!r} is not in {path}.{hint} Available columns: {columns}."
        )
    raise TypeError(f"target must be a column name or an integer index; got {target!r}.")


# --------------------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------------------


def load_npz(path: str | Path, *, task: str | None = None) -> Dataset:
    """Read ``X`` and ``y`` from a NumPy ``.npz`` archive (no pickle).

    Parameters
    ----------
    path : str or Path
        Written e.g. by ``np.savez(path, X=X, y=y)``. Optional string arrays
        ``feature_names`` and ``target_names`` are used when present.
    task : {"classification", "regression"}, optional
        Default: classification for integer, boolean or text ``y``, regression for
        floating-point ``y``.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Not an ``.npz`` archive, ``X`` or ``y`` missing (the message lists the keys
        present), object arrays (which would need pickle), or bad shapes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "data.npz"
    >>> np.savez(path, X=np.eye(3), y=np.array([0, 1, 1]))
    >>> load_npz(path)
    Dataset(name='data', task='classification', n_samples=3, n_features=3, n_classes=2)
    """
    path = Path(path)
    if task is not None:
        task = check_choice(task, "task", TASKS)
    with open_npz(path) as archive:
        keys = list(archive.files)
        missing = [k for k in ("X", "y") if k not in keys]
        if missing:
            raise ValueError(
                f"{path} must contain arrays named 'X' and 'y'; missing {missing}, found "
                f"{keys}. Save with np.savez(path, X=X, y=y)."
            )
        arrays = read_npz_arrays(archive, path)
    X = arrays["X"]
    _check_npz_shape(path, X.shape)
    y, task, target_names = _npz_targets(arrays["y"], task, arrays.get("target_names"))
    return Dataset(
        X,
        y,
        task,
        name=path.name.split(".")[0],
        feature_names=_string_list(arrays.get("feature_names")) or [],
        target_names=target_names,
        description=f"NPZ file {path}",
    )


def _check_npz_shape(path: Path, shape: tuple[int, ...]) -> None:
    """X's shape, before a Dataset is made of it: 2-D with at least one row (a header may
    claim 0 rows of 2**40 columns, which stores no bytes but would name every column)."""
    check_ndim(shape, "X", ndim=2, owner=f"Dataset {path.name.split('.')[0]!r}")
    if shape[0] == 0:
        raise ValueError(f"{path}: X has no rows (shape {shape}); a data set needs at least "
                         "one sample. Save with np.savez(path, X=X, y=y).")


def _npz_targets(y: np.ndarray, task: str | None, names: np.ndarray | None
                 ) -> tuple[np.ndarray, str, list[str] | None]:
    """An archive's ``y`` as a Dataset takes it: (y, task, target_names)."""
    text = y.dtype.kind in "US"
    if task is None:
        task = "classification" if text or y.dtype.kind in "biu" else "regression"
    target_names = _string_list(names)
    if task == "classification" and y.ndim == 1 and y.size and not _are_codes(y, target_names):
        # Labels such as {7, 2000} or {1, 2} become codes 0..K-1 (one output per class
        # present), and the original values are kept as the class names.
        y, classes = encode_labels(y)
        target_names = [str(c) for c in classes.tolist()]
    return y, task, target_names


def _are_codes(y: np.ndarray, target_names: list[str] | None) -> bool:
    """Whether integer labels already are class codes: 0..K-1 with every class present, or
    indices into the file's own ``target_names``."""
    if y.dtype.kind not in "biu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        return False
    present = np.unique(y)
    if target_names is not None:
        return bool(present.min() >= 0 and present.max() < len(target_names))
    return bool(np.array_equal(present, np.arange(present.size)))


def _string_list(array: np.ndarray | None) -> list[str] | None:
    if array is None or array.dtype.kind not in "US" or array.ndim != 1:
        return None
    return [str(s) for s in array.tolist()]


# --------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# --------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    The format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, each dimension
    as a big-endian uint32, then the values, big-endian, row-major. Compression is
    detected from the gzip magic bytes ``1f 8b``, not from the file name.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    numpy.ndarray
        Shape as recorded in the header, native byte order (uint8 for images and labels).

    Raises
    ------
    ValueError
        Corrupt gzip data, a bad magic number or type code, or a truncated file.

    Examples
    --------
    >>> import tempfile, pathlib, struct
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = path.write_bytes(struct.pack(">4BI", 0, 0, 0x08, 1, 3) + bytes([7, 2, 1]))
    >>> load_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise ValueError(
                f"{path} is a corrupt or truncated gzip file ({exc}); download or reinstall it."
            ) from exc
    if len(raw) < 4:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than an IDX header.")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: its magic number starts with bytes "
            f"{raw[0]:#04x} {raw[1]:#04x}, expected 0x00 0x00."
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"{c:#04x}" for c in _IDX_DTYPES)
        raise ValueError(f"{path} has unknown IDX type code {code:#04x}; expected one of {known}.")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(
            f"{path} is truncated: the header announces {ndim} dimensions but the file "
            f"ends after {len(raw)} bytes."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _IDX_DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        problem = "is truncated" if found < expected else "has trailing bytes"
        raise ValueError(
            f"{path} {problem}: shape {shape} of {dtype.newbyteorder('=').name} needs "
            f"{expected} data bytes, found {found}."
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _idx_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    target_names: list[str] | None,
    description: str,
    source: str,
) -> Dataset:
    if images.ndim < 2 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{source}: images of shape {images.shape} and labels of shape {labels.shape} "
            "do not match; expected (n, ...) and (n,)."
        )
    X = images.reshape(images.shape[0], -1)
    # Grey levels 0..255 become [0, 1], the scale the network's initialisation expects.
    X = X / 255.0 if X.dtype == np.uint8 else X.astype(np.float64)
    pixels = images.shape[1:]
    feature_names = (
        [f"pixel_{r}_{c}" for r in range(pixels[0]) for c in range(pixels[1])]
        if len(pixels) == 2
        else []
    )
    return Dataset(
        X,
        labels.astype(np.int64),
        "classification",
        name=name,
        feature_names=feature_names,
        target_names=target_names,
        description=description,
    )


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (root / f"{stem}.gz", root / stem, root / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(root: str | Path = FASHION_MNIST_ROOT) -> tuple[Dataset, Dataset]:
    """Load Fashion-MNIST's official training and test sets from IDX files.

    Parameters
    ----------
    root : str or Path, default "/usr/share/datasets/fashion-mnist"
        A folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
        ``.gz``), as installed by the Debian package ``dataset-fashion-mnist``.

    Returns
    -------
    train, test : Dataset
        60000 and 10000 samples; ``X`` has 784 float64 columns in [0, 1] (28x28
        images, row-major), ``y`` int64 codes of :data:`FASHION_MNIST_CLASSES`.

    Raises
    ------
    FileNotFoundError
        A file is missing; the message says how to install them.
    ValueError
        A file is corrupt or truncated, or images and labels disagree.

    Examples
    --------
    >>> load_fashion_mnist("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Fashion-MNIST not found in /nonexistent: missing train-images-idx3-ubyte...
    """
    folder = Path(root)
    stems = {
        (part, kind): f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        for part, prefix in (("train", "train"), ("test", "t10k"))
        for kind in ("images", "labels")
    }
    found = {key: _find_idx(folder, stem) for key, stem in stems.items()}
    missing = [stems[key] for key, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {folder}: missing {', '.join(missing)} (or .gz). "
            "Install the files with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            "or pass root= a folder holding the four IDX files."
        )
    parts = []
    for part in ("train", "test"):
        images_path, labels_path = found[(part, "images")], found[(part, "labels")]
        assert images_path is not None and labels_path is not None  # checked above
        images, labels = load_idx(images_path), load_idx(labels_path)
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{labels_path} holds label {labels.max()}; Fashion-MNIST has 10 classes.")
        parts.append(
            _idx_dataset(
                images,
                labels,
                name="fashion-mnist",
                target_names=list(FASHION_MNIST_CLASSES),
                description=f"Fashion-MNIST {part} set from {folder}",
                source=str(images_path),
            )
        )
    return parts[0], parts[1]


def _idx_partner(path: Path, kind: str, partner: str) -> Path | None:
    """Find the file next to ``path`` whose name has ``partner`` where it has ``kind``.

    The idx dimension digit and a ``.gz`` suffix may differ (images-idx3 / labels-idx1).
    """
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    escaped = re.escape(stem.replace(kind, partner))
    pattern = re.compile(re.sub(r"idx\d", r"idx\\d", escaped) + r"(\.gz)?")
    matches = sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    return matches[0] if matches else None


def _load_idx_pair(path: Path) -> Dataset:
    """Load an images/labels pair of IDX files given either one of them."""
    images_path: Path | None
    labels_path: Path | None
    if "images" in path.name:
        images_path, labels_path = path, _idx_partner(path, "images", "labels")
        missing = path.name.replace("images", "labels")
    elif "labels" in path.name:
        images_path, labels_path = _idx_partner(path, "labels", "images"), path
        missing = path.name.replace("labels", "images")
    else:
        raise ValueError(
            f"Cannot tell whether {path} holds images or labels. Name the pair like "
            "'train-images-idx3-ubyte.gz' and 'train-labels-idx1-ubyte.gz', or read each "
            "with load_idx() and build a Dataset yourself."
        )
    if images_path is None or labels_path is None:
        raise FileNotFoundError(
            f"{path} needs its partner file {missing} (any idx digit, .gz or not) in the "
            "same folder: an IDX data set is an images file and a labels file."
        )
    return _idx_dataset(
        load_idx(images_path),
        load_idx(labels_path),
        name=images_path.name.split(".")[0],
        target_names=None,
        description=f"IDX files {images_path} and {labels_path}",
        source=str(images_path),
    )


# --------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------

_IDX_NAME = re.compile(r".*idx\d-ubyte(\.gz)?$")


def load(
    spec: str | Path,
    *,
    target: str | int | None = None,
    task: str | None = None,
    seed: SeedLike = 0,
    header: bool = True,
) -> Dataset:
    """Load a data set from a built-in name or a file path (the CLI's ``--data``).

    Parameters
    ----------
    spec : str or Path
        A name from :func:`list_datasets`, or a path ending in ``.csv`` (or
        ``.csv.gz``), ``.npz``, ``.idx``, ``.gz`` or ``idx?-ubyte`` (an IDX images or
        labels file; its partner is found by swapping ``images`` and ``labels``).
    target : str or int, optional
        CSV only: the target column (default: the last).
    task : {"classification", "regression"}, optional
        CSV and NPZ only: override the inferred task.
    seed : int or numpy.random.Generator, default 0
        Built-in generated sets only.
    header : bool, default True
        CSV only: False when the file has no header line (see :func:`load_csv`).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Neither a known name nor a supported file type (the message lists both).
    FileNotFoundError
        A file path that does not exist (a folder is ``IsADirectoryError``).

    Examples
    --------
    >>> load("xor")
    Dataset(name='xor', task='classification', n_samples=200, n_features=2, n_classes=2)
    """
    text = str(spec)
    lower = text.lower()
    canonical = _canonical_name(text) if isinstance(spec, str) else None
    if canonical is not None and not Path(text).is_file():
        if target is not None or task is not None:
            raise ValueError(
                f"target= and task= apply only to files; {canonical!r} is a built-in data set."
            )
        return load_dataset(canonical, seed=seed)
    path = Path(text)
    is_csv = lower.endswith((".csv", ".csv.gz"))
    is_npz = lower.endswith(".npz")
    is_idx = lower.endswith((".idx", ".gz")) or bool(_IDX_NAME.match(lower))
    if lower.endswith(".npy"):
        raise ValueError(
            f"{path} is a .npy file (one array); data sets are .npz archives holding X and y: "
            "save them with np.savez(path, X=X, y=y)."
        )
    if not (is_csv or is_npz or is_idx):
        raise ValueError(
            f"{_unknown_name_message(text)} Or give a file ending in .csv, .npz, .idx or .gz."
        )
    path = check_file(path, "Data file")
    if is_csv:
        return load_csv(path, target, task=task, header=header)
    if not header:
        raise ValueError(f"header=False applies only to CSV files; {path} is not one.")
    if target is not None:
        raise ValueError(f"target= applies only to CSV files; {path} is not one.")
    if is_npz:
        return load_npz(path, task=task)
    if task not in (None, "classification"):
        raise ValueError(f"IDX files hold classification data; got task={task!r}.")
    return _load_idx_pair(path)


class FileRows:
    """A CSV or NPZ data file opened so that rows can be read selectively.

    Made by :func:`open_rows`. The targets are read whole on opening (``y``, one value
    per row: the split, stratified by class, and the label encoding need every row); the
    features are read only by :meth:`dataset`, for the rows asked for, in one pass over
    the file through a bounded buffer. A data-parallel run opens the file on every rank
    and reads each rank's own rows, so that no process holds the whole feature matrix.

    Attributes
    ----------
    n_samples : int
    task : str
    y : numpy.ndarray, shape (n_samples,) or (n_samples, n_outputs)
        Every row's target, as :class:`Dataset` holds it.
    """

    def __init__(self, path: Path, *, task: str, y: np.ndarray, feature_names: list[str],
                 target_names: list[str] | None, description: str,
                 target_column: str | None, read_rows: Any) -> None:
        self.path, self.task, self.y = path, task, y
        self.n_samples = int(y.shape[0])
        self.feature_names, self.target_names = feature_names, target_names
        self.description, self.target_column = description, target_column
        self.name = path.name.split(".")[0]
        self._read_rows = read_rows

    def dataset(self, index: Any) -> Dataset:
        """Rows ``index`` (integers, any order) as a Dataset: the rows of :func:`load`'s.

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.npz"
        >>> np.savez(path, X=np.arange(8.0).reshape(4, 2), y=np.array([0, 1, 0, 1]))
        >>> open_rows(path).dataset([3, 0]).X
        array([[6., 7.],
               [0., 1.]])
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return Dataset(self._read_rows(index), self.y[index], self.task, name=self.name,
                       feature_names=list(self.feature_names),
                       target_names=None if self.target_names is None else list(self.target_names),
                       description=self.description, target_column=self.target_column)


def open_rows(spec: str | Path, *, target: str | int | None = None, task: str | None = None,
              header: bool = True) -> FileRows | None:
    """Open a CSV or NPZ file as :func:`load` would read it, without reading its features.

    Returns None for what is not such a file (a built-in name, an IDX file): load it
    whole with :func:`load`. The arguments and the errors are :func:`load`'s; a bad
    feature cell of a CSV file is found when its row is read (:meth:`FileRows.dataset`).
    A CSV file is scanned once here (the target column) and once per
    :meth:`FileRows.dataset`; an NPZ member is streamed (decompressed as it goes when
    compressed).
    """
    text = str(spec)
    lower = text.lower()
    if _canonical_name(text) is not None and not Path(text).is_file():
        return None
    if lower.endswith((".csv", ".csv.gz")):
        return _csv_rows(check_file(Path(text), "Data file"), target, task, header)
    if not lower.endswith(".npz"):
        return None
    path = check_file(Path(text), "Data file")
    if not header:
        raise ValueError(f"header=False applies only to CSV files; {path} is not one.")
    if target is not None:
        raise ValueError(f"target= applies only to CSV files; {path} is not one.")
    return _npz_rows(path, None if task is None else check_choice(task, "task", TASKS))


def _npz_rows(path: Path, task: str | None) -> FileRows:
    members = npz_members(path)
    missing = [k for k in ("X", "y") if k not in members]
    if missing:
        raise ValueError(
            f"{path} must contain arrays named 'X' and 'y'; missing {missing}, found "
            f"{list(members)}. Save with np.savez(path, X=X, y=y)."
        )
    small = {key: members[key].read() for key in ("y", "feature_names", "target_names")
             if key in members}
    X_rows = members["X"]
    y, task, target_names = _npz_targets(small["y"], task, small.get("target_names"))
    owner = f"Dataset {path.name.split('.')[0]!r}"
    _check_npz_shape(path, X_rows.shape)  # the errors Dataset gives, without reading X
    if y.ndim == 0 or X_rows.shape[0] != y.shape[0]:
        raise ValueError(f"{owner}: X has {X_rows.shape[0]} rows but y has "
                         f"{y.shape[0] if y.ndim else 0}; they must describe the same samples.")
    names = _string_list(small.get("feature_names")) or []

    def read_rows(index: np.ndarray) -> np.ndarray:
        X = X_rows.take(index)
        try:
            check_array(X, "X", ndim=2, dtype=np.float64, owner=owner)
        except ValueError:  # name the first bad value by its row in the file, as load does
            bad = np.argwhere(~np.isfinite(X.astype(np.float64)))
            first = bad[np.lexsort((bad[:, 1], index[bad[:, 0]]))[0]]
            raise ValueError(
                f"{owner}: X contains NaN or infinity (first at index [{index[first[0]]}, "
                f"{first[1]}]: {X[tuple(first)]}). Remove or impute those values before "
                "training.") from None
        return X

    return FileRows(path, task=task, y=y, feature_names=names, target_names=target_names,
                    description=f"NPZ file {path}", target_column=None, read_rows=read_rows)


def _block_rows(n_columns: int) -> int:
    """Rows per CSV block of about 16k cells: a block's strings stay near a megabyte
    however wide the rows, so that what a process keeps is what dominates its memory."""
    return max(64, min(CHUNK_ROWS, (1 << 14) // max(n_columns, 1)))


def _csv_rows(path: Path, target: str | int | None, task: str | None,
              header: bool) -> FileRows:
    if task is not None:
        task = check_choice(task, "task", TASKS)
    stamp = file_stamp(path)  # the second pass, over the features, must read the same file
    with CsvReader(path, header=header) as reader:
        columns = reader.columns
        if len(columns) < 2:
            raise ValueError(
                f"{path} has a single column {columns[0]!r}; a data set needs at least one "
                "feature column and a target column."
            )
        reader.chunk_rows = chunk_rows = _block_rows(len(columns))
        target_index = _target_index(columns, target, path)
        target_cells = _TargetColumn(count_lines(reader.path))
        n = 0
        for cells, lines in reader.blocks():
            target_cells.add(cells[:, target_index], lines, n)
            n += len(lines)
    if n == 0:
        raise ValueError(f"{path} has a header but no data rows.")
    name = columns[target_index]
    y, task, target_names = target_cells.finish(n, task, f"{path}: the target column {name!r}")
    feature_index = [j for j in range(len(columns)) if j != target_index]
    feature_names = [columns[j] for j in feature_index]

    def read_rows(index: np.ndarray) -> np.ndarray:
        out = np.empty((index.size, len(feature_index)))
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        start = 0
        check_unchanged(path, stamp)
        with CsvReader(path, header=header, chunk_rows=chunk_rows) as again:
            if again.columns != columns:
                check_unchanged(path, None)  # rewritten within the clock's grain
            for cells, lines in again.blocks():
                stop = start + len(lines)
                low, high = np.searchsorted(wanted, [start, stop])
                if high > low:
                    keep = wanted[low:high] - start
                    out[order[low:high]] = column_floats(
                        cells[keep][:, feature_index], lines[keep], feature_names, path)
                start = stop
        check_unchanged(path, stamp if start == n else None)
        return out

    return FileRows(path, task=task, y=y, feature_names=feature_names,
                    target_names=[name] if task == "regression" else target_names,
                    description=f"CSV file {path}, target column {name!r}",
                    target_column=name, read_rows=read_rows)


# --------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------


class Splits(NamedTuple):
    """Train, validation and test parts of a Dataset; validation is None when not asked."""

    train: Dataset
    validation: Dataset | None
    test: Dataset


def _count(size: Any, n: int, name: str, *, allow_zero: bool = False) -> int:
    """Turn a fraction in (0, 1) or an absolute count into a number of samples."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a fraction in (0, 1) or a number of samples; got {size!r}.")
    if isinstance(size, (int, np.integer)):
        count = int(size)
        if count < 0 or (count == 0 and not allow_zero):
            raise ValueError(f"{name} must be a positive number of samples; got {size}.")
    else:
        low_ok = allow_zero and size == 0
        if not (low_ok or 0.0 < size < 1.0):
            raise ValueError(f"{name} must be a fraction in (0, 1); got {size}.")
        # round() first so that 0.07 * 100 = 7.000000000000001 does not become 8.
        count = max(math.ceil(round(float(size) * n, 9)), 1) if size > 0 else 0
    if count >= n:
        raise ValueError(f"{name}={size} takes {count} of the {n} samples, leaving none for training.")
    return count


def _split_indices(
    n: int, n_test: int, labels: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, test) row indices; stratified by ``labels`` when given."""
    if labels is None:
        order = rng.permutation(n)
        return order[n_test:], order[:n_test]
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    if counts.min() < 2:
        rare = classes[int(np.argmin(counts))].item()
        raise ValueError(
            f"Cannot stratify: class {rare!r} has only {counts.min()} member; each class "
            "needs at least 2 (one for training, one for testing). Pass stratify=False or "
            "collect more samples of that class."
        )
    n_classes = len(classes)
    if n_test < n_classes or n - n_test < n_classes:
        raise ValueError(
            f"Cannot stratify {n_classes} classes into {n - n_test} training and {n_test} "
            "test samples: each part needs at least one sample per class. Change test_size."
        )
    # Largest-remainder allocation: each class gets floor or ceil of its exact share.
    exact = counts * (n_test / n)
    per_class = np.floor(exact).astype(np.int64)
    shortfall = n_test - int(per_class.sum())
    per_class[np.argsort(-(exact - per_class), kind="stable")[:shortfall]] += 1
    train_parts, test_parts = [], []
    for code, k in enumerate(per_class):
        members = rng.permutation(np.flatnonzero(codes == code))
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train, test


def _stratify_labels(y: np.ndarray) -> np.ndarray:
    if y.ndim != 1:
        raise ValueError(
            f"stratify=True needs 1-D class labels; y has shape {y.shape}. "
            "For one-hot rows pass y.argmax(axis=1)."
        )
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError(
            "stratify=True needs class labels, but y holds fractional values (a regression "
            "target?). Pass stratify=None."
        )
    return y


def train_test_split(
    X: Any,
    y: Any,
    *,
    test_size: float | int = 0.2,
    stratify: bool | None = None,
    seed: SeedLike = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle and split arrays into training and test rows.

    Parameters
    ----------
    X : array-like, shape (n_samples, ...)
    y : array-like, shape (n_samples, ...)
    test_size : float or int, default 0.2
        A fraction in (0, 1) (rounded up) or a number of test samples.
    stratify : bool, optional
        True: every class of ``y`` keeps its proportion in both parts (to within one
        sample). None or False: a plain random split.
    seed : int or numpy.random.Generator, default 0

    Returns
    -------
    X_train, X_test, y_train, y_test : numpy.ndarray

    Raises
    ------
    ValueError
        Different numbers of rows, a bad ``test_size``, or (stratified) a class with
        fewer than 2 members.

    Examples
    --------
    >>> X = np.arange(20.0).reshape(10, 2)
    >>> y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, stratify=True)
    >>> X_train.shape, X_test.shape, np.bincount(y_test).tolist()
    ((6, 2), (4, 2), [2, 2])
    """
    X_arr, y_arr = np.asarray(X), np.asarray(y)
    if X_arr.ndim == 0 or y_arr.ndim == 0:
        raise ValueError("X and y must be arrays with one row per sample; got a scalar.")
    n = X_arr.shape[0]
    if y_arr.shape[0] != n:
        raise ValueError(f"X has {n} rows but y has {y_arr.shape[0]}; they must match.")
    n_test = _count(test_size, n, "test_size")
    labels = _stratify_labels(y_arr) if stratify else None
    train, test = _split_indices(n, n_test, labels, np.random.default_rng(seed))
    return X_arr[train], X_arr[test], y_arr[train], y_arr[test]


def split(
    dataset: Dataset,
    *,
    test_size: float | int = 0.2,
    validation_size: float | int = 0.0,
    stratify: bool | None = None,
    seed: SeedLike = 0,
) -> Splits:
    """Split a Dataset into training, validation and test parts.

    Parameters
    ----------
    dataset : Dataset
    test_size, validation_size : float or int
        Fractions of the *whole* data set in (0, 1), or numbers of samples.
        ``validation_size=0`` (the default) gives ``validation=None``.
    stratify : bool, optional
        Default: stratified for classification, plain for regression.
    seed : int or numpy.random.Generator, default 0

    Returns
    -------
    Splits
        ``(train, validation, test)``, a named tuple of Datasets.

    Examples
    --------
    >>> parts = split(load_dataset("moons", n_samples=100), test_size=0.2,
    ...               validation_size=0.1)
    >>> [part.n_samples for part in parts]
    [70, 10, 20]
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            "dataset must be a Dataset (from load_dataset, load_csv, ...); "
            f"got {type(dataset).__name__}."
        )
    rest, validation, test = split_rows(dataset.y, dataset.task, test_size=test_size,
                                        validation_size=validation_size, stratify=stratify,
                                        seed=seed)
    return Splits(dataset.subset(rest),
                  None if validation is None else dataset.subset(validation),
                  dataset.subset(test))


def split_rows(
    y: np.ndarray,
    task: str,
    *,
    test_size: float | int = 0.2,
    validation_size: float | int = 0.0,
    stratify: bool | None = None,
    seed: SeedLike = 0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The row indices of :func:`split`'s parts, from the targets alone.

    Returns ``(train, validation, test)`` index arrays (``validation`` None when not
    asked), in the order :func:`split` takes the rows: ``split(ds).train`` is
    ``ds.subset(train)``. The split depends only on the number of rows, the seed and
    (when stratified) the class labels, so that processes that each hold some of the
    rows can agree on it.

    >>> train, _, test = split_rows(np.zeros(10), "regression", test_size=0.3)
    >>> len(train), len(test), sorted([*train, *test]) == list(range(10))
    (7, 3, True)
    """
    n = len(y)
    n_test = _count(test_size, n, "test_size")
    n_val = _count(validation_size, n, "validation_size", allow_zero=True)
    if n_test + n_val >= n:
        raise ValueError(
            f"test_size={test_size} and validation_size={validation_size} take "
            f"{n_test + n_val} of {n} samples, leaving none for training."
        )
    if stratify is None:
        stratify = task == "classification"
    rng = np.random.default_rng(seed)
    labels = _stratify_labels(y) if stratify else None
    rest, test = _split_indices(n, n_test, labels, rng)
    validation = None
    if n_val:
        rest_labels = None if labels is None else labels[rest]
        train_pos, val_pos = _split_indices(len(rest), n_val, rest_labels, rng)
        rest, validation = rest[train_pos], rest[val_pos]
    return rest, validation, test


# --------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------


def _check_scaled(out: np.ndarray, method: str) -> None:
    if not np.isfinite(out).all():
        row, column = (int(i) for i in np.argwhere(~np.isfinite(out))[0])
        raise ValueError(
            f"StandardScaler.{method}: the value at row {row}, column {column} overflows "
            "float64 once scaled (it lies far outside the range the scaler was fitted on); "
            "check that row, or rescale that column."
        )


class StandardScaler:
    """Standardise columns to zero mean and unit variance: ``(X - mean_) / scale_``.

    Fit it on the training rows only and apply the same transform to validation and
    test rows, so that no information leaks from them. A constant column gets
    ``scale_ = 1`` (it is centred, never divided by zero).

    Attributes
    ----------
    mean_ : numpy.ndarray, shape (n_features,)
    scale_ : numpy.ndarray, shape (n_features,)
        Population standard deviation (ddof=0), 1 for constant columns.
    n_features_in_ : int

    Examples
    --------
    >>> scaler = StandardScaler().fit([[0.0, 5.0], [2.0, 5.0]])
    >>> scaler.mean_, scaler.scale_
    (array([1., 5.]), array([1., 1.]))
    >>> scaler.transform([[4.0, 5.0]])
    array([[3., 0.]])
    >>> scaler.inverse_transform([[3.0, 0.0]])
    array([[4., 5.]])
    """

    mean_: np.ndarray
    scale_: np.ndarray
    n_features_in_: int

    def fit(self, X: Any) -> StandardScaler:
        """Learn ``mean_`` and ``scale_`` from ``X`` of shape (n_samples, n_features)."""
        arr = check_array(X, "X", ndim=2, dtype=np.float64, owner="StandardScaler.fit")
        if arr.shape[0] == 0:
            raise ValueError("StandardScaler.fit: X has no rows; fit on the training data.")
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = arr.mean(axis=0), arr.std(axis=0)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            # Values near the float64 maximum overflow the sums: take the statistics of
            # the columns divided by their largest magnitude, then scale them back.
            peak = np.abs(arr).max(axis=0)
            peak = np.where(peak > 0, peak, 1.0)
            scaled = arr / peak
            mean, std = scaled.mean(axis=0) * peak, scaled.std(axis=0) * peak
            if not np.isfinite(std).all():
                column = int(np.flatnonzero(~np.isfinite(std))[0])
                raise ValueError(
                    f"StandardScaler.fit: column {column} spans more than the float64 range "
                    "(its standard deviation overflows); rescale that column first."
                )
        return self._set(mean, std)

    def _set(self, mean: np.ndarray, std: np.ndarray) -> StandardScaler:
        self.mean_ = mean
        # Relative tolerance: a column of identical large values has std ~ 1e-13, not 0.
        constant = std <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(self.mean_), 1.0)
        self.scale_ = np.where(constant, 1.0, std)
        self.n_features_in_ = int(mean.shape[0])
        return self

    @staticmethod
    def moments(X: Any) -> np.ndarray:
        """Column statistics of the rows of ``X`` that merge: for :meth:`from_moments`.

        Returns
        -------
        numpy.ndarray, shape (5, n_features)
            The row count; an exponent e per column with every ``|x| < 2**e``; the mean and
            the sum of squared deviations (M2) of ``x / 2**e``; and what the rounded mean
            misses of the exact one (the mean of the deviations from it), so that two
            parts' means differ by their exact difference, not by eps·|mean|. Dividing
            by a power of two is exact and keeps every sum far from overflow.

        >>> StandardScaler.moments([[1.0], [3.0]])[:, 0].tolist()
        [2.0, 2.0, 0.5, 0.125, 0.0]
        """
        arr = check_array(X, "X", ndim=2, dtype=np.float64, owner="StandardScaler.moments")
        out = np.zeros((5, arr.shape[1]))
        out[0] = arr.shape[0]
        if arr.shape[0]:
            exponent = np.frexp(np.abs(arr).max(axis=0))[1]
            scaled = np.ldexp(arr, -exponent)
            mean = scaled.mean(axis=0)
            deviation = scaled - mean
            residual = deviation.mean(axis=0)
            out[1], out[2], out[4] = exponent, mean, residual
            out[3] = (deviation ** 2).sum(axis=0) - arr.shape[0] * residual ** 2
        return out

    @classmethod
    def from_moments(cls, parts: Any) -> StandardScaler:
        """The scaler of the rows of every part together, from each part's :meth:`moments`.

        The parts are merged in the order given with the pairwise update of Chan, Golub and
        LeVeque (1979): for parts a and b, n = nₐ + n_b, δ = mean_b − meanₐ,
        mean = meanₐ + δ·n_b/n, M2 = M2ₐ + M2_b + δ²·nₐ·n_b/n, each part first brought to the
        larger of the two exponents (exactly: powers of two). Each mean is carried as its
        rounded value and the residual that it misses, so that δ is the difference of the
        exact means: a column whose spread is small beside its mean (offset 10⁴, spread
        10⁻²) keeps the accuracy of :meth:`fit`'s two passes. The result differs from
        :meth:`fit` on the stacked rows only by the order of the sums (a few units in the
        last place). Every process that merges the same list gets the same bits.

        >>> X = np.array([[1.0, 10.0], [2.0, 10.0], [4.0, 10.0], [8.0, 10.0]])
        >>> merged = StandardScaler.from_moments([StandardScaler.moments(X[:1]),
        ...                                      StandardScaler.moments(X[1:])])
        >>> np.allclose(merged.mean_, X.mean(axis=0)), np.allclose(merged.scale_, [X[:, 0].std(), 1])
        (True, True)
        """
        arrays = [np.asarray(part, dtype=np.float64) for part in parts]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1 or any(len(shape) != 2 or shape[0] != 5 for shape in shapes):
            raise ValueError("StandardScaler.from_moments: every part must be a (5, n_columns) "
                             "array from StandardScaler.moments of the same columns; got shapes "
                             f"{sorted(shapes)}.")
        kept = [a for a in arrays if a[0, 0] > 0]
        if not kept:
            raise ValueError("StandardScaler.from_moments: no part has rows; fit on the "
                             "training data.")
        n, exponent, mean, m2, residual = (row.copy() for row in kept[0])
        for part in kept[1:]:
            n_b, e_b, mean_b, m2_b, residual_b = part
            top = np.maximum(exponent, e_b)
            shift, shift_b = (exponent - top).astype(np.int64), (e_b - top).astype(np.int64)
            mean, residual, m2 = (np.ldexp(mean, shift), np.ldexp(residual, shift),
                                  np.ldexp(m2, 2 * shift))
            mean_b, residual_b, m2_b = (np.ldexp(mean_b, shift_b), np.ldexp(residual_b, shift_b),
                                        np.ldexp(m2_b, 2 * shift_b))
            total = n + n_b
            # Close means subtract exactly; their residuals carry the rest of δ.
            delta = (mean_b - mean) + (residual_b - residual)
            step = delta * (n_b / total)
            moved = mean + step
            residual = residual + (step - (moved - mean))  # what rounding `moved` lost
            mean = moved
            m2 = m2 + m2_b + delta * delta * (n * n_b / total)
            n, exponent = total, top
        e = exponent.astype(np.int64)
        with np.errstate(over="ignore"):
            std = np.ldexp(np.sqrt(np.maximum(m2, 0.0) / n), e)
        if not np.isfinite(std).all():
            column = int(np.flatnonzero(~np.isfinite(std))[0])
            raise ValueError(
                f"StandardScaler.from_moments: column {column} spans more than the float64 "
                "range (its standard deviation overflows); rescale that column first.")
        return cls()._set(np.ldexp(mean + residual, e), std)

    def _checked(self, X: Any, method: str) -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise RuntimeError(f"StandardScaler.{method} called before fit; call fit(X_train) first.")
        arr = check_array(
            X, "X", ndim=2, n_columns=self.n_features_in_, owner=f"StandardScaler.{method}"
        )
        return arr

    def transform(self, X: Any) -> np.ndarray:
        """Return ``(X - mean_) / scale_``; float32 input stays float32, else float64."""
        arr = self._checked(X, "transform")
        with np.errstate(over="ignore", invalid="ignore"):
            out = (arr - self.mean_) / self.scale_
            if not np.isfinite(out).all():  # x - mean overflows near the float maximum
                out = arr / self.scale_ - self.mean_ / self.scale_
        _check_scaled(out, "transform")
        return out.astype(arr.dtype) if arr.dtype == np.float32 else out

    def fit_transform(self, X: Any) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Undo :meth:`transform`: ``X * scale_ + mean_``."""
        arr = self._checked(X, "inverse_transform")
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr * self.scale_ + self.mean_
            if not np.isfinite(out).all():  # the product overflows before the sum returns
                out = (arr + self.mean_ / self.scale_) * self.scale_
        _check_scaled(out, "inverse_transform")
        return out.astype(arr.dtype) if arr.dtype == np.float32 else out

    def to_dict(self) -> dict[str, np.ndarray]:
        """Return the fitted state as plain arrays (``{"mean": ..., "scale": ...}``).

        >>> state = StandardScaler().fit([[1.0], [3.0]]).to_dict()
        >>> StandardScaler.from_dict(state).transform([[3.0]])
        array([[1.]])
        """
        if not hasattr(self, "mean_"):
            raise RuntimeError("StandardScaler.to_dict called before fit; nothing to save.")
        return {"mean": self.mean_.copy(), "scale": self.scale_.copy()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StandardScaler:
        """Rebuild a fitted scaler from :meth:`to_dict`'s output."""
        missing = [k for k in ("mean", "scale") if k not in state]
        if missing:
            raise ValueError(f"StandardScaler.from_dict: missing {missing}; got keys {sorted(state)}.")
        mean = check_array(state["mean"], "mean", ndim=1, dtype=np.float64)
        scale = check_array(state["scale"], "scale", ndim=1, dtype=np.float64)
        if mean.shape != scale.shape:
            raise ValueError(
                f"StandardScaler.from_dict: mean has shape {mean.shape} but scale has {scale.shape}."
            )
        if (scale <= 0).any():
            raise ValueError("StandardScaler.from_dict: every scale must be > 0.")
        scaler = cls()
        scaler.mean_, scaler.scale_ = mean.copy(), scale.copy()
        scaler.n_features_in_ = int(mean.shape[0])
        return scaler

    def __repr__(self) -> str:
        fitted = f"n_features_in_={self.n_features_in_}" if hasattr(self, "mean_") else "unfitted"
        return f"StandardScaler({fitted})"
