"""Saving fitted estimators without pickle (jacnet.estimator_io), and pickling them."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import NotFittedError

from jacnet.data import StandardScaler
from jacnet.estimator_io import load_estimator, save_estimator
from jacnet.io import read_archive, save_model, write_archive
from jacnet.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X[:200], y[:200] / 100.0


def _fitted(iris, diabetes):
    X, y = iris
    Xd, yd = diabetes
    rng = np.random.default_rng(0)
    return {
        "multiclass strings": (MLPClassifier((6,), max_iter=20, random_state=0,
                                             class_weight="balanced"), X, y),
        "binary bools, int class_weight": (MLPClassifier(
            (5, 3), activation="tanh", solver="lbfgs", max_iter=30, random_state=1,
            class_weight={True: 2.0}), X, y == "setosa"),
        "multilabel, float32": (MLPClassifier((4,), solver="lm", max_iter=5, random_state=2),
                                X.astype(np.float32),
                                np.stack([y == "setosa", y == "virginica"], axis=1).astype(int)),
        "regressor, two outputs, early stopping": (MLPRegressor(
            hidden_layer_sizes=7, max_iter=15, random_state=3, early_stopping=True),
            Xd, np.stack([yd, rng.normal(size=len(yd))], axis=1)),
        "poisson lm": (MLPRegressor(loss="poisson", solver="lm", hidden_layer_sizes=(4,),
                                    max_iter=5, random_state=4), Xd, np.exp(yd / 3)),
        "br": (MLPRegressor(solver="br", hidden_layer_sizes=(4,), max_iter=5, random_state=5,
                            dtype="float64"), Xd, yd),
    }


CASES = ["multiclass strings", "binary bools, int class_weight", "multilabel, float32",
         "regressor, two outputs, early stopping", "poisson lm", "br"]


def _same_attributes(a, b):
    assert set(vars(a)) >= {k for k in vars(b) if k.endswith("_") and not k.startswith("_")}
    for name, value in vars(b).items():
        if not name.endswith("_") or name.startswith("_") or name == "model_":
            continue
        other = getattr(a, name)
        if isinstance(value, np.ndarray):
            assert other.dtype == value.dtype and np.array_equal(other, value), name
        else:
            assert other == value or (value != value and other != other), name


@pytest.mark.parametrize("case", CASES)
def test_round_trip_predicts_identically(case, iris, diabetes, tmp_path):
    estimator, X, y = _fitted(iris, diabetes)[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
    path = tmp_path / "estimator.npz"
    save_estimator(path, estimator, metadata={"case": case})
    loaded, preprocessing, metadata = load_estimator(path)
    assert type(loaded) is type(estimator) and preprocessing is None
    assert metadata == {"case": case}
    assert loaded.get_params() == estimator.get_params()
    _same_attributes(loaded, estimator)
    assert loaded.model_.dtype == estimator.model_.dtype
    assert np.array_equal(loaded.model_.params, estimator.model_.params)
    predicted = loaded.predict(X)
    assert predicted.dtype == estimator.predict(X).dtype
    assert np.array_equal(predicted, estimator.predict(X))
    assert loaded.score(X, y) == estimator.score(X, y)
    if isinstance(estimator, MLPClassifier):
        assert np.array_equal(loaded.predict_proba(X), estimator.predict_proba(X))
    # the coefs_ views and the weight decay belong to the loaded network
    assert np.shares_memory(loaded.coefs_[0], loaded.model_.params)
    # a warm start trains on from the saved network as from the original (the optimizer
    # starts afresh in both; early stopping's best score so far is not kept)
    original = pickle.loads(pickle.dumps(estimator))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in (loaded, original):
            est.set_params(warm_start=True, max_iter=2).fit(X, y)
    if not estimator.early_stopping:
        assert np.array_equal(loaded.model_.params, original.model_.params)


def test_pandas_feature_names_and_scaler_round_trip(iris, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = iris
    frame = pd.DataFrame(X, columns=["sepal length", "sepal width", "petal length", "petal w"])
    scaler = StandardScaler().fit(X)
    clf = MLPClassifier((5,), solver="lbfgs", max_iter=50, random_state=0)
    clf.fit(pd.DataFrame(scaler.transform(X), columns=frame.columns), y)
    save_estimator(tmp_path / "clf.npz", clf, preprocessing={"X": scaler})
    loaded, preprocessing, _ = load_estimator(tmp_path / "clf.npz")
    assert list(loaded.feature_names_in_) == list(frame.columns)
    assert loaded.feature_names_in_.dtype == object
    scaled = pd.DataFrame(preprocessing["X"].transform(X), columns=frame.columns)
    assert np.array_equal(loaded.predict_proba(scaled),
                          clf.predict_proba(pd.DataFrame(scaler.transform(X),
                                                         columns=frame.columns)))
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(scaled.rename(columns={"petal w": "other"}))


def test_pickle_round_trip_predicts_identically(iris):
    X, y = iris
    clf = MLPClassifier((5,), max_iter=20, random_state=0, class_weight={"setosa": 2}).fit(X, y)
    clone = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(clone.predict_proba(X), clf.predict_proba(X))
    clone.partial_fit(X, y)
    clf.partial_fit(X, y)  # the optimizer's state travelled too: the same next step
    assert np.array_equal(clone.model_.params, clf.model_.params)


def test_save_refuses_what_needs_pickle(iris, tmp_path):
    X, y = iris
    with pytest.raises(NotFittedError):
        save_estimator(tmp_path / "a.npz", MLPClassifier())
    with pytest.raises(TypeError, match="jacnet MLPClassifier or MLPRegressor; got "
                                        "StandardScaler"):
        save_estimator(tmp_path / "a.npz", StandardScaler().fit(X))
    clf = MLPClassifier((3,), max_iter=2, random_state=np.random.RandomState(0)).fit(X, y)
    with pytest.raises(TypeError, match=r"cannot save random_state=RandomState.*integer seed"):
        save_estimator(tmp_path / "a.npz", clf)
    assert not (tmp_path / "a.npz").exists()


def _tampered(path, change):
    content = read_archive(path, "estimator")
    change(content)
    write_archive(path, "estimator", content)


def _break_weights(content):
    content["params"] = content["params"].copy()
    content["params"][3] = np.nan


@pytest.mark.parametrize("change, message", [
    (_break_weights, r"1 of its 35 parameters are NaN or infinite"),
    (lambda c: c["fitted"].update(out_activation_="exp"),
     r"out_activation_ is 'exp' but the MLPClassifier's targets need 'softmax'"),
    (lambda c: c["fitted"].update(n_features_in_=5),
     r"the saved network is not the \[5, 4, 3\] relu network"),
    (lambda c: c["fitted"].update(n_features_in_="4"), r"n_features_in_ must be an integer"),
    (lambda c: c["fitted"].update(n_layers_=4), r"n_layers_ is 4 for a network of 3 layers"),
    (lambda c: c["estimator_params"].update(activation="tanh"),
     r"the saved network is not the \[4, 4, 3\] tanh network"),
    (lambda c: c["estimator_params"].update(activation="swish"),
     r"holds invalid parameters: The 'activation' parameter of MLPClassifier must be"),
    (lambda c: c["estimator_params"].update(bogus=1), r"holds invalid parameters: Invalid "
                                                     r"parameter 'bogus'"),
    (lambda c: c.update(estimator="SVC"), r"estimator 'SVC' is not one of"),
    (lambda c: c["label_binarizer"].update(y_type="continuous"), r"label type 'continuous'"),
    (lambda c: c["label_binarizer"].update(y_type="binary"),
     r"3 binary classes need 1 outputs; the network has 3"),
    (lambda c: c["fitted"]["classes_"]["__ndarray__"].update(array=np.array(["a", "b", "c"])),
     r"classes_ differs from the labels"),
    (lambda c: c["fitted"].update(_secret=1), r"'_secret' is not a fitted attribute"),
    (lambda c: c.pop("fitted"), r"is missing \['fitted'\]"),
])
def test_load_validates_the_file(iris, tmp_path, change, message):
    X, y = iris
    path = tmp_path / "clf.npz"
    save_estimator(path, MLPClassifier((4,), max_iter=3, random_state=0).fit(X, y))
    _tampered(path, change)
    with pytest.raises(ValueError, match=message):
        load_estimator(path)


def test_load_names_other_files(tmp_path, iris):
    from jacnet import mlp

    save_model(tmp_path / "model.npz", mlp([2, 1], seed=0))
    with pytest.raises(ValueError, match="is a jacnet model file, not a estimator file"):
        load_estimator(tmp_path / "model.npz")
    with pytest.raises(FileNotFoundError):
        load_estimator(tmp_path / "missing.npz")


@pytest.mark.parametrize("name", ["regressor", "br", "classifier"])
def test_round_trip_keeps_the_laplace_approximation(name, iris, diabetes, tmp_path):
    if name == "br":  # its std is scaled back from br's [-1, 1] target scale
        X, y = diabetes
        est = MLPRegressor(hidden_layer_sizes=(5,), solver="br", max_iter=20, random_state=0,
                           laplace="full", dtype="float64").fit(X, y)
    elif name == "regressor":
        X, y = diabetes
        est = MLPRegressor(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=50, random_state=0,
                           laplace="full", dtype="float64").fit(X, y)
    else:
        X, y = iris
        est = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=50, random_state=0,
                            laplace="last_layer", dtype="float64").fit(X, y)
    save_estimator(tmp_path / "est.npz", est)
    loaded = load_estimator(tmp_path / "est.npz").estimator
    assert loaded.laplace_ is not est.laplace_
    if name != "classifier":
        mean, std = est.predict(X[:20], return_std=True)
        mean2, std2 = loaded.predict(X[:20], return_std=True)
        np.testing.assert_array_equal(mean2, mean)
        np.testing.assert_allclose(std2, std, rtol=1e-12)
    else:
        np.testing.assert_allclose(loaded.predict_proba(X[:20]), est.predict_proba(X[:20]),
                                   rtol=1e-12)


@pytest.mark.parametrize("damage, message", [
    (lambda entry: entry.update({"__laplace__": {"structure": "full"}}),
     "laplace_ does not fit the network"),
    (lambda entry: entry["params"].__setitem__(0, np.nan), "laplace_'s network weights"),
    (lambda entry: entry.update({"unit": -1.0}), "laplace_'s output unit"),
])
def test_load_refuses_a_damaged_laplace_approximation(diabetes, tmp_path, damage, message):
    X, y = diabetes
    est = MLPRegressor(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=30, random_state=0,
                       laplace="full", dtype="float64").fit(X, y)
    save_estimator(tmp_path / "est.npz", est)
    content = read_archive(tmp_path / "est.npz", "estimator")
    damage(content["fitted"]["laplace_"])
    write_archive(tmp_path / "bad.npz", "estimator", content)
    with pytest.raises(ValueError, match=message):
        load_estimator(tmp_path / "bad.npz")
