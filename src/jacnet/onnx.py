"""Export trained networks to ONNX, check them with onnxruntime, and teach skl2onnx jacnet's estimators.

ONNX is how a small network reaches production: onnxruntime runs it in services, on
phones, in browsers, from C++, C# or Java. Three ways in:

- :func:`export` writes a :class:`~jacnet.network.Sequential` (with its saved
  standardisation, and class labels if it is a classifier) as an ``.onnx`` file, built
  node by node with ``onnx.helper`` (no PyTorch in the path);
- importing this module registers converters with ``skl2onnx`` for
  :class:`jacnet.sklearn.MLPClassifier` and :class:`jacnet.sklearn.MLPRegressor`, so
  ``skl2onnx.to_onnx`` converts them, alone or inside a ``Pipeline``, as it converts
  scikit-learn's own MLPs (label and probabilities outputs, the ``zipmap`` option);
- ``jacnet export runs/X/model.npz --onnx model.onnx`` on the command line.

:func:`check` runs an exported file with onnxruntime and reports how far it is from
jacnet's own prediction.

The graph computes what jacnet computes, in the network's dtype (float32 or float64).
Where an ONNX operator would round differently, an exact equivalent is built from
elementary operators, so a float64 export matches jacnet to about 1e-15:

- ``LeakyReLU``: ``Where(x > 0, x, slope·x)``, because the ``LeakyRelu`` operator holds
  its slope as a float32 attribute;
- ``Sigmoid``: jacnet's overflow-free form, ``e = exp(−|x|)``, ``1/(1+e)`` or ``e/(1+e)``,
  exact in relative terms on both tails;
- ``Softplus``: ``max(x, 0) + log1p(exp(−|x|))``, as NumPy's ``logaddexp``, with log1p
  written as ``t·log(u)/(u − 1)``, ``u = 1 + t`` (exact to a few ulps; ONNX has no Log1p
  and onnxruntime no float64 ``Softplus``);
- exact ``GELU`` in float64: onnxruntime has no float64 ``Erf``, so erf is a piecewise
  polynomial on [0, 6] (12 pieces of degree 14, Horner's rule; erfc is fitted on the
  pieces from 1 on, so the tail keeps its digits; erf = ±1 beyond 6, where it rounds to 1),
  within 1e-15 of erf; float32 uses the ``Erf`` operator;
- ``Dropout`` is the identity (an exported network is in evaluation mode).

The skl2onnx converters need ``skl2onnx`` (and scikit-learn); without it this module
still imports and :func:`export`, :func:`check` work. Install with
``pip install 'jacnet[onnx]'``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from jacnet.data import StandardScaler
from jacnet.io import atomic_write
from jacnet.layers import (
    GELU,
    Dropout,
    Identity,
    Layer,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)
from jacnet.network import Sequential

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "SKLEARN_CONVERTERS_REGISTERED", "CheckResult",
           "check", "export"]

#: The opset :func:`export` writes by default (onnxruntime 1.12 and later run it).
DEFAULT_OPSET = 17
#: The oldest opset the exported graphs allow (Softmax over one axis came with 13).
MIN_OPSET = 13
PathLike = str | os.PathLike[str]


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("jacnet.onnx needs the onnx package: pip install 'jacnet[onnx]'.") from None
    return onnx


# --------------------------------------------------------------------------- graph building
class _Graph:
    """Nodes and constants of an ONNX graph under unique names, in one float dtype.

    Every node has one output; :meth:`node` returns its name. The skl2onnx converters use
    a subclass that writes into skl2onnx's container instead, so the network is
    translated by the same code on both paths.
    """

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._counts: dict[str, int] = {}

    def _name(self, hint: str) -> str:
        count = self._counts.get(hint, 0)
        self._counts[hint] = count + 1
        return f"{hint}_{count}"

    def _array(self, value: Any) -> np.ndarray:
        """Numbers in the graph's float dtype; int64 and string arrays (labels) as they are."""
        array = np.asarray(value)
        if isinstance(value, np.ndarray) and (array.dtype.kind == "U" or array.dtype == np.int64):
            return array
        return array.astype(self.dtype)

    def constant(self, value: Any, hint: str = "const") -> str:
        """An initializer named after ``hint``; see :meth:`_array` for its dtype."""
        onnx = _require_onnx()
        array = self._array(value)
        name = self._name(hint)
        if array.dtype.kind == "U":
            tensor = onnx.helper.make_tensor(name, onnx.TensorProto.STRING, array.shape,
                                             [s.encode("utf-8") for s in array.ravel()])
        else:
            tensor = onnx.numpy_helper.from_array(array, name)
        self.initializers.append(tensor)
        return name

    def node(self, op: str, inputs: Sequence[str], hint: str | None = None,
             output: str | None = None, **attrs: Any) -> str:
        onnx = _require_onnx()
        out = output or self._name(hint or op.lower())
        self.nodes.append(onnx.helper.make_node(op, list(inputs), [out],
                                                name=self._name("node_" + op), **attrs))
        return out

    @property
    def float_type(self) -> int:
        onnx = _require_onnx()
        return int(onnx.helper.np_dtype_to_tensor_dtype(self.dtype))


# Each function appends one jacnet layer's forward pass to the graph: (graph, layer, x) -> y.
def _linear(g: _Graph, layer: Layer, x: str) -> str:
    assert isinstance(layer, Linear)
    inputs = [x, g.constant(layer.weight, "weight")]  # (out, in): Gemm with transB computes x Wᵀ
    if layer.bias is not None:
        inputs.append(g.constant(layer.bias, "bias"))
    return g.node("Gemm", inputs, "linear", transB=1)


def _identity(g: _Graph, layer: Layer, x: str) -> str:
    return g.node("Identity", [x], type(layer).__name__.lower())


def _sigmoid(g: _Graph, x: str) -> str:
    """jacnet's overflow-free logistic: e = exp(−|x|); 1/(1+e) where x ≥ 0, else e/(1+e)."""
    e = g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])])
    one = g.constant(1.0, "one")
    denominator = g.node("Add", [one, e])
    positive = g.node("Div", [one, denominator])
    negative = g.node("Div", [e, denominator])
    return g.node("Where", [g.node("GreaterOrEqual", [x, g.constant(0.0, "zero")]),
                            positive, negative], "sigmoid")


def _log1p(g: _Graph, t: str) -> str:
    """log(1 + t) to a few ulps without a Log1p operator: t·log(u)/(u − 1) with u = 1 + t
    (t itself where u rounds to 1)."""
    one = g.constant(1.0, "one")
    u = g.node("Add", [one, t])
    d = g.node("Sub", [u, one])
    ratio = g.node("Div", [g.node("Log", [u]), d])
    return g.node("Where", [g.node("Equal", [d, g.constant(0.0, "zero")]), t,
                            g.node("Mul", [t, ratio])], "log1p")


def _softplus(g: _Graph, layer: Layer, x: str) -> str:
    # NumPy's logaddexp(0, x): max(x, 0) + log1p(exp(−|x|)).
    tail = _log1p(g, g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])]))
    return g.node("Add", [g.node("Relu", [x]), tail], "softplus")


def _leaky_relu(g: _Graph, layer: Layer, x: str) -> str:
    assert isinstance(layer, LeakyReLU)
    scaled = g.node("Mul", [x, g.constant(layer.negative_slope, "negative_slope")])
    return g.node("Where", [g.node("Greater", [x, g.constant(0.0, "zero")]), x, scaled],
                  "leaky_relu")


# erf on [0, 6] in 12 pieces of width 0.5: on piece i, erf(a) = offset_i + p_i(t) with
# t = 2(a/0.5 − i) − 1 in [−1, 1]; offset 1 (and p = −erfc) from a = 1 on.
_ERF_WIDTH, _ERF_LIMIT, _ERF_DEGREE = 0.5, 6.0, 14
_erf_table: tuple[np.ndarray, np.ndarray] | None = None


def _erf_pieces() -> tuple[np.ndarray, np.ndarray]:
    """The polynomial pieces of erf (coefficients (degree + 1, pieces), offsets (pieces,)),
    fitted once by least squares to the standard library's erf/erfc at Chebyshev points."""
    global _erf_table
    if _erf_table is None:
        from numpy.polynomial import chebyshev

        n_pieces = round(_ERF_LIMIT / _ERF_WIDTH)
        nodes = np.cos(np.pi * (np.arange(300) + 0.5) / 300)
        coefficients, offsets = [], []
        for i in range(n_pieces):
            a = i * _ERF_WIDTH + (nodes + 1.0) * (_ERF_WIDTH / 2)
            tail = i * _ERF_WIDTH >= 1.0
            values = np.array([-math.erfc(v) if tail else math.erf(v) for v in a])
            coefficients.append(chebyshev.cheb2poly(chebyshev.chebfit(nodes, values, _ERF_DEGREE)))
            offsets.append(1.0 if tail else 0.0)
        _erf_table = np.array(coefficients).T, np.array(offsets)
    return _erf_table


def _erf(g: _Graph, u: str) -> str:
    """erf(u): the ``Erf`` operator in float32; the polynomial pieces in float64."""
    if g.dtype == np.float32:
        return g.node("Erf", [u])
    coefficients, offsets = _erf_pieces()
    a = g.node("Min", [g.node("Abs", [u]), g.constant(_ERF_LIMIT, "erf_limit")])
    s = g.node("Div", [a, g.constant(_ERF_WIDTH, "erf_width")])
    piece = g.node("Min", [g.node("Floor", [s]), g.constant(len(offsets) - 1, "erf_last")])
    index = g.node("Cast", [piece], "erf_piece", to=_require_onnx().TensorProto.INT64)
    t = g.node("Sub", [g.node("Mul", [g.node("Sub", [s, piece]), g.constant(2.0, "two")]),
                       g.constant(1.0, "one")])

    def at_piece(values: np.ndarray, hint: str) -> str:
        return g.node("Gather", [g.constant(values, hint), index])

    p = at_piece(coefficients[-1], "erf_c")
    for k in range(coefficients.shape[0] - 2, -1, -1):
        p = g.node("Add", [g.node("Mul", [p, t]), at_piece(coefficients[k], "erf_c")])
    magnitude = g.node("Add", [p, at_piece(offsets, "erf_offset")])
    return g.node("Mul", [g.node("Sign", [u]), magnitude], "erf")


def _gelu(g: _Graph, layer: Layer, x: str) -> str:
    assert isinstance(layer, GELU)
    half_x = g.node("Mul", [x, g.constant(0.5, "half")])
    one = g.constant(1.0, "one")
    if layer.approximate == "tanh":  # 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
        cube = g.node("Mul", [g.node("Mul", [x, x]), x])
        inner = g.node("Add", [x, g.node("Mul", [cube, g.constant(0.044715, "gelu_k")])])
        inner = g.node("Mul", [inner, g.constant(math.sqrt(2.0 / math.pi), "sqrt_2_over_pi")])
        return g.node("Mul", [half_x, g.node("Add", [one, g.node("Tanh", [inner])])], "gelu")
    erf = _erf(g, g.node("Mul", [x, g.constant(1.0 / math.sqrt(2.0), "inv_sqrt_2")]))
    return g.node("Mul", [half_x, g.node("Add", [one, erf])], "gelu")


def _simple(op: str, **attrs: Any) -> Callable[[_Graph, Layer, str], str]:
    def emit(g: _Graph, layer: Layer, x: str) -> str:
        return g.node(op, [x], op.lower(), **attrs)
    return emit


_LAYERS: dict[type[Layer], Callable[[_Graph, Layer, str], str]] = {
    Linear: _linear,
    Identity: _identity,
    Dropout: _identity,
    Tanh: _simple("Tanh"),
    ReLU: _simple("Relu"),
    Softmax: _simple("Softmax", axis=1),
    Sigmoid: lambda g, layer, x: _sigmoid(g, x),
    LeakyReLU: _leaky_relu,
    Softplus: _softplus,
    GELU: _gelu,
}


def _network(g: _Graph, model: Sequential, x: str) -> str:
    for i, layer in enumerate(model.layers):
        emit = _LAYERS.get(type(layer))  # exact type: a subclass may compute something else
        if emit is None:
            known = ", ".join(sorted(t.__name__ for t in _LAYERS))
            raise ValueError(
                f"layer {i}, {layer!r}, has no exact ONNX form in jacnet.onnx, so the network "
                f"cannot be exported; exportable layers: {known}."
            )
        x = emit(g, layer, x)
    return x


def _standardise(g: _Graph, scaler: StandardScaler, x: str) -> str:
    centred = g.node("Sub", [x, g.constant(scaler.mean_, "mean")])
    return g.node("Div", [centred, g.constant(scaler.scale_, "scale")], "standardised")


def _unstandardise(g: _Graph, scaler: StandardScaler, y: str) -> str:
    scaled = g.node("Mul", [y, g.constant(scaler.scale_, "y_scale")])
    return g.node("Add", [scaled, g.constant(scaler.mean_, "y_mean")], "prediction")


def _labels(g: _Graph, probabilities: str, classes: np.ndarray) -> str:
    """The class of the largest probability (the first on ties), as int64 or string."""
    index = g.node("ArgMax", [probabilities], "class_index", axis=1, keepdims=0)
    return g.node("Gather", [g.constant(classes, "classes"), index], "label")


def _two_columns(g: _Graph, p: str) -> str:
    """[1 − p, p] for a positive-class probability p of shape (N, 1)."""
    return g.node("Concat", [g.node("Sub", [g.constant(1.0, "one"), p]), p], "probabilities",
                  axis=1)


def _class_array(classes: Any, what: str) -> np.ndarray:
    """Class labels as int64 (integers, booleans, integral floats) or as strings."""
    array = np.asarray(classes)
    if array.ndim != 1 or array.size < 2:
        raise ValueError(f"{what} must be a 1-D sequence of at least two class labels; "
                         f"got {array.shape if array.ndim != 1 else list(array)}.")
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{what} are non-integral numbers {array.tolist()}; ONNX labels are "
                             "int64 or strings, so pass them as strings.")
        return array.astype(np.int64)
    return array.astype(str)


# --------------------------------------------------------------------------- export
def _split_preprocessing(preprocessing: Any, model: Sequential
                         ) -> tuple[StandardScaler | None, StandardScaler | None]:
    """(input scaler, target scaler) from None, a StandardScaler or ``{"X": ..., "y": ...}``."""
    if preprocessing is None:
        return None, None
    x_scaler: Any
    y_scaler: Any
    if isinstance(preprocessing, StandardScaler):
        x_scaler, y_scaler = preprocessing, None
    elif isinstance(preprocessing, dict) and set(preprocessing) <= {"X", "y"}:
        x_scaler, y_scaler = preprocessing.get("X"), preprocessing.get("y")
    else:
        raise TypeError(
            "preprocessing must be None, a fitted jacnet.data.StandardScaler (for the inputs) "
            "or a dict {'X': scaler or None, 'y': scaler or None} as `jacnet train` saves it; "
            f"got {type(preprocessing).__name__}"
            + (f" with keys {sorted(preprocessing)}" if isinstance(preprocessing, dict) else "")
            + "."
        )
    for key, scaler, width, side in (("X", x_scaler, model.in_features, "inputs"),
                                     ("y", y_scaler, model.out_features, "outputs")):
        if scaler is None:
            continue
        if not isinstance(scaler, StandardScaler) or not hasattr(scaler, "mean_"):
            raise TypeError(f"preprocessing[{key!r}] must be a fitted jacnet.data.StandardScaler "
                            f"or None; got {scaler!r}.")
        if scaler.n_features_in_ != width:
            raise ValueError(f"preprocessing[{key!r}] was fitted on {scaler.n_features_in_} "
                             f"columns but the network has {width} {side}.")
    return x_scaler, y_scaler


def _check_opset(opset: Any) -> int:
    onnx = _require_onnx()
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) \
            or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (this onnx "
                         f"package's newest); got {opset!r}.")
    return int(opset)


def export(
    model: Sequential,
    path: PathLike,
    preprocessing: Any = None,
    *,
    classes: Sequence[Any] | None = None,
    metadata: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    input_name: str = "X",
    output_name: str | Sequence[str] | None = None,
) -> Any:
    """Write a network as an ONNX model that onnxruntime (or any ONNX runtime) can run.

    The graph takes a float tensor of shape (N, in_features), N any batch size, in the
    network's dtype; it standardises it when ``preprocessing`` has an input scaler, runs
    the layers (``Dropout`` as the identity), and undoes a target scaler on the output.
    With ``classes`` the network's outputs are read as logits, as jacnet's
    cross-entropy and BCE networks produce them, and the graph returns the label and
    the class probabilities, as ``jacnet predict`` does.

    Parameters
    ----------
    model : Sequential
        Layers ``Linear``, ``Identity``, ``Tanh``, ``Sigmoid``, ``ReLU``, ``LeakyReLU``,
        ``Softplus``, ``GELU`` (exact or tanh), ``Softmax``, ``Dropout``.
    path : str or PathLike
        The ``.onnx`` file, written atomically.
    preprocessing : StandardScaler or dict, optional
        A fitted :class:`jacnet.data.StandardScaler` of the inputs, or
        ``{"X": scaler or None, "y": scaler or None}`` as ``jacnet train`` saves it
        (``"y"``: the outputs are mapped back with ``y * scale + mean``).
    classes : sequence, optional
        The class labels, in the order of the network's output columns (two labels for
        a network with one logit, whose probability is that of the second). Integers
        become int64 labels, anything else strings.
    metadata : dict, optional
        Stored as the model's ``metadata_props`` (strings as they are, other values as JSON).
    opset : int, default DEFAULT_OPSET
        The ONNX operator set, from ``MIN_OPSET`` (13) on.
    input_name : str, default "X"
    output_name : str, or a pair of str with ``classes``, optional
        Default ``"output"``; with ``classes``, ``("label", "probabilities")``.

    Returns
    -------
    onnx.ModelProto
        The model written (it passed ``onnx.checker.check_model``).

    Raises
    ------
    ValueError
        A layer without an exact ONNX form (named), mismatched preprocessing or classes,
        an unsupported opset.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import jacnet
    >>> from jacnet.onnx import export, check
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
    >>> model = jacnet.mlp([3, 8, 2], activation="gelu", seed=0, dtype="float64")
    >>> proto = export(model, path)
    >>> [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
    (['X'], ['output'])
    >>> X = np.random.default_rng(0).normal(size=(100, 3))
    >>> check(model, path, X).max_rel_diff < 1e-12
    True
    """
    onnx = _require_onnx()
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a jacnet Sequential; got {type(model).__name__}. For "
                        "jacnet.sklearn estimators use skl2onnx.to_onnx after importing jacnet.onnx.")
    opset = _check_opset(opset)
    x_scaler, y_scaler = _split_preprocessing(preprocessing, model)
    names: list[str]
    if classes is None:
        if output_name is not None and not isinstance(output_name, str):
            raise ValueError(f"output_name must be one name without classes; got {output_name!r}.")
        names = [output_name or "output"]
    else:
        names = ["label", "probabilities"] if output_name is None else list(output_name)
        if len(names) != 2 or isinstance(output_name, str):
            raise ValueError("with classes, output_name must be a pair of names (label, "
                             f"probabilities); got {output_name!r}.")
    if not all(isinstance(n, str) and n for n in [input_name, *names]) \
            or len({input_name, *names}) != len(names) + 1:
        raise ValueError(f"input and output names must be distinct non-empty strings; got "
                         f"input_name={input_name!r}, output names {names!r}.")

    g = _Graph(model.dtype)
    x = _standardise(g, x_scaler, input_name) if x_scaler is not None else input_name
    y = _network(g, model, x)
    if y_scaler is not None:
        y = _unstandardise(g, y_scaler, y)
    n_out, float_type = model.out_features, g.float_type
    outputs: list[tuple[str, str, int, list[Any]]] = []
    if classes is None:
        outputs.append((y, names[0], float_type, ["N", n_out]))
    else:
        labels = _class_array(classes, "classes")
        if len(labels) != (2 if n_out == 1 else n_out):
            raise ValueError(
                f"the network has {n_out} output column(s), so classes must list "
                f"{max(n_out, 2)} labels (two for a single logit); got {len(labels)}.")
        last = model.layers[-1] if model.layers else None
        if isinstance(last, (Softmax, Sigmoid)):
            raise ValueError(
                f"classes= reads the outputs as logits, but the network ends in {last!r}; "
                "export it without classes, or drop its last layer.")
        probabilities = _two_columns(g, _sigmoid(g, y)) if n_out == 1 else \
            g.node("Softmax", [y], "probabilities", axis=1)
        label_type = onnx.TensorProto.INT64 if labels.dtype == np.int64 else onnx.TensorProto.STRING
        outputs.append((_labels(g, probabilities, labels), names[0], label_type, ["N"]))
        outputs.append((probabilities, names[1], float_type, ["N", len(labels)]))
    for internal, public, _, _ in outputs:
        g.node("Identity", [internal], output=public)

    graph = onnx.helper.make_graph(
        g.nodes, "jacnet",
        [onnx.helper.make_tensor_value_info(input_name, float_type, ["N", model.in_features])],
        [onnx.helper.make_tensor_value_info(public, kind, shape)
         for _, public, kind, shape in outputs],
        initializer=g.initializers,
    )
    from jacnet import __version__

    opsets = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="jacnet",
                                   producer_version=__version__,
                                   doc_string=f"jacnet network, {model.dtype}: {model.get_config()}")
    # The oldest IR version the opset allows, so older runtimes load the file too.
    proto.ir_version = onnx.helper.find_min_ir_version_for(opsets)
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): v if isinstance(v, str) else json.dumps(v)
                                            for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
    return proto


# --------------------------------------------------------------------------- check
class CheckResult(NamedTuple):
    """How far onnxruntime's output is from jacnet's, as returned by :func:`check`.

    ``max_abs_diff`` is max |onnx − jacnet| over every output value; ``max_rel_diff`` is
    that divided by the largest |jacnet| value (the size of the mismatch relative to the
    size of the output, which stays meaningful where single values cross zero).
    ``label_mismatches`` counts samples whose labels differ (None without labels).
    """

    max_abs_diff: float
    max_rel_diff: float
    n_samples: int
    label_mismatches: int | None = None

    def __str__(self) -> str:
        labels = "" if self.label_mismatches is None else \
            f", {self.label_mismatches} label mismatches"
        return (f"{self.n_samples} samples: max abs diff {self.max_abs_diff:.3g}, "
                f"max rel diff {self.max_rel_diff:.3g}{labels}")


def _session(path: PathLike) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("jacnet.onnx.check needs onnxruntime: pip install 'jacnet[onnx]'.") \
            from None
    return onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def _reference(model: Any, X: Any, preprocessing: Any, classes: Any
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """jacnet's own (values, labels) for what :func:`export` wrote, or for an estimator."""
    if not isinstance(model, Sequential):  # a fitted scikit-learn estimator or pipeline
        if hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(X)), np.asarray(model.predict(X))
        return np.asarray(model.predict(X)), None
    x_scaler, y_scaler = _split_preprocessing(preprocessing, model)
    was_training = model.training
    try:
        out = model.eval()(X if x_scaler is None else x_scaler.transform(X))
    finally:
        model.train(was_training)
    if y_scaler is not None:
        out = y_scaler.inverse_transform(out)
    if classes is None:
        return out, None
    labels = _class_array(classes, "classes")
    if out.shape[1] == 1:
        from jacnet.layers import _sigmoid as logistic

        p = logistic(out)
        probabilities = np.concatenate([1.0 - p, p], axis=1)
    else:
        probabilities = Softmax().forward(out)
    return probabilities, labels[probabilities.argmax(axis=1)]


def check(model: Any, path: PathLike, X: Any, preprocessing: Any = None, *,
          classes: Sequence[Any] | None = None) -> CheckResult:
    """Run an exported model with onnxruntime on ``X`` and compare it with jacnet.

    Parameters
    ----------
    model : Sequential, or a fitted estimator or Pipeline
        The network given to :func:`export` (with the same ``preprocessing`` and
        ``classes``), or the scikit-learn object converted by ``skl2onnx.to_onnx``
        (compared with its ``predict_proba`` and ``predict``, or ``predict``; convert
        classifiers with ``options={"zipmap": False}``).
    path : str or PathLike
        The ``.onnx`` file.
    X : array-like, shape (n_samples, n_features)
        Raw inputs (before any standardisation the file contains).

    Returns
    -------
    CheckResult
        ``max_abs_diff``, ``max_rel_diff``, ``n_samples``, ``label_mismatches``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import jacnet
    >>> from jacnet.onnx import export, check
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "classifier.onnx"
    >>> model = jacnet.mlp([4, 6, 3], seed=0)
    >>> _ = export(model, path, classes=["a", "b", "c"])
    >>> result = check(model, path, np.ones((10, 4)), classes=["a", "b", "c"])
    >>> result.max_rel_diff < 1e-5, result.label_mismatches
    (True, 0)
    """
    session = _session(path)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{path} has {len(inputs)} inputs; check runs single-input models.")
    kind = inputs[0].type
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}
    if kind not in dtypes:
        raise ValueError(f"{path}: the input is a {kind}; check feeds float or int64 tensors.")
    X_feed = np.asarray(X, dtype=dtypes[kind])
    if X_feed.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X_feed.shape}.")
    values, labels = _reference(model, X, preprocessing, classes)
    outputs = session.run(None, {inputs[0].name: X_feed})
    floats = [o for o in outputs if isinstance(o, np.ndarray) and o.dtype.kind == "f"]
    if not floats:
        raise ValueError(f"{path} has no float tensor output to compare (a ZipMap output? "
                         "convert with options={'zipmap': False}).")
    got = floats[0].astype(np.float64)
    expected = np.asarray(values, dtype=np.float64).reshape(got.shape)
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    mismatches = None
    if labels is not None:
        others = [o for o in outputs if not (isinstance(o, np.ndarray) and o.dtype.kind == "f")]
        if not others:
            raise ValueError(f"{path} has no label output to compare.")
        onnx_labels = np.asarray(others[0]).reshape(-1).astype(str)
        mismatches = int(np.sum(onnx_labels != np.asarray(labels).reshape(-1).astype(str)))
    return CheckResult(diff, diff / scale if scale > 0 else diff, int(X_feed.shape[0]), mismatches)


# --------------------------------------------------------------------------- skl2onnx
class _SklearnGraph(_Graph):
    """A :class:`_Graph` that writes into a skl2onnx container under its scope's names."""

    def __init__(self, dtype: np.dtype, scope: Any, container: Any) -> None:
        super().__init__(dtype)
        self.scope, self.container = scope, container

    def constant(self, value: Any, hint: str = "const") -> str:
        onnx = _require_onnx()
        array = self._array(value)
        name = self.scope.get_unique_variable_name(hint)
        if array.dtype.kind == "U":
            self.container.add_initializer(name, onnx.TensorProto.STRING, list(array.shape),
                                           [s.encode("utf-8") for s in array.ravel()])
        else:
            tensor = onnx.numpy_helper.from_array(array, name)
            self.container.add_initializer(name, tensor.data_type, list(array.shape), tensor)
        return name

    def node(self, op: str, inputs: Sequence[str], hint: str | None = None,
             output: str | None = None, **attrs: Any) -> str:
        out = output or self.scope.get_unique_variable_name(hint or op.lower())
        self.container.add_node(op, list(inputs), [out],
                                name=self.scope.get_unique_operator_name(op), **attrs)
        return out


def _estimator_outputs(g: _Graph, estimator: Any, x: str) -> str:
    """The estimator's network and output activation (the probabilities or values)."""
    out = _network(g, estimator.model_, x)
    activation = estimator.out_activation_
    if activation == "softmax":
        return g.node("Softmax", [out], "probabilities", axis=1)
    if activation == "logistic":
        return _sigmoid(g, out)
    if activation == "exp":
        return g.node("Exp", [out], "prediction")
    return out


def _sklearn_graph(scope: Any, operator: Any, container: Any) -> tuple[_SklearnGraph, str]:
    """A graph in the estimator's dtype, and its input cast to that dtype when needed."""
    from skl2onnx.common.data_types import guess_proto_type

    estimator = operator.raw_operator
    g = _SklearnGraph(estimator.model_.dtype, scope, container)
    x = operator.inputs[0].full_name
    if guess_proto_type(operator.inputs[0].type) != g.float_type:
        x = g.node("Cast", [x], "cast_input", to=g.float_type)
    return g, x


def _to_declared(g: _SklearnGraph, value: str, variable: Any) -> None:
    """Write ``value`` to a declared output, cast to its declared element type."""
    from skl2onnx.common.data_types import guess_proto_type

    declared = guess_proto_type(variable.type)
    if declared != g.float_type:
        value = g.node("Cast", [value], "cast_output", to=declared)
    g.node("Identity", [value], output=variable.full_name)


def _convert_classifier(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx converter of jacnet.sklearn.MLPClassifier: label and probabilities outputs."""
    estimator = operator.raw_operator
    if estimator.out_activation_ == "logistic" and estimator.n_outputs_ > 1:
        raise NotImplementedError(
            "jacnet.onnx converts single-label MLPClassifiers; this one was fitted on a "
            "multi-label target. Export its network with jacnet.onnx.export(est.model_, ...) "
            "and threshold the sigmoid outputs at 0.5.")
    from skl2onnx.common.utils_classifier import get_label_classes

    g, x = _sklearn_graph(scope, operator, container)
    probabilities = _estimator_outputs(g, estimator, x)
    if estimator.n_outputs_ == 1:
        probabilities = _two_columns(g, probabilities)
    labels = _labels(g, probabilities, _class_array(get_label_classes(scope, estimator),
                                                    "the estimator's classes_"))
    g.node("Identity", [labels], output=operator.outputs[0].full_name)
    _to_declared(g, probabilities, operator.outputs[1])


def _convert_regressor(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx converter of jacnet.sklearn.MLPRegressor: predictions (N, n_outputs)."""
    g, x = _sklearn_graph(scope, operator, container)
    _to_declared(g, _estimator_outputs(g, operator.raw_operator, x), operator.outputs[0])


def _regressor_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    if len(operator.inputs) != 1 or len(operator.outputs) != 1:
        raise RuntimeError("a jacnet MLPRegressor takes one input tensor and gives one output.")
    kind = type(operator.inputs[0].type)
    kind = kind if kind in (FloatTensorType, DoubleTensorType) else FloatTensorType
    n_rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = kind([n_rows, operator.raw_operator.n_outputs_])


def _register_sklearn_converters() -> bool:
    """Register the converters of jacnet's estimators with skl2onnx (False without it)."""
    try:
        from skl2onnx import update_registered_converter
        from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

        from jacnet.sklearn import MLPClassifier, MLPRegressor
    except ImportError:
        return False
    update_registered_converter(
        MLPClassifier, "JacnetMLPClassifier", calculate_linear_classifier_output_shapes,
        _convert_classifier, options={"zipmap": [True, False, "columns"], "nocl": [True, False],
                                      "output_class_labels": [False, True]})
    update_registered_converter(MLPRegressor, "JacnetMLPRegressor", _regressor_shape,
                                _convert_regressor)
    return True


#: Whether ``import jacnet.onnx`` registered the skl2onnx converters (skl2onnx installed).
SKLEARN_CONVERTERS_REGISTERED = _register_sklearn_converters()
