"""First-order optimizers on one flat parameter vector: SGD, Adam, AdamW, RMSprop.

A model owns one 1-D ``params`` array and one ``grads`` array of the same shape
(DESIGN.md §2). An optimizer knows nothing about layers: each ``step`` is a handful
of whole-vector, in-place NumPy operations on preallocated buffers. The update rules,
bias corrections, ``eps`` placement and weight-decay placement are those of
``torch.optim``, so trajectories agree with PyTorch to rounding.

Scalars are kept as Python floats on purpose: NumPy 2 treats them as "weak" and keeps a
float32 array float32, whereas a NumPy float64 scalar would promote it to float64.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import numpy as np

from jacnet._validation import FLOAT_DTYPES
from jacnet.optim import _fused

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "clip_grad_norm",
    "get_optimizer",
]

StateDict = dict[str, "np.ndarray | float | int"]


# --------------------------------------------------------------------------- validation
def _describe_interval(
    kind: str, low: float | None, high: float | None, low_closed: bool, high_closed: bool
) -> str:
    if low is not None and high is not None:
        left, right = ("[" if low_closed else "("), ("]" if high_closed else ")")
        return f"{kind} in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f"{kind} {'>=' if low_closed else '>'} {low:g}"
    if high is not None:
        return f"{kind} {'<=' if high_closed else '<'} {high:g}"
    return kind


def _check_number(
    value: Any,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_closed: bool = True,
    high_closed: bool = False,
    integer: bool = False,
) -> Any:
    """Return ``value`` as a Python float (or int) inside the interval, else raise.

    Messages follow scikit-learn: "The 'lr' parameter of Adam must be a float > 0;
    got -1 instead." Python scalars are returned so that float32 arrays stay float32.
    """
    kind = "an int" if integer else "a float"
    wanted = _describe_interval(kind, low, high, low_closed, high_closed)
    message = f"The {name!r} parameter of {owner} must be {wanted}; got {value!r} instead."
    allowed: tuple[type, ...] = (int, np.integer)
    if not integer:
        allowed += (float, np.floating)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, allowed):
        raise TypeError(message)
    number: Any = int(cast(Any, value)) if integer else float(cast(Any, value))
    inside = not math.isnan(number)
    if inside and low is not None:
        inside = number >= low if low_closed else number > low
    if inside and high is not None:
        inside = number <= high if high_closed else number < high
    if not inside:
        raise ValueError(message)
    return number


def _check_bool(value: Any, name: str, owner: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"The {name!r} parameter of {owner} must be a bool; got {value!r} instead.")
    return bool(value)


def _check_betas(value: Any, owner: str) -> tuple[float, float]:
    message = (
        f"The 'betas' parameter of {owner} must be a pair of floats in [0, 1); got {value!r} instead."
    )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(message)
    try:
        beta1 = _check_number(value[0], "betas[0]", owner, low=0.0, high=1.0)
        beta2 = _check_number(value[1], "betas[1]", owner, low=0.0, high=1.0)
    except (TypeError, ValueError) as exc:
        raise ValueError(message) from exc
    return beta1, beta2


def _check_mask(mask: Any, owner: str) -> np.ndarray | None:
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(
            f"The 'weight_decay_mask' parameter of {owner} must be a boolean array over "
            f"params (True = decay this entry); got an array of dtype {array.dtype}. "
            "Build it with e.g. np.ones(n_params, dtype=bool) and set biases to False."
        )
    return array.copy()


# --------------------------------------------------------------------------- base class
class Optimizer:
    """Base class: lazily allocated state, shape checks, checkpoints and configuration.

    Subclasses list their persistent buffers in ``_buffer_names`` and implement
    ``_update(params, grads, lr)``, which may use ``self._state`` (persistent buffers),
    ``self._tmp`` (scratch, same shape/dtype as params) and ``self._effective_grad``.

    Attributes
    ----------
    lr : float
        Current learning rate; schedules (``jacnet.optim.schedules``) change it.
    name : str
        Registry name used by :func:`get_optimizer` (``"adam"``, ...).
    """

    name: ClassVar[str] = ""
    #: Whether weight decay is L2 added to the gradient (torch's Adam, SGD, RMSprop).
    _l2_decay: ClassVar[bool] = True

    def __init__(self, lr: float, weight_decay: float, weight_decay_mask: Any) -> None:
        owner = type(self).__name__
        self.lr = _check_number(lr, "lr", owner, low=0.0, low_closed=False)
        self.weight_decay = _check_number(weight_decay, "weight_decay", owner, low=0.0)
        self._weight_decay_mask = _check_mask(weight_decay_mask, owner)
        self._step = 0
        self._state: dict[str, np.ndarray] = {}
        self._shape: tuple[int, ...] | None = None  # set when bound to params
        self._dtype: np.dtype[Any] | None = None
        self._params: np.ndarray | None = None  # the arrays last checked by _bind
        self._grads: np.ndarray | None = None
        self._tmp = np.empty(0)
        self._effective_grad = np.empty(0)
        self._decay: float | np.ndarray = 0.0

    # -- public API ---------------------------------------------------------------
    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Update ``params`` in place from ``grads``.

        Parameters
        ----------
        params : numpy.ndarray of shape (n_params,), float32 or float64
            The model's flat parameter vector, updated in place.
        grads : numpy.ndarray of shape (n_params,), same dtype as ``params``
            Gradient of the loss w.r.t. ``params``; not modified.

        Raises
        ------
        TypeError
            ``params``/``grads`` are not float arrays of one dtype, or the dtype changed.
        ValueError
            Shapes differ from each other or from the optimizer's state.
        """
        # The arrays of the last step were checked when first seen; a training loop
        # passes the same two every step, so the check is an identity test.
        if params is not self._params or grads is not self._grads:
            self._bind(params, grads)
        self._update(params, self._with_l2_decay(params, grads), float(self.lr))
        self._step += 1

    def state_dict(self) -> StateDict:
        """Return the state needed to resume exactly: plain arrays and numbers.

        The result can be written with ``np.savez`` (no pickle) and read back with
        :meth:`load_state_dict`. Arrays are copies.
        """
        state: StateDict = {"lr": float(self.lr), "step": int(self._step)}
        for key, buffer in self._state.items():
            state[key] = buffer.copy()
        return state

    def load_state_dict(self, state: Any) -> None:
        """Restore a state saved by :meth:`state_dict` (a dict or an ``NpzFile``).

        Raises
        ------
        ValueError
            Missing or unexpected keys (e.g. an Adam state loaded into SGD), or buffers
            of inconsistent shapes.
        """
        owner = type(self).__name__
        keys = set(state.keys())
        step = int(state["step"]) if "step" in keys else 0
        buffers = self._buffer_names() if step > 0 else ()
        expected = {"lr", "step", *buffers}
        if keys != expected:
            missing, extra = sorted(expected - keys), sorted(keys - expected)
            raise ValueError(
                f"{owner}.load_state_dict: the state does not match this optimizer "
                f"(missing keys {missing}, unexpected keys {extra}). Load a state saved by "
                f"an optimizer built with the same configuration: {self!r}."
            )
        arrays = {key: np.array(state[key], copy=True) for key in buffers}
        shapes = {key: array.shape for key, array in arrays.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"{owner}.load_state_dict: buffers have different shapes {shapes}.")
        for key, array in arrays.items():
            if array.dtype not in FLOAT_DTYPES:
                raise TypeError(
                    f"{owner}.load_state_dict: buffer {key!r} must be float32 or float64; "
                    f"got {array.dtype}."
                )
        self.lr = float(state["lr"])
        self._step = step
        self._state = arrays
        self._shape = None  # re-bound (shape checked, dtype matched) on the next step
        self._dtype = None
        self._params = self._grads = None

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values (``lr`` is the initial one).

        ``get_optimizer(opt.name, **opt.get_config())`` rebuilds an equal optimizer.
        ``weight_decay_mask`` is structure, not a hyperparameter, and is not included.
        """
        return dict(self._config)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Alias of :meth:`get_config`."""
        return self.get_config()

    @property
    def weight_decay_mask(self) -> np.ndarray | None:
        """Boolean array over params, True where weight decay applies (None: everywhere)."""
        return self._weight_decay_mask

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # -- hooks for subclasses -----------------------------------------------------
    _config: dict[str, Any]

    def _buffer_names(self) -> tuple[str, ...]:
        return ()

    def _update(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    # -- internals ----------------------------------------------------------------
    def _with_l2_decay(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """``grads + weight_decay * params`` (masked) in a scratch buffer, as torch does."""
        if not self._l2_decay or self.weight_decay == 0.0:
            return grads
        out = self._effective_grad
        np.multiply(params, self._decay, out=out)
        out += grads
        return out

    def _bind(self, params: Any, grads: Any) -> None:
        """Check params/grads and, on the first step, allocate state in their dtype."""
        owner = type(self).__name__
        for name, array in (("params", params), ("grads", grads)):
            if not isinstance(array, np.ndarray) or array.dtype not in FLOAT_DTYPES:
                got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                raise TypeError(
                    f"{owner}.step: {name} must be a float32 or float64 NumPy array; got "
                    f"{got}. Pass the model's flat parameter and gradient vectors."
                )
        if grads.shape != params.shape:
            raise ValueError(
                f"{owner}.step: grads must have the shape of params {params.shape}; got {grads.shape}."
            )
        if grads.dtype != params.dtype:
            raise TypeError(
                f"{owner}.step: grads must have the dtype of params ({params.dtype}); got {grads.dtype}."
            )
        if not params.flags.writeable:
            raise ValueError(f"{owner}.step: params is read-only; it is updated in place.")
        if self._shape is not None:
            if params.shape == self._shape and params.dtype == self._dtype:
                # new arrays of the bound shape and dtype (another copy of θ): the state
                # stays, only the identity remembered for the next step's test changes
                self._params, self._grads = params, grads
                return
            if params.shape != self._shape:
                raise ValueError(
                    f"{owner}.step: the optimizer's state was allocated for params of shape "
                    f"{self._shape}; got params of shape {params.shape}. Use one optimizer "
                    "per model (or a new optimizer after changing the model)."
                )
            raise TypeError(
                f"{owner}.step: the optimizer's state is {self._dtype}; got params of dtype "
                f"{params.dtype}. Keep one dtype during training or create a new optimizer."
            )
        for key, buffer in self._state.items():  # loaded from a checkpoint
            if buffer.shape != params.shape:
                raise ValueError(
                    f"{owner}.step: the loaded state buffer {key!r} has shape {buffer.shape}; "
                    f"got params of shape {params.shape}. Load a checkpoint of this model."
                )
        mask = self._weight_decay_mask
        if mask is not None and mask.shape != params.shape:
            raise ValueError(
                f"{owner}.step: weight_decay_mask has shape {mask.shape}; it must have the "
                f"shape of params {params.shape}."
            )
        dtype = params.dtype
        self._state = {
            key: self._state[key].astype(dtype, copy=False)
            if key in self._state
            else np.zeros_like(params)
            for key in self._buffer_names()
        }
        self._tmp = np.empty_like(params)
        decay_grad = self._l2_decay and self.weight_decay != 0.0
        self._effective_grad = np.empty_like(params) if decay_grad else np.empty(0, dtype)
        self._decay = (
            self.weight_decay if mask is None else np.where(mask, self.weight_decay, 0.0).astype(dtype)
        )
        self._shape, self._dtype = params.shape, dtype
        self._params, self._grads = params, grads


# --------------------------------------------------------------------------- optimizers
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    With ``g = grads + weight_decay * params``: ``b = g`` on the first step, then
    ``b = momentum * b + (1 - dampening) * g``; the step direction is ``b``, or
    ``g + momentum * b`` with Nesterov; ``params -= lr * direction``.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    momentum : float, default 0.0
        Momentum factor in [0, 1).
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient, >= 0.
    dampening : float, default 0.0
        Dampening of the momentum, in [0, 1].
    weight_decay_mask : numpy.ndarray of bool, shape (n_params,), optional
        Where weight decay applies (e.g. False on biases). Default: everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> params = np.array([1.0, -2.0, 0.5])
    >>> SGD(lr=0.1).step(params, np.array([0.5, -1.0, 2.0]))
    >>> params
    array([ 0.95, -1.9 ,  0.3 ])
    """

    name = "sgd"

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        *,
        weight_decay_mask: np.ndarray | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, weight_decay_mask)
        self.momentum = _check_number(momentum, "momentum", "SGD", low=0.0, high=1.0)
        self.nesterov = _check_bool(nesterov, "nesterov", "SGD")
        self.dampening = _check_number(
            dampening, "dampening", "SGD", low=0.0, high=1.0, high_closed=True
        )
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError(
                "The 'nesterov' parameter of SGD requires momentum > 0 and dampening == 0; "
                f"got momentum={self.momentum!r} and dampening={self.dampening!r}. "
                "Pass e.g. momentum=0.9, dampening=0.0, or nesterov=False."
            )
        self._config = {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "dampening": self.dampening,
        }

    def _buffer_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0.0 else ()

    def _update(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        tmp = self._tmp
        direction = grads
        if self.momentum != 0.0:
            buffer = self._state["momentum_buffer"]
            if self._step == 0:
                np.copyto(buffer, grads)
            else:
                buffer *= self.momentum
                if self.dampening != 0.0:
                    np.multiply(grads, 1.0 - self.dampening, out=tmp)
                    buffer += tmp
                else:
                    buffer += grads
            if self.nesterov:
                np.multiply(buffer, self.momentum, out=tmp)
                tmp += grads
                direction = tmp
            else:
                direction = buffer
        np.multiply(direction, -lr, out=tmp)
        params += tmp


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 weight decay added to the gradient).

    With ``g = grads + weight_decay * params`` and step ``t``: ``m = b1*m + (1-b1)*g``,
    ``v = b2*v + (1-b2)*g²`` (AMSGrad: ``v̂ = max(v̂, v)``), then
    ``params -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)``.

    Parameters
    ----------
    lr : float, default 1e-3
        Learning rate, > 0.
    betas : pair of float, default (0.9, 0.999)
        Decay rates of the first and second moment, each in [0, 1).
    eps : float, default 1e-8
        Added to the bias-corrected root of the second moment, >= 0.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient, >= 0 (see :class:`AdamW` for decoupled decay).
    amsgrad : bool, default False
        Normalise by the running maximum of the second moment.
    weight_decay_mask : numpy.ndarray of bool, shape (n_params,), optional
        Where weight decay applies (e.g. False on biases). Default: everywhere.
    fused : bool or None, default None
        Update in one compiled pass (numba, ``pip install 'jacnet[fast]'``) instead of
        13 NumPy passes; the results are bit-identical. None: when numba is installed;
        True: require it; False: never. Contiguous 1-D params only (else NumPy).

    Examples
    --------
    The first step moves every coordinate by about ``lr`` against its gradient's sign:

    >>> import numpy as np
    >>> params = np.array([1.0, -2.0, 0.5])
    >>> Adam(lr=0.1).step(params, np.array([0.5, -1.0, 2.0]))
    >>> params
    array([ 0.9, -1.9,  0.4])
    """

    name = "adam"
    _l2_decay = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        weight_decay_mask: np.ndarray | None = None,
        fused: bool | None = None,
    ) -> None:
        owner = type(self).__name__
        super().__init__(lr, weight_decay, weight_decay_mask)
        self.betas = _check_betas(betas, owner)
        self.eps = _check_number(eps, "eps", owner, low=0.0)
        self.amsgrad = _check_bool(amsgrad, "amsgrad", owner)
        if fused is not None:
            fused = _check_bool(fused, "fused", owner)
        if fused and not _fused.numba_available():
            raise ImportError(
                f"{owner}(fused=True) needs numba, which is not installed: "
                f"{_fused.INSTALL_HINT} (or pass fused=None to fall back to NumPy)."
            )
        self.fused = fused
        self._kernel: Any = None  # the compiled update, resolved when params are bound
        self._config = {
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "amsgrad": self.amsgrad,
        }

    def _buffer_names(self) -> tuple[str, ...]:
        names = ("exp_avg", "exp_avg_sq")
        return (*names, "max_exp_avg_sq") if self.amsgrad else names

    def _bind(self, params: Any, grads: Any) -> None:
        super()._bind(params, grads)
        usable = params.ndim == 1 and params.flags.c_contiguous and grads.flags.c_contiguous
        wanted = self.fused or (self.fused is None and usable and _fused.numba_available())
        if not wanted:
            self._kernel = None
        elif not usable:
            raise ValueError(
                f"{type(self).__name__}(fused=True) updates contiguous 1-D params and grads; "
                f"got params of shape {params.shape} (contiguous: {params.flags.c_contiguous}). "
                "Pass the model's flat vectors, or fused=None to fall back to NumPy."
            )
        else:
            self._kernel = _fused.load_adam_kernel()

    def _with_l2_decay(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        if self._kernel is not None:  # the kernel adds the decay itself
            return grads
        return super()._with_l2_decay(params, grads)

    def _fused_update(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        beta1, beta2 = self.betas
        t = self._step + 1
        decay, mask = self._tmp[:0], np.empty(0, dtype=np.bool_)
        decay_scalar = 0.0
        if self.weight_decay == 0.0:
            mode = _fused.NO_DECAY
        elif self._l2_decay:
            if isinstance(self._decay, np.ndarray):
                mode, decay = _fused.L2_ARRAY, self._decay
            else:
                mode, decay_scalar = _fused.L2_SCALAR, self.weight_decay
        else:
            decay_scalar = 1.0 - lr * self.weight_decay
            mode = _fused.DECOUPLED
            if self._weight_decay_mask is not None:
                mode, mask = _fused.DECOUPLED_MASKED, self._weight_decay_mask
        state = self._state
        constants = _fused.fused_constants(
            params.dtype,
            {
                "decay_scalar": decay_scalar,
                "one_minus_beta1": 1.0 - beta1,
                "one_minus_beta2": 1.0 - beta2,
                "beta2": beta2,
                "bias_correction2_sqrt": (1.0 - beta2**t) ** 0.5,
                "eps": self.eps,
                "negative_step_size": -(lr / (1.0 - beta1**t)),
            },
        )
        self._kernel(
            params, grads, state["exp_avg"], state["exp_avg_sq"],
            state["max_exp_avg_sq"] if self.amsgrad else self._tmp[:0],
            decay, mask, mode, self.amsgrad, *constants.values(),
        )  # fmt: skip

    def _update(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        if self._kernel is not None:
            self._fused_update(params, grads, lr)
            return
        beta1, beta2 = self.betas
        t = self._step + 1
        if not self._l2_decay and self.weight_decay != 0.0:  # AdamW: decay before the step
            factor = 1.0 - lr * self.weight_decay
            if self._weight_decay_mask is None:
                params *= factor
            else:
                np.multiply(params, factor, out=params, where=self._weight_decay_mask)
        exp_avg, exp_avg_sq, tmp = self._state["exp_avg"], self._state["exp_avg_sq"], self._tmp
        np.subtract(grads, exp_avg, out=tmp)  # m.lerp_(g, 1 - beta1)
        tmp *= 1.0 - beta1
        exp_avg += tmp
        np.multiply(grads, 1.0 - beta2, out=tmp)
        tmp *= grads
        exp_avg_sq *= beta2
        exp_avg_sq += tmp
        second = exp_avg_sq
        if self.amsgrad:
            second = self._state["max_exp_avg_sq"]
            np.maximum(second, exp_avg_sq, out=second)
        step_size = lr / (1.0 - beta1**t)
        np.sqrt(second, out=tmp)
        tmp /= (1.0 - beta2**t) ** 0.5
        tmp += self.eps
        np.divide(exp_avg, tmp, out=tmp)
        tmp *= -step_size
        params += tmp


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    First ``params *= 1 - lr * weight_decay`` (only where ``weight_decay_mask`` is True),
    then the :class:`Adam` update with the raw gradient.

    Parameters
    ----------
    lr : float, default 1e-3
        Learning rate, > 0.
    betas : pair of float, default (0.9, 0.999)
        Decay rates of the first and second moment, each in [0, 1).
    eps : float, default 1e-8
        Added to the bias-corrected root of the second moment, >= 0.
    weight_decay : float, default 1e-2
        Decoupled decay rate, >= 0.
    amsgrad : bool, default False
        Normalise by the running maximum of the second moment.
    weight_decay_mask : numpy.ndarray of bool, shape (n_params,), optional
        Where weight decay applies (e.g. False on biases). Default: everywhere.
    fused : bool or None, default None
        Update in one compiled pass (numba, ``pip install 'jacnet[fast]'``) instead of
        13 NumPy passes; the results are bit-identical. None: when numba is installed;
        True: require it; False: never. Contiguous 1-D params only (else NumPy).

    Examples
    --------
    >>> import numpy as np
    >>> params = np.array([1.0, -2.0, 0.5])
    >>> AdamW(lr=0.1, weight_decay=0.5).step(params, np.array([0.5, -1.0, 2.0]))
    >>> params  # (1 - 0.05) * params, then the Adam step of about 0.1
    array([ 0.85 , -1.8  ,  0.375])
    """

    name = "adamw"
    _l2_decay = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        weight_decay_mask: np.ndarray | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            lr, betas, eps, weight_decay, amsgrad, weight_decay_mask=weight_decay_mask, fused=fused
        )


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    With ``g = grads + weight_decay * params``: ``s = alpha*s + (1-alpha)*g²``;
    ``d = sqrt(s) + eps`` (centered: ``a = alpha*a + (1-alpha)*g``, ``d = sqrt(s - a²) + eps``);
    ``params -= lr * g/d``, or with momentum ``b = momentum*b + g/d``, ``params -= lr * b``.

    Parameters
    ----------
    lr : float, default 1e-2
        Learning rate, > 0.
    alpha : float, default 0.99
        Smoothing constant of the squared-gradient average, in [0, 1).
    eps : float, default 1e-8
        Added to the root of the average, >= 0.
    momentum : float, default 0.0
        Momentum factor in [0, 1).
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its second moment.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient, >= 0.
    weight_decay_mask : numpy.ndarray of bool, shape (n_params,), optional
        Where weight decay applies (e.g. False on biases). Default: everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> params = np.array([1.0, -2.0, 0.5])
    >>> RMSprop(lr=0.01, alpha=0.75, eps=0.0).step(params, np.array([0.5, -1.0, 2.0]))
    >>> params  # each coordinate moves by lr / sqrt(1 - alpha) = 0.02
    array([ 0.98, -1.98,  0.48])
    """

    name = "rmsprop"

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        *,
        weight_decay_mask: np.ndarray | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, weight_decay_mask)
        self.alpha = _check_number(alpha, "alpha", "RMSprop", low=0.0, high=1.0)
        self.eps = _check_number(eps, "eps", "RMSprop", low=0.0)
        self.momentum = _check_number(momentum, "momentum", "RMSprop", low=0.0, high=1.0)
        self.centered = _check_bool(centered, "centered", "RMSprop")
        self._config = {
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
            "weight_decay": self.weight_decay,
        }

    def _buffer_names(self) -> tuple[str, ...]:
        names: tuple[str, ...] = ("square_avg",)
        if self.momentum != 0.0:
            names += ("momentum_buffer",)
        if self.centered:
            names += ("grad_avg",)
        return names

    def _update(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        alpha, tmp = self.alpha, self._tmp
        square_avg = self._state["square_avg"]
        np.multiply(grads, 1.0 - alpha, out=tmp)
        tmp *= grads
        square_avg *= alpha
        square_avg += tmp
        if self.centered:
            grad_avg = self._state["grad_avg"]
            np.subtract(grads, grad_avg, out=tmp)  # grad_avg.lerp_(g, 1 - alpha)
            tmp *= 1.0 - alpha
            grad_avg += tmp
            np.multiply(grad_avg, grad_avg, out=tmp)
            np.subtract(square_avg, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(square_avg, out=tmp)
        tmp += self.eps
        np.divide(grads, tmp, out=tmp)
        if self.momentum != 0.0:
            buffer = self._state["momentum_buffer"]
            buffer *= self.momentum
            buffer += tmp
            np.multiply(buffer, -lr, out=tmp)
        else:
            tmp *= -lr
        params += tmp


# --------------------------------------------------------------------------- utilities
def clip_grad_norm(grads: np.ndarray, max_norm: float, *, error_if_nonfinite: bool = False) -> float:
    """Scale ``grads`` in place so that its 2-norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: with ``n = ||grads||₂``, grads are multiplied
    by ``max_norm / (n + 1e-6)`` when that factor is below 1.

    Parameters
    ----------
    grads : numpy.ndarray of shape (n_params,), float32 or float64
        The flat gradient vector, modified in place.
    max_norm : float
        Largest allowed norm, > 0.
    error_if_nonfinite : bool, default False
        Raise if the norm is NaN or infinite. Otherwise such gradients are left unchanged
        (torch would turn them all into NaN) and the norm is returned for the caller to see.

    Returns
    -------
    float
        The norm before clipping.

    Examples
    --------
    >>> import numpy as np
    >>> grads = np.array([3.0, 4.0, 0.0])
    >>> clip_grad_norm(grads, 1.0)
    5.0
    >>> grads
    array([0.6, 0.8, 0. ])
    """
    max_norm = _check_number(max_norm, "max_norm", "clip_grad_norm", low=0.0, low_closed=False)
    if not isinstance(grads, np.ndarray) or grads.dtype not in FLOAT_DTYPES:
        got = grads.dtype if isinstance(grads, np.ndarray) else type(grads).__name__
        raise TypeError(
            f"clip_grad_norm: grads must be a float32 or float64 NumPy array (it is scaled "
            f"in place); got {got}."
        )
    flat = grads.reshape(-1)
    norm = math.sqrt(float(np.dot(flat, flat)))
    if not math.isfinite(norm):
        if error_if_nonfinite:
            raise ValueError(
                f"clip_grad_norm: the gradient norm is {norm}; the gradients contain NaN or "
                "infinity. Lower the learning rate or check the loss for overflow."
            )
        return norm
    coefficient = max_norm / (norm + 1e-6)
    if coefficient < 1.0:
        grads *= coefficient
    return norm


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop)}


def get_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """Build an optimizer from its registry name and keyword arguments (used by the CLI).

    Parameters
    ----------
    name : {"sgd", "adam", "adamw", "rmsprop"}
        Case-insensitive name; new optimizers register themselves in ``OPTIMIZERS``.
    **kwargs
        Constructor arguments, e.g. ``lr=0.01``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).
    TypeError
        An argument the optimizer does not take (the message lists the ones it takes).

    Examples
    --------
    >>> get_optimizer("adam", lr=0.01)
    Adam(lr=0.01, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.0, amsgrad=False)
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        options = ", ".join(repr(option) for option in sorted(OPTIMIZERS))
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {options}.")
    cls = OPTIMIZERS[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"{cls.__name__} got unexpected argument(s) {unknown}; it accepts {accepted}.")
    return cls(**kwargs)
