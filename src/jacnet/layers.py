"""Layers: each keeps its forward pass, VJP, JVP and Jacobian together, in that order.

As the seed puts it, every layer, given the gradient of the error w.r.t. its output,
computes two things: the gradient w.r.t. its own weights (written into its slice of the
model's flat ``grads`` vector, used to update them) and the gradient w.r.t. its input
(returned, handed down so the layer below can do the same).

A batch is a 2-D array with one sample per row. ``forward`` remembers what ``backward``,
``jvp`` and ``jacobian`` need, so those three describe the derivative at the last
forward pass.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from jacnet._validation import as_float_dtype, check_choice, check_positive_int, is_sparse
from jacnet.jacobians import BlockRow, Diagonal, JacobianOperator, Kronecker, Matrix, PerSample

SeedLike = int | np.random.Generator | None

_LAYER_TYPES: dict[str, type[Layer]] = {}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow on either tail, in the dtype of ``x``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _as_generator(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


class Layer:
    """Base class of every layer.

    Subclasses set ``param_shapes`` (name → shape, in storage order) and implement
    ``forward``, ``backward``, ``jvp`` and ``jacobian``. Parameters live in one flat
    array; ``bind`` points the named attributes (``weight``, ``bias``) at views into it,
    and ``grad_<name>`` at views into the flat gradient.
    """

    param_shapes: dict[str, tuple[int, ...]]
    training: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _LAYER_TYPES[cls.__name__] = cls

    def __init__(self) -> None:
        self.param_shapes = {}
        self.dtype = np.dtype(np.float32)
        self._owned = False

    # --- parameters ---------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Number of scalar parameters."""
        return sum(math.prod(shape) for shape in self.param_shapes.values())

    def bind(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Point this layer's parameters at ``params`` and gradients at ``grads``.

        Parameters
        ----------
        params, grads : ndarray, shape (n_params,)
            Contiguous slices of a model's flat vectors; values are read, not copied.
        """
        offset = 0
        for name, shape in self.param_shapes.items():
            size = math.prod(shape)
            setattr(self, name, params[offset:offset + size].reshape(shape))
            setattr(self, "grad_" + name, grads[offset:offset + size].reshape(shape))
            offset += size
        self.dtype = params.dtype

    def flat_params(self) -> np.ndarray:
        """The parameters concatenated in storage order (a copy), shape (n_params,)."""
        if not self.param_shapes:
            return np.zeros(0, dtype=self.dtype)
        return np.concatenate([getattr(self, n).reshape(-1) for n in self.param_shapes])

    def flat_grads(self) -> np.ndarray:
        """The gradients concatenated in storage order (a copy), shape (n_params,)."""
        if not self.param_shapes:
            return np.zeros(0, dtype=self.dtype)
        return np.concatenate([getattr(self, "grad_" + n).reshape(-1) for n in self.param_shapes])

    def _allocate(self, dtype: DTypeLike) -> None:
        dtype = as_float_dtype(dtype)
        self.bind(np.zeros(self.n_params, dtype), np.zeros(self.n_params, dtype))
        self.dtype = dtype

    # --- shape bookkeeping ----------------------------------------------------------
    def output_features(self, n_features: int) -> int:
        """Number of output features for ``n_features`` inputs (shape-preserving here)."""
        return n_features

    def _require_cache(self, attribute: str) -> Any:
        value = getattr(self, attribute, None)
        if value is None:
            raise RuntimeError(
                f"{self!r}: backward, jvp or jacobian was called before forward. "
                "Run a forward pass on the batch first (model(X) or layer.forward(X))."
            )
        return value

    # --- the four faces of a layer --------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output for a batch ``x`` of shape (B, n_in); shape (B, n_out)."""
        raise NotImplementedError

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """VJP: from ∂E/∂output (B, n_out), write ∂E/∂params, return ∂E/∂input (B, n_in).

        With ``input_grad=False`` (the first layer of a network) the input gradient is
        not computed and None is returned.
        """
        raise NotImplementedError

    def jvp(self, tangent: np.ndarray, param_tangent: np.ndarray | None = None) -> np.ndarray:
        """JVP at the last forward input: J_x·tangent (+ J_θ·param_tangent), shape (B, n_out).

        ``tangent`` is (B, n_in); ``param_tangent`` is this layer's slice of a flat
        parameter direction, shape (n_params,). A layer with parameters also takes
        ``tangent=None`` for a zero input tangent (J_θ·param_tangent alone).
        """
        raise NotImplementedError

    def jacobian(self) -> JacobianOperator:
        """∂output/∂input at the last forward input, as a structured operator."""
        raise NotImplementedError

    def param_jacobian(self) -> BlockRow | None:
        """∂output/∂θ at the last forward input (None for a layer without parameters)."""
        return None

    # --- description ----------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments as a JSON-able dict (with the class name)."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "type")
        return f"{type(self).__name__}({args})"


def layer_from_config(config: dict[str, Any]) -> Layer:
    """Build a layer from :meth:`Layer.get_config` output.

    >>> layer_from_config({"type": "Linear", "in_features": 3, "out_features": 2})
    Linear(in_features=3, out_features=2, bias=True)
    """
    config = dict(config)
    name = config.pop("type", None)
    if name not in _LAYER_TYPES or name == "Activation":
        known = ", ".join(sorted(k for k in _LAYER_TYPES if k != "Activation"))
        raise ValueError(f"unknown layer type {name!r} in a model description; known: {known}.")
    return _LAYER_TYPES[name](**config)


# ======================================================================================
# Linear
# ======================================================================================

_INITS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal",
          "torch", "zeros")


class Linear(Layer):
    """Affine map s = W y + b: the seed's net value of one layer.

    Jacobians per sample: ∂s/∂y = W (a :class:`Matrix`), ∂s/∂vec(W) = I ⊗ yᵀ (a
    :class:`Kronecker`), ∂s/∂b = I. So ∂E/∂W = δ yᵀ and ∂E/∂y = δᵀ W, with δ = ∂E/∂s.

    The input may be a SciPy sparse matrix (CSR or CSC, of the layer's dtype): the
    forward product and the weight gradient δᵀY then work on it directly, without
    densifying Y (the input gradient and the output are dense).

    Parameters
    ----------
    in_features, out_features : int
        n (inputs) and m (outputs).
    bias : bool, default True
    init : str, default "glorot_uniform"
        Weight initialisation: "glorot_uniform", "glorot_normal" (sigmoid/tanh),
        "he_uniform", "he_normal" (ReLU family), "lecun_normal", "torch" (PyTorch's
        default, U(±1/√n) for weight and bias), "zeros". Biases start at zero except
        with "torch".
    seed : int or numpy.random.Generator, optional
        Makes the initialisation reproducible.
    dtype : float32 or float64, default float32

    Attributes
    ----------
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,)
    grad_weight, grad_bias : ndarray
        Views into the model's flat gradient, written by ``backward``.

    Examples
    --------
    >>> layer = Linear(3, 2, seed=0, dtype="float64")
    >>> layer.forward(np.ones((4, 3))).shape
    (4, 2)
    >>> layer.weight.shape, layer.n_params
    ((2, 3), 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str = "glorot_uniform",
        seed: SeedLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.has_bias = bool(bias)
        self.init = check_choice(init, "init", _INITS)
        self.param_shapes = {"weight": (self.out_features, self.in_features)}
        if self.has_bias:
            self.param_shapes["bias"] = (self.out_features,)
        self.weight: np.ndarray
        self.bias: np.ndarray | None = None
        self.grad_weight: np.ndarray
        self.grad_bias: np.ndarray | None = None
        self._allocate(dtype)
        self.reset_parameters(seed)
        self._x: np.ndarray | None = None

    def reset_parameters(self, seed: SeedLike = None) -> None:
        """Draw fresh initial weights (in place, so views stay valid)."""
        rng = _as_generator(seed)
        fan_in, fan_out = self.in_features, self.out_features
        shape = self.weight.shape
        if self.init == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            values = rng.uniform(-limit, limit, shape)
        elif self.init == "glorot_normal":
            values = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
        elif self.init == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            values = rng.uniform(-limit, limit, shape)
        elif self.init == "he_normal":
            values = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif self.init == "lecun_normal":
            values = rng.normal(0.0, math.sqrt(1.0 / fan_in), shape)
        elif self.init == "torch":
            values = rng.uniform(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in), shape)
        else:
            values = np.zeros(shape)
        self.weight[...] = values
        if self.bias is not None:
            if self.init == "torch":
                bound = 1.0 / math.sqrt(fan_in)
                self.bias[...] = rng.uniform(-bound, bound, self.bias.shape)
            else:
                self.bias[...] = 0.0

    def bind(self, params: np.ndarray, grads: np.ndarray) -> None:
        super().bind(params, grads)
        # Wᵀ as a view made once: ``x @ weight.T`` built a new view object every forward.
        self._weight_t = self.weight.T

    def output_features(self, n_features: int) -> int:
        return self.out_features

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{self!r} expects input of shape (n_samples, {self.in_features}); "
                f"got {x.shape}."
            )

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        self._x = x
        out = x @ self._weight_t
        if self.bias is not None:
            out += self.bias
        return out

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._require_cache("_x")
        # ∂E/∂W = Σ_b δ_b y_bᵀ (the seed's δ yᵀ, summed over the batch) and ∂E/∂b = Σ_b δ_b,
        # written straight into the model's flat gradient.
        if is_sparse(x):
            # (Yᵀδ)ᵀ: SciPy multiplies a sparse matrix by a dense one, not the reverse.
            self.grad_weight[...] = (x.T @ grad_output).T
        else:
            np.matmul(grad_output.T, x, out=self.grad_weight)
        if self.grad_bias is not None:
            np.add.reduce(grad_output, axis=0, out=self.grad_bias)  # np.sum minus its wrapper
        return grad_output @ self.weight if input_grad else None

    def jvp(self, tangent: np.ndarray | None, param_tangent: np.ndarray | None = None
            ) -> np.ndarray:
        x = self._require_cache("_x")
        if tangent is None and param_tangent is None:
            raise ValueError(f"{self!r}.jvp: pass a tangent, a param_tangent or both; got "
                             "neither.")
        out = None if tangent is None else tangent @ self.weight.T
        if param_tangent is not None:
            n_weight = self.weight.size
            d_weight = param_tangent[:n_weight].reshape(self.weight.shape)
            out = x @ d_weight.T if out is None else out + x @ d_weight.T
            if self.bias is not None:
                out = out + param_tangent[n_weight:]
        assert out is not None
        return out

    def jacobian(self) -> Matrix:
        x = self._require_cache("_x")
        return Matrix(self.weight, batch_size=x.shape[0])

    def param_jacobian(self) -> BlockRow:
        x = self._require_cache("_x")
        if is_sparse(x):
            x = x.toarray()  # the Kronecker factor holds the batch's rows densely
        blocks: list[JacobianOperator] = [Kronecker(x, self.out_features)]
        names = ["weight"]
        if self.bias is not None:
            # ∂s/∂b = I, stored as I ⊗ 1ᵀ so that every parameter block has one form.
            blocks.append(Kronecker(np.ones((x.shape[0], 1), dtype=x.dtype), self.out_features))
            names.append("bias")
        return BlockRow(blocks, names)

    def get_config(self) -> dict[str, Any]:
        return {"type": "Linear", "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.has_bias}


# ======================================================================================
# Elementwise activations: Jacobian diag(f′(x))
# ======================================================================================


class Activation(Layer):
    """Base of elementwise activations y = f(x), whose Jacobian is diag(f′(x)).

    Subclasses implement ``_apply`` (f) and ``_derivative`` (f′ from the cached input
    and output, whichever is cheaper).
    """

    #: whether ``_derivative`` needs the input x (otherwise only the output y is kept)
    needs_input: ClassVar[bool] = False
    #: inputs where f has no derivative (a kink); ``_derivative`` takes a convention there
    kinks: ClassVar[tuple[float, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def _apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = self._apply(x)
        self._x = x if self.needs_input else None
        self._y = y
        return y

    def derivative(self) -> np.ndarray:
        """f′(x) at the last forward input, shape (B, n): the Jacobian's diagonal."""
        y = self._require_cache("_y")
        return self._derivative(self._x, y)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        derivative = self.derivative()
        if derivative.dtype != grad_output.dtype:
            # A wider gradient (float64 through a float32 network) stays wide.
            return derivative * grad_output
        derivative *= grad_output
        return derivative

    def jvp(self, tangent: np.ndarray, param_tangent: np.ndarray | None = None) -> np.ndarray:
        return self.derivative() * tangent

    def jacobian(self) -> Diagonal:
        return Diagonal(self.derivative())


class Identity(Activation):
    """y = x; Jacobian I. The output layer of a regression network.

    >>> Identity().forward(np.array([[1.0, -2.0]]))
    array([[ 1., -2.]])
    """

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        return np.ones_like(y)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        return grad_output


class Sigmoid(Activation):
    """Logistic y = 1 / (1 + e^(−x)); f′ = y (1 − y).

    >>> Sigmoid().forward(np.array([[0.0, 800.0, -800.0]]))
    array([[0.5, 1. , 0. ]])
    """

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(x)

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        return y * (1.0 - y)


class Tanh(Activation):
    """y = tanh(x); f′ = 1 − y².

    >>> Tanh().forward(np.array([[0.0]]))
    array([[0.]])
    """

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        d = y * y
        np.subtract(1.0, d, out=d)
        return d


class ReLU(Activation):
    """y = max(x, 0); f′ = 1 where x > 0, else 0 (0 at x = 0, as PyTorch).

    >>> ReLU().forward(np.array([[-1.0, 2.0]]))
    array([[0., 2.]])
    """

    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        return (y > 0).astype(y.dtype)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        # The gradient times the mask y > 0, without building the 0/1 diagonal in the
        # gradient's dtype: np.where's general loop costs several times this product.
        # Finite gradients come out as np.where(y > 0, g, 0) gives them (a masked
        # negative entry is −0.0, equal to 0.0).
        y = self._require_cache("_y")
        return np.multiply(grad_output, y > 0)


class LeakyReLU(Activation):
    """y = x for x > 0, else a·x; f′ = 1 or a.

    Parameters
    ----------
    negative_slope : float, default 0.01

    >>> LeakyReLU(0.1).forward(np.array([[-1.0, 2.0]]))
    array([[-0.1,  2. ]])
    """

    needs_input = True
    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if not isinstance(negative_slope, (int, float)) or not math.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be a finite number; got {negative_slope!r}.")
        self.negative_slope = float(negative_slope)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, x * self.negative_slope)

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        return np.where(x > 0, 1.0, self.negative_slope).astype(y.dtype)  # type: ignore[operator]

    def get_config(self) -> dict[str, Any]:
        return {"type": "LeakyReLU", "negative_slope": self.negative_slope}


class Softplus(Activation):
    """y = log(1 + eˣ), computed without overflow; f′ = σ(x).

    >>> Softplus().forward(np.array([[0.0]]))
    array([[0.69314718]])
    """

    needs_input = True

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, x).astype(x.dtype, copy=False)

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        assert x is not None
        return _sigmoid(x)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erf_ufunc: Any = None


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function: SciPy's when installed, else the standard library's, elementwise."""
    global _erf_ufunc
    if _erf_ufunc is None:
        try:
            from scipy.special import erf as scipy_erf
            _erf_ufunc = scipy_erf
        except ImportError:  # exact but slow: one Python call per element
            _erf_ufunc = np.frompyfunc(math.erf, 1, 1)
    return np.asarray(_erf_ufunc(x), dtype=x.dtype)


class GELU(Activation):
    """Gaussian error linear unit y = x Φ(x); f′ = Φ(x) + x φ(x).

    Parameters
    ----------
    approximate : {"none", "tanh"}, default "none"
        "none" is exact (uses ``scipy.special.erf`` when SciPy is installed, else an
        exact but slower standard-library path); "tanh" is the tanh approximation,
        pure NumPy, as PyTorch's ``GELU(approximate="tanh")``.

    >>> GELU().forward(np.array([[0.0, 1.0]]))
    array([[0.        , 0.84134475]])
    """

    needs_input = True

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = check_choice(approximate, "approximate", ("none", "tanh"))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        if self.approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
            return 0.5 * x * (1.0 + np.tanh(inner))
        return 0.5 * x * (1.0 + _erf(x * _INV_SQRT_2))

    def _derivative(self, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        assert x is not None
        if self.approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
            t = np.tanh(inner)
            d_inner = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner
        cdf = 0.5 * (1.0 + _erf(x * _INV_SQRT_2))
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
        return cdf + x * pdf

    def get_config(self) -> dict[str, Any]:
        return {"type": "GELU", "approximate": self.approximate}


# ======================================================================================
# Softmax and Dropout
# ======================================================================================


class Softmax(Layer):
    """y = softmax(x) over each sample's features; Jacobian diag(y) − y yᵀ (dense, symmetric).

    For classification, prefer a linear output with :class:`~jacnet.losses.CrossEntropyLoss`,
    which fuses softmax and log-likelihood stably; this layer is for networks whose output
    must be probabilities.

    >>> Softmax().forward(np.array([[0.0, 0.0]]))
    array([[0.5, 0.5]])
    """

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        shifted = x - x.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        y = e / e.sum(axis=1, keepdims=True)
        self._y = y
        return y

    def _apply_jacobian(self, v: np.ndarray) -> np.ndarray:
        # (diag(y) − y yᵀ) v = y ⊙ (v − ⟨y, v⟩); the matrix is symmetric, so VJP = JVP.
        y = self._require_cache("_y")
        return y * (v - np.sum(v * y, axis=1, keepdims=True))

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        return self._apply_jacobian(grad_output)

    def jvp(self, tangent: np.ndarray, param_tangent: np.ndarray | None = None) -> np.ndarray:
        return self._apply_jacobian(tangent)

    def jacobian(self) -> PerSample:
        y = self._require_cache("_y")
        jac = -y[:, :, None] * y[:, None, :]
        idx = np.arange(y.shape[1])
        jac[:, idx, idx] += y
        return PerSample(jac)


class Dropout(Layer):
    """Zero each input with probability p while training, scaling the rest by 1/(1 − p).

    Its Jacobian is diag(mask / (1 − p)) for the mask drawn in the last forward pass; in
    evaluation mode (``model.eval()``) it is the identity.

    Parameters
    ----------
    p : float, default 0.5
        Probability of dropping, in [0, 1).
    seed : int or Generator, optional

    >>> drop = Dropout(0.5, seed=0)
    >>> drop.training = False
    >>> drop.forward(np.ones((1, 3)))
    array([[1., 1., 1.]])
    """

    def __init__(self, p: float = 0.5, *, seed: SeedLike = None) -> None:
        super().__init__()
        if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"The 'p' parameter of Dropout must be in [0, 1); got {p!r}.")
        self.p = float(p)
        self._rng = _as_generator(seed)
        self._scale: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._scale = np.ones_like(x)
            return x
        keep = self._rng.random(x.shape) >= self.p
        self._scale = keep.astype(x.dtype) * (1.0 / (1.0 - self.p))
        return x * self._scale

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        return grad_output * self._require_cache("_scale")

    def jvp(self, tangent: np.ndarray, param_tangent: np.ndarray | None = None) -> np.ndarray:
        return tangent * self._require_cache("_scale")

    def jacobian(self) -> Diagonal:
        return Diagonal(self._require_cache("_scale"))

    def get_config(self) -> dict[str, Any]:
        return {"type": "Dropout", "p": self.p}


ACTIVATIONS: dict[str, type[Layer]] = {
    "identity": Identity,
    "linear": Identity,
    "sigmoid": Sigmoid,
    "logistic": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "softplus": Softplus,
    "gelu": GELU,
    "softmax": Softmax,
}


def get_activation(name: str | Layer) -> Layer:
    """A fresh activation layer by name (``"tanh"``, ``"relu"``, ...), or the layer itself.

    >>> get_activation("relu")
    ReLU()
    """
    if isinstance(name, Layer):
        return name
    key = str(name).lower().replace("-", "_")
    if key not in ACTIVATIONS:
        options = ", ".join(repr(k) for k in ACTIVATIONS)
        raise ValueError(f"activation must be one of {options}; got {name!r}.")
    return ACTIVATIONS[key]()
