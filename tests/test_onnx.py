"""ONNX export: onnxruntime against jacnet's own predictions, layer by layer and end to end."""

from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import jacnet  # noqa: E402
from jacnet.data import StandardScaler  # noqa: E402
from jacnet.layers import (  # noqa: E402
    GELU,
    Dropout,
    Identity,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)
from jacnet.network import Sequential  # noqa: E402
from jacnet.onnx import check, export  # noqa: E402

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
ACTIVATIONS = [Tanh, Sigmoid, ReLU, lambda: LeakyReLU(0.2), Softplus, GELU, lambda: GELU("tanh"),
               Identity, Softmax, lambda: Dropout(0.5)]
ACTIVATION_IDS = ["tanh", "sigmoid", "relu", "leaky_relu", "softplus", "gelu", "gelu_tanh",
                  "identity", "softmax", "dropout"]


def _run(path: Path, X: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _network(layers: list, dtype: str, seed: int = 0, scale: float = 1.5) -> Sequential:
    model = Sequential(layers, dtype=dtype)
    model.params[:] = np.random.default_rng(seed).normal(0.0, scale, model.n_params)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_every_layer_matches_jacnet(tmp_path, make, dtype):
    # Inside a network (Linear, activation, Linear) and as the last layer, batches 1 and 1000.
    for layers in ([Linear(4, 6, dtype=dtype), make(), Linear(6, 3, dtype=dtype)],
                   [Linear(4, 5, dtype=dtype), make()]):
        model = _network(layers, dtype)
        model.train()  # Dropout drops while training; the export is the evaluation network
        path = tmp_path / "model.onnx"
        export(model, path)
        onnx.checker.check_model(onnx.load(path), full_check=True)
        for n in (1, 1000):
            X = np.random.default_rng(n).normal(0.0, 3.0, (n, 4))
            result = check(model, path, X)
            assert result.n_samples == n
            assert result.max_rel_diff <= TOLERANCE[dtype], (layers, n, result)
        assert model.training  # check() evaluates in eval mode and restores the mode


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", [Sigmoid, Softplus, lambda: LeakyReLU(0.3), GELU,
                                  lambda: GELU("tanh"), Tanh],
                         ids=["sigmoid", "softplus", "leaky_relu", "gelu", "gelu_tanh", "tanh"])
def test_activations_value_by_value_on_both_tails(tmp_path, make, dtype):
    # Each output value on its own, far into both tails, where a naive formula loses every
    # digit (sigmoid and softplus of -40 are ~4e-18, not 0). float64: within 1e-12 of
    # jacnet per value; GELU's own 1 + erf cancels below -8, so it is compared absolutely.
    model = Sequential([Linear(1, 1, bias=False, dtype=dtype), make()], dtype=dtype)
    model.params[:] = 1.0
    path = tmp_path / "activation.onnx"
    export(model, path)
    x = np.concatenate([np.linspace(-40.0, 40.0, 4001), [0.0, -1e-300 if dtype == "float64" else 0.0]])
    X = x[:, None].astype(dtype)
    expected = model.eval()(X)
    (got,) = _run(path, X)
    assert got.dtype == np.dtype(dtype)
    if isinstance(model.layers[1], GELU):
        atol = 1e-6 if dtype == "float32" else 1e-14
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE[dtype], atol=atol)
    elif dtype == "float64":
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-30)


def test_exact_gelu_float64_polynomial_erf_is_within_1e15_of_erf(tmp_path):
    # The float64 erf (onnxruntime has no float64 Erf kernel) through GELU, on a dense grid
    # crossing every piece boundary: GELU(x) = x/2 (1 + erf(x/√2)), so erf = 2 GELU/x − 1.
    model = Sequential([Linear(1, 1, bias=False, dtype="float64"), GELU()], dtype="float64")
    model.params[:] = 1.0
    path = tmp_path / "gelu.onnx"
    export(model, path)
    x = np.linspace(-9.0, 9.0, 36001)
    x = x[x != 0.0]
    (got,) = _run(path, x[:, None])
    erf = np.array([math.erf(v / math.sqrt(2.0)) for v in x])
    np.testing.assert_allclose(2.0 * got[:, 0] / x - 1.0, erf, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", range(8))
def test_random_networks_depth_1_to_4(tmp_path, seed, dtype):
    rng = np.random.default_rng(seed)
    depth = 1 + seed % 4
    widths = [int(w) for w in rng.integers(1, 9, depth + 1)]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(Linear(n_in, n_out, bias=bool(rng.integers(2)), dtype=dtype))
        if i < depth - 1 or rng.integers(2):
            layers.append(ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]())
    model = _network(layers, dtype, seed=seed, scale=1.0)
    path = tmp_path / "random.onnx"
    proto = export(model, path)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for n in (1, 1000):
        X = rng.normal(0.0, 2.0, (n, widths[0]))
        result = check(model, path, X)
        assert result.max_rel_diff <= TOLERANCE[dtype], (model, result)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_standardisation_of_inputs_and_outputs_round_trips(tmp_path, dtype):
    rng = np.random.default_rng(0)
    X_raw = rng.normal(50.0, 20.0, (300, 3))
    Y_raw = rng.normal(-3.0, 0.01, (300, 2))
    x_scaler, y_scaler = StandardScaler().fit(X_raw), StandardScaler().fit(Y_raw)
    model = _network([Linear(3, 5, dtype=dtype), Tanh(), Linear(5, 2, dtype=dtype)], dtype)
    path = tmp_path / "scaled.onnx"
    export(model, path, preprocessing={"X": x_scaler, "y": y_scaler})
    (got,) = _run(path, X_raw.astype(dtype))
    expected = y_scaler.inverse_transform(model.eval()(x_scaler.transform(X_raw)))
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE[dtype], atol=0)
    assert check(model, path, X_raw, {"X": x_scaler, "y": y_scaler}).max_rel_diff <= TOLERANCE[dtype]
    # Without the scaler the same file is far off: the test sees the standardisation.
    assert check(model, path, X_raw).max_rel_diff > 0.1
    # A scaler alone is the input scaler.
    export(model, path, preprocessing=x_scaler)
    (got,) = _run(path, X_raw.astype(dtype))
    expected = model(x_scaler.transform(X_raw))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE[dtype] * np.abs(expected).max())


@pytest.mark.parametrize("classes", [["cat", "dog", "eel"], [3, 5, 7], ["no", "yes"], [0, 1]])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_class_labels_and_probabilities_round_trip(tmp_path, classes, dtype):
    n_out = 1 if len(classes) == 2 else len(classes)
    model = _network([Linear(4, 6, dtype=dtype), ReLU(), Linear(6, n_out, dtype=dtype)], dtype)
    path = tmp_path / "classifier.onnx"
    export(model, path, classes=classes, metadata={"task": "classification", "class_names": classes})
    X = np.random.default_rng(1).normal(0.0, 2.0, (500, 4))
    label, probabilities = _run(path, X.astype(dtype))
    logits = model(X).astype(np.float64)
    if n_out == 1:
        p = 1.0 / (1.0 + np.exp(-logits))
        expected = np.hstack([1.0 - p, p])
    else:
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=TOLERANCE[dtype], atol=1e-7)
    assert probabilities.shape == (500, len(classes))
    codes = expected.argmax(axis=1)
    assert len(set(codes)) > 1  # both or all classes occur, so a wrong mapping would show
    assert label.tolist() == [classes[c] for c in codes]
    assert label.dtype == (np.int64 if isinstance(classes[0], int) else object)
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props["task"] == "classification"
    import json

    assert json.loads(props["class_names"]) == classes
    result = check(model, path, X, classes=classes)
    assert result.label_mismatches == 0 and result.max_rel_diff <= TOLERANCE[dtype]


def test_export_errors_name_the_problem(tmp_path):
    path = tmp_path / "model.onnx"

    class Swish(Tanh):  # a subclass computes something else: not exported as Tanh
        pass

    model = Sequential([Linear(2, 3), Swish(), Linear(3, 1)])
    with pytest.raises(ValueError, match=r"layer 1, Swish\(\), has no exact ONNX form"):
        export(model, path)
    assert not path.exists()
    good = jacnet.mlp([2, 3, 2], seed=0)
    with pytest.raises(ValueError, match="opset must be an integer from 13"):
        export(good, path, opset=11)
    with pytest.raises(ValueError, match=r"preprocessing\['X'\] was fitted on 3 columns"):
        export(good, path, preprocessing=StandardScaler().fit(np.ones((4, 3))))
    with pytest.raises(TypeError, match="preprocessing must be None"):
        export(good, path, preprocessing={"inputs": None})
    with pytest.raises(ValueError, match="classes must list 2 labels"):
        export(good, path, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="ends in Softmax"):
        export(Sequential([Linear(2, 2), Softmax()]), path, classes=["a", "b"])
    with pytest.raises(ValueError, match="non-integral numbers"):
        export(good, path, classes=[0.5, 1.5])
    with pytest.raises(ValueError, match="output_name must be a pair"):
        export(good, path, classes=["a", "b"], output_name="label")
    with pytest.raises(TypeError, match="must be a jacnet Sequential"):
        export("model.npz", path)
    assert not path.exists()
    # A failed export leaves an earlier file as it was.
    export(good, path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        export(model, path)
    assert path.read_bytes() == before


def test_names_and_opset(tmp_path):
    path = tmp_path / "named.onnx"
    model = jacnet.mlp([3, 4, 1], activation="gelu", seed=0)
    proto = export(model, path, input_name="features", output_name="y_hat", opset=13)
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["y_hat"]
    assert proto.opset_import[0].version == 13
    assert check(model, path, np.ones((2, 3))).max_rel_diff <= 1e-5


# --------------------------------------------------------------------------- scikit-learn
def _skl2onnx():
    return pytest.importorskip("skl2onnx")


def _iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pipeline_with_lm_classifier_converts(tmp_path, dtype):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler as SkScaler

    from jacnet.sklearn import MLPClassifier

    X, y = _iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    pipe = Pipeline([("scale", SkScaler()),
                     ("mlp", MLPClassifier(hidden_layer_sizes=(6,), solver="lm", max_iter=30,
                                           random_state=0, dtype=dtype))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(X, names)
    path = tmp_path / "pipe.onnx"
    # zipmap=False: label and probabilities tensors, float64 end to end for a float64 input.
    skl2onnx = _skl2onnx()
    proto = skl2onnx.to_onnx(pipe, X[:1], options={id(pipe[-1]): {"zipmap": False}})
    path.write_bytes(proto.SerializeToString())
    assert [o.name for o in proto.graph.output] == ["label", "probabilities"]
    for n in (1, 150):
        result = check(pipe, path, X[:n])
        assert result.label_mismatches == 0
        assert result.max_rel_diff <= TOLERANCE[dtype], result
    # The default zipmap: a list of {class: probability} (ZipMap takes float32, as for
    # scikit-learn's own MLPClassifier).
    X32 = X.astype(np.float32)
    proto = skl2onnx.to_onnx(pipe, X32[:1])
    label, zipped = _run_proto(proto, X32)
    assert label.tolist() == pipe.predict(X32).tolist()
    assert set(zipped[0]) == set(names)
    probabilities = pipe.predict_proba(X32)
    assert abs(zipped[7]["virginica"] - probabilities[7, 2]) <= 1e-5 * probabilities.max()
    # zipmap="columns": one output per class.
    proto = skl2onnx.to_onnx(pipe, X32[:1], options={id(pipe[-1]): {"zipmap": "columns"}})
    outputs = _run_proto(proto, X32)
    np.testing.assert_allclose(np.column_stack(outputs[1:]), probabilities, rtol=1e-5, atol=1e-7)


def _run_proto(proto, X):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def test_binary_classifier_with_integer_labels_converts(tmp_path):
    from jacnet.sklearn import MLPClassifier

    X, y = _iris()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    labels = np.where(y == 2, 7, 4)
    est = MLPClassifier(hidden_layer_sizes=(4,), solver="lm", max_iter=20, random_state=0,
                        dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, labels)
    path = tmp_path / "binary.onnx"
    skl2onnx = _skl2onnx()
    path.write_bytes(skl2onnx.to_onnx(est, X[:1], options={"zipmap": False}).SerializeToString())
    label, probabilities = _run(path, X)
    assert label.dtype == np.int64 and set(label.tolist()) == {4, 7}
    assert probabilities.shape == (150, 2)
    result = check(est, path, X)
    assert result.label_mismatches == 0 and result.max_rel_diff <= 1e-12
    # skl2onnx's options: nocl gives class indices, output_class_labels adds the classes.
    proto = skl2onnx.to_onnx(est, X[:1], options={"zipmap": False, "nocl": True})
    assert _run_proto(proto, X)[0].tolist() == (est.predict(X) == 7).astype(int).tolist()
    proto = skl2onnx.to_onnx(est, X[:1], options={"zipmap": False, "output_class_labels": True})
    assert _run_proto(proto, X)[2].tolist() == [4, 7]


def test_multilabel_classifier_is_refused_with_the_way_out():
    from jacnet.sklearn import MLPClassifier

    X, y = _iris()
    est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, np.column_stack([y == 0, y == 1]).astype(int))
    with pytest.raises(NotImplementedError, match=r"multi-label.*jacnet.onnx.export\(est.model_"):
        _skl2onnx().to_onnx(est, X[:1], options={"zipmap": False})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_br_regressor_converts_with_its_folded_output_scaling(tmp_path, dtype):
    from sklearn.datasets import load_diabetes

    from jacnet.sklearn import MLPRegressor

    X, y = load_diabetes(return_X_y=True)
    est = MLPRegressor(hidden_layer_sizes=(5,), solver="br", max_iter=30, random_state=0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    path = tmp_path / "br.onnx"
    skl2onnx = _skl2onnx()
    path.write_bytes(skl2onnx.to_onnx(est, X[:1]).SerializeToString())
    (prediction,) = _run(path, X)
    assert prediction.shape == (442, 1)
    # The targets span 25..346: a network that forgot br's output map would be far off.
    assert np.std(prediction) > 10
    for n in (1, 442):
        assert check(est, path, X[:n]).max_rel_diff <= TOLERANCE[dtype]


def test_poisson_regressor_exports_its_exp_output(tmp_path):
    from jacnet.sklearn import MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0] + 1.0))
    est = MLPRegressor(loss="poisson", hidden_layer_sizes=(4,), solver="lbfgs", max_iter=50,
                       random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    path = tmp_path / "poisson.onnx"
    path.write_bytes(_skl2onnx().to_onnx(est, X[:1]).SerializeToString())
    assert check(est, path, X).max_rel_diff <= 1e-12


# --------------------------------------------------------------------------- command line
@pytest.mark.parametrize("data, task", [("iris", "classification"), ("sine", "regression")])
def test_cli_export_end_to_end(tmp_path, data, task, capsys):
    from jacnet.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", data, "--hidden", "5", "--epochs", "3", "--out", str(run),
                 "--no-progress"]) == 0
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(run / "model.npz"), "--onnx", str(onnx_path)]) == 0
    assert "model.onnx" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert props["task"] == task
    from jacnet.io import load_model

    n_features = load_model(run / "model.npz").model.in_features
    X = np.random.default_rng(0).normal(0.0, 1.0, (40, n_features))
    features = tmp_path / "X.npz"
    np.savez(features, X=X)
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(run / "model.npz"), str(features), "--out", str(predictions)]) == 0
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    outputs = _run(onnx_path, X.astype(np.float32))
    if task == "classification":
        label, probabilities = outputs
        assert label.tolist() == [row["prediction"] for row in rows]
        names = [key[2:] for key in rows[0] if key.startswith("p_")]
        import json

        assert json.loads(props["class_names"]) == names
        expected = np.array([[float(row[f"p_{n}"]) for n in names] for row in rows])
        np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    else:
        (prediction,) = outputs
        expected = np.array([float(row["prediction"]) for row in rows])
        np.testing.assert_allclose(prediction[:, 0], expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())


def test_cli_export_errors(tmp_path, capsys):
    from jacnet.cli import main

    assert main(["export", str(tmp_path / "missing.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "missing.npz does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------------------- README
def test_readme_export_examples_run(tmp_path, monkeypatch):
    _skl2onnx()  # the second example converts a scikit-learn pipeline
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Export to ONNX", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the short lm fit's ConvergenceWarning
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "clf.onnx").is_file()
    assert [o.name for o in namespace["onx"].graph.output] == ["label", "probabilities"]
