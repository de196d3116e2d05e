"""Sequential networks: forward, backward as a chain of VJPs, JVPs and whole-network Jacobians.

A network owns one flat parameter vector θ = (vec(W₁), b₁, vec(W₂), b₂, …) and one flat
gradient vector of the same shape; every layer's ``weight`` and ``bias`` are views into
them. That vector is the column order of every parameter Jacobian and what optimizers,
Levenberg–Marquardt, gradient checks and saved files work on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from jacnet._validation import as_float_dtype, check_array, check_choice
from jacnet.jacobians import BlockRow, Diagonal, Identity, JacobianOperator, compose
from jacnet.layers import (
    Activation,
    Dropout,
    Layer,
    Linear,
    SeedLike,
    _as_generator,
    get_activation,
    layer_from_config,
)


class Sequential:
    """Layers applied one after another, with one flat parameter vector.

    Parameters
    ----------
    layers : sequence of Layer
        At least one layer with parameters fixes the input width; each ``Linear``'s
        ``in_features`` must equal the width coming out of the layers before it.
    dtype : float32 or float64, optional
        Defaults to the layers' dtype (float32 for freshly made layers); layers of
        different dtypes raise ``TypeError`` unless ``dtype`` is given.

    Attributes
    ----------
    params : ndarray, shape (n_params,)
        θ, in layer order, weight (row-major) before bias.
    grads : ndarray, shape (n_params,)
        ∂loss/∂θ for the last ``backward`` call (overwritten, not accumulated).
    in_features, out_features : int

    Examples
    --------
    >>> from jacnet.layers import Linear, Tanh
    >>> model = Sequential([Linear(2, 3, seed=0), Tanh(), Linear(3, 1, seed=1)])
    >>> model.n_params, model.params.dtype
    (13, dtype('float32'))
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    >>> out = model(np.zeros((5, 2)))
    >>> out.shape
    (5, 1)
    >>> model.backward(np.ones((5, 1))).shape      # ∂/∂input; model.grads now holds ∂/∂θ
    (5, 2)
    """

    def __init__(self, layers: Sequence[Layer], *, dtype: DTypeLike | None = None) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer.")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"layer {i} is {type(layer).__name__}, not a jacnet Layer; build networks "
                    "from jacnet.layers (Linear, Tanh, ...)."
                )
            if layer._owned:
                raise ValueError(
                    f"layer {i} ({layer!r}) already belongs to another network; create a new "
                    "layer, or copy the network with model.copy()."
                )
        if dtype is None:
            dtypes = {layer.dtype for layer in layers if layer.n_params}
            if len(dtypes) > 1:
                found = ", ".join(sorted(str(d) for d in dtypes))
                raise TypeError(
                    f"the layers have mixed dtypes ({found}); make them all float32 or all "
                    "float64, or pass Sequential(..., dtype='float64') to convert them."
                )
            resolved = dtypes.pop() if dtypes else np.dtype(np.float32)
        else:
            resolved = as_float_dtype(dtype)
        self.layers = layers
        self.dtype = resolved
        self.in_features, self.out_features = self._check_chain(layers)

        # One flat vector for all parameters, each layer's weight/bias a view into it.
        self.params = np.zeros(sum(layer.n_params for layer in layers), dtype=resolved)
        self.grads = np.zeros_like(self.params)
        self._slices: dict[str, slice] = {}
        self.layer_slices: list[slice] = []
        offset = 0
        for i, layer in enumerate(layers):
            size = layer.n_params
            self.params[offset:offset + size] = layer.flat_params()
            layer.bind(self.params[offset:offset + size], self.grads[offset:offset + size])
            layer.dtype = resolved
            layer._owned = True
            self.layer_slices.append(slice(offset, offset + size))
            for name, shape in layer.param_shapes.items():
                n = int(np.prod(shape))
                self._slices[f"{i}.{name}"] = slice(offset, offset + n)
                offset += n
        self.training = True
        # Found once, not per backward call: Layer.n_params is a Python-level sum, and the
        # search showed in the profile of a small training step.
        self._lowest_with_params = next(
            (i for i, layer in enumerate(layers) if layer.n_params), 0)

    @staticmethod
    def _check_chain(layers: list[Layer]) -> tuple[int, int]:
        first = next((layer for layer in layers if isinstance(layer, Linear)), None)
        if first is None:
            raise ValueError("Sequential needs at least one Linear layer to fix its input width.")
        width = first.in_features
        in_features = width
        for i, layer in enumerate(layers):
            if isinstance(layer, Linear) and layer.in_features != width:
                raise ValueError(
                    f"layer {i} ({layer!r}) takes {layer.in_features} inputs but the layers "
                    f"before it produce {width}; set in_features={width} or change the "
                    "layer before."
                )
            width = layer.output_features(width)
        return in_features, width

    # --- parameters ---------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Number of scalar parameters, len(params)."""
        return self.params.size

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """``(name, view)`` pairs in storage order, names like ``"0.weight"``."""
        return [(name, self.params[s].reshape(self._shape_of(name)))
                for name, s in self._slices.items()]

    def parameter_slices(self) -> dict[str, slice]:
        """Where each named parameter lives in ``params``/``grads``."""
        return dict(self._slices)

    def layer_block_slices(self) -> list[slice]:
        """Where each parameter block (``"0.weight"``, ``"0.bias"``, …) lives, in θ order:
        the column blocks of the parameter Jacobian."""
        return list(self._slices.values())

    def _shape_of(self, name: str) -> tuple[int, ...]:
        index, attr = name.split(".")
        return self.layers[int(index)].param_shapes[attr]

    def locate(self, index: int) -> str:
        """Name the parameter entry at flat position ``index``, e.g. ``"2.weight[3, 1]"``.

        >>> from jacnet.layers import Linear
        >>> Sequential([Linear(2, 3)]).locate(7)
        '0.bias[1]'
        """
        for name, s in self._slices.items():
            if s.start <= index < s.stop:
                position = np.unravel_index(index - s.start, self._shape_of(name))
                return f"{name}[{', '.join(str(int(p)) for p in position)}]"
        raise IndexError(f"parameter index {index} is outside 0..{self.n_params - 1}.")

    # --- modes and copies -------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        """Training mode (dropout active); returns self."""
        self.training = mode
        for layer in self.layers:
            layer.training = mode
        return self

    def eval(self) -> Sequential:
        """Evaluation mode (dropout off); returns self."""
        return self.train(False)

    def get_config(self) -> list[dict[str, Any]]:
        """The architecture as a JSON-able list of layer descriptions."""
        return [layer.get_config() for layer in self.layers]

    @classmethod
    def from_config(cls, config: Sequence[dict[str, Any]], *, dtype: DTypeLike = np.float32,
                    params: np.ndarray | None = None) -> Sequential:
        """Rebuild a network from :meth:`get_config`, optionally with saved parameters.

        >>> from jacnet.layers import Linear, Tanh
        >>> model = Sequential([Linear(2, 3, seed=0), Tanh()])
        >>> clone = Sequential.from_config(model.get_config(), params=model.params)
        >>> bool(np.array_equal(clone.params, model.params))
        True
        """
        model = cls([layer_from_config(c) for c in config], dtype=dtype)
        if params is not None:
            params = np.asarray(params)
            if params.shape != model.params.shape:
                raise ValueError(
                    f"the saved parameters have shape {params.shape} but the architecture "
                    f"needs ({model.n_params},); the file and the architecture do not match."
                )
            model.params[...] = params
        return model

    def copy(self) -> Sequential:
        """An independent network with the same architecture and parameter values."""
        return self.astype(self.dtype)

    def astype(self, dtype: DTypeLike) -> Sequential:
        """A copy of the network in another float dtype (float64 for exact checks)."""
        return Sequential.from_config(self.get_config(), dtype=as_float_dtype(dtype),
                                      params=self.params).train(self.training)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)  # {self.n_params} parameters, {self.dtype}"

    def layer_table(self) -> list[tuple[str, str, str, int]]:
        """One row per layer: ``(name, input shape, output shape, parameter count)``.

        Shapes are per batch, ``B`` standing for the number of samples.

        >>> from jacnet.layers import Linear, Tanh
        >>> Sequential([Linear(2, 3), Tanh()]).layer_table()
        [('0 Linear(2 → 3)', '(B, 2)', '(B, 3)', 9), ('1 Tanh', '(B, 3)', '(B, 3)', 0)]
        """
        rows = []
        width = self.in_features
        for i, layer in enumerate(self.layers):
            out = layer.output_features(width)
            if isinstance(layer, Linear):
                bias = "" if layer.bias is not None else ", no bias"
                label = f"Linear({layer.in_features} → {layer.out_features}{bias})"
            elif set(layer.get_config()) - {"type"}:
                label = repr(layer)  # e.g. LeakyReLU(slope=0.01)
            else:
                label = type(layer).__name__
            rows.append((f"{i} {label}", f"(B, {width})", f"(B, {out})", layer.n_params))
            width = out
        return rows

    def _repr_html_(self) -> str:
        """Notebook display: the layer table with shapes and parameter counts."""
        from html import escape
        body = "".join(
            f"<tr><td>{escape(name)}</td><td>{inp}</td><td>{out}</td><td>{count}</td></tr>"
            for name, inp, out, count in self.layer_table())
        return (f"<div><b>Sequential</b>: {len(self.layers)} layers, {self.n_params} "
                f"parameters, {self.dtype}</div><table><thead><tr><th>layer</th>"
                "<th>input</th><th>output</th><th>parameters</th></tr></thead>"
                f"<tbody>{body}</tbody><tfoot><tr><td>total</td><td></td><td></td>"
                f"<td>{self.n_params}</td></tr></tfoot></table>")

    # --- forward, backward, jvp -----------------------------------------------------
    def check_input(self, X: Any) -> np.ndarray:
        """``X`` as a 2-D array of the network's dtype, checked for shape and finiteness."""
        return check_array(X, "X", dtype=self.dtype, n_columns=self.in_features)

    def __call__(self, X: Any) -> np.ndarray:
        """Checked forward pass: array-like (B, in_features) → (B, out_features)."""
        return self.forward(self.check_input(X))

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Forward pass on a 2-D array already of the network's dtype (no other checks)."""
        out = X
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True,
                 out: np.ndarray | None = None) -> np.ndarray | None:
        """Back-propagate ∂loss/∂output through every layer: the chain of VJPs.

        Parameters
        ----------
        grad_output : ndarray, shape (B, out_features)
            ∂loss/∂output for the batch of the last forward pass.
        input_grad : bool, default True
            Also compute ∂loss/∂input (a training step does not need it, and skipping
            it saves the first layer's largest matrix product).
        out : ndarray, shape (n_params,), optional
            Write ∂loss/∂θ = Σ_b J_bᵀ g_b here instead of into ``self.grads``, which is
            then left as it was (:func:`jacnet.curvature.jtv` and the Gauss–Newton
            products use this: one backward pass, the training gradient untouched).

        Returns
        -------
        ndarray, shape (B, in_features), or None when ``input_grad`` is False.
            ``self.grads`` (or ``out``) holds ∂loss/∂θ afterwards.
        """
        grad = grad_output
        if grad.ndim != 2 or grad.shape[1] != self.out_features:
            raise ValueError(
                f"grad_output must have shape (n_samples, {self.out_features}); got "
                f"{getattr(grad, 'shape', type(grad).__name__)}."
            )
        if out is not None:
            if out.shape != self.params.shape or not out.flags.c_contiguous:
                raise ValueError(
                    f"out must be a C-contiguous array of shape ({self.n_params},), one entry "
                    f"per parameter; got {getattr(out, 'shape', type(out).__name__)}."
                )
            # The layers write their gradients through views: point them at `out` for
            # this pass, and back at self.grads after it.
            for layer, s in zip(self.layers, self.layer_slices):
                if layer.n_params:
                    layer.bind(self.params[s], out[s])
            try:
                return self.backward(grad, input_grad=input_grad)
            finally:
                for layer, s in zip(self.layers, self.layer_slices):
                    if layer.n_params:
                        layer.bind(self.params[s], self.grads[s])
        # Layers below the first one with parameters need no gradient at all.
        lowest = self._lowest_with_params
        for i in range(len(self.layers) - 1, -1, -1):
            need_input = input_grad or i > lowest
            result = self.layers[i].backward(grad, need_input)
            if not need_input:
                return None
            assert result is not None
            grad = result
        return grad

    def jvp(self, X: Any, tangent: Any = None, param_tangent: Any = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """Forward-mode derivative: the output and J_x·tangent + J_θ·param_tangent.

        Parameters
        ----------
        X : array-like, shape (B, in_features)
        tangent : array-like, shape (B, in_features), optional
            A direction in input space (zero when omitted).
        param_tangent : array-like, shape (n_params,), optional
            A direction in parameter space (zero when omitted).

        Returns
        -------
        output : ndarray, shape (B, out_features)
        output_tangent : ndarray, shape (B, out_features)

        Examples
        --------
        >>> from jacnet.layers import Linear
        >>> model = Sequential([Linear(1, 1, dtype="float64")])
        >>> model.params[:] = [2.0, 0.5]                       # z = 2x + 0.5
        >>> model.jvp([[3.0]], tangent=[[1.0]])
        (array([[6.5]]), array([[2.]]))
        """
        X = self.check_input(X)
        if tangent is None:
            tangent = np.zeros_like(X)
        else:
            tangent = check_array(tangent, "tangent", dtype=self.dtype)
            if tangent.shape != X.shape:
                raise ValueError(f"tangent must have the shape of X, {X.shape}; got {tangent.shape}.")
        if param_tangent is not None:
            param_tangent = check_array(param_tangent, "param_tangent", ndim=1, dtype=self.dtype)
            if param_tangent.shape != self.params.shape:
                raise ValueError(
                    f"param_tangent must have shape ({self.n_params},), one entry per "
                    f"parameter; got {param_tangent.shape}."
                )
        out, t = self._jvp(X, tangent, param_tangent)
        assert t is not None
        return out, t

    def _jvp(self, X: np.ndarray, tangent: np.ndarray | None, param_tangent: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`jvp` on checked arrays; a ``tangent`` of None is zero and is not formed,
        so a parameter direction alone skips the input tangent's product in the first
        ``Linear`` (the output tangent is None only if both directions are)."""
        out, t = X, tangent
        for layer, s in zip(self.layers, self.layer_slices):
            out = layer.forward(out)
            layer_tangent = param_tangent[s] if param_tangent is not None and layer.n_params \
                else None
            if t is None and layer_tangent is None:
                continue  # the tangent is still zero: every layer maps zero to zero
            # None reaches only a layer with parameters, which takes it (Layer.jvp).
            t = layer.jvp(t, layer_tangent)  # type: ignore[arg-type]
        return out, t

    def _tangent(self, param_tangent: np.ndarray) -> np.ndarray:
        """J_θ·param_tangent for the forward pass the layers hold (no forward pass is run):
        the tangent half of :meth:`_jvp`, for a linearisation that keeps the pass."""
        t: np.ndarray | None = None
        for layer, s in zip(self.layers, self.layer_slices):
            layer_tangent = param_tangent[s] if layer.n_params else None
            if t is None and layer_tangent is None:
                continue
            t = layer.jvp(t, layer_tangent)  # type: ignore[arg-type]
        assert t is not None
        return t


def _forward_caches(model: Sequential) -> tuple[dict[str, np.ndarray | None], ...]:
    """Each layer's record of its last forward pass: its private array attributes (``_x``,
    ``_y``, ``_scale``; None where a layer keeps none), by reference. A forward pass binds
    new arrays to them rather than writing into the old ones, so the record stays that
    pass's whatever runs later."""
    return tuple({name: value for name, value in vars(layer).items()
                  if name.startswith("_") and (value is None or isinstance(value, np.ndarray))}
                 for layer in model.layers)


def _restore_caches(model: Sequential, caches: tuple[dict[str, np.ndarray | None], ...]
                    ) -> None:
    """Put a record of :func:`_forward_caches` back into the layers."""
    for layer, record in zip(model.layers, caches):
        for name, value in record.items():
            setattr(layer, name, value)


def _slice_caches(caches: tuple[dict[str, np.ndarray | None], ...], rows: slice,
                  n_samples: int) -> tuple[dict[str, np.ndarray | None], ...]:
    """The record of a forward pass on ``n_samples`` rows cut to ``rows``: every cached
    array with one row per sample (``_x``, ``_y``, ``_scale``) sliced, views, no copies."""
    return tuple({name: value[rows] if value is not None and value.ndim and
                  value.shape[0] == n_samples else value for name, value in record.items()}
                 for record in caches)


def mlp(
    sizes: Sequence[int],
    activation: str = "tanh",
    output_activation: str | None = None,
    *,
    bias: bool = True,
    init: str | None = None,
    seed: SeedLike = None,
    dtype: DTypeLike = np.float32,
) -> Sequential:
    """A multilayer perceptron: Linear layers with an activation between them.

    Parameters
    ----------
    sizes : sequence of int
        ``[n_in, h1, ..., n_out]``, at least two entries.
    activation : str, default "tanh"
        Hidden activation: "tanh", "sigmoid", "relu", "leaky_relu", "softplus", "gelu",
        "identity".
    output_activation : str, optional
        Applied after the last layer (None: linear output, as for MSE regression or
        for cross-entropy from logits).
    init : str, optional
        Weight initialisation; by default He for the ReLU family, Glorot otherwise.
    seed : int or Generator, optional
        Makes the initial weights reproducible.
    dtype : float32 (default) or float64

    Examples
    --------
    The seed's two-layer network: x (n) → V → f → W → g, here with n=4, h=3, m=2.

    >>> model = mlp([4, 3, 2], activation="sigmoid", output_activation="sigmoid", seed=0)
    >>> model
    Sequential(
      (0) Linear(in_features=4, out_features=3, bias=True),
      (1) Sigmoid(),
      (2) Linear(in_features=3, out_features=2, bias=True),
      (3) Sigmoid()
    )  # 23 parameters, float32
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least the input and output widths; got {sizes}.")
    hidden = get_activation(activation)  # validates the name early
    if init is None:
        init = "he_uniform" if type(hidden).__name__ in ("ReLU", "LeakyReLU") else "glorot_uniform"
    rng = _as_generator(seed)
    layers: list[Layer] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, bias, init=init, seed=rng, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(get_activation(activation))
    if output_activation is not None:
        layers.append(get_activation(output_activation))
    return Sequential(layers, dtype=dtype)


def jacobian(model: Sequential, X: Any, wrt: str = "input", *, structured: bool = False
             ) -> np.ndarray | JacobianOperator:
    """The Jacobian of the network's outputs for every sample, from the layers' Jacobians.

    The layers' structured Jacobians are chained from the output down (reverse mode,
    all output rows at once): the running product A = ∂z/∂(layer output) meets each
    ``Linear`` as A (I ⊗ xᵀ) = A ⊗ xᵀ, so the parameter Jacobian is kept as factors
    (A, x) and the zero blocks of I ⊗ xᵀ are never formed.

    Parameters
    ----------
    model : Sequential
    X : array-like, shape (B, in_features)
    wrt : {"input", "params"}
    structured : bool, default False
        Return the operator (a :class:`~jacnet.jacobians.BlockRow` of
        :class:`~jacnet.jacobians.Kronecker` blocks for ``"params"``) instead of the array.

    Returns
    -------
    ndarray of shape (B, out_features, in_features) for ``"input"`` or
    (B, out_features, n_params) for ``"params"``; or the structured operator.

    Examples
    --------
    >>> model = mlp([3, 4, 2], seed=0, dtype="float64")
    >>> X = np.ones((5, 3))
    >>> jacobian(model, X).shape, jacobian(model, X, wrt="params").shape
    ((5, 2, 3), (5, 2, 26))
    >>> jacobian(model, X, wrt="params", structured=True).blocks[0]
    Kronecker(batch_size=5, shape=(2, 12))
    """
    wrt = check_choice(wrt, "wrt", ("input", "params"))
    X = model.check_input(X)
    model.forward(X)
    result = _chain_jacobians(model, X.shape[0], wrt)
    return result if structured else result.dense()


def _is_plain(model: Sequential) -> bool:
    """Whether every layer is ``Linear`` or elementwise (a diagonal Jacobian): the networks
    whose parameter Jacobian :func:`_write_param_jacobian` writes directly."""
    return all(isinstance(layer, (Linear, Activation, Dropout)) for layer in model.layers)


class LinearFactors(NamedTuple):
    """One ``Linear`` layer's share of the parameter Jacobian, J_b = L_b ⊗ x̃_bᵀ on the
    layer's columns (its weight, then its bias): ``left`` L (B, m, k) is ∂z/∂(layer
    output), None for the identity (the output layer); ``x`` the layer's input (B, n), to
    which x̃ appends a 1 when ``bias``."""

    cols: slice
    left: np.ndarray | None
    x: np.ndarray
    bias: bool


def _write_param_jacobian(model: Sequential, out: np.ndarray) -> list[LinearFactors]:
    """The parameter Jacobian (B, m, P) of the last forward pass, written into ``out``;
    returns each ``Linear``'s factors (the arrays it was written from, top layer first).

    The chain rule of :func:`_chain_jacobians` for a network that :func:`_is_plain`, with
    the running product A = ∂z/∂(layer output) kept as a (B, m, k) array instead of
    operator objects: a ``Linear`` writes its blocks A ⊗ xᵀ (weight) and A (bias) and
    passes A W down, an elementwise layer passes A diag(f′) down. Fewer steps for small
    networks, where an optimizer materialises J every epoch; the result is the same.
    ``out`` may be of a wider float dtype than the model (float64 for a float32 network).
    """
    layers = model.layers
    n_samples, n_outputs = out.shape[0], model.out_features
    idx = np.arange(n_outputs)
    above: np.ndarray | None = None  # None: the identity (nothing above yet)
    factors = []
    for i in range(len(layers) - 1, model._lowest_with_params - 1, -1):
        layer = layers[i]
        if isinstance(layer, Linear):
            x = layer._require_cache("_x")
            k, n = layer.weight.shape
            cols = model._slices[f"{i}.weight"]
            if layer.bias is not None:
                assert model._slices[f"{i}.bias"].start == cols.stop
                cols = slice(cols.start, cols.stop + k)
            factors.append(LinearFactors(cols, above, x, layer.bias is not None))
            block = out[:, :, model._slices[f"{i}.weight"]].reshape(n_samples, n_outputs, k, n)
            if above is None:  # I ⊗ xᵀ
                block[...] = 0
                block[:, idx, idx, :] = x[:, None, :]
            else:
                # In the dtype of `out`: float64 products of a float32 network's factors.
                np.multiply(above[:, :, :, None], x[:, None, None, :], out=block, dtype=out.dtype)
            if layer.bias is not None:
                bias = out[:, :, model._slices[f"{i}.bias"]]
                if above is None:
                    bias[...] = 0
                    bias[:, idx, idx] = 1
                else:
                    bias[...] = above
            if i > model._lowest_with_params:
                above = (np.broadcast_to(layer.weight, (n_samples, k, n)) if above is None else
                         (above.reshape(-1, k) @ layer.weight).reshape(n_samples, n_outputs, n))
        else:
            diagonal = layer.jacobian()
            assert isinstance(diagonal, Diagonal)
            if above is None:
                above = np.zeros((n_samples, n_outputs, n_outputs), dtype=diagonal.diagonal.dtype)
                above[:, idx, idx] = diagonal.diagonal
            else:
                above = above * diagonal.diagonal[:, None, :]
    return factors


def _chain_jacobians(model: Sequential, n_samples: int, wrt: str = "params") -> JacobianOperator:
    """:func:`jacobian`'s structured result from the layers' caches of the last forward pass.

    For callers that have just run ``model.forward`` on the ``n_samples`` rows themselves
    (an optimizer that evaluated the loss there): the pass is not repeated.
    """
    # Reverse accumulation: `above` is ∂z/∂(output of the current layer).
    above: JacobianOperator = Identity(model.out_features, n_samples, model.dtype)
    blocks: list[JacobianOperator] = []
    names: list[str] = []
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        if wrt == "params" and layer.n_params:
            block = layer.param_jacobian()
            assert block is not None
            composed = compose(above, block)
            assert isinstance(composed, BlockRow)
            blocks[:0] = composed.blocks
            names[:0] = [f"{i}.{name}" for name in block.names]
        if wrt == "input" or any(model.layers[j].n_params for j in range(i)):
            above = compose(above, layer.jacobian())
    return above if wrt == "input" else BlockRow(blocks, names)
