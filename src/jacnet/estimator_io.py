"""Saving and loading fitted scikit-learn estimators without pickle.

:func:`save_estimator` writes a fitted :class:`~jacnet.sklearn.MLPClassifier` or
:class:`~jacnet.sklearn.MLPRegressor` (and, optionally, the jacnet
:class:`~jacnet.data.StandardScaler` that prepares its input) to one ``.npz`` archive in
:mod:`jacnet.io`'s format: JSON for the parameters and fitted attributes, arrays for
the network and the labels, written atomically, read with ``allow_pickle=False``.
:func:`load_estimator` rebuilds it and checks that the file is consistent (the
parameters valid, the network the one those parameters and attributes describe, its
weights finite) before returning it, so a damaged or edited file is an error, not
``nan`` predictions.

What is kept: everything predictions, scores and the fitted attributes depend on, the
Laplace approximation ``laplace_`` (``laplace=`` set) included, as its own state. What
is not: the optimizer's running state (Adam's moments, SGD's velocity, the random
generator's position), which only ``partial_fit`` or a ``warm_start`` fit would use;
after loading they continue from the saved network with a fresh optimizer. Pickle
(``pickle.dumps(estimator)``) keeps that state too, for files you trust.

This module needs scikit-learn (``pip install 'jacnet[sklearn]'``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jacnet.io import PathLike, _model_content, _model_from, _require, read_archive, write_archive
from jacnet.network import mlp
from jacnet.sklearn import _ACTIVATIONS, MLPClassifier, MLPRegressor, _BaseMLP

__all__ = ["SavedEstimator", "load_estimator", "save_estimator"]

_ESTIMATORS: dict[str, type[_BaseMLP]] = {"MLPClassifier": MLPClassifier,
                                          "MLPRegressor": MLPRegressor}
_LABEL_TYPES = ("binary", "multiclass", "multilabel-indicator")


class SavedEstimator(NamedTuple):
    """What :func:`load_estimator` returns; unpacks as ``estimator, preprocessing, metadata``."""

    estimator: Any
    preprocessing: Any
    metadata: dict[str, Any]


# --------------------------------------------------------------------------- encoding
def _plain_array(value: np.ndarray, name: str) -> dict[str, Any]:
    """An array the archive can hold: object arrays of strings become unicode arrays."""
    if value.dtype == object:
        if not all(isinstance(v, str) for v in value.ravel()):
            raise TypeError(
                f"cannot save {name}: it holds objects that are not strings "
                f"({sorted({type(v).__name__ for v in value.ravel()})}); only numbers and "
                "strings are stored without pickle."
            )
        return {"array": value.astype(str), "object": True}
    return {"array": value, "object": False}


def _from_plain_array(state: dict[str, Any]) -> np.ndarray:
    array = np.asarray(state["array"])
    return array.astype(object) if state.get("object") else array


def _encode_class_weight(value: Any) -> Any:
    """dict → ``{"labels": array, "weights": array}`` (JSON keys must be strings)."""
    if isinstance(value, dict):
        return {"labels": _plain_array(np.array(list(value)), "class_weight's labels"),
                "weights": np.array(list(value.values()), dtype=np.float64)}
    if isinstance(value, list):
        return [_encode_class_weight(v) for v in value]
    return value


def _decode_class_weight(value: Any) -> Any:
    if isinstance(value, dict):
        labels = _from_plain_array(value["labels"]).tolist()
        return dict(zip(labels, np.asarray(value["weights"]).tolist()))
    if isinstance(value, list):
        return [_decode_class_weight(v) for v in value]
    return value


def _encode_params(estimator: _BaseMLP) -> dict[str, Any]:
    params = dict(estimator.get_params(deep=False))
    if params["random_state"] is not None and not isinstance(params["random_state"], int):
        raise TypeError(
            f"cannot save random_state={params['random_state']!r}: a generator object needs "
            "pickle. Set an integer seed (estimator.set_params(random_state=0)) or None first."
        )
    sizes = params["hidden_layer_sizes"]
    params["hidden_layer_sizes"] = (int(sizes) if np.ndim(sizes) == 0
                                    else [int(units) for units in sizes])
    if params["dtype"] is not None:
        params["dtype"] = str(np.dtype(params["dtype"]))
    if "class_weight" in params:
        params["class_weight"] = _encode_class_weight(params["class_weight"])
    return params


def _fitted_attributes(estimator: _BaseMLP) -> dict[str, Any]:
    """The public fitted attributes (``name_``), each as JSON values or a plain array."""
    fitted: dict[str, Any] = {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_") or name == "model_":
            continue
        if isinstance(value, np.ndarray):
            fitted[name] = {"__ndarray__": _plain_array(value, name)}
        elif name == "laplace_":  # the Laplace approximation, as its own state (no network)
            # with its own float64 copy of the network ("br" fits it on its target scale)
            fitted[name] = {"__laplace__": value.state_dict(),
                            "params": value.model.params.copy(),
                            "unit": float(getattr(estimator, "_laplace_unit", 1.0))}
        elif isinstance(value, np.generic):
            fitted[name] = value.item()
        elif value is None or isinstance(value, (bool, int, float, str)):
            fitted[name] = value
        elif isinstance(value, list) and all(isinstance(v, (int, float, np.generic))
                                             for v in value):
            fitted[name] = [float(v) for v in value]
        else:
            raise TypeError(f"cannot save the fitted attribute {name} of type "
                            f"{type(value).__name__} without pickle.")
    return fitted


# --------------------------------------------------------------------------- saving
def save_estimator(path: PathLike, estimator: Any, *, preprocessing: Any = None,
                   metadata: dict[str, Any] | None = None) -> None:
    """Save a fitted ``MLPClassifier``/``MLPRegressor`` to one ``.npz`` file, without pickle.

    Parameters
    ----------
    path : str or PathLike
        Written atomically; an existing file is replaced only once the new one is complete.
    estimator : MLPClassifier or MLPRegressor
        Fitted, with ``random_state`` None or an integer.
    preprocessing : optional
        As for :func:`jacnet.io.save_model`: a fitted jacnet ``StandardScaler``, or a dict
        of them and of arrays/JSON values.
    metadata : dict, optional
        JSON-able values and arrays.

    Raises
    ------
    TypeError
        Not a jacnet estimator, or something in it that only pickle could store.
    sklearn.exceptions.NotFittedError
        The estimator is not fitted.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from jacnet.sklearn import MLPClassifier
    >>> from jacnet.data import StandardScaler
    >>> X, y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]), ["a", "a", "b", "b"]
    >>> scaler = StandardScaler().fit(X)
    >>> clf = MLPClassifier((4,), solver="lbfgs", random_state=0).fit(scaler.transform(X), y)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "clf.npz"
    >>> save_estimator(path, clf, preprocessing=scaler)
    >>> loaded, prep, _ = load_estimator(path)
    >>> bool((loaded.predict(prep.transform(X)) == clf.predict(scaler.transform(X))).all())
    True
    """
    from sklearn.utils.validation import check_is_fitted

    if type(estimator).__name__ not in _ESTIMATORS or not isinstance(estimator, _BaseMLP):
        raise TypeError(f"estimator must be a jacnet MLPClassifier or MLPRegressor; got "
                        f"{type(estimator).__name__}. Save a bare network with "
                        "jacnet.io.save_model.")
    check_is_fitted(estimator)
    content = _model_content(estimator.model_)
    content["estimator"] = type(estimator).__name__
    content["estimator_params"] = _encode_params(estimator)
    content["fitted"] = _fitted_attributes(estimator)
    if isinstance(estimator, MLPClassifier):
        binarizer = estimator._label_binarizer
        content["label_binarizer"] = {"classes": _plain_array(binarizer.classes_, "classes_"),
                                      "y_type": str(binarizer.y_type_)}
    content["preprocessing"] = preprocessing
    content["metadata"] = dict(metadata or {})
    write_archive(path, "estimator", content)


# --------------------------------------------------------------------------- loading
def _decode_fitted(fitted: Any, path: PathLike) -> dict[str, Any]:
    if not isinstance(fitted, dict):
        raise ValueError(f"{path} is damaged: its fitted attributes are not a mapping.")
    out: dict[str, Any] = {}
    for name, value in fitted.items():
        if not name.endswith("_") or name.startswith("_") or name == "model_":
            raise ValueError(f"{path} is damaged: {name!r} is not a fitted attribute.")
        out[name] = _from_plain_array(value["__ndarray__"]) if (
            isinstance(value, dict) and "__ndarray__" in value) else value
    return out


def _laplace_from(value: Any, estimator: _BaseMLP, path: PathLike) -> Any:
    """The saved Laplace approximation of ``estimator``'s network, checked by its loader."""
    from jacnet.laplace import Laplace

    if not isinstance(value, dict) or not isinstance(value.get("__laplace__"), dict):
        raise ValueError(f"{path} is damaged: laplace_ is not a saved Laplace approximation.")
    state = value["__laplace__"]
    unit = value.get("unit", 1.0)
    if not isinstance(unit, (int, float)) or not np.isfinite(unit) or unit <= 0:
        raise ValueError(f"{path} is damaged: laplace_'s output unit is {unit!r}, not a "
                         "positive number.")
    estimator._laplace_unit = float(unit)
    params = np.asarray(value.get("params"))
    if (params.shape != estimator.model_.params.shape or params.dtype.kind != "f"
            or not np.isfinite(params).all()):
        raise ValueError(f"{path} is damaged: laplace_'s network weights are not "
                         f"{estimator.model_.params.size} finite numbers.")
    try:
        approx = Laplace(estimator.model_, state.get("likelihood", "regression"),
                         structure=state.get("structure", "auto"))
        approx.model.params[...] = params
        return approx.load_state_dict(state)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} is inconsistent: its laplace_ does not fit the network "
                         f"({exc}).") from None


def _check_int(fitted: dict[str, Any], name: str, low: int, path: PathLike) -> int:
    value = fitted.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{path} is inconsistent: {name} must be an integer >= {low}; "
                         f"got {value!r}.")
    return value


def load_estimator(path: PathLike) -> SavedEstimator:
    """Load a file written by :func:`save_estimator`, checking it throughout.

    Returns
    -------
    SavedEstimator
        ``(estimator, preprocessing, metadata)``; the estimator predicts as the saved one.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A foreign, corrupt or truncated file, invalid parameters, or fitted state that
        does not describe the saved network (sizes, activations, classes, weights that
        are not finite); the message says which.
    """
    content = read_archive(path, "estimator")
    _require(content, ("estimator", "estimator_params", "fitted"), path)
    name = content["estimator"]
    if name not in _ESTIMATORS:
        raise ValueError(f"{path} is inconsistent: estimator {name!r} is not one of "
                         f"{sorted(_ESTIMATORS)}.")
    estimator = _ESTIMATORS[name]()
    params = content["estimator_params"]
    if not isinstance(params, dict):
        raise ValueError(f"{path} is damaged: its parameters are not a mapping.")
    params = dict(params)
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    if "class_weight" in params:
        try:
            params["class_weight"] = _decode_class_weight(params["class_weight"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} is damaged: class_weight cannot be read ({exc}).") from exc
    try:
        estimator.set_params(**params)
        estimator._validate_params()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} holds invalid parameters: {exc}") from exc

    model = _model_from(content, path)  # io's checks: architecture, sizes, finite weights
    fitted = _decode_fitted(content["fitted"], path)
    n_features = _check_int(fitted, "n_features_in_", 1, path)
    n_outputs = _check_int(fitted, "n_outputs_", 1, path)
    sizes = estimator.hidden_layer_sizes
    sizes = [sizes] if np.ndim(sizes) == 0 else list(sizes)
    units = [n_features, *sizes, n_outputs]
    expected = mlp(units, activation=_ACTIVATIONS[estimator.activation], init="zeros").get_config()
    if model.get_config() != expected:
        raise ValueError(f"{path} is inconsistent: the saved network is not the {units} "
                         f"{estimator.activation} network that its parameters and fitted "
                         "attributes describe.")
    if _check_int(fitted, "n_layers_", 2, path) != len(units):
        raise ValueError(f"{path} is inconsistent: n_layers_ is {fitted['n_layers_']} for "
                         f"a network of {len(units)} layers of units.")
    names = fitted.get("feature_names_in_")
    if names is not None and np.shape(names) != (n_features,):
        raise ValueError(f"{path} is inconsistent: {np.size(names)} feature names for "
                         f"{n_features} features.")

    if isinstance(estimator, MLPClassifier):
        from sklearn.preprocessing import LabelBinarizer

        _require(content, ("label_binarizer",), path)
        state = content["label_binarizer"]
        classes = _from_plain_array(state["classes"])
        y_type = state.get("y_type")
        if y_type not in _LABEL_TYPES:
            raise ValueError(f"{path} is inconsistent: the label type {y_type!r} is not one "
                             f"of {list(_LABEL_TYPES)}.")
        width = 1 if y_type == "binary" else len(classes)
        if classes.ndim != 1 or len(classes) < 2 or width != n_outputs:
            raise ValueError(f"{path} is inconsistent: {len(classes)} {y_type} classes need "
                             f"{width} outputs; the network has {n_outputs}.")
        saved_classes = fitted.get("classes_")
        if saved_classes is None or not np.array_equal(saved_classes, classes):
            raise ValueError(f"{path} is inconsistent: classes_ differs from the labels the "
                             "network's outputs stand for.")
        binarizer = LabelBinarizer()
        binarizer.classes_, binarizer.y_type_, binarizer.sparse_input_ = classes, y_type, False
        estimator._label_binarizer = binarizer
        fitted["classes_"] = classes
    laplace_state = fitted.pop("laplace_", None)
    for attribute, value in fitted.items():
        setattr(estimator, attribute, value)
    if estimator.out_activation_ != estimator._output_activation():
        raise ValueError(f"{path} is inconsistent: out_activation_ is "
                         f"{estimator.out_activation_!r} but the {name}'s targets need "
                         f"{estimator._output_activation()!r}.")
    estimator._use_network(model)
    if laplace_state is not None:
        estimator.laplace_ = _laplace_from(laplace_state, estimator, path)
    return SavedEstimator(estimator, content.get("preprocessing"), content.get("metadata") or {})

