"""scikit-learn estimators: drop-in ``MLPClassifier`` and ``MLPRegressor`` with more solvers.

The constructor parameters, their defaults and meaning, the fitted attributes and the
methods are scikit-learn's (``sklearn.neural_network``): the same Glorot-uniform
initial weights drawn from the same ``random_state``, the same mini-batches in the same
shuffled order, the same loss (half squared error, log-loss, half Poisson deviance) with
the same L2 penalty ``alpha / (2 n) Σ‖W‖²`` per batch, the same ``tol`` /
``n_iter_no_change`` / ``early_stopping`` rules, the same dtype convention (float32 ``X``
trains and predicts in float32, anything else in float64). On float64 data a fit follows
scikit-learn's trajectory to rounding. What is new:

- the network is a jacnet :class:`~jacnet.network.Sequential` (of the input's type, or
  the one ``dtype=`` forces), trained through its chain of VJPs;
- ``solver="lm"`` (Levenberg–Marquardt) and ``solver="br"`` (Bayesian regularisation),
  full-batch second-order solvers from :mod:`jacnet.optim.second_order`, which record the
  damping per iteration in ``mu_curve_`` (and, for ``"br"``, the effective number of
  parameters in ``gamma_curve_`` / ``effective_n_params_``).

``X`` may be a SciPy sparse matrix (CSR or CSC) wherever scikit-learn's MLP takes one
(``fit``, ``partial_fit``, ``predict``, ``predict_proba``, ``score``): for ``"sgd"``,
``"adam"`` and ``"lbfgs"`` the first layer's product and its weight gradient work on
the sparse rows directly; ``"lm"`` and ``"br"`` densify it (their Jacobian has a dense
row per sample and output anyway). Results equal the dense input's to rounding.

``coefs_[i]`` has scikit-learn's shape ``(n_in, n_out)``; it is a transposed *view* of
jacnet's ``weight`` (shape ``(n_out, n_in)``) inside the network's flat parameter vector,
so writing into it (or assigning a new list) changes the network. The network itself is
``model_``.

A fitted estimator pickles (``pickle.dumps``, ``joblib.dump``) with all its state,
optimizer included, so a loaded copy predicts identically and ``partial_fit`` continues
as the original would; unpickle only files you trust. Without pickle,
:func:`jacnet.estimator_io.save_estimator` writes it (and a jacnet ``StandardScaler``)
to an ``.npz`` archive that :func:`~jacnet.estimator_io.load_estimator` checks and
rebuilds, predicting identically.

This module needs scikit-learn >= 1.6 (``pip install 'jacnet[sklearn]'``); ``import
jacnet`` does not import it.

Examples
--------
>>> from sklearn.datasets import load_iris
>>> from jacnet.sklearn import MLPClassifier
>>> X, y = load_iris(return_X_y=True)
>>> clf = MLPClassifier((16,), solver="lbfgs", max_iter=500, random_state=0).fit(X, y)
>>> clf.coefs_[0].shape, clf.predict_proba(X[:2]).shape
((4, 16), (2, 3))
>>> clf.score(X, y) > 0.9
True
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np

try:
    import scipy.optimize
    from scipy.special import expit, softmax
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d, shuffle
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
    from sklearn.utils.optimize import _check_optimize_result
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "jacnet.sklearn needs scikit-learn >= 1.6 (validate_data, __sklearn_tags__); install "
        "it with `pip install 'jacnet[sklearn]'` or `pip install -U scikit-learn`."
    ) from exc

from jacnet._validation import is_sparse
from jacnet.fpu import flush_denormals
from jacnet.jacobians import Diagonal
from jacnet.layers import Linear
from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from jacnet.network import Sequential, mlp
from jacnet.optim import SGD, Adam
from jacnet.training import Callback, EarlyStopping
from jacnet.training import fit as train

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_SECOND_ORDER_SOLVERS = ("lm", "br")
#: The estimators' CG tolerance on the relative residual of each damped system (see
#: ``lm_solver``): steps close to the exact ones that ``trainlm`` takes, not the
#: optimizer's adaptive forcing term, which is tuned for time to a training loss.
_ESTIMATOR_CG_TOL = 0.03
#: scikit-learn's activation names → jacnet's.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


# --------------------------------------------------------------------------- losses
class _HalfPoissonLoss(Loss):
    """scikit-learn's half Poisson deviance from the log-mean s: Σ_k eˢ − d s + d log d − d.

    The network's output is s = log(prediction) (scikit-learn's ``out_activation_ =
    "exp"``); the gradient w.r.t. s is eˢ − d, the curvature diag(eˢ).
    """

    def curvature(self, prediction: np.ndarray, target: np.ndarray) -> Diagonal:
        return Diagonal(np.exp(prediction) * self._scale(prediction.shape[0]))

    def value_and_grad(self, prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        per_row = self.per_sample(prediction, target)
        scale = self._scale(prediction.shape[0])
        grad = np.exp(prediction)
        grad -= target
        grad *= scale
        return scale * float(per_row.sum()), grad

    def per_sample(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The loss of each row, shape (B,), float64."""
        s, d = prediction.astype(np.float64), target.astype(np.float64)
        d_log_d = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return (np.exp(s) - d * s + d_log_d - d).sum(axis=1)


# --------------------------------------------------------------------------- solvers
class _StochasticSolver:
    """scikit-learn's ``SGDOptimizer`` / ``AdamOptimizer`` semantics on jacnet's SGD / Adam.

    jacnet's optimizers follow PyTorch, which differs from scikit-learn in two places;
    this thin layer makes the updates identical:

    - SGD momentum: scikit-learn keeps the velocity v = m·v − lr·g, PyTorch the buffer
      b = m·b + g with step −lr·b. They agree (v = −lr·b) while lr is constant; when
      ``invscaling`` or ``adaptive`` changes lr from a to a′, the buffer is rescaled by a/a′.
    - Adam's ε: scikit-learn divides by √v + ε, PyTorch by √v/√(1−β₂ᵗ) + ε, so at step t
      jacnet's ``eps`` is set to ε/√(1−β₂ᵗ).
    """

    def __init__(self, est: _BaseMLP) -> None:
        self.kind = est.solver
        self.lr_schedule = est.learning_rate
        self.learning_rate_init = float(est.learning_rate_init)
        self.power_t = float(est.power_t)
        self.epsilon = float(est.epsilon)
        self.beta_2 = float(est.beta_2)
        self.t = 0
        self.optimizer: SGD | Adam
        if self.kind == "sgd":
            momentum = float(est.momentum)
            self.optimizer = SGD(lr=self.learning_rate_init, momentum=momentum,
                                 nesterov=bool(est.nesterovs_momentum) and momentum > 0.0)
        else:
            self.optimizer = Adam(lr=self.learning_rate_init,
                                  betas=(float(est.beta_1), self.beta_2), eps=self.epsilon)

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.lr)

    def _set_learning_rate(self, lr: float) -> None:
        old = self.learning_rate
        if self.t > 0 and self.optimizer.momentum != 0.0 and lr != old:  # type: ignore[union-attr]
            state = self.optimizer.state_dict()
            buffer = state["momentum_buffer"]
            assert isinstance(buffer, np.ndarray)
            buffer *= old / lr
            state["lr"] = lr
            self.optimizer.load_state_dict(state)
        self.optimizer.lr = lr

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        self.t += 1
        if self.kind == "adam":
            self.optimizer.eps = self.epsilon / math.sqrt(1.0 - self.beta_2**self.t)  # type: ignore[union-attr]
        self.optimizer.step(params, grads)

    def iteration_ends(self, time_step: int) -> None:
        if self.kind == "sgd" and self.lr_schedule == "invscaling":
            self._set_learning_rate(self.learning_rate_init / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg: str, verbose: bool) -> bool:
        if self.kind != "sgd" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_learning_rate(self.learning_rate / 5.0)
        if verbose:
            print(msg + f" Setting learning rate to {self.learning_rate:f}")
        return False


# --------------------------------------------------------------------------- base class
class _SecondOrderRecord(Callback):
    """The estimators' bookkeeping of an lm/br fit, one fit-loop epoch per iteration.

    After each epoch: ``loss_`` in scikit-learn's convention (the data term per output,
    in the original target units, plus ``alpha``'s penalty on the weights), the curves,
    ``n_iter_`` and, with early stopping, the validation score, written into the
    epoch's record as ``val_score`` for the :class:`~jacnet.training.EarlyStopping`
    that follows. An epoch that only found the solver converged (``tol``/goal reached
    before any step) after the first is not an iteration: nothing changed.
    """

    def __init__(self, est: _BaseMLP, mask: np.ndarray, decay: float, loss_unit: float,
                 per_output: int, validation: tuple[Any, Any, Any] | None) -> None:
        self.est, self.mask, self.decay = est, mask, decay
        self.loss_unit, self.per_output, self.validation = loss_unit, per_output, validation

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        est = self.est
        if self.state.optimizer.stop_reason in ("goal", "min_grad") and est.n_iter_ > 0:
            if self.validation is not None:
                assert est.validation_scores_ is not None
                logs["val_score"] = est.validation_scores_[-1]  # unchanged network
            return
        est.n_iter_ += 1
        penalty = 0.0
        if self.decay:
            weights = est.model_.params[self.mask]
            penalty = 0.5 * self.decay * float(np.dot(weights, weights))
        est.loss_ = self.loss_unit * (logs["loss"] - penalty) / self.per_output + penalty
        est.loss_curve_.append(est.loss_)
        est.best_loss_ = min(est.best_loss_, est.loss_)
        est.mu_curve_.append(float(logs["mu"]))
        if "gamma" in logs:
            est.gamma_curve_.append(float(logs["gamma"]))
            est.effective_n_params_ = float(logs["gamma"])
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}, mu = {logs['mu']:.3g}")
        if self.validation is not None:
            score = est._score(*self.validation[:2], sample_weight=self.validation[2])
            assert est.validation_scores_ is not None and est.best_validation_score_ is not None
            est.validation_scores_.append(score)
            est.best_validation_score_ = max(est.best_validation_score_, score)
            logs["val_score"] = score


class _BaseMLP(BaseEstimator):
    """Shared fitting, prediction and state of the two estimators (not for direct use)."""

    _parameter_constraints: dict = {  # noqa: RUF012 - scikit-learn's declarative convention
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        # [0, 1): jacnet's SGD (as PyTorch's) rejects momentum = 1, which never converges.
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "dtype": [None, StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64})],
        "laplace": [None, StrOptions({"auto", "full", "last_layer"})],
        "lm_solver": [StrOptions({"dense", "cg", "auto"})],
    }

    # Set by the subclasses' __init__ (scikit-learn reads the parameters from its signature).
    hidden_layer_sizes: Any
    activation: str
    solver: str
    alpha: float
    batch_size: Any
    learning_rate: str
    learning_rate_init: float
    power_t: float
    max_iter: int
    shuffle: bool
    random_state: Any
    tol: float
    verbose: Any
    warm_start: bool
    momentum: float
    nesterovs_momentum: bool
    early_stopping: bool
    validation_fraction: float
    beta_1: float
    beta_2: float
    epsilon: float
    n_iter_no_change: Any
    max_fun: int
    dtype: Any
    laplace: Any
    lm_solver: str

    def _loss_name(self) -> str:
        raise NotImplementedError

    # --- parameters in scikit-learn's orientation -----------------------------------
    def _linear_layers(self) -> list[Linear]:
        model = self.__dict__.get("model_")
        if model is None:
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet.")
        return [layer for layer in model.layers if isinstance(layer, Linear)]

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weights per layer, ``coefs_[i]`` of shape (n_in, n_out): views of ``weight.T``."""
        return [layer.weight.T for layer in self._linear_layers()]

    @coefs_.setter
    def coefs_(self, values: list[np.ndarray]) -> None:
        self._assign(values, "coefs_", lambda layer: layer.weight.T)

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Biases per layer, ``intercepts_[i]`` of shape (n_out,): views of ``bias``."""
        return [layer.bias for layer in self._linear_layers()]  # type: ignore[misc]

    @intercepts_.setter
    def intercepts_(self, values: list[np.ndarray]) -> None:
        self._assign(values, "intercepts_", lambda layer: layer.bias)

    def _assign(self, values: Any, name: str, target: Any) -> None:
        layers = self._linear_layers()
        if len(values) != len(layers):
            raise ValueError(f"{name} must be a list of {len(layers)} arrays, one per layer; "
                             f"got {len(values)}.")
        for i, (layer, value) in enumerate(zip(layers, values)):
            view = target(layer)
            value = np.asarray(value)
            if value.shape != view.shape:
                raise ValueError(f"{name}[{i}] must have shape {view.shape}; got {value.shape}.")
            view[...] = value

    # --- pickling: the network's views into its flat vector are rebuilt on load --------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            state["_model_state"] = (model.get_config(), str(model.dtype), model.params.copy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        saved = state.pop("_model_state", None)
        super().__setstate__(state)
        if saved is not None:
            config, dtype, params = saved
            self.model_ = Sequential.from_config(config, dtype=dtype, params=params)

    # --- fitting --------------------------------------------------------------------
    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool,
                        dtype: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False) -> Any:
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden_layer_sizes}.")
        first_pass = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        if self.laplace is not None and incremental:
            raise ValueError(
                f"partial_fit sees one batch at a time, but laplace={self.laplace!r} needs all "
                "the training data at once; use fit, or construct with laplace=None.")
        for name in ("laplace_", "alpha_", "beta_", "effective_n_params_",
                     "log_marginal_likelihood_"):
            self.__dict__.pop(name, None)  # evidence of an earlier fit
        X, y = self._validate_input(X, y, incremental, reset=first_pass,
                                    dtype=self._fit_dtype(first_pass))
        dtype = X.dtype
        n_features = X.shape[1]
        X = self._sparse_layout(X)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=dtype)
        if self.laplace is not None and (sample_weight is not None
                                         or getattr(self, "class_weight", None) is not None):
            raise ValueError(
                f"laplace={self.laplace!r} does not support sample_weight or class_weight (the "
                "likelihood of the Laplace approximation counts every row once); fit without "
                "them or with laplace=None.")
        sample_weight = self._with_class_weight(y, sample_weight, dtype)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        y = y.astype(dtype, copy=False)
        layer_units = [n_features, *hidden_layer_sizes, y.shape[1]]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, dtype)
        else:
            self._check_warm_model(layer_units, dtype)
            if self.solver in _STOCHASTIC_SOLVERS and not hasattr(self, "_no_improvement_count"):
                self._initialize_stochastic()

        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            if self.solver in _STOCHASTIC_SOLVERS:
                # As jacnet.training.fit: subnormal results are flushed to zero while
                # training (Adam's moments of dead units decay through them, at ~100× the
                # cost of normal arithmetic); no value above 1.2e-38 changes.
                with flush_denormals():
                    self._fit_stochastic(X, y, sample_weight, incremental)
            elif self.solver == "lbfgs":
                self._fit_lbfgs(X, y, sample_weight)
            else:
                self._fit_second_order(X, y, sample_weight, fresh=first_pass)
            if self.solver != "br":  # "br" fits it on its own scale, in _fit_second_order
                self._fit_laplace(X, y)

        if not np.isfinite(self.model_.params).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _with_class_weight(self, y: np.ndarray, sample_weight: np.ndarray | None,
                           dtype: np.dtype) -> np.ndarray | None:
        """``sample_weight`` times the classifier's ``class_weight`` per row (the regressor
        has none)."""
        return sample_weight

    def _sparse_layout(self, X: Any) -> Any:
        """Sparse ``X`` in the form the solver works on: CSR for the mini-batch solvers
        (batches are rows), as given for ``"lbfgs"`` (the first layer multiplies either
        form), dense for ``"lm"``/``"br"``, whose Jacobian with respect to the first
        layer's weights is a dense matrix with a row per sample and output anyway."""
        if not is_sparse(X):
            return X
        if self.solver in _SECOND_ORDER_SOLVERS:
            return X.toarray()
        if self.solver in _STOCHASTIC_SOLVERS:
            return X.tocsr()
        return X

    def _fit_dtype(self, first_pass: bool) -> Any:
        """The ``dtype`` argument of ``validate_data`` for a fit.

        ``dtype`` given: that type. Otherwise scikit-learn's convention: a fresh fit keeps
        float32 input in float32 and converts anything else to float64; a ``warm_start``
        or ``partial_fit`` continues in the fitted network's type.
        """
        if self.dtype is not None:
            return np.dtype(self.dtype)
        if not first_pass:
            return self.model_.dtype
        return [np.float64, np.float32]

    def _check_warm_model(self, layer_units: list[int], dtype: np.dtype) -> None:
        units = [self._linear_layers()[0].in_features] + [
            layer.out_features for layer in self._linear_layers()]
        if units != layer_units:
            raise ValueError(
                f"warm_start/partial_fit continue the fitted network of layer sizes {units}, "
                f"but hidden_layer_sizes and the data now ask for {layer_units}; fit afresh "
                "with warm_start=False."
            )
        if self.model_.dtype != dtype:
            self.model_ = self.model_.astype(dtype)

    def _output_activation(self) -> str:
        raise NotImplementedError

    def _initialize(self, y: np.ndarray, layer_units: list[int], dtype: np.dtype) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        model = mlp(layer_units, activation=_ACTIVATIONS[self.activation], init="zeros",
                    dtype=dtype)
        # scikit-learn's Glorot-uniform draws, in its order (coef then intercept per layer)
        # and orientation (n_in, n_out), so a random_state gives the same initial network.
        factor = 2.0 if self.activation == "logistic" else 6.0
        for layer in model.layers:
            if isinstance(layer, Linear):
                fan_in, fan_out = layer.in_features, layer.out_features
                bound = math.sqrt(factor / (fan_in + fan_out))
                layer.weight[...] = self._random_state.uniform(-bound, bound, (fan_in, fan_out)).T
                assert layer.bias is not None
                layer.bias[...] = self._random_state.uniform(-bound, bound, fan_out)
        self._use_network(model)
        self.__dict__.pop("_solver", None)
        if self.solver in _STOCHASTIC_SOLVERS:
            self._initialize_stochastic()

    def _use_network(self, model: Sequential) -> None:
        """Make ``model`` the fitted network, with the loss (from ``out_activation_``) and
        the weights' slices of the flat vector (for ``alpha``) that go with it."""
        self.model_ = model
        self._loss = self._make_loss()
        slices = model.parameter_slices()
        self._weight_slices = [s for name, s in slices.items() if name.endswith(".weight")]

    def _forget_stochastic(self) -> None:
        """Drop sgd/adam's bookkeeping (best network, no-improvement count): a later
        ``warm_start`` fit with them starts it afresh from the network as it is then."""
        self.__dict__.pop("_no_improvement_count", None)

    def _initialize_stochastic(self) -> None:
        """The bookkeeping of sgd and adam: on a fresh network, or when ``warm_start``
        continues a network fitted by another solver (lbfgs, lm, br keep none of it)."""
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_: float | None = -np.inf
            self.best_loss_: float | None = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None
        self._best_params = self.model_.params.copy()

    def _make_loss(self) -> Loss:
        name = self._loss_name()
        if name == "squared_error":
            return MSELoss()
        if name == "poisson":
            return _HalfPoissonLoss()
        if self.out_activation_ == "softmax":
            return CrossEntropyLoss()
        return BCEWithLogitsLoss()

    def _loss_and_grad(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
                       reported: bool = True) -> float:
        """Forward, loss (+ L2 penalty) and backward on one batch; ``model_.grads`` is filled.

        Returns the loss in scikit-learn's convention when ``reported`` (squared error
        averaged over outputs), else the objective whose gradient is ``grads`` (summed
        over outputs; the two are equal for one output).
        """
        model, loss = self.model_, self._loss
        out = model.forward(X)
        if sample_weight is None:
            sw_sum = float(X.shape[0])
            value, grad = loss.value_and_grad(out, y)
        else:
            sw_sum = float(sample_weight.sum())
            grad = loss.grad(out, y)
            # ℓᵢ per row in float64, for the weighted average scikit-learn reports.
            per_row = loss.per_sample(out.astype(np.float64), y)
            if sw_sum > 0.0:
                value = float(np.dot(per_row, sample_weight)) / sw_sum
                grad *= (sample_weight * (X.shape[0] / sw_sum))[:, None]
            else:
                value = float("nan")
                grad[...] = np.nan
        if reported and isinstance(loss, MSELoss):
            value /= self.n_outputs_
        model.backward(grad, input_grad=False)
        if self.alpha:
            params, grads = model.params, model.grads
            coefficient = float(self.alpha) / sw_sum
            squares = 0.0
            for s in self._weight_slices:
                w = params[s]
                squares += float(np.dot(w, w))
                grads[s] += coefficient * w
            value += 0.5 * float(self.alpha) * squares / sw_sum
        return value

    def _split_validation(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
                          early_stopping: bool) -> tuple[Any, ...]:
        """(X, y, w) for training and (X, y, w) for the validation score: scikit-learn's
        split of ``validation_fraction`` with ``early_stopping``, else no validation."""
        if not early_stopping:
            return X, y, sample_weight, None, None, None
        # Don't stratify in multilabel classification. Stratify on the binarised labels as
        # booleans, as scikit-learn does, so that its error for a class too small to split
        # names the class as it names it (['True'], not ['1.0']).
        stratify = y.astype(bool) if is_classifier(self) and self.n_outputs_ == 1 else None
        arrays = [X, y] if sample_weight is None else [X, y, sample_weight]
        parts = train_test_split(*arrays, random_state=self._random_state,
                                 test_size=self.validation_fraction, stratify=stratify)
        X_train, X_val, y_train, y_val = parts[:4]
        sw_train, sw_val = (parts[4], parts[5]) if sample_weight is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' "
                "or the size of your dataset."
            )
        if is_classifier(self):
            y_val = self._label_binarizer.inverse_transform(y_val)
        return X_train, y_train, sw_train, X_val, y_val, sw_val

    def _fit_stochastic(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
                        incremental: bool) -> None:
        if not incremental or getattr(self, "_solver", None) is None:
            self._solver = _StochasticSolver(self)
        solver = self._solver
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        X_train, y_train, sw_train, X_val, y_val, sw_val = self._split_validation(
            X, y, sample_weight, early_stopping)

        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than "
                              "sample size. It is going to be clipped", stacklevel=4)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        params, grads = self.model_.params, self.model_.grads
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = shuffle(sample_idx, random_state=self._random_state)
                    X_epoch, y_epoch = X_train[sample_idx], y_train[sample_idx]
                    sw_epoch = None if sw_train is None else sw_train[sample_idx]
                else:
                    X_epoch, y_epoch, sw_epoch = X_train, y_train, sw_train
                accumulated_loss = 0.0
                for start in range(0, n_samples, batch_size):
                    stop = min(start + batch_size, n_samples)
                    batch_loss = self._loss_and_grad(
                        X_epoch[start:stop], y_epoch[start:stop],
                        None if sw_epoch is None else sw_epoch[start:stop])
                    accumulated_loss += batch_loss * (stop - start)
                    solver.step(params, grads)

                self.n_iter_ += 1
                self.loss_ = accumulated_loss / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
                solver.iteration_ends(self.t_)

                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if early_stopping else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if solver.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                        "reached and the optimization hasn't converged yet.",
                        ConvergenceWarning, stacklevel=4,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
        if early_stopping:
            params[...] = self._best_params

    def _update_no_improvement_count(self, early_stopping: bool, X: Any, y: Any,
                                     sample_weight: Any) -> None:
        if early_stopping:
            score = self._score(X, y, sample_weight=sample_weight)
            assert self.validation_scores_ is not None and self.best_validation_score_ is not None
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                np.copyto(self._best_params, self.model_.params)
        else:
            assert self.best_loss_ is not None
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _fit_lbfgs(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        self._forget_stochastic()
        model = self.model_
        params, grads = model.params, model.grads

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            params[...] = theta
            value = self._loss_and_grad(X, y, sample_weight, reported=False)
            return value, grads.astype(np.float64)

        callback = None
        if self.verbose:
            def callback(intermediate_result: Any) -> None:
                print(f"Iteration, loss = {float(intermediate_result.fun):.8f}")
        result = scipy.optimize.minimize(
            objective, params.astype(np.float64), method="L-BFGS-B", jac=True, callback=callback,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
        )
        params[...] = result.x
        # scikit-learn's own check: the same iteration count and ConvergenceWarning text.
        self.n_iter_ = _check_optimize_result("lbfgs", result, self.max_iter)
        self.loss_ = (self._loss_and_grad(X, y, sample_weight) if self.n_outputs_ > 1
                      else float(result.fun))

    def _fit_second_order(self, X: np.ndarray, y: np.ndarray,
                          sample_weight: np.ndarray | None, fresh: bool = True) -> None:
        """Levenberg–Marquardt or Bayesian regularisation, one full-batch epoch per iteration.

        The epochs run in :func:`jacnet.training.fit` (the one training loop); a
        :class:`_SecondOrderRecord` callback keeps scikit-learn's attributes and, with
        early stopping, the validation score that an ``EarlyStopping`` callback watches.

        ``tol`` is the gradient-norm tolerance (as ``gtol`` for ``"lbfgs"``): the solver
        stops when ‖∂loss/∂θ‖ < tol, when its damping μ exceeds ``mu_max`` (no step lowers
        the loss), or after ``max_iter`` iterations. With ``early_stopping``, ``"lm"``
        holds out ``validation_fraction`` of the data, as the stochastic solvers do, and
        stops when the validation score has not risen for ``n_iter_no_change`` iterations
        in a row, keeping the best-scoring network (``trainlm``'s validation stop, with
        ``n_iter_no_change`` for its ``max_fail``); ``"br"`` ignores ``early_stopping``,
        as ``trainbr`` does: the evidence, not a held-out set, sets its regularisation.
        ``"lm"`` minimises scikit-learn's
        objective, the (sample-weighted) mean loss plus ``alpha / (2 n) Σ‖W‖²`` on the
        weights only (a weight-decay mask leaves the intercepts out), for every loss, in
        the generalised Gauss–Newton form. ``"br"`` (regressor, squared error, no
        ``sample_weight``) chooses its own regularisation and ignores ``alpha``.
        """
        from jacnet.optim.second_order import BayesianRegularization, LevenbergMarquardt

        if self.solver == "br":
            if not isinstance(self._loss, MSELoss):
                raise ValueError(
                    f"solver='br' needs loss='squared_error' (least-squares residuals, whose "
                    f"noise level it estimates); got loss={self._loss_name()!r}. Use "
                    "solver='lm', 'lbfgs' or 'adam' for it."
                )
            if sample_weight is not None:
                raise ValueError(
                    "solver='br' does not support sample_weight (its evidence update counts "
                    "unweighted residuals); use solver='lm', 'lbfgs' or 'adam'."
                )
        self._forget_stochastic()
        early_stopping = self.early_stopping and self.solver == "lm"
        # Split first: the weight decay alpha / n counts the rows LM trains on.
        X, y, sample_weight, X_val, y_val, sw_val = self._split_validation(
            X, y, sample_weight, early_stopping)
        model = self.model_
        optimizer: LevenbergMarquardt | BayesianRegularization
        mask = np.zeros(model.n_params, dtype=bool)
        for s in self._weight_slices:
            mask[s] = True
        if self.solver == "lm":
            sw_sum = float(X.shape[0]) if sample_weight is None else float(sample_weight.sum())
            decay = float(self.alpha) / sw_sum if sw_sum > 0 else 0.0
            optimizer = LevenbergMarquardt(min_grad=float(self.tol), weight_decay=decay,
                                           weight_decay_mask=mask, solver=self.lm_solver,
                                           cg_tol=_ESTIMATOR_CG_TOL)
        else:
            decay = 0.0
            optimizer = BayesianRegularization(min_grad=float(self.tol), solver=self.lm_solver,
                                               cg_tol=_ESTIMATOR_CG_TOL)
        # "br" trains on targets mapped to [-1, 1], as MATLAB's trainbr does through
        # mapminmax: its evidence updates weigh the data term against the weights' scale,
        # and small targets let the prior win (a constant fit). The map is folded back
        # into the output layer afterwards, so the network predicts in the original units.
        unit, center = 1.0, 0.0
        if self.solver == "br":
            low, high = y.min(axis=0), y.max(axis=0)
            unit = float(np.max(high - low)) / 2.0 or 1.0
            center = (high + low) / 2.0
            y = ((y - center) / unit).astype(y.dtype, copy=False)
            if not fresh:  # a warm start: express the trained network in the scaled units
                self._rescale_output_layer(1.0 / unit, -center / unit)
        self.loss_curve_ = []
        self.mu_curve_: list[float] = []
        if self.solver == "br":
            self.gamma_curve_: list[float] = []
        self.best_loss_ = np.inf
        self.n_iter_ = 0
        self.validation_scores_ = [] if early_stopping else None
        self.best_validation_score_ = -np.inf if early_stopping else None
        record = _SecondOrderRecord(
            self, mask, decay, loss_unit=unit * unit,
            per_output=self.n_outputs_ if isinstance(self._loss, MSELoss) else 1,
            validation=(X_val, y_val, sw_val) if early_stopping else None)
        callbacks: list[Callback] = [record]
        stopper = None
        if early_stopping:
            # trainlm's validation stop on scikit-learn's score, with n_iter_no_change as
            # max_fail; np.inf never stops (a patience past max_iter).
            patience = (self.max_iter + 1 if math.isinf(self.n_iter_no_change)
                        else int(self.n_iter_no_change))
            stopper = EarlyStopping("val_score", patience=patience, mode="max")
            callbacks.append(stopper)
        stopped: str | None = None
        try:
            history = train(model, X, y, loss=self._loss, optimizer=optimizer,
                            epochs=self.max_iter, metrics=[], callbacks=callbacks,
                            early_stopping=False, progress=False, sample_weight=sample_weight)
            stopped = history.stop_reason
            if self.solver == "br":
                self._br_evidence(optimizer, X, y, unit)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
            stopped = "interrupted"
            if stopper is not None and stopper.best_params is not None and stopper.best_epoch:
                model.params[...] = stopper.best_params
        finally:
            if self.solver == "br":
                self._rescale_output_layer(unit, center)
        if early_stopping and self.validation_scores_:
            # As scikit-learn's stochastic solvers report with early stopping: the best
            # training loss belongs to no network that is kept.
            self.best_loss_ = None
        if stopped is None:
            warnings.warn(
                f"{'Levenberg-Marquardt' if self.solver == 'lm' else 'Bayesian regularisation'}"
                f": Maximum iterations ({self.max_iter}) reached and the optimization "
                "hasn't converged yet.", ConvergenceWarning, stacklevel=4)
        self.stop_reason_ = ("validation" if stopper is not None and stopper.stopped_epoch
                             else optimizer.stop_reason)

    def _br_evidence(self, optimizer: Any, X: np.ndarray, y: np.ndarray, unit: float) -> None:
        """``alpha_`` and ``beta_`` from Bayesian regularisation's fixed point, and the
        Laplace approximation with them, while the network is in ``"br"``'s target units."""
        from jacnet.laplace import br_precisions

        prior, noise = br_precisions(optimizer)
        self.alpha_ = prior
        self.beta_: float | np.ndarray = noise / unit**2
        self._fit_laplace(X, y, precisions=(prior, noise), unit=unit)

    def _laplace_target(self, y: np.ndarray) -> tuple[str, np.ndarray]:
        """The Laplace likelihood and the targets it takes, from the fit's 2-D ``y``."""
        raise NotImplementedError

    def _fit_laplace(self, X: np.ndarray, y: np.ndarray,
                     precisions: tuple[float, float] | None = None, unit: float = 1.0) -> None:
        """The Laplace approximation ``laplace_`` at the trained network (``laplace`` set).

        ``precisions`` (α, β) fixed, else both from the evidence; ``unit`` the scale of the
        network's outputs in target units (``"br"`` trains on targets mapped to [-1, 1]).
        """
        if self.laplace is None:
            return
        from jacnet.laplace import Laplace

        likelihood, target = self._laplace_target(y)
        prior, noise = (None, None) if precisions is None else precisions
        approx = Laplace(self.model_, likelihood, structure=self.laplace,
                         prior_precision=prior, noise_precision=noise).fit(X, target)
        self.laplace_ = approx
        self._laplace_unit = unit
        self.log_marginal_likelihood_ = approx.log_marginal_likelihood_
        if precisions is None:  # "br" keeps its own α, β and γ
            self.alpha_ = float(approx.alpha_)  # one α: the evidence of a single prior
            self.effective_n_params_ = approx.effective_n_params_
            if likelihood == "regression":
                self.beta_ = approx.beta_ / unit**2

    def _fitted_laplace(self, what: str) -> Any:
        approx = self.__dict__.get("laplace_")
        if approx is None:
            raise ValueError(
                f"{what} needs the Laplace approximation, which fit computes when laplace is "
                f"set; this {type(self).__name__} was fitted without it. Construct it with "
                "laplace='auto' (or 'full', 'last_layer') and fit again.")
        return approx

    def _rescale_output_layer(self, scale: float, shift: Any) -> None:
        """Make the last Linear layer compute scale · (W y + b) + shift, in place."""
        last = [layer for layer in self.model_.layers if isinstance(layer, Linear)][-1]
        last.weight *= scale
        if last.bias is not None:
            last.bias *= scale
            last.bias += np.asarray(shift, dtype=last.bias.dtype)

    # --- prediction -----------------------------------------------------------------
    def _forward_pass_fast(self, X: Any, check_input: bool = True) -> np.ndarray:
        """The output activation applied to the network's output, shape (B, n_outputs)."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=self.model_.dtype,
                              reset=False)
        elif not is_sparse(X):
            X = np.asarray(X, dtype=self.model_.dtype)
        out = self.model_.forward(X)
        if self.out_activation_ == "softmax":
            return softmax(out, axis=1).astype(out.dtype, copy=False)
        if self.out_activation_ == "logistic":
            return expit(out)
        if self.out_activation_ == "exp":
            return np.exp(out)
        return out

    def _predict(self, X: Any, check_input: bool = True) -> np.ndarray:
        raise NotImplementedError

    def _score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        raise NotImplementedError

    def _score_with_function(self, X: Any, y: Any, sample_weight: Any, score_function: Any) -> float:
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(score_function(y, y_pred, sample_weight=sample_weight))

    def _check_solver(self) -> bool:
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} "
                "is not stochastic."
            )
        return True

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : array-like or sparse matrix (CSR/CSC) of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification) or real numbers (regression).
        sample_weight : array-like of shape (n_samples,), optional
            Per-sample weights (every solver but ``"br"``).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


# --------------------------------------------------------------------------- classifier
class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier, scikit-learn's ``MLPClassifier`` on jacnet.

    Minimises the log-loss (softmax for several classes, logistic per output for binary
    and multi-label targets) with an L2 penalty on the weights.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default (100,)
        Width of each hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default "relu"
    solver : {"lbfgs", "sgd", "adam", "lm"}, default "adam"
        ``"lm"``: Levenberg–Marquardt on the log-loss in the generalised Gauss–Newton form
        (Jᵀ H J + μI) Δ = Jᵀ g, H the log-loss's Hessian w.r.t. the logits; full batch,
        with ``sample_weight``; ``alpha`` penalises the weights only, as scikit-learn.
        There is no ``"br"`` here (:class:`MLPRegressor` has it): Bayesian regularisation
        as in ``trainbr`` re-estimates a noise precision β = (N − γ)/(2 E_D) from
        least-squares residuals, and the log-loss has no noise level to estimate. MacKay's
        evidence framework for classifiers keeps only α and needs the Laplace
        approximation of a non-Gaussian posterior (and predictive moderation), which is
        a different algorithm, not a change of loss.
    alpha : float, default 1e-4
        L2 penalty: ``alpha / (2 n_samples) Σ‖W‖²`` (weights only).
    batch_size : int or "auto", default "auto"
        ``min(200, n_samples)`` for "auto" (stochastic solvers only).
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        Learning-rate schedule of ``"sgd"``.
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
    warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
    beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        As in scikit-learn (``momentum`` must be < 1). For the full-batch solvers
        (``"lm"``, and ``"br"`` of :class:`MLPRegressor`) they mean what MATLAB
        ``trainlm``'s stopping rules mean, as ``"lbfgs"`` reads ``tol`` as a gradient
        tolerance: ``max_iter`` is the number of epochs (one damped Gauss–Newton step on
        all the training rows each); ``tol`` is ``min_grad``: training stops when the
        Euclidean norm of the gradient of the objective (the mean loss plus ``alpha``'s
        penalty) falls below it; it also stops when the damping μ passes 1e10 (no step
        lowers the loss: ``mu_max``). ``n_iter_no_change`` is ``max_fail`` with
        ``early_stopping`` (iterations without a better validation score) and otherwise
        unused: no rule on the training loss's progress stops LM early.
    dtype : {"float32", "float64"} or None, default None
        Floating type of the network, its training and its predictions. None follows
        scikit-learn: float32 ``X`` trains (and the network predicts) in float32, any
        other ``X`` in float64; ``warm_start`` and ``partial_fit`` continue in the fitted
        network's type. A type given forces it whatever the input.
    laplace : {"auto", "full", "last_layer"} or None, default None
        After training, fit a Laplace approximation of the posterior over the weights
        (:class:`jacnet.laplace.Laplace`, this ``structure``) on all the rows given to
        ``fit``, with its prior precision from the evidence; ``predict_proba`` then
        returns the probabilities averaged over it. None: no approximation, the
        network's probabilities. It costs one generalised Gauss–Newton matrix on the
        training rows and an eigendecomposition of its structure's size (``"auto"``:
        ``"full"`` up to 2048 parameters, else the last layer); binary and multiclass
        targets only, no ``sample_weight`` or ``partial_fit``. ``predict`` stays the
        network's most probable class.
    class_weight : dict, list of dict, "balanced" or None, default None
        As in scikit-learn's linear models: weights of the classes, ``{label: weight}``
        (labels as in ``y``; classes left out weigh 1), or "balanced", ``n_samples /
        (n_classes * np.bincount(y))`` from the ``y`` given to ``fit``; multi-label
        targets take a list of dicts, one per column. The weights multiply
        ``sample_weight`` row by row (``sklearn.utils.class_weight.compute_sample_weight``),
        so ``"balanced"`` is the same fit as passing those weights as ``sample_weight``.
        ``partial_fit`` takes a dict only: one batch's class frequencies are not the data's.
    lm_solver : {"auto", "dense", "cg"}, default "auto"
        The inner solver of ``"lm"`` (and ``"br"`` of :class:`MLPRegressor`), the
        ``solver`` of :class:`jacnet.optim.LevenbergMarquardt`: ``"dense"`` forms
        JᵀHJ (or the dual JJᵀ) and solves each damped system exactly by Cholesky
        (``trainlm``'s step); ``"cg"`` solves it matrix-free by truncated preconditioned
        conjugate gradients (no n_params × n_params array), each damped system to a
        relative residual of 0.03: close to the exact step, so that ``"auto"`` changes
        the cost, not the fit (the optimizer's own default, a forcing term that loosens
        while the gradient falls slowly, reaches a training loss sooner but lands in
        other minima: on digits, median test accuracy 96.4% against 97.8% at 0.03
        (97.5–98.1% over five seeds) and 98.3% dense, docs/benchmarks.md; at 0.1, with
        class weights of 1000 : 10⁻⁴, the first step already left the basin the exact
        step finds); ``"auto"`` takes ``"cg"`` where the dense
        system would not fit in half the machine's memory or would cost more
        multiply-adds than the worst-case CG solve, else ``"dense"``. Other solvers
        ignore it.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    loss_ : float
    best_loss_ : float or None
    loss_curve_ : list of float
        Loss per iteration (stochastic solvers and ``"lm"``).
    validation_scores_, best_validation_score_ : with ``early_stopping``.
    mu_curve_ : list of float
        The damping μ after each iteration (``"lm"``).
    stop_reason_ : str or None
        Why ``"lm"`` stopped, as for :class:`MLPRegressor`.
    t_ : int
        Training samples seen (stochastic solvers).
    coefs_ : list of ndarray, ``coefs_[i]`` of shape (n_in, n_out)
        Views of the network's weights (transposed; jacnet stores (n_out, n_in)).
    intercepts_ : list of ndarray, shape (n_out,)
    n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
    model_ : jacnet.Sequential
        The network (its output layer is linear: logits).
    laplace_ : jacnet.laplace.Laplace
        The Laplace approximation (``laplace`` set), e.g. for ``laplace_.predict_proba(X,
        method="mc")``.
    alpha_, effective_n_params_, log_marginal_likelihood_ : float
        With ``laplace`` set: the evidence's prior precision α of the weights, the
        effective number of parameters γ and the log marginal likelihood at them.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 10)
    >>> y = np.array([0, 1, 1, 0] * 10)
    >>> clf = MLPClassifier((8,), activation="tanh", solver="lbfgs", random_state=1).fit(X, y)
    >>> clf.predict([[0.0, 1.0], [1.0, 1.0]])
    array([1, 0])
    """

    _parameter_constraints: dict = {  # noqa: RUF012
        **_BaseMLP._parameter_constraints,
        # Levenberg-Marquardt on the log-loss; no "br" (see the solver parameter).
        "solver": [StrOptions({"lbfgs", "sgd", "adam", "lm"})],
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: Any = 10,
        max_fun: int = 15000,
        dtype: Any = None,
        laplace: Any = None,
        class_weight: Any = None,
        lm_solver: str = "auto",
    ) -> None:
        self.class_weight = class_weight
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.laplace = laplace
        self.lm_solver = lm_solver

    def _loss_name(self) -> str:
        return "log_loss"

    def _output_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _with_class_weight(self, y: np.ndarray, sample_weight: np.ndarray | None,
                           dtype: np.dtype) -> np.ndarray | None:
        if self.class_weight is None:
            return sample_weight
        # the labels as given, which class_weight's keys name
        labels = self._label_binarizer.inverse_transform(y)
        if isinstance(self.class_weight, dict) and labels.ndim == 1:
            unknown = [key for key in self.class_weight if key not in set(self.classes_)]
            if unknown:
                raise ValueError(
                    f"class_weight names classes that are not among the classes: {unknown}; the "
                    f"classes are {self.classes_.tolist()}. Key class_weight by those labels."
                )
            # per class over all of classes_, so a partial_fit batch that lacks a class
            # keeps the others' weights
            per_class = compute_class_weight(self.class_weight, classes=self.classes_, y=labels)
            weights = per_class[np.searchsorted(self.classes_, labels)]
        else:
            weights = compute_sample_weight(self.class_weight, labels)
        weights = weights.astype(dtype, copy=False)
        return weights if sample_weight is None else sample_weight * weights

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool,
                        dtype: Any) -> tuple[Any, Any]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=dtype, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def predict(self, X: Any) -> np.ndarray:
        """Predicted classes, shape (n_samples,) (or (n_samples, n_classes) multi-label)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X: Any, check_input: bool = True) -> np.ndarray:
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        return self._score_with_function(X, y, sample_weight, accuracy_score)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> Any:
        """One epoch over the given data (``"sgd"`` and ``"adam"`` only).

        Parameters
        ----------
        X : array-like or sparse matrix (CSR/CSC) of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
        sample_weight : array-like of shape (n_samples,), optional
        classes : array of shape (n_classes,)
            All classes; required on the first call.

        Returns
        -------
        self
        """
        if self.class_weight == "balanced":
            # As SGDClassifier: one batch's class frequencies are not the data's.
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit. In order to use "
                "'balanced' weights, use compute_class_weight('balanced', classes=classes, "
                "y=y). In place of y you can use a large enough sample of the full training "
                "set target to properly estimate the class frequency distributions. Pass the "
                "resulting weights as the class_weight parameter."
            )
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`, shape (n_samples, n_classes)."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order.

        The network's softmax (logistic) output; with ``laplace`` set, the probabilities
        averaged over the Laplace posterior of the logits (probit approximation,
        :meth:`jacnet.laplace.Laplace.predict_proba`), which are less confident away
        from the training data.
        """
        check_is_fitted(self)
        if self.laplace is not None:
            approx = self._fitted_laplace("predict_proba with laplace set")
            X = validate_data(self, X, dtype=self.model_.dtype, reset=False)
            return approx.predict_proba(X).astype(self.model_.dtype, copy=False)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def _laplace_target(self, y: np.ndarray) -> tuple[str, np.ndarray]:
        if self.out_activation_ == "softmax":
            return "classification", y.argmax(axis=1)
        if self.n_outputs_ > 1:
            raise ValueError(
                f"laplace={self.laplace!r} supports binary and multiclass targets, not "
                f"multi-label ones ({self.n_outputs_} independent outputs here); fit with "
                "laplace=None.")
        return "classification", (y[:, 0] > 0.5).astype(np.int64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # laplace: one softmax or sigmoid over the outputs, no multi-label targets
        tags.classifier_tags.multi_label = self.laplace is None
        tags.target_tags.multi_output = self.laplace is None
        return tags


# --------------------------------------------------------------------------- regressor
class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor, scikit-learn's ``MLPRegressor`` on jacnet.

    Minimises the half squared error (or half Poisson deviance) with an L2 penalty on
    the weights. Parameters and attributes are those of :class:`MLPClassifier`, plus:

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default "squared_error"
        ``"poisson"`` predicts exp of the network's output (``out_activation_ = "exp"``).
    solver : {"lbfgs", "sgd", "adam", "lm", "br"}, default "adam"
        ``"lm"``: Levenberg–Marquardt; ``"br"``: Bayesian regularisation (MATLAB
        ``trainlm`` / ``trainbr``), full batch. ``"lm"`` takes either loss (Poisson in the
        generalised Gauss–Newton form) and ``sample_weight``; ``"br"`` needs
        ``loss="squared_error"`` and no ``sample_weight``. For them ``tol`` is the
        gradient-norm tolerance (``trainlm``'s ``min_grad``, as ``"lbfgs"`` uses it),
        ``max_iter`` the number of epochs and ``n_iter_no_change`` ``max_fail`` (see
        :class:`MLPClassifier`); ``alpha`` is LM's L2 penalty on the weights (not the
        intercepts, as scikit-learn); BR chooses its own regularisation. With the
        defaults, LM fits sin(10x)/(10x) on 1000 points with a (20,) tanh network to a
        training MSE of about 1e-5 (docs/benchmarks.md); lower ``tol`` for more.

    laplace : {"auto", "full", "last_layer"} or None, default None
        As for :class:`MLPClassifier` (squared error only): after training, fit the Laplace
        approximation for ``predict(X, return_std=True)``. For ``"br"`` it uses Bayesian
        regularisation's own α and β (on the network in its [-1, 1] target units),
        otherwise both from the evidence.

    Attributes
    ----------
    loss_curve_, best_loss_ : also for ``"lm"`` and ``"br"``.
    mu_curve_ : list of float
        The damping μ after each iteration (``"lm"``, ``"br"``).
    gamma_curve_ : list of float
        Bayesian regularisation's effective number of parameters γ per iteration (``"br"``).
    effective_n_params_ : float
        The last γ (``"br"``), or the Laplace evidence's γ (``laplace`` set).
    alpha_ : float
        Precision of the Gaussian prior on the parameters: ``"br"``'s 2 α (MATLAB's α
        weighs Σθ² without the half; on the network trained on targets mapped to
        [-1, 1]), or the evidence's (``laplace`` set). Note: scikit-learn's
        ``BayesianRidge`` names the noise precision ``alpha_`` and this one ``lambda_``.
    beta_ : float or ndarray of shape (n_outputs,)
        Precision of the target noise, in the targets' units: 1 / ``beta_`` is the noise
        variance (``"br"``, or ``laplace`` set). ``"br"`` estimates one for all outputs
        (on targets mapped to [-1, 1] by the largest range); the evidence one per output.
    log_marginal_likelihood_ : float
        The Laplace log evidence (``laplace`` set).
    laplace_ : jacnet.laplace.Laplace
        The approximation (``laplace`` set); for ``"br"`` on the network in [-1, 1] units.
    stop_reason_ : str or None
        Why ``"lm"``/``"br"`` stopped: ``"min_grad"`` (gradient norm below ``tol``),
        ``"mu_max"`` (no step lowers the loss), ``"validation"`` (``early_stopping``: no
        better validation score in ``n_iter_no_change`` iterations), or None
        (``max_iter`` reached).

    Examples
    --------
    The Levenberg–Marquardt benchmark, sin(10x)/(10x) with a 1-20-1 tanh network, on 200 points:

    >>> x = np.linspace(-1, 1, 200)[:, None]
    >>> y = np.sinc(10 * x[:, 0] / np.pi)
    >>> reg = MLPRegressor(hidden_layer_sizes=(20,), activation="tanh", solver="lm", tol=1e-6,
    ...                    max_iter=1000, random_state=0).fit(x, y)
    >>> float(np.mean((reg.predict(x) - y) ** 2)) < 1e-5, len(reg.mu_curve_) == reg.n_iter_
    (True, True)

    Error bars, from Bayesian regularisation's noise estimate and the Laplace approximation:

    >>> rng = np.random.default_rng(0)
    >>> y_noisy = y + 0.1 * rng.standard_normal(y.shape)
    >>> reg = MLPRegressor(hidden_layer_sizes=(10,), activation="tanh", solver="br",
    ...                    max_iter=300, random_state=0, laplace="full").fit(x, y_noisy)
    >>> mean, std = reg.predict([[0.0], [2.0]], return_std=True)
    >>> bool(0.09 < 1 / np.sqrt(reg.beta_) < 0.11), bool(std[1] > std[0] > 0.09)
    (True, True)
    """

    _parameter_constraints: dict = {  # noqa: RUF012
        **_BaseMLP._parameter_constraints,
        # Levenberg–Marquardt and Bayesian regularisation need least-squares residuals.
        "solver": [StrOptions({"lbfgs", "sgd", "adam", "lm", "br"})],
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: Any = 10,
        max_fun: int = 15000,
        dtype: Any = None,
        laplace: Any = None,
        lm_solver: str = "auto",
    ) -> None:
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.laplace = laplace
        self.lm_solver = lm_solver

    def _loss_name(self) -> str:
        return str(self.loss)

    def _output_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool,
                        dtype: Any) -> tuple[Any, Any]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=dtype, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Predicted values, and with ``return_std`` their predictive standard deviations.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default False
            Also return σ(x) = √(J(x) A⁻¹ J(x)ᵀ + 1/β) from the Laplace approximation
            (needs ``laplace`` set at fit), in target units: the uncertainty of the
            function and the noise ``1 / beta_`` of the targets around it.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        y_std : ndarray of the same shape
            Only with ``return_std``.
        """
        check_is_fitted(self)
        if not return_std:
            return self._predict(X)
        approx = self._fitted_laplace("predict(X, return_std=True)")
        X = validate_data(self, X, dtype=self.model_.dtype, reset=False)
        mean = self._predict(X, check_input=False)
        std = approx.predictive(X).std * self._laplace_unit
        return mean, std.reshape(mean.shape).astype(mean.dtype, copy=False)

    def _laplace_target(self, y: np.ndarray) -> tuple[str, np.ndarray]:
        if self.loss != "squared_error":
            raise ValueError(
                f"laplace={self.laplace!r} needs loss='squared_error' (a Gaussian likelihood); "
                f"got loss={self.loss!r}. Fit with laplace=None.")
        return "regression", y

    def _predict(self, X: Any, check_input: bool = True) -> np.ndarray:
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        return self._score_with_function(X, y, sample_weight, r2_score)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        """One epoch over the given data (``"sgd"`` and ``"adam"`` only).

        Parameters
        ----------
        X : array-like or sparse matrix (CSR/CSC) of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
