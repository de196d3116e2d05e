"""Tests for jacnet.data: built-in sets, loaders, splitting, scaling, label helpers."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jacnet import data
from jacnet.data import (
    FASHION_MNIST_CLASSES,
    Dataset,
    StandardScaler,
    encode_labels,
    list_datasets,
    load,
    load_csv,
    load_dataset,
    load_fashion_mnist,
    load_idx,
    load_npz,
    one_hot,
    split,
    train_test_split,
)

# ----------------------------------------------------------------------------- helpers

_IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` in the IDX format, written independently of the loader."""
    header = struct.pack(">BBBB", 0, 0, _IDX_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_csv(tmp_path: Path, text: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SKLEARN_SETS = {
    # name: (task, n_samples, n_features, n_classes or None)
    "digits": ("classification", 1797, 64, 10),
    "iris": ("classification", 150, 4, 3),
    "wine": ("classification", 178, 13, 3),
    "breast_cancer": ("classification", 569, 30, 2),
    "diabetes": ("regression", 442, 10, None),
}
GENERATED_SETS = {
    "xor": ("classification", 200, 2, 2),
    "sine": ("regression", 200, 1, None),
    "sinc": ("regression", 1000, 1, None),
    "spirals": ("classification", 200, 2, 2),
    "moons": ("classification", 200, 2, 2),
}


# ----------------------------------------------------------------------------- import


def test_import_is_light_and_does_not_import_sklearn():
    code = "import sys, jacnet.data; print('sklearn' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ----------------------------------------------------------------------------- built-in sets


def test_list_datasets_names_every_set_with_a_description():
    sets = list_datasets()
    assert set(sets) == set(SKLEARN_SETS) | set(GENERATED_SETS) | {"fashion-mnist"}
    assert all(isinstance(text, str) and text and "\n" not in text for text in sets.values())


def _check_dataset(ds: Dataset, name: str, expected: tuple) -> None:
    task, n_samples, n_features, n_classes = expected
    assert ds.name == name
    assert ds.task == task
    assert ds.X.shape == (n_samples, n_features) and ds.X.dtype == np.float64
    assert len(ds.feature_names) == n_features
    assert ds.description
    assert np.isfinite(ds.X).all()
    if task == "classification":
        assert ds.y.shape == (n_samples,) and ds.y.dtype == np.int64
        assert ds.n_classes == n_classes == len(ds.target_names)
        assert set(np.unique(ds.y)) == set(range(n_classes))
    else:
        assert ds.y.shape == (n_samples,) and ds.y.dtype == np.float64
        with pytest.raises(AttributeError, match="only for classification"):
            _ = ds.n_classes


@pytest.mark.parametrize("name", sorted(GENERATED_SETS))
def test_generated_sets_shapes_dtypes_tasks(name):
    _check_dataset(load_dataset(name), name, GENERATED_SETS[name])


@pytest.mark.parametrize("name", sorted(SKLEARN_SETS))
def test_sklearn_sets_shapes_dtypes_tasks(name):
    pytest.importorskip("sklearn")
    _check_dataset(load_dataset(name), name, SKLEARN_SETS[name])


def test_sklearn_set_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'jacnet\[sklearn\]'"):
        load_dataset("iris")
    # Generated sets never need it.
    assert load_dataset("xor").n_samples == 200


@pytest.mark.parametrize("name", sorted(GENERATED_SETS))
def test_generated_sets_are_deterministic_by_seed(name):
    first = load_dataset(name, noise=0.1, seed=3)
    again = load_dataset(name, noise=0.1, seed=3)
    other = load_dataset(name, noise=0.1, seed=4)
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_array_equal(first.y, again.y)
    assert not (np.array_equal(first.X, other.X) and np.array_equal(first.y, other.y))


@pytest.mark.parametrize("name", sorted(GENERATED_SETS))
def test_generated_sets_respect_n_samples(name):
    ds = load_dataset(name, n_samples=37, seed=1)
    assert ds.n_samples == 37 and ds.y.shape == (37,)


@pytest.mark.parametrize("name", ["xor", "spirals", "moons"])
def test_generated_classification_sets_are_balanced(name):
    assert np.bincount(load_dataset(name, n_samples=101).y).tolist() in ([50, 51], [51, 50])


def test_xor_labels_are_the_xor_of_the_signs():
    ds = load_dataset("xor", n_samples=400, noise=0.1, seed=2)
    np.testing.assert_array_equal(ds.y, (ds.X[:, 0] * ds.X[:, 1] < 0).astype(np.int64))
    # Four clusters of equal size around (±1, ±1).
    quadrants = np.sign(ds.X).astype(int)
    _, counts = np.unique(quadrants, axis=0, return_counts=True)
    assert counts.tolist() == [100, 100, 100, 100]


def test_sinc_is_sin10x_over_10x_with_one_at_zero():
    ds = load_dataset("sinc", n_samples=1001)
    x = ds.X[:, 0]
    assert x.min() == -1.0 and x.max() == 1.0
    assert ds.y[500] == 1.0 and x[500] == 0.0
    nonzero = x != 0
    np.testing.assert_allclose(ds.y[nonzero], np.sin(10 * x[nonzero]) / (10 * x[nonzero]), rtol=1e-12)
    # Default: noise-free and 1000 points.
    default = load_dataset("sinc")
    np.testing.assert_allclose(default.y, np.sinc(10 * default.X[:, 0] / np.pi))


def test_sine_is_sin_plus_noise_of_the_requested_size():
    ds = load_dataset("sine", n_samples=4000, noise=0.2, seed=0)
    x = ds.X[:, 0]
    assert -np.pi <= x.min() and x.max() <= np.pi
    residual = ds.y - np.sin(x)
    assert abs(residual.std() - 0.2) < 0.01
    clean = load_dataset("sine", noise=0)
    np.testing.assert_allclose(clean.y, np.sin(clean.X[:, 0]))


def test_moons_without_noise_lie_on_two_half_circles():
    ds = load_dataset("moons", n_samples=100, noise=0)
    upper, lower = ds.X[ds.y == 0], ds.X[ds.y == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0)
    assert (upper[:, 1] >= -1e-12).all() and (lower[:, 1] <= 0.5 + 1e-12).all()


def test_spirals_are_point_reflections_of_each_other():
    ds = load_dataset("spirals", n_samples=400, noise=0)
    radius = np.hypot(ds.X[:, 0], ds.X[:, 1])
    assert radius.max() <= 1.0 + 1e-12 and radius.min() > 0.1
    # Each class is the other turned by 180 degrees: their mean points are opposite.
    a, b = ds.X[ds.y == 0], ds.X[ds.y == 1]
    assert np.linalg.norm(a.mean(0) + b.mean(0)) < 0.2


def test_load_dataset_accepts_case_and_dash_variants():
    assert load_dataset("XOR").name == "xor"
    pytest.importorskip("sklearn")
    assert load_dataset("Breast-Cancer").name == "breast_cancer"


def test_bundled_set_subset_by_n_samples():
    pytest.importorskip("sklearn")
    ds = load_dataset("iris", n_samples=30, seed=5)
    assert ds.n_samples == 30 and ds.n_classes == 3
    np.testing.assert_array_equal(ds.X, load_dataset("iris", n_samples=30, seed=5).X)
    assert not np.array_equal(ds.X, load_dataset("iris", n_samples=30, seed=6).X)
    # A random subset of the rows (all three classes), not the first 30 (all setosa).
    assert len(np.unique(ds.y)) == 3
    with pytest.raises(ValueError, match="more than the 150 samples"):
        load_dataset("iris", n_samples=151)


def test_unknown_name_lists_names_and_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Did you mean 'moons'\?.*iris.*sinc"):
        load_dataset("moon")
    with pytest.raises(TypeError, match="must be a string"):
        load_dataset(3)  # type: ignore[arg-type]


def test_bad_n_samples_and_noise():
    with pytest.raises(ValueError, match="noise applies only to the generated"):
        load_dataset("iris", noise=0.1)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        load_dataset("xor", noise=-1.0)
    with pytest.raises(TypeError, match="noise must be a number"):
        load_dataset("xor", noise="lots")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        load_dataset("sine", n_samples=0)
    with pytest.raises(ValueError, match="n_samples must be >= 2 for 'moons'"):
        load_dataset("moons", n_samples=1)


# ----------------------------------------------------------------------------- Dataset


def test_dataset_validates_its_fields():
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        Dataset(np.zeros((3, 2)), [0, 1], "classification")
    with pytest.raises(ValueError, match="got 1 feature_names for 2 columns"):
        Dataset(np.zeros((2, 2)), [0, 1], "classification", feature_names=["a"])
    with pytest.raises(ValueError, match=r"integer class labels; got 0\.5 at index 1"):
        Dataset(np.zeros((2, 2)), [0.0, 0.5], "classification")
    with pytest.raises(ValueError, match="class codes >= 0"):
        Dataset(np.zeros((2, 2)), [0, -1], "classification")
    with pytest.raises(ValueError, match="class code 2 but only 2 target_names"):
        Dataset(np.zeros((2, 2)), [0, 2], "classification", target_names=["a", "b"])
    with pytest.raises(ValueError, match="task must be one of"):
        Dataset(np.zeros((2, 2)), [0, 1], "clustering")
    with pytest.raises(ValueError, match="NaN or infinity"):
        Dataset(np.array([[np.nan], [1.0]]), [0.0, 1.0], "regression")


def test_dataset_subset_keeps_metadata():
    ds = load_dataset("moons", n_samples=20)
    part = ds.subset(ds.y == 1)
    assert part.n_samples == 10 and (part.y == 1).all()
    assert part.target_names == ds.target_names and part.feature_names == ds.feature_names
    with pytest.raises(TypeError, match="integers or a boolean mask"):
        ds.subset([0.5])


# ----------------------------------------------------------------------------- labels


def test_encode_labels_round_trip():
    labels = np.array(["b", "a", "c", "a"])
    codes, classes = encode_labels(labels)
    assert codes.dtype == np.int64 and codes.tolist() == [1, 0, 2, 0]
    np.testing.assert_array_equal(classes[codes], labels)
    with pytest.raises(ValueError, match="1-D array"):
        encode_labels([[1, 2]])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40))
def test_one_hot_round_trip(labels):
    encoded = one_hot(labels)
    assert encoded.shape == (len(labels), max(labels) + 1)
    assert (encoded.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(encoded.argmax(axis=1), labels)


def test_one_hot_n_classes_dtype_and_errors():
    assert one_hot([1], n_classes=4, dtype=np.float32).tolist() == [[0, 1, 0, 0]]
    assert one_hot([0.0, 2.0]).shape == (2, 3)  # integral floats are fine
    with pytest.raises(ValueError, match=r"class 5 at index 2, outside 0 \.\. 2"):
        one_hot([0, 1, 5], n_classes=3)
    with pytest.raises(ValueError, match="class codes >= 0; got -1 at index 0"):
        one_hot([-1, 0])
    with pytest.raises(ValueError, match=r"integer class labels; got 1\.5 at index 1"):
        one_hot([0, 1.5])
    with pytest.raises(TypeError, match="encode_labels"):
        one_hot(["cat", "dog"])
    with pytest.raises(ValueError, match="1-D array of class labels"):
        one_hot([[0, 1]])


# ----------------------------------------------------------------------------- splitting


def test_train_test_split_shapes_cover_and_determinism():
    X = np.arange(50.0).reshape(25, 2)
    y = np.arange(25)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, seed=1)
    assert X_train.shape == (20, 2) and X_test.shape == (5, 2)
    np.testing.assert_array_equal(X_train[:, 0] / 2, y_train)  # rows stay with labels
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(25))
    again = train_test_split(X, y, test_size=0.2, seed=1)
    np.testing.assert_array_equal(again[3], y_test)
    other = train_test_split(X, y, test_size=0.2, seed=2)
    assert not np.array_equal(other[3], y_test)
    assert train_test_split(X, y, test_size=7)[1].shape == (7, 2)
    # 0.07 * 100 is 7.000000000000001 in floating point; it must still mean 7.
    assert train_test_split(np.zeros((100, 1)), np.zeros(100), test_size=0.07)[1].shape == (7, 1)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(2, 30), min_size=2, max_size=5),
    test_size=st.floats(0.1, 0.6),
    seed=st.integers(0, 1000),
)
def test_stratified_split_keeps_every_class_proportion(counts, test_size, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    n = y.size
    n_test = int(np.ceil(round(test_size * n, 9)))
    if n_test < len(counts) or n - n_test < len(counts):
        with pytest.raises(ValueError, match="Cannot stratify"):
            train_test_split(y[:, None], y, test_size=test_size, stratify=True, seed=seed)
        return
    _, _, y_train, y_test = train_test_split(
        y[:, None], y, test_size=test_size, stratify=True, seed=seed
    )
    assert y_test.size == n_test
    exact = np.array(counts) * n_test / n
    got = np.bincount(y_test, minlength=len(counts))
    assert (np.abs(got - exact) < 1).all(), (got, exact)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=len(counts)) + got, counts)


def test_stratified_split_errors():
    y = np.array([0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="class 1 has only 1 member"):
        train_test_split(np.zeros((5, 1)), y, stratify=True)
    with pytest.raises(ValueError, match="fractional values"):
        train_test_split(np.zeros((3, 1)), [0.1, 0.2, 0.3], stratify=True)
    with pytest.raises(ValueError, match="1-D class labels"):
        train_test_split(np.zeros((3, 1)), np.eye(3), stratify=True)


@pytest.mark.parametrize(
    ("test_size", "error", "match"),
    [
        (0.0, ValueError, r"fraction in \(0, 1\); got 0.0"),
        (1.5, ValueError, r"fraction in \(0, 1\); got 1.5"),
        (0, ValueError, "positive number of samples"),
        (10, ValueError, "leaving none for training"),
        (True, TypeError, "fraction in"),
        ("half", TypeError, "fraction in"),
    ],
)
def test_train_test_split_bad_test_size(test_size, error, match):
    with pytest.raises(error, match=match):
        train_test_split(np.zeros((10, 1)), np.zeros(10), test_size=test_size)


def test_train_test_split_length_mismatch():
    with pytest.raises(ValueError, match="X has 4 rows but y has 3"):
        train_test_split(np.zeros((4, 1)), np.zeros(3))


def test_split_three_ways_stratified_and_disjoint():
    ds = load_dataset("xor", n_samples=200)
    train, validation, test = split(ds, test_size=0.2, validation_size=0.1, seed=0)
    assert validation is not None
    assert (train.n_samples, validation.n_samples, test.n_samples) == (140, 20, 40)
    for part in (train, validation, test):
        counts = np.bincount(part.y)
        assert counts[0] == counts[1]  # the full set is balanced, so each part is
        assert part.name == "xor" and part.target_names == ds.target_names
    rows = np.concatenate([train.X, validation.X, test.X])
    assert np.unique(rows, axis=0).shape[0] == 200
    again = split(ds, test_size=0.2, validation_size=0.1, seed=0)
    np.testing.assert_array_equal(again.test.X, test.X)


def test_split_defaults_and_regression():
    parts = split(load_dataset("sine", n_samples=50))
    assert parts.validation is None
    assert (parts.train.n_samples, parts.test.n_samples) == (40, 10)
    with pytest.raises(ValueError, match="leaving none for training"):
        split(load_dataset("sine", n_samples=10), test_size=0.5, validation_size=0.5)
    with pytest.raises(TypeError, match="dataset must be a Dataset"):
        split(np.zeros((4, 2)))  # type: ignore[arg-type]


def test_split_rare_class_error_is_clear():
    ds = Dataset(np.zeros((6, 1)), [0, 0, 0, 0, 0, 1], "classification")
    with pytest.raises(ValueError, match="class 1 has only 1 member"):
        split(ds)
    assert split(ds, stratify=False).test.n_samples == 2


# ----------------------------------------------------------------------------- scaling


def test_scaler_is_fitted_on_train_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 2.0, size=(100, 3))
    test = rng.normal(-3.0, 0.5, size=(20, 3))
    scaler = StandardScaler().fit(train)
    np.testing.assert_allclose(scaler.mean_, train.mean(axis=0))
    np.testing.assert_allclose(scaler.scale_, train.std(axis=0))
    scaled_train = scaler.transform(train)
    np.testing.assert_allclose(scaled_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled_train.std(axis=0), 1.0)
    # The test rows use the training statistics, so they are *not* centred.
    np.testing.assert_allclose(scaler.transform(test), (test - train.mean(axis=0)) / train.std(axis=0))
    assert scaler.transform(test).mean() < -3
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(test)), test)
    np.testing.assert_allclose(StandardScaler().fit_transform(train), scaled_train)


def test_scaler_constant_column_does_not_divide_by_zero():
    X = np.array([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]])
    big = np.full((3, 1), 1e8 + 0.1)  # float round-off gives std ~1e-8, not 0
    scaler = StandardScaler().fit(np.hstack([X, big]))
    assert scaler.scale_[1:].tolist() == [1.0, 1.0]
    out = scaler.transform(np.hstack([X, big]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 1:], 0.0, atol=1e-6)


def test_scaler_dtype_serialisation_and_errors():
    scaler = StandardScaler()
    assert repr(scaler) == "StandardScaler(unfitted)"
    with pytest.raises(RuntimeError, match="before fit"):
        scaler.transform([[1.0]])
    with pytest.raises(RuntimeError, match="before fit"):
        scaler.to_dict()
    X = np.array([[0.0, 1.0], [2.0, 5.0]])
    scaler.fit(X)
    assert scaler.transform(X.astype(np.float32)).dtype == np.float32
    assert scaler.transform(X.astype(int)).dtype == np.float64
    with pytest.raises(ValueError, match="must have 2 columns"):
        scaler.transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D array"):
        scaler.transform([1.0, 2.0])
    with pytest.raises(ValueError, match="no rows"):
        StandardScaler().fit(np.zeros((0, 2)))

    state = scaler.to_dict()
    assert set(state) == {"mean", "scale"}
    assert all(type(v) is np.ndarray for v in state.values())  # plain arrays, savez-able
    restored = StandardScaler.from_dict(state)
    np.testing.assert_array_equal(restored.transform(X), scaler.transform(X))
    state["mean"][0] = 99.0  # a copy: mutating it does not touch the scaler
    assert scaler.mean_[0] == 1.0
    with pytest.raises(ValueError, match=r"missing \['scale'\]"):
        StandardScaler.from_dict({"mean": np.zeros(2)})
    with pytest.raises(ValueError, match="mean has shape"):
        StandardScaler.from_dict({"mean": np.zeros(2), "scale": np.ones(3)})
    with pytest.raises(ValueError, match="every scale must be > 0"):
        StandardScaler.from_dict({"mean": np.zeros(1), "scale": np.zeros(1)})


# ----------------------------------------------------------------------------- CSV


def test_csv_regression_happy_path(tmp_path):
    path = write_csv(tmp_path, "a,b,price\n1,2,3.5\n\n4, 5 ,6e1\n")
    ds = load_csv(path)
    assert ds.task == "regression" and ds.name == "table"
    np.testing.assert_array_equal(ds.X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(ds.y, [3.5, 60.0])
    assert ds.feature_names == ["a", "b"] and ds.target_names == ["price"]


def test_csv_text_target_is_encoded_classification(tmp_path):
    path = write_csv(tmp_path, "kind,x\nsetosa,1\nvirginica,2\nsetosa,3\n")
    for target in ("kind", 0, -2):
        ds = load_csv(path, target=target)
        assert ds.task == "classification"
        assert ds.y.tolist() == [0, 1, 0] and ds.target_names == ["setosa", "virginica"]
        assert ds.feature_names == ["x"] and ds.X[:, 0].tolist() == [1, 2, 3]


def test_csv_numeric_target_as_classification_and_delimiter(tmp_path):
    path = write_csv(tmp_path, 'x;"label;name"\n"1.5";2\n2;0\n3;2\n4;1234567\n5;0.5\n')
    ds = load_csv(path, delimiter=";", task="classification")
    assert ds.y.tolist() == [2, 0, 2, 3, 1] and ds.target_names == ["0", "0.5", "2", "1234567"]
    assert ds.n_classes == 4 and ds.description.endswith("'label;name'")
    assert ds.feature_names == ["x"] and ds.X[:, 0].tolist() == [1.5, 2.0, 3.0, 4.0, 5.0]


def test_csv_gzip(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"x,y\n1,2\n3,4\n"))
    assert load_csv(path).y.tolist() == [2.0, 4.0]


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("a,b,y\n1,2,3\n4,oops,6\n", {}, r"line 3, column 'b': feature value 'oops'"),
        ("a,b,y\n1,,3\n", {}, r"line 2, column 'b': feature value ''"),
        ("a,b,y\n1,nan,3\n", {}, r"line 2, column 'b': feature value 'nan'"),
        ("a,b,y\n1,2,3\n", {"target": "z"}, r"'z' is not in .*Available columns: 'a', 'b', 'y'"),
        ("a,b,yy\n1,2,3\n", {"target": "y"}, r"Did you mean 'yy'\?"),
        ("a,b,y\n1,2,3\n", {"target": 3}, r"index 3 is out of range .* 'a', 'b', 'y'"),
        ("a,b,y\n1,2,3\n", {"target": 1.0}, "column name or an integer index"),
        ("a,a,y\n1,2,3\n", {"target": "a"}, "appears 2 times"),
        ("1,2,3\n4,5,6\n", {}, "looks like data.*header=False.*--no-header"),
        ("", {}, "is empty"),
        ("a,b,y\n", {}, "no data rows"),
        ("y\n1\n", {}, "single column"),
        ("a,b,y\n1,2,3\n4,5\n", {}, r"line 3: expected 3 fields .* found 2"),
        ("a,y\n1,cat\n", {"task": "regression"},
         r"column 'y': 1 of its 1 cells are not finite numbers.*line 2 'cat'"),
        ("a,y\n1,\n", {}, r"column 'y' is empty on 1 line\(s\): 2\."),
        ("a,y\n1,2\n", {"task": "ranking"}, "task must be one of"),
        ("a,y\n1,2\n", {"delimiter": ";;"}, "single character"),
    ],
)
def test_csv_error_paths(tmp_path, text, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        load_csv(write_csv(tmp_path, text), **kwargs)


def test_csv_line_numbers_count_blank_lines(tmp_path):
    path = write_csv(tmp_path, "a,y\n\n1,2\n\nx,3\n")
    with pytest.raises(ValueError, match="line 5, column 'a'"):
        load_csv(path)


# ----------------------------------------------------------------------------- NPZ


def test_npz_round_trip(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    path = tmp_path / "set.npz"
    np.savez(path, X=X, y=np.array([0, 2, 1, 2]), feature_names=np.array(["a", "b", "c"]))
    ds = load_npz(path)
    np.testing.assert_array_equal(ds.X, X)
    assert ds.task == "classification" and ds.n_classes == 3 and ds.feature_names == ["a", "b", "c"]
    np.savez(path, X=X, y=np.linspace(0, 1, 4))
    assert load_npz(path).task == "regression"
    np.savez(path, X=X, y=np.array(["b", "a", "b", "b"]))
    text = load_npz(path)
    assert text.y.tolist() == [1, 0, 1, 1] and text.target_names == ["a", "b"]
    np.savez(path, X=X, y=np.array([0.0, 1.0, 1.0, 0.0]))
    assert load_npz(path, task="classification").y.dtype == np.int64


def test_npz_errors(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"missing \['X'\], found \['features', 'y'\]"):
        load_npz(path)
    np.savez(path, X=np.zeros((2, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="array 'y' holds Python objects"):
        load_npz(path)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"not a \.npz archive"):
        load_npz(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"not a \.npz archive \(it does not start like a zip"):
        load_npz(tmp_path / "junk.npz")
    np.savez(path, X=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        load_npz(path)


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, compress, dtype):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    # A non-gzip name for a gzip file: compression is detected from the bytes.
    path = write_idx(tmp_path / "data-idx3", array, compress=compress)
    loaded = load_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


def test_idx_corrupt_files(tmp_path):
    raw = idx_bytes(np.arange(24, dtype=np.int16).reshape(4, 6))
    cases = {
        "truncated data": (
            raw[:-3],
            r"is truncated: shape \(4, 6\) of int16 needs 48 data bytes, found 45",
        ),
        "trailing bytes": (raw + b"\x00", "has trailing bytes"),
        "truncated header": (raw[:9], "announces 2 dimensions but the file ends after 9 bytes"),
        "tiny": (raw[:3], "shorter than an IDX header"),
        "bad magic": (b"\x42\x00" + raw[2:], "not an IDX file.*0x42"),
        "bad type code": (raw[:2] + b"\x07" + raw[3:], "unknown IDX type code 0x07"),
        "truncated gzip": (gzip.compress(raw)[:-10], "corrupt or truncated gzip"),
    }
    for label, (content, match) in cases.items():
        path = tmp_path / label.replace(" ", "_")
        path.write_bytes(content)
        with pytest.raises(ValueError, match=match):
            load_idx(path)


# ----------------------------------------------------------------------------- Fashion-MNIST


def _fake_fashion_folder(folder: Path, n_train: int = 12, n_test: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    return folder


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    train, test = load_fashion_mnist(_fake_fashion_folder(tmp_path))
    assert train.X.shape == (12, 784) and test.X.shape == (6, 784)
    assert train.y.dtype == np.int64 and train.y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert train.target_names == FASHION_MNIST_CLASSES and train.n_classes == 10
    images = load_idx(tmp_path / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(train.X, images.reshape(12, 784) / 255.0)
    assert train.feature_names[29] == "pixel_1_1"


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="missing train-images-idx3-ubyte, t10k"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_bad_label_is_reported(tmp_path):
    _fake_fashion_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(6, 11, np.uint8), compress=False)
    with pytest.raises(ValueError, match="label 11; Fashion-MNIST has 10 classes"):
        load_fashion_mnist(tmp_path)


def test_load_dataset_fashion_mnist_uses_the_training_set(tmp_path, monkeypatch):
    folder = _fake_fashion_folder(tmp_path)
    real = data.load_fashion_mnist
    monkeypatch.setattr(data, "load_fashion_mnist", lambda: real(folder))
    ds = load_dataset("fashion_mnist", n_samples=5, seed=0)
    assert ds.n_samples == 5 and ds.n_features == 784 and ds.name == "fashion-mnist"


FASHION_ROOT = Path(data.FASHION_MNIST_ROOT)


@pytest.mark.skipif(
    not (FASHION_ROOT / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    train, test = load_fashion_mnist()
    assert train.X.shape == (60000, 784) and test.X.shape == (10000, 784)
    assert train.X.dtype == np.float64 and train.X.min() >= 0.0 and train.X.max() == 1.0
    assert train.y.dtype == np.int64
    assert np.bincount(train.y).tolist() == [6000] * 10
    assert np.bincount(test.y).tolist() == [1000] * 10
    assert test.target_names == FASHION_MNIST_CLASSES


# ----------------------------------------------------------------------------- load()


def test_load_dispatches_on_name_and_extension(tmp_path):
    assert load("moons").name == "moons"
    csv_path = write_csv(tmp_path, "y,a\n1,2\n3,4\n")
    assert load(str(csv_path), target="y").feature_names == ["a"]
    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, X=np.zeros((2, 1)), y=np.array([0, 1]))
    assert load(npz_path).n_classes == 2

    folder = _fake_fashion_folder(tmp_path)
    from_images = load(folder / "train-images-idx3-ubyte.gz")
    from_labels = load(folder / "train-labels-idx1-ubyte")
    assert from_images.X.shape == (12, 784) == from_labels.X.shape
    np.testing.assert_array_equal(from_images.y, from_labels.y)
    assert from_images.target_names is None and from_images.n_classes == 10


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Did you mean 'spirals'\?.*\.csv, \.npz"):
        load("spiral")
    with pytest.raises(FileNotFoundError, match="not found"):
        load(tmp_path / "nothing.csv")
    with pytest.raises(ValueError, match="apply only to files"):
        load("xor", target="y")
    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, X=np.zeros((2, 1)), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="target= applies only to CSV"):
        load(npz_path, target="y")
    lonely = write_idx(
        tmp_path / "train-images-idx3-ubyte", np.zeros((2, 2, 2), np.uint8), compress=False
    )
    with pytest.raises(FileNotFoundError, match="needs its partner file train-labels"):
        load(lonely)
    anonymous = write_idx(tmp_path / "numbers.idx", np.zeros(2, np.uint8), compress=False)
    with pytest.raises(ValueError, match="images or labels"):
        load(anonymous)


def test_npz_labels_that_are_not_codes_are_encoded(tmp_path):
    """{7, 2000} must give a 2-class problem, not a 2001-way softmax with dead outputs."""
    X = np.arange(8.0).reshape(4, 2)
    np.savez(tmp_path / "lab.npz", X=X, y=np.array([2000, 7, 7, 2000]))
    ds = load_npz(tmp_path / "lab.npz")
    assert ds.n_classes == 2 and ds.y.tolist() == [1, 0, 0, 1]
    assert ds.target_names == ["7", "2000"]
    np.savez(tmp_path / "codes.npz", X=X, y=np.array([0, 1, 2, 1]))
    assert load_npz(tmp_path / "codes.npz").target_names is None  # already codes: kept


# ---------------------------------------------------------------- the task from the whole column
@pytest.mark.parametrize("cells, match", [
    (["1.5", "2", "?", "4", "5", "6.25", "7"], r"holds numbers, but 1 of its 7 cells are not finite "
     r"numbers: line 4 '\?'\..*task='classification'"),
    (["1.5", "2", "3", "4x", "5", "n/a", "7"], r"2 of its 7 cells .*line 5 '4x', line 7 'n/a'"),
    (["cat", "dog", "cat", "7", "dog", "cat", "dog"], r"holds text labels, but 1 of its 7 cells are "
     r"numbers: line 5 '7'"),
])
def test_one_odd_target_cell_never_changes_the_task(tmp_path, cells, match):
    rows = "\n".join(f"{i},{cell}" for i, cell in enumerate(cells))
    path = write_csv(tmp_path, "x,y\n" + rows + "\n")
    with pytest.raises(ValueError, match=match):
        load_csv(path)
    # asked for explicitly, every value is a class label
    labels = load_csv(path, task="classification")
    assert labels.task == "classification" and labels.n_samples == 7
    assert sorted(labels.target_names) == labels.target_names
    assert [labels.target_names[c] for c in labels.y] == [c.rstrip("0").rstrip(".") if "." in c
                                                          else c for c in cells]


def test_the_offending_cells_are_listed_up_to_a_limit(tmp_path):
    rows = "\n".join(f"{i},{'?' if i % 2 else i}" for i in range(30))
    with pytest.raises(ValueError, match=r"15 of its 30 cells .*line 3 '\?'.* and 7 more\."):
        load_csv(write_csv(tmp_path, "x,y\n" + rows + "\n"))


def test_the_whole_column_decides_across_blocks(tmp_path, monkeypatch):
    """The odd cell far from the first block is still found, and blocks keep rows in order."""
    import jacnet._readers as readers

    monkeypatch.setattr(readers, "CHUNK_ROWS", 4)
    rows = [f"{i},{i * 0.5},{i % 3}" for i in range(23)]
    path = write_csv(tmp_path, "a,b,y\n" + "\n".join(rows) + "\n")
    ds = load_csv(path)
    np.testing.assert_array_equal(ds.X[:, 0], np.arange(23.0))
    assert ds.task == "regression" and ds.y.tolist() == [i % 3 for i in range(23)]
    rows[20] = "20,10,oops"
    with pytest.raises(ValueError, match="line 22 'oops'"):
        load_csv(write_csv(tmp_path, "a,b,y\n" + "\n".join(rows) + "\n"))
    text = [f"{i},{'ab'[i % 2]}" for i in range(23)]
    ds = load_csv(write_csv(tmp_path, "a,y\n" + "\n".join(text) + "\n"))
    assert ds.target_names == ["a", "b"] and ds.y.tolist() == [i % 2 for i in range(23)]


def test_header_false_reads_every_line(tmp_path):
    path = write_csv(tmp_path, "1,2,3\n4,5,6\n")
    ds = load_csv(path, header=False)
    assert ds.n_samples == 2 and ds.feature_names == ["x1", "x2"] and ds.target_column == "x3"


# ---------------------------------------------------------------- one clear line per bad file
def _npz_with_member(path, name, member_bytes):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(3))
        archive.writestr(name, member_bytes)
    return path


def _npy_bytes(header_text, data=b""):
    header = header_text.encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def _damaged_npz(tmp_path, kind):
    path = tmp_path / "bad.npz"
    if kind == "header":  # NumPy's own message would be ('EOF in multi-line statement', (2, 0))
        return _npz_with_member(path, "X.npy", _npy_bytes("{'descr': '<f8', 'shape': (3,\n"))
    if kind == "huge":
        return _npz_with_member(path, "X.npy", _npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }\n", b"\0" * 24))
    if kind == "magic":
        return _npz_with_member(path, "X.npy", b"\x93NUMPY\x0c\x01rest")
    if kind == "objects":
        np.savez(path, X=np.zeros((3, 1)), y=np.array([None, 1, "a"], dtype=object))
        return path
    np.savez(path, X=np.zeros((3, 1)), y=np.zeros(3))
    data = bytearray(path.read_bytes())
    if kind == "zip-version":  # zipfile's own message would be "zip file version 12.1"
        central = data.find(b"PK\x01\x02")
        data[central + 6:central + 8] = (121).to_bytes(2, "little")
    elif kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "crc":
        start = data.find(b"X.npy") + 5 + 80
        data[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind, match", [
    ("header", r"array 'X' is damaged \(its header is missing, truncated or does not parse\)"),
    ("huge", r"array 'X' is damaged: its header claims shape \(1000000000000,\) of float64 "
             r"\(8000000000000 bytes\) but the archive stores 24 bytes"),
    ("magic", r"array 'X' is damaged \(its header is missing, truncated or does not parse\)"),
    ("objects", r"array 'y' holds Python objects, which would need pickle"),
    ("zip-version", r"damaged \.npz archive \(it uses a zip feature \(version or compression "
                    r"method\) NumPy cannot read\)"),
    ("truncated", r"damaged \.npz archive \(its zip structure is broken: truncated or not a zip"),
    ("crc", r"damaged \.npz archive"),
])
def test_a_damaged_npz_says_what_is_damaged(tmp_path, kind, match):
    path = _damaged_npz(tmp_path, kind)
    with pytest.raises(ValueError, match=match) as info:
        load_npz(path)
    assert "EOF in multi-line" not in str(info.value) and "12.1" not in str(info.value)
    from jacnet.io import load_model

    with pytest.raises(ValueError, match=r"damaged|holds Python objects"):
        load_model(path)


def test_folders_fifos_and_npy_files_are_named_for_what_they_are(tmp_path):
    import os

    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "folder.npz").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.save(tmp_path / "one_npy.npz", np.zeros(3))  # np.save keeps the name it is given
    os.replace(tmp_path / "one_npy.npz.npy", tmp_path / "one_npy.npz")
    with pytest.raises(IsADirectoryError, match=r"folder\.csv is a folder, not a file"):
        load(str(tmp_path / "folder.csv"))
    with pytest.raises(IsADirectoryError, match=r"folder\.npz is a folder"):
        load(str(tmp_path / "folder.npz"))
    with pytest.raises(ValueError, match=r"pipe.csv is a FIFO \(named pipe\), not a regular file"):
        load(str(tmp_path / "pipe.csv"))
    with pytest.raises(ValueError, match=r"one.npy is a \.npy file \(one array\); data sets are "
                                         r"\.npz archives"):
        load(str(tmp_path / "one.npy"))
    with pytest.raises(ValueError, match=r"one_npy.npz is a \.npy file \(one array\), not a \.npz"):
        load_npz(tmp_path / "one_npy.npz")
    from jacnet.io import load_model

    for name, error in (("folder.npz", IsADirectoryError), ("pipe.csv", ValueError),
                        ("one.npy", ValueError)):
        with pytest.raises(error, match=r"jacnet model file .* (folder|FIFO|\.npy file)"):
            load_model(tmp_path / name)


@pytest.mark.parametrize("content, match", [
    (b"a,b\n" + b"1," + b"9" * 200_000 + b"\n", r"line 2: not valid CSV \(field larger than"),
    (b"a,b\n1,\xff\xfe\n", r"not UTF-8 text"),
])
def test_csv_reader_errors_are_one_line(tmp_path, content, match):
    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_csv(tmp_path / "t.csv")


def test_a_truncated_gzip_csv_is_one_line(tmp_path):
    import gzip

    data = gzip.compress(b"a,b\n" + b"1,2\n" * 5000)
    (tmp_path / "t.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t.csv.gz is (a damaged|not a readable) gzip file"):
        load_csv(tmp_path / "t.csv.gz")


# ---------------------------------------------------------------- reading chosen rows
@pytest.mark.parametrize("kind", ["npz", "compressed", "csv", "csv-labels"])
def test_open_rows_reads_the_rows_load_reads(tmp_path, kind):
    """FileRows.dataset(index) is load(path).subset(index), for any order of the rows."""
    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(50, 3)), 4)
    if kind.startswith("csv"):
        y = (np.array(["b", "a", "c"])[rng.integers(0, 3, 50)] if kind == "csv-labels"
             else np.round(rng.normal(size=50), 4))
        path = tmp_path / "d.csv"
        path.write_text("p,q,r,t\n" + "".join(f"{a},{b},{c},{t}\n" for (a, b, c), t
                                               in zip(X.tolist(), y.tolist())))
    else:
        path = tmp_path / "d.npz"
        (np.savez_compressed if kind == "compressed" else np.savez)(
            path, X=X, y=rng.integers(5, 8, 50), feature_names=np.array(["p", "q", "r"]))
    whole = data.load(path)
    rows = data.open_rows(path)
    assert rows is not None and rows.n_samples == 50 and rows.task == whole.task
    index = rng.permutation(50)[:17]
    part = rows.dataset(index)
    np.testing.assert_array_equal(part.X, whole.X[index])
    np.testing.assert_array_equal(part.y, whole.y[index])
    assert (part.feature_names, part.target_names) == (whole.feature_names, whole.target_names)
    assert data.open_rows("xor") is None


def test_split_rows_is_the_split_of_split():
    ds = data.load_dataset("moons", n_samples=60)
    parts = data.split(ds, test_size=0.25, validation_size=0.1, seed=3)
    train, validation, test = data.split_rows(ds.y, ds.task, test_size=0.25,
                                              validation_size=0.1, seed=3)
    assert validation is not None
    for part, index in zip(parts, (train, validation, test)):
        np.testing.assert_array_equal(part.X, ds.X[index])


def test_scaler_from_merged_moments_is_the_scaler_of_all_rows():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 4)) * [1.0, 1e3, 1e-3, 0.0] + [0.0, 5.0, 1e6, 3.0]
    whole = StandardScaler().fit(X)
    parts = [StandardScaler.moments(X[a:b]) for a, b in ((0, 1), (1, 1), (1, 220), (220, 500))]
    merged = StandardScaler.from_moments(parts)
    # The means agree to rounding of sums of values of size |mean| + spread.
    np.testing.assert_allclose(merged.mean_, whole.mean_, rtol=1e-15,
                               atol=1e-14 * whole.scale_.max())
    assert np.all(np.abs(merged.mean_ - whole.mean_) <= 1e-14 * (np.abs(whole.mean_)
                                                                 + whole.scale_))
    # Column 2 (mean 1e6, spread 1e-3): fit's two passes keep the spread to 1e-15; merging
    # the parts' rounded means used to lose eps·|mean|/std = 2e-7 of it.
    relative = np.abs(merged.scale_ / whole.scale_ - 1)
    assert np.all(relative <= [1e-13, 1e-13, 1e-13, 0]), relative
    assert merged.scale_[3] == 1.0  # a constant column is centred, not divided
    huge = np.full((20, 2), 1.7e308) * np.linspace(-1, 1, 20)[:, None]
    merged = StandardScaler.from_moments([StandardScaler.moments(huge[:7]),
                                          StandardScaler.moments(huge[7:])])
    np.testing.assert_allclose(merged.scale_, StandardScaler().fit(huge).scale_, rtol=1e-15)
    with pytest.raises(ValueError, match="no part has rows"):
        StandardScaler.from_moments([StandardScaler.moments(np.zeros((0, 2)))])


@pytest.mark.parametrize("kind", ["crc", "truncated-member"])
def test_a_damaged_member_read_by_rows_is_one_error(tmp_path, kind):
    from jacnet._readers import npz_members

    path = tmp_path / "bad.npz"
    np.savez(path, X=np.arange(3000.0).reshape(1000, 3), y=np.zeros(1000))
    raw = bytearray(path.read_bytes())
    start = raw.find(b"X.npy") + 5 + 80 + 9000
    raw[start:start + 8] = b"\xff" * 8  # a stored member: its CRC fails at the end
    if kind == "truncated-member":
        raw = raw[:start]
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad\.npz is a damaged \.npz archive"):
        npz_members(path)["X"].take([0, 999])


@pytest.mark.parametrize("kind", ["csv-shorter", "csv-same-size", "npz", "npy"])
def test_a_file_that_changes_between_its_passes_is_refused(tmp_path, kind):
    """open_rows reads the targets, dataset() the features later: a file rewritten in
    between must be refused, not read as rows that no longer match the targets (a CSV cut
    short left rows of np.empty garbage, exit 0)."""
    import os

    from jacnet._readers import npy_array

    X = np.arange(40.0).reshape(20, 2)
    if kind.startswith("csv"):
        path = tmp_path / "d.csv"
        path.write_text("a,b,y\n" + "".join(f"{a},{b},{i % 2}\n" for i, (a, b) in enumerate(X)))
        rows = data.open_rows(path)
        assert rows is not None
        text = path.read_text()
        # Same size, other values: only the modification time tells.
        path.write_text(text[:-30] if kind == "csv-shorter" else text.replace("1", "7"))
        os.utime(path, ns=(1, 1))  # whatever the clock's grain
        read = lambda: rows.dataset(np.arange(20))  # noqa: E731
    elif kind == "npz":
        path = tmp_path / "d.npz"
        np.savez(path, X=X, y=np.arange(20) % 2)
        rows = data.open_rows(path)
        assert rows is not None
        np.savez(path, X=X[:10], y=np.arange(10) % 2)
        read = lambda: rows.dataset([0, 19])  # noqa: E731
    else:
        path = tmp_path / "d.npy"
        np.save(path, X)
        array = npy_array(path)
        np.save(path, X + 1)
        os.utime(path, ns=(1, 1))  # a rewrite of the same size, whatever the clock's grain
        read = lambda: array.take([0, 19])  # noqa: E731
    with pytest.raises(ValueError, match=r"d\.np[yz]|d\.csv") as info:
        read()
    assert "changed while it was being read" in str(info.value)
    assert "keep the file unchanged" in str(info.value)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_nan_in_rows_read_by_open_rows_is_named_by_its_row_in_the_file(tmp_path, compressed):
    """Under mpiexec a rank reads some rows of the file in split order; a NaN among them
    must be named by its row in the file, as load names it, not by its place among the
    rank's rows (which said [0, 2] for file row 57)."""
    X = np.arange(120.0).reshape(60, 2)
    X[57, 0] = np.inf
    X[55, 1] = np.nan
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, X=X, y=np.arange(60.0))
    with pytest.raises(ValueError, match=r"first at index \[55, 1\]: nan\)") as whole:
        data.load(path)
    rows = data.open_rows(path)
    assert rows is not None
    with pytest.raises(ValueError) as part:
        rows.dataset([57, 3, 55, 10])
    assert str(part.value) == str(whole.value)


def test_merged_moments_keep_the_accuracy_of_fit_on_offset_columns():
    """The data of docs/distributed.md's tolerance (offsets up to 1e4, spreads down to 1e-2)
    on 2 to 8 uneven parts: the scales within 1e-13 of fit's (was 2.6e-11: the merge's
    difference of two rounded means carried eps·|mean| into the spread)."""
    worst = 0.0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(5, 3000))
        X = rng.normal(size=(n, 3)) * [1.0, 250.0, 0.01] + rng.uniform(-1e4, 1e4, 3)
        parts = np.split(X, np.sort(rng.integers(0, n, int(rng.integers(1, 8)))))
        merged = StandardScaler.from_moments([StandardScaler.moments(p) for p in parts])
        whole = StandardScaler().fit(X)
        np.testing.assert_allclose(merged.mean_, whole.mean_, rtol=1e-14)
        worst = max(worst, float(np.max(np.abs(merged.scale_ / whole.scale_ - 1))))
    assert worst <= 1e-13, worst


@pytest.mark.parametrize("index, bad", [([-1, 3], -1), ([2, 10], 10), ([-2, 12], -2)])
def test_array_rows_take_names_a_row_that_is_out_of_range(tmp_path, index, bad):
    from jacnet._readers import npy_array

    path = tmp_path / "x.npy"
    np.save(path, np.arange(20.0).reshape(10, 2))
    with pytest.raises(IndexError, match=rf"has 10 rows; asked for row {bad}\."):
        npy_array(path).take(index)


def test_scaler_moments_of_other_columns_are_refused() -> None:
    from jacnet.data import StandardScaler

    a = StandardScaler.moments(np.ones((3, 2)))
    b = StandardScaler.moments(np.ones((3, 4)))
    expected = r"every part must be a \(5, n_columns\) array.*\(5, 2\), \(5, 4\)"
    with pytest.raises(ValueError, match=expected):
        StandardScaler.from_moments([a, b])
    merged = StandardScaler.from_moments([a.tolist(), a])  # lists of lists are arrays too
    np.testing.assert_array_equal(merged.mean_, [1.0, 1.0])
