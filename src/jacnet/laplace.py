"""Predictive uncertainty by a Laplace approximation at trained weights θ*.

The posterior over the weights is approximated by the Gaussian N(θ*, A⁻¹) whose precision
is the curvature of the log posterior, with the exact generalised Gauss–Newton matrix
G = Σ_b J_bᵀ H_b J_b (:func:`jacnet.curvature.gauss_newton`) in place of the Hessian:

    A = β G + diag(α),

α the prior precision (one value, or one per parameter block) and β the noise precision
of a Gaussian likelihood (β = 1 and H_b the softmax / sigmoid curvature for
classification). Linearising the network at θ*, the function value at x is Gaussian with
mean f(x; θ*) and covariance J(x) A⁻¹ J(x)ᵀ (the *epistemic* part); for regression the
predictive variance adds the noise 1/β (the *aleatoric* part):

    σ²(x) = J(x) A⁻¹ J(x)ᵀ + 1/β.

α and β, when not given, maximise the log evidence (marginal likelihood) with θ* held
fixed — MacKay's fixed point, which is exactly its stationarity condition, on the
eigenvalues λᵢ of G:

    γ = Σ βλᵢ / (βλᵢ + α),   α = γ / ‖θ*‖²,   β = (N·m − γ) / Σ e²,

    log Z = −β/2 Σe² − α/2 ‖θ*‖² + (N·m/2) log(β/2π) + (P/2) log α − ½ Σ log(βλᵢ + α)

(for classification the first and third terms are the log-likelihood at θ*). With m > 1
outputs each gets its own noise precision β_k (targets of different scales or noise
levels): A = Σ_k β_k G_k + α I, G_k the Gauss–Newton matrix of output k, and the fixed
point becomes γ_k = β_k tr(A⁻¹ G_k), β_k = (N − γ_k) / Σ e_k², α = Σ γ_k / ‖θ*‖², each
update inverting A (the m matrices G_k are held at once). A single β for all outputs
can be given. A network trained with Bayesian regularisation (``br``) already carries
these estimates: pass them with :func:`br_precisions`.

Structures
----------
``"full"``
    All P parameters: G is P × P and its eigendecomposition costs P³ — for small networks.
``"last_layer"``
    The exact Laplace over the last ``Linear`` layer's weight and bias (P_last of them),
    the layers below fixed at θ* and acting as a feature map φ(x): G, A and J(x) are those
    of the last layer on the features, never P × P.
``"auto"`` (default)
    ``"full"`` when P ≤ :data:`FULL_MAX_PARAMS` (2048: A and its eigenvectors then take
    at most 2 × 32 MiB), else ``"last_layer"``.

Everything is computed in float64 on a float64 copy of the network, so later training of
the network passed in does not change a fitted approximation.

Examples
--------
>>> from jacnet import mlp
>>> from jacnet.optim import LevenbergMarquardt
>>> rng = np.random.default_rng(0)
>>> X = np.linspace(-1, 1, 40).reshape(-1, 1)
>>> y = np.sin(3 * X) + 0.1 * rng.standard_normal(X.shape)
>>> model = mlp([1, 8, 1], seed=0, dtype="float64")
>>> _ = LevenbergMarquardt().fit(model, X, y, epochs=50)
>>> la = Laplace(model, "regression").fit(X, y)
>>> pred = la.predictive(np.array([[0.0], [3.0]]))
>>> pred.mean.shape, pred.std.shape
((2, 1), (2, 1))
>>> bool(pred.std[1, 0] > pred.std[0, 0])     # far from the data: less certain
True
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from jacnet._validation import check_array, check_choice
from jacnet.curvature import gauss_newton
from jacnet.layers import Linear, Softmax
from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss, check_labels
from jacnet.network import Sequential, jacobian

__all__ = ["FULL_MAX_PARAMS", "Laplace", "Predictive", "br_precisions"]

#: ``structure="auto"`` uses ``"full"`` up to this many parameters, ``"last_layer"`` above.
FULL_MAX_PARAMS = 2048
#: The largest last layer ``"last_layer"`` accepts (its P_last × P_last float64 matrices).
LAST_LAYER_MAX_PARAMS = 8192
#: Entries of the (rows, m, P) Jacobian formed at once (fit's curvature, predictions).
_TILE = 1 << 22
_F64 = np.dtype(np.float64)
_LIKELIHOODS = ("regression", "classification")
_STRUCTURES = ("auto", "full", "last_layer")


class Predictive(NamedTuple):
    """The Gaussian predictive distribution of a regression network, one row per sample.

    Attributes
    ----------
    mean : ndarray, shape (B, m)
        f(x; θ*), the network's prediction.
    epistemic_var : ndarray, shape (B, m)
        diag(J(x) A⁻¹ J(x)ᵀ): the variance from not knowing the weights.
    aleatoric_var : ndarray, shape (B, m)
        1/β (1/β_k for output k): the noise of the targets around the function.
    """

    mean: np.ndarray
    epistemic_var: np.ndarray
    aleatoric_var: np.ndarray

    @property
    def var(self) -> np.ndarray:
        """The predictive variance σ²(x) = epistemic + aleatoric, shape (B, m)."""
        return self.epistemic_var + self.aleatoric_var

    @property
    def std(self) -> np.ndarray:
        """The predictive standard deviation σ(x), shape (B, m)."""
        return np.sqrt(self.var)


def br_precisions(optimizer: Any) -> tuple[float, float]:
    """The prior and noise precisions (α, β) of this module from a trained ``br`` optimizer.

    :class:`~jacnet.optim.BayesianRegularization` minimises β_br Σe² + α_br Σθ² (MATLAB's
    ``trainbr`` convention, without the halves), so the Gaussian prior and likelihood it
    estimates have precisions 2 α_br and 2 β_br.

    Parameters
    ----------
    optimizer : BayesianRegularization
        After at least one epoch.

    Returns
    -------
    prior_precision, noise_precision : float

    Raises
    ------
    TypeError
        ``optimizer`` is not a BayesianRegularization.
    ValueError
        It has not trained yet (its α and β are NaN).

    Examples
    --------
    >>> from jacnet import mlp
    >>> from jacnet.optim import BayesianRegularization
    >>> X = np.linspace(-1, 1, 30).reshape(-1, 1)
    >>> model = mlp([1, 5, 1], seed=0, dtype="float64")
    >>> br = BayesianRegularization()
    >>> _ = br.fit(model, X, np.sin(3 * X), epochs=20)
    >>> alpha, beta = br_precisions(br)
    >>> bool(alpha == 2 * br.alpha and beta == 2 * br.beta)
    True
    """
    from jacnet.optim.second_order import BayesianRegularization

    if not isinstance(optimizer, BayesianRegularization):
        raise TypeError("br_precisions: optimizer must be a jacnet BayesianRegularization; got "
                        f"{type(optimizer).__name__}.")
    if not (math.isfinite(optimizer.alpha) and math.isfinite(optimizer.beta)):
        raise ValueError("br_precisions: the optimizer has not trained yet (alpha and beta are "
                         "NaN); call its fit first.")
    return 2.0 * float(optimizer.alpha), 2.0 * float(optimizer.beta)


def _likelihood_of(likelihood: Any) -> str:
    if isinstance(likelihood, Loss):
        if isinstance(likelihood, MSELoss):
            return "regression"
        if isinstance(likelihood, (CrossEntropyLoss, BCEWithLogitsLoss)):
            return "classification"
        raise ValueError(
            f"Laplace: the loss {type(likelihood).__name__} has no likelihood with a known "
            "curvature here; pass likelihood='regression' (Gaussian, MSE) or "
            "'classification' (softmax / sigmoid cross-entropy from logits).")
    if isinstance(likelihood, str) and likelihood in ("mse",):
        return "regression"
    if isinstance(likelihood, str) and likelihood in ("cross_entropy", "ce", "bce",
                                                      "bce_with_logits"):
        return "classification"
    return check_choice(likelihood, "likelihood", _LIKELIHOODS)


def _check_precision(value: Any, name: str, n_blocks: int | None) -> float | np.ndarray | None:
    if value is None:
        return None
    if n_blocks is not None and np.ndim(value) == 1:
        arr = check_array(value, name, ndim=1, dtype=_F64, owner="Laplace")
        if arr.size != n_blocks or np.any(arr <= 0):
            raise ValueError(
                f"Laplace: {name} must be a positive float or one positive value per "
                f"parameter block ({n_blocks} here, weight then bias for each Linear); got "
                f"{arr.size} values, min {arr.min() if arr.size else 'n/a'}.")
        return arr
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"Laplace: {name} must be a positive finite float or None (estimate it "
                         f"from the evidence); got {value!r}.")
    return float(value)


class Laplace:
    """A Laplace approximation of a trained network's posterior, for predictive uncertainty.

    Parameters
    ----------
    model : Sequential
        The trained network (copied in float64; it is not modified).
    likelihood : {"regression", "classification"} or Loss, default "regression"
        Gaussian noise on the outputs (the MSE loss), or a categorical likelihood of
        logits: softmax over m ≥ 2 outputs, sigmoid for one output (cross-entropy / BCE).
        A Loss instance picks the matching one.
    structure : {"auto", "full", "last_layer"}, default "auto"
        Which parameters get a posterior (see the module docstring for the rule).
    prior_precision : float or array-like of shape (n_blocks,), optional
        α, fixed; one value per parameter block (weight, bias, … of the structure's
        parameters, in θ order) gives each its own prior. None: the evidence maximiser
        (a single α).
    noise_precision : float or array-like of shape (m,), optional
        β for regression, fixed (1/σ² of the target noise), one for all outputs or one per
        output; None: from the evidence, one per output.
    max_iter : int, default 200
        Fixed-point iterations for the evidence at most.
    tol : float, default 1e-10
        Stop when α and β change by less than this, relatively.

    Attributes (after :meth:`fit`)
    ------------------------------
    structure_ : str
        The structure used.
    alpha_ : float or ndarray
        Prior precision.
    beta_ : float or ndarray of shape (m,)
        Noise precision (1 for classification); per output when estimated for m > 1
        outputs or given per output.
    effective_n_params_ : float
        γ = Σ βλᵢ / (βλᵢ + α): how many parameters the data determine (scalar α only;
        for per-block α, P − tr(A⁻¹ diag(α))).
    log_marginal_likelihood_ : float
        log Z at ``alpha_``, ``beta_``.
    n_params_ : int
        Parameters in the posterior (P or P_last).

    Examples
    --------
    See the module docstring.
    """

    def __init__(self, model: Sequential, likelihood: Any = "regression", *,
                 structure: str = "auto", prior_precision: Any = None,
                 noise_precision: Any = None, max_iter: int = 200, tol: float = 1e-10) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"Laplace: model must be a jacnet Sequential; got "
                            f"{type(model).__name__}.")
        self.model = model.astype(_F64).eval()
        self.likelihood = _likelihood_of(likelihood)
        self.structure = check_choice(structure, "structure", _STRUCTURES)
        self.prior_precision = prior_precision
        if noise_precision is not None and np.ndim(noise_precision) == 1:
            noise = check_array(noise_precision, "noise_precision", ndim=1, dtype=_F64,
                                owner="Laplace")
            if noise.size == 0 or np.any(noise <= 0) or not np.all(np.isfinite(noise)):
                raise ValueError(f"Laplace: noise_precision must be positive and finite, one "
                                 f"value or one per output; got {noise}.")
            self.noise_precision: float | np.ndarray | None = noise
        else:
            self.noise_precision = _check_precision(noise_precision, "noise_precision", None)
        if self.likelihood == "classification" and self.noise_precision is not None:
            raise ValueError("Laplace: noise_precision applies to regression only; a "
                             "classification likelihood has no noise parameter.")
        if self.likelihood == "classification" and any(
                isinstance(layer, Softmax) for layer in self.model.layers):
            raise ValueError("Laplace: for classification the network must output logits; "
                             "remove its final Softmax layer (the likelihood applies it).")
        if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) \
                or max_iter < 1:
            raise ValueError(f"Laplace: max_iter must be a positive int; got {max_iter!r}.")
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self._fitted = False

    # --- which parameters --------------------------------------------------------------
    def _resolve_structure(self) -> str:
        if self.structure != "auto":
            return self.structure
        return "full" if self.model.n_params <= FULL_MAX_PARAMS else "last_layer"

    def _split(self, structure: str) -> tuple[list[Any], Sequential]:
        """The layers below the posterior's parameters (a fixed feature map) and a network
        of the posterior's layers."""
        if structure == "full":
            return [], self.model
        last = max(i for i, layer in enumerate(self.model.layers) if isinstance(layer, Linear))
        head_slice = self.model.layer_slices[last]
        config = self.model.get_config()[last:]
        head = Sequential.from_config(config, dtype=_F64,
                                      params=self.model.params[head_slice.start:]).eval()
        if head.n_params > LAST_LAYER_MAX_PARAMS:
            raise ValueError(
                f"Laplace: the last Linear layer has {head.n_params} parameters, more than "
                f"{LAST_LAYER_MAX_PARAMS} for structure='last_layer' (its matrices are "
                f"P_last × P_last); use a narrower last hidden layer or fewer outputs.")
        return self.model.layers[:last], head

    def _features(self, X: np.ndarray) -> np.ndarray:
        for layer in self.body_:
            X = layer.forward(X)
        return X

    def _check_X(self, X: Any) -> np.ndarray:
        return self.model.check_input(X).astype(_F64, copy=False)

    def _check_y(self, y: Any, n_samples: int) -> np.ndarray:
        m = self.model.out_features
        if self.likelihood == "classification":
            arr = np.asarray(y)
            if arr.ndim != 1 or arr.shape[0] != n_samples:
                raise ValueError(f"Laplace.fit: y must be {n_samples} class labels, shape "
                                 f"({n_samples},); got shape {arr.shape}.")
            return check_labels(arr, max(m, 2), "y")
        arr = check_array(y, "y", ndim=(1, 2), dtype=_F64, owner="Laplace.fit")
        if arr.ndim == 1 and m == 1:
            arr = arr.reshape(-1, 1)
        if arr.shape != (n_samples, m):
            raise ValueError(f"Laplace.fit: y must have shape (n_samples, n_outputs) = "
                             f"({n_samples}, {m}); got {arr.shape}.")
        return arr

    @staticmethod
    def _curvature_sqrt(z: np.ndarray) -> np.ndarray:
        """C_b with C_bᵀC_b the Hessian of the categorical NLL w.r.t. the logits."""
        if z.shape[1] == 1:
            # σ(1 − σ) = (1 − tanh²(z/2)) / 4, without exp(−z) overflowing for z ≪ 0
            return 0.5 * np.sqrt(1.0 - np.tanh(0.5 * z[:, 0]) ** 2)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        root = np.sqrt(p)
        # S = diag(√p) − √p pᵀ: SᵀS = diag(p) − ppᵀ since Σp = 1.
        sqrt_h = -root[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        sqrt_h[:, idx, idx] += root
        return sqrt_h

    @staticmethod
    def _log_likelihood_classes(z: np.ndarray, labels: np.ndarray) -> float:
        if z.shape[1] == 1:
            signed = np.where(labels == 1, z[:, 0], -z[:, 0])
            return -float(np.logaddexp(0.0, -signed).sum())
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(log_p[np.arange(z.shape[0]), labels].sum())

    # --- fit -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, *, allreduce: Any = None) -> Laplace:
        """Build the posterior precision on the training data and fix α and β.

        Parameters
        ----------
        X : array-like, shape (N, in_features)
            The training inputs.
        y : array-like, shape (N, m) or (N,)
            Regression targets, or class labels (ints in [0, m), or {0, 1} for one logit).
        allreduce : callable, optional
            A data-parallel run's in-place sum over processes (``comm.allreduce``, see
            :mod:`jacnet.distributed`): X and y are then this process's rows, and the
            Gauss–Newton matrices, the row count, the squared errors and the
            log-likelihood are summed over every process before α and β are fixed, so
            that every process builds the approximation of all the rows.

        Returns
        -------
        self
        """
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        structure = self._resolve_structure()
        self.body_, self.head_ = self._split(structure)
        phi = self._features(X)
        z = self.head_.forward(phi)
        m = z.shape[1]
        theta = self.head_.params
        n_blocks = len(self.head_.layer_block_slices())
        alpha = _check_precision(self.prior_precision, "prior_precision", n_blocks)
        beta: Any = 1.0 if self.likelihood == "classification" else self.noise_precision
        # Several outputs get a noise precision each (estimated, or given as an array).
        per_output = self.likelihood == "regression" and m > 1 and (beta is None
                                                                     or np.ndim(beta) == 1)
        if self.likelihood == "regression" and np.ndim(beta) == 1 and np.size(beta) != m:
            raise ValueError(f"Laplace.fit: noise_precision has {np.size(beta)} values but the "
                             f"network has {m} outputs; give one value or {m}.")
        if self.likelihood == "regression":
            sse_k = np.sum((z - y) ** 2, axis=0)
            fit_term = None
        else:
            sse_k = np.zeros(m)
            fit_term = self._log_likelihood_classes(z, y)
        n_rows = z.shape[0]
        if allreduce is not None:
            sums = allreduce(np.array([n_rows, *sse_k, fit_term or 0.0], dtype=_F64))
            n_rows, sse_k = round(float(sums[0])), sums[1:1 + m]
            fit_term = None if fit_term is None else float(sums[-1])
        total: Any = (lambda gram: allreduce(np.ascontiguousarray(gram, dtype=_F64))) \
            if allreduce is not None else (lambda gram: gram)
        if per_output:
            eye = np.eye(m)
            grams = [total(self._gram(phi, np.broadcast_to(eye[k], (phi.shape[0], 1, m))))
                     for k in range(m)]
            if alpha is None or beta is None:
                alpha, beta = self._evidence_per_output(grams, theta, sse_k, n_rows,
                                                        alpha, beta)
            matrix = sum((float(b) * g for b, g in zip(beta, grams)), np.zeros_like(grams[0]))
            del grams
        else:
            gram = total(self._gram(phi, self._curvature_sqrt(z)
                                    if self.likelihood == "classification" else None))
            if alpha is None or beta is None:
                alpha, beta = self._evidence_fixed_point(gram, theta, float(sse_k.sum()),
                                                         n_rows * m if fit_term is None else 0,
                                                         alpha, beta)
            matrix = gram  # in place: one P_s × P_s array fewer
            matrix *= float(np.asarray(beta).reshape(-1)[0])
        precision_diag = self._per_param(alpha)
        matrix[np.diag_indices_from(matrix)] += precision_diag
        eigval, eigvec = np.linalg.eigh(matrix)
        if eigval[0] <= 0:
            raise ValueError("Laplace.fit: the posterior precision is not positive definite; "
                             "give a larger prior_precision.")
        self.structure_ = structure
        self.alpha_ = alpha
        self.beta_ = np.array(beta, dtype=_F64) if per_output else float(
            np.asarray(beta).reshape(-1)[0])
        self.n_params_ = int(theta.size)
        self.n_train_ = int(n_rows)
        self._eigval, self._eigvec = eigval, eigvec
        self.effective_n_params_ = float(
            theta.size - np.einsum("pi,pi,i,p->", eigvec, eigvec, 1.0 / eigval, precision_diag))
        if fit_term is None:
            beta_k = np.broadcast_to(self.beta_, (m,))
            fit_term = float(np.sum(-0.5 * beta_k * sse_k
                                    + 0.5 * n_rows * np.log(beta_k / (2.0 * math.pi))))
        self.log_marginal_likelihood_ = float(
            fit_term - 0.5 * float(np.dot(precision_diag * theta, theta))
            + 0.5 * float(np.log(precision_diag).sum()) - 0.5 * float(np.log(eigval).sum()))
        self._fitted = True
        return self

    def _gram(self, phi: np.ndarray, curvature_sqrt: Any) -> np.ndarray:
        """Σ_b J_bᵀ C_bᵀ C_b J_b of the posterior's parameters, in Jacobian tiles."""
        m = self.head_.out_features
        rows = max(1, _TILE // max(1, m * self.head_.n_params))
        gram, _ = gauss_newton(self.head_, phi, curvature_sqrt=curvature_sqrt, dtype=_F64,
                               chunk_size=rows)
        return gram

    def _evidence_per_output(self, grams: list[np.ndarray], theta: np.ndarray,
                             sse: np.ndarray, n_samples: int, alpha: Any,
                             beta: Any) -> tuple[float, np.ndarray]:
        """The evidence's stationary point with one noise precision β_k per output.

        With A = Σ_k β_k G_k + α I (G_k the Gauss–Newton matrix of output k) and
        γ_k = β_k tr(A⁻¹ G_k): β_k = (N − γ_k) / Σ e_k², α = Σ γ_k / ‖θ‖² — the zeros of
        ∂ log Z / ∂β_k and ∂ log Z / ∂α. Each update inverts A (P_s³).
        """
        if alpha is not None and np.ndim(alpha) != 0:
            raise ValueError("Laplace.fit: with one prior precision per block, give "
                             "noise_precision too (the evidence is maximised for a single α).")
        weight_sq = float(np.dot(theta, theta))
        if alpha is None and weight_sq == 0.0:
            raise ValueError("Laplace.fit: the weights are all zero, so the evidence has no "
                             "maximum in α; give prior_precision.")
        if beta is None and np.any(sse == 0.0):
            raise ValueError(f"Laplace.fit: the network fits output "
                             f"{int(np.argmin(sse))} exactly, so its noise precision is "
                             "infinite; give noise_precision.")
        fix_alpha, fix_beta = alpha is not None, beta is not None
        a = float(alpha) if fix_alpha else 1.0
        b = np.asarray(beta, dtype=_F64) if fix_beta else n_samples / sse
        for _ in range(self.max_iter):
            matrix = sum((float(bk) * g for bk, g in zip(b, grams)), np.zeros_like(grams[0]))
            matrix[np.diag_indices_from(matrix)] += a
            inverse = np.linalg.inv(matrix)
            gamma_k = b * np.array([np.vdot(inverse, g) for g in grams])  # β_k tr(A⁻¹ G_k)
            new_a = a if fix_alpha else max(float(gamma_k.sum()), 1e-12) / weight_sq
            new_b = b if fix_beta else np.maximum(n_samples - gamma_k, 1e-12) / sse
            done = abs(new_a - a) <= self.tol * a and bool(np.all(np.abs(new_b - b)
                                                                 <= self.tol * b))
            a, b = new_a, new_b
            if done:
                break
        return a, b

    def _per_param(self, alpha: float | np.ndarray) -> np.ndarray:
        if np.ndim(alpha) == 0:
            return np.full(self.head_.n_params, float(alpha))
        out = np.empty(self.head_.n_params)
        for value, cols in zip(np.asarray(alpha), self.head_.layer_block_slices()):
            out[cols] = value
        return out

    def _evidence_fixed_point(self, gram: np.ndarray, theta: np.ndarray, sse: float,
                              n_obs: int, alpha: Any, beta: Any) -> tuple[float, float]:
        """MacKay's updates until α (and β) stop changing: the stationary point of log Z."""
        if alpha is not None and np.ndim(alpha) != 0:
            raise ValueError("Laplace.fit: with one prior precision per block, give "
                             "noise_precision too (the evidence is maximised for a single α).")
        weight_sq = float(np.dot(theta, theta))
        if weight_sq == 0.0:
            raise ValueError("Laplace.fit: the weights are all zero, so the evidence has no "
                             "maximum in α; give prior_precision.")
        if beta is None and sse == 0.0:
            raise ValueError("Laplace.fit: the network fits the targets exactly, so the noise "
                             "precision is infinite; give noise_precision.")
        lam = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
        fix_alpha, fix_beta = alpha is not None, beta is not None
        a = float(alpha) if fix_alpha else 1.0
        b = float(beta) if fix_beta else max(n_obs, 1) / sse
        for _ in range(self.max_iter):
            gamma = float(np.sum(b * lam / (b * lam + a)))
            new_a = a if fix_alpha else max(gamma, 1e-12) / weight_sq
            new_b = b if fix_beta else max(n_obs - gamma, 1e-12) / sse
            done = abs(new_a - a) <= self.tol * a and abs(new_b - b) <= self.tol * b
            a, b = new_a, new_b
            if done:
                break
        return a, b

    # --- saving ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The fitted approximation as JSON values and arrays (no network), for saving.

        With :meth:`load_state_dict` on a Laplace of the same network it predicts as
        this one; :func:`jacnet.io.save_model` can store it in a model's metadata.

        Returns
        -------
        dict
            ``structure``, ``likelihood``, ``alpha`` (float or array), ``beta``,
            ``effective_n_params``, ``log_marginal_likelihood``, ``n_train``, and the
            posterior precision's eigenvalues ``eigval`` (P_s,) and eigenvectors
            ``eigvec`` (P_s, P_s), P_s the structure's parameter count.

        Raises
        ------
        RuntimeError
            Not fitted.

        Examples
        --------
        >>> from jacnet import mlp
        >>> model = mlp([1, 3, 1], seed=0, dtype="float64")
        >>> X = np.linspace(-1, 1, 10).reshape(-1, 1)
        >>> la = Laplace(model, prior_precision=1.0, noise_precision=10.0).fit(X, X)
        >>> again = Laplace(model).load_state_dict(la.state_dict())
        >>> bool(np.array_equal(again.predictive(X).std, la.predictive(X).std))
        True
        """
        self._check_fitted("state_dict")
        alpha = self.alpha_
        return {"structure": self.structure_, "likelihood": self.likelihood,
                "alpha": alpha.copy() if isinstance(alpha, np.ndarray) else float(alpha),
                "beta": self.beta_.copy() if isinstance(self.beta_, np.ndarray)
                else self.beta_, "effective_n_params": self.effective_n_params_,
                "log_marginal_likelihood": self.log_marginal_likelihood_,
                "n_train": self.n_train_, "eigval": self._eigval.copy(),
                "eigvec": self._eigvec.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> Laplace:
        """Restore a fitted approximation saved by :meth:`state_dict` (on the same network).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            The state is incomplete, of another likelihood, or its matrices do not match
            this network's structure.
        """
        keys = ("structure", "likelihood", "alpha", "beta", "effective_n_params",
                "log_marginal_likelihood", "n_train", "eigval", "eigvec")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"Laplace.load_state_dict: the state lacks {missing}; pass the "
                             "dict that state_dict() returned.")
        if state["likelihood"] != self.likelihood:
            raise ValueError(f"Laplace.load_state_dict: the state is for likelihood "
                             f"{state['likelihood']!r} but this Laplace has {self.likelihood!r}.")
        structure = check_choice(state["structure"], "structure", ("full", "last_layer"))
        body, head = self._split(structure)
        eigval = np.asarray(state["eigval"], dtype=_F64)
        eigvec = np.asarray(state["eigvec"], dtype=_F64)
        p = head.n_params
        if eigval.shape != (p,) or eigvec.shape != (p, p) or not np.all(eigval > 0):
            raise ValueError(
                f"Laplace.load_state_dict: structure {structure!r} of this network has {p} "
                f"parameters, so eigval must be ({p},) positive and eigvec ({p}, {p}); got "
                f"{eigval.shape} and {eigvec.shape}. Was the state saved for another network?")
        self.body_, self.head_ = body, head
        self.structure_ = structure
        alpha = state["alpha"]
        self.alpha_ = np.asarray(alpha, dtype=_F64) if np.ndim(alpha) else float(alpha)
        beta = state["beta"]
        self.beta_ = np.asarray(beta, dtype=_F64) if np.ndim(beta) else float(beta)
        self.effective_n_params_ = float(state["effective_n_params"])
        self.log_marginal_likelihood_ = float(state["log_marginal_likelihood"])
        self.n_train_ = int(state["n_train"])
        self.n_params_ = p
        self._eigval, self._eigvec = eigval, eigvec
        self._fitted = True
        return self

    def __getstate__(self) -> dict[str, Any]:
        # A network's layers hold views into its flat vectors, which pickle would copy
        # apart; the network travels as its config and parameters and is rebuilt.
        return {"config": self.model.get_config(), "params": self.model.params.copy(),
                "init": {"likelihood": self.likelihood, "structure": self.structure,
                         "prior_precision": self.prior_precision,
                         "noise_precision": self.noise_precision,
                         "max_iter": self.max_iter, "tol": self.tol},
                "fitted": self.state_dict() if self._fitted else None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        model = Sequential.from_config(state["config"], dtype=_F64, params=state["params"])
        self.__init__(model, **state["init"])  # type: ignore[misc]
        if state["fitted"] is not None:
            self.load_state_dict(state["fitted"])

    # --- predict ---------------------------------------------------------------------
    def _check_fitted(self, owner: str) -> None:
        if not self._fitted:
            raise RuntimeError(f"Laplace.{owner}: call fit(X_train, y_train) first.")

    def function_covariance(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """The linearised network's mean and covariance J(x) A⁻¹ J(x)ᵀ over the outputs.

        Parameters
        ----------
        X : array-like, shape (B, in_features)

        Returns
        -------
        mean : ndarray, shape (B, m)
        cov : ndarray, shape (B, m, m)
            The epistemic covariance of each sample's outputs.

        Examples
        --------
        >>> from jacnet import mlp
        >>> model = mlp([2, 4, 3], seed=0, dtype="float64")
        >>> X = np.random.default_rng(0).standard_normal((20, 2))
        >>> la = Laplace(model, prior_precision=1.0, noise_precision=4.0).fit(X, np.zeros((20, 3)))
        >>> mean, cov = la.function_covariance(X[:5])
        >>> mean.shape, cov.shape
        ((5, 3), (5, 3, 3))
        """
        self._check_fitted("function_covariance")
        X = self._check_X(X)
        m, p = self.model.out_features, self.n_params_
        step = max(1, _TILE // max(1, m * p))
        mean = np.empty((X.shape[0], m))
        cov = np.empty((X.shape[0], m, m))
        scale = 1.0 / np.sqrt(self._eigval)
        for start in range(0, X.shape[0], step):
            rows = slice(start, min(start + step, X.shape[0]))
            phi = self._features(X[rows])
            jac = np.asarray(jacobian(self.head_, phi, wrt="params"))  # (b, m, P)
            mean[rows] = self.head_.forward(phi)
            # J A⁻¹ Jᵀ = (J U Λ^-½)(J U Λ^-½)ᵀ with A = U Λ Uᵀ.
            rotated = (jac.reshape(-1, p) @ self._eigvec) * scale
            rotated = rotated.reshape(-1, m, p)
            cov[rows] = np.matmul(rotated, rotated.transpose(0, 2, 1))
        return mean, cov

    def predictive(self, X: Any) -> Predictive:
        """The regression predictive distribution: mean, epistemic and aleatoric variance.

        Parameters
        ----------
        X : array-like, shape (B, in_features)

        Returns
        -------
        Predictive
            ``mean``, ``epistemic_var``, ``aleatoric_var`` of shape (B, m); ``var`` and
            ``std`` their sum and its square root.

        Raises
        ------
        RuntimeError
            Not fitted, or fitted for classification (use :meth:`predict_proba`).
        """
        self._check_fitted("predictive")
        if self.likelihood != "regression":
            raise RuntimeError("Laplace.predictive: this approximation is for classification; "
                               "use predict_proba.")
        mean, cov = self.function_covariance(X)
        epistemic = np.diagonal(cov, axis1=1, axis2=2).copy()
        aleatoric = np.broadcast_to(1.0 / np.asarray(self.beta_), epistemic.shape).copy()
        return Predictive(mean, epistemic, aleatoric)

    def predict_proba(self, X: Any, *, method: str = "probit", n_samples: int = 200,
                      seed: Any = None) -> np.ndarray:
        """Class probabilities averaged over the Laplace posterior of the logits.

        Parameters
        ----------
        X : array-like, shape (B, in_features)
        method : {"probit", "mc"}, default "probit"
            ``"probit"``: softmax(μ_k / √(1 + π/8 · Σ_kk)) (MacKay's approximation; the
            sigmoid of μ / √(1 + πσ²/8) for one logit). ``"mc"``: the mean of the softmax
            over ``n_samples`` logit vectors drawn from N(μ, Σ).
        n_samples : int, default 200
            Monte Carlo draws per input (``"mc"`` only).
        seed : int or Generator, optional
            For ``"mc"``.

        Returns
        -------
        ndarray, shape (B, n_classes)
            Rows sum to one; for one logit the columns are P(0), P(1).
        """
        self._check_fitted("predict_proba")
        if self.likelihood != "classification":
            raise RuntimeError("Laplace.predict_proba: this approximation is for regression; "
                               "use predictive.")
        method = check_choice(method, "method", ("probit", "mc"))
        mean, cov = self.function_covariance(X)
        if method == "probit":
            var = np.diagonal(cov, axis1=1, axis2=2)
            logits = mean / np.sqrt(1.0 + math.pi / 8.0 * var)
        else:
            if isinstance(n_samples, (bool, np.bool_)) or not isinstance(
                    n_samples, (int, np.integer)) or n_samples < 1:
                raise ValueError(f"Laplace.predict_proba: n_samples must be a positive int; "
                                 f"got {n_samples!r}.")
            rng = np.random.default_rng(seed)
            w, v = np.linalg.eigh(cov)
            root = v * np.sqrt(np.clip(w, 0.0, None))[:, None, :]  # root rootᵀ = cov
            noise = rng.standard_normal((n_samples, *mean.shape))
            logits = mean + np.einsum("bij,sbj->sbi", root, noise)
        if mean.shape[1] == 1:
            logits = np.concatenate([np.zeros_like(logits), logits], axis=-1)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        proba = np.exp(shifted)
        proba /= proba.sum(axis=-1, keepdims=True)
        return proba if method == "probit" else proba.mean(axis=0)
