"""Full-batch second-order training: Levenberg–Marquardt, Gauss–Newton, Bayesian regularisation.

For MSE the loss is ½ Σ eᵀe (times 1/N for ``reduction="mean"``) with residuals
e = z − d, and the Jacobian J of all residuals w.r.t. θ gives the Gauss–Newton model
of its curvature, JᵀJ. One epoch computes JᵀJ and Jᵀe once, from the layers' factored
Jacobians (:mod:`jacnet.curvature`, J itself is never formed), and then solves

    (JᵀJ + μI) Δ = Jᵀe,    θ ← θ − Δ,

by Cholesky, raising μ until the step lowers the loss (MATLAB ``trainlm``). With fewer
residuals N·m than parameters P the same step is taken in the dual form
Δ = Jᵀ(JJᵀ + μI)⁻¹e, whose matrix JJᵀ (the empirical NTK) is N·m × N·m.

Any loss with a curvature trains the same way in the generalised Gauss–Newton form: with
g_b = ∂ℓ_b/∂z_b and H_b the Hessian of sample b's loss w.r.t. its prediction, each epoch
solves (Jᵀ H J + μI) Δ = Jᵀ g. Each loss owns its curvature factor
(:meth:`jacnet.losses.Loss.curvature_sqrt`: C_b with C_bᵀC_b = H_b; √h for a diagonal H as
in binary cross-entropy, S = diag(√p) − √p pᵀ for softmax cross-entropy, the identity for
MSE), and JᵀHJ comes from the same factored products with each block's left factor
pre-multiplied by C_b; the optimizers never ask which loss they have, so a user's
subclass with ``value_and_grad`` and ``curvature_sqrt`` trains as the built-in ones do.
Sample weights w_b scale g_b and H_b (√w_b scales C_b). The dual form is chosen by a
property of the factor, not the loss's class: it is used when C_b is the identity (a
least-squares loss; without a weight-decay mask or with one of whole blocks), since the
dual needs a solve with C_b, which is singular for the softmax. Bayesian regularisation
needs such a loss too (its β is the residuals' noise precision).

Explicit state: an epoch's accepted trial step has run the forward pass and computed the
loss the next epoch starts from. :meth:`SecondOrderOptimizer.iterate` returns them as a
:class:`SolverState` and takes them back (``state → state``); ``jacnet.training.fit``
carries the state from epoch to epoch, so an epoch whose first trial is accepted costs
one forward pass for the loss and none for J. :meth:`~SecondOrderOptimizer.epoch` is
``iterate`` without a state: it starts with a forward pass.

Inner solver (``solver=``, for all three optimizers):

- ``"dense"`` (the default): JᵀHJ (P × P) or, in the dual form, ĴĴᵀ (N·m × N·m) is
  formed from the factored Jacobian and each μ trial is a Cholesky solve — the exact
  step, ``trainlm``'s semantics.
- ``"cg"``: matrix-free. (c JᵀHJ + D) Δ = c Jᵀg + a w is solved by conjugate gradients
  with products G·v of a :class:`jacnet.curvature.GaussNewtonOperator` built
  once per epoch from the forward pass the epoch starts with (each product: the tangent
  J v through the kept pass, H_b per sample, one backward pass; no forward pass), never a
  P × P array: memory O(N·m + k·P) beyond the activations, k ≤ 2·``cg_max_iter``
  (the kept directions below). Preconditioner (``preconditioner=``): ``"jacobi"``,
  c diag(JᵀHJ) + D, from the factored Jacobian once per epoch
  (:meth:`~jacnet.curvature.GaussNewtonOperator.diagonal`); or ``"kfac"`` (the
  default), block diagonal with one block per layer, K-FAC's Kronecker-factored G
  (Martens and Grosse, ICML 2015): a Linear layer's weight and bias together have rows
  L_b ⊗ [x_b, 1]ᵀ in J, and its block Σ_b (L̃_bᵀL̃_b) ⊗ (ã_b ã_bᵀ) of G (L̃_b = C_b L_b,
  the left factor with C_b folded in) is approximated by A ⊗ B/t, with
  A = Σ_b L̃_bᵀL̃_b (k × k),
  B = Σ_b t_b ã_b ã_bᵀ ((n+1) × (n+1)) and t = Σ_b t_b, t_b = ‖L̃_b‖² (each row's input
  weighted by its curvature: exact for an output layer, and weights act as repeated
  rows), both formed once per epoch from the factored Jacobian like the diagonal
  (O(N·(r k² + n²)) per layer, r the rows of C_b L_b). Each solve's M = c A⊗B/t + d̄ I (d̄ the mean of D
  over the layer, D itself when it is a scalar, as in LM without a decay mask) is
  inverted exactly through the eigendecompositions of A and B/t (O(k³ + n³) per layer
  and epoch), M⁻¹ = (Q_A⊗Q_B)(c Λ_A⊗Λ_B + d̄)⁻¹(Q_A⊗Q_B)ᵀ, applied to the layer's
  (k, n+1) matrix V as Q_A((Q_AᵀVQ_B) ⊘ (c λ_A λ_Bᵀ + d̄))Q_Bᵀ, O(k n (k + n)) per
  application, well under one product with G. It captures each layer's coupling
  between weights that Jacobi ignores: on an 8-96-96-1 tanh MLP (P = 10,273) fitting
  N = 4000 rows, LM reached a loss of 1.0e-7 after 139 products with G (2.2 s of CPU)
  against 2.1e-6 after 6422 (65 s) with Jacobi, and on Fashion-MNIST (784-128-10,
  cross-entropy, 60,000 rows) three epochs reached a loss of 0.40 against 0.70 in the
  same time (``docs/benchmarks.md``). Stopping rule: the
  relative residual ‖(cG + D)Δ − r‖/‖r‖ ≤ η with η = ``cg_tol`` if given, else the
  forcing term of Eisenstat and Walker (SIAM J. Sci. Comput. 17, 1996, choice 2, with
  their γ = 0.9, α = 2): η₀ = 0.5, η_k = 0.9 (‖∇loss_k‖/‖∇loss_{k−1}‖)², kept at least
  0.9 η²_{k−1} when that is above 0.1, and at most 0.9 — loose while the gradient falls
  slowly (an accurate inner solve is then wasted on a model about to change), tight when
  it falls fast (the quadratic model is good), and independent of the loss's scale; or
  after ``cg_max_iter`` iterations (default 100) of one solve. The previous epoch's
  gradient norm and η are the optimizer's state (``state_dict``, cleared by ``reset``).
  The μ trials of an epoch share G and differ only in the damping, so a solve after the
  first starts from the Galerkin solution over the search directions the epoch's earlier
  solves took, (Vᵀ(cG + D)V) y = Vᵀr, Δ₀ = V y, formed from the kept products G V
  without a new one (a recycled Krylov subspace; up to ``cg_max_iter`` directions and
  their products are kept, 16·P bytes each), and often already meets the tolerance.
  From zero or from that start, CG lowers the quadratic model at every iterate, so a
  truncated step is a shorter one and a descent direction, and the μ loop judges it as it
  judges an exact step. Bayesian regularisation's γ = P − α tr((βG + αI)⁻¹) is estimated
  by stochastic Lanczos quadrature with seed 0 (``trace_probes`` probes of
  ``trace_steps`` Lanczos steps; the same probes every epoch), and tr(G) for its first α
  is the exact sum of diag(G).
- ``"auto"``: per epoch, ``"cg"`` when the dense matrix (8·s² bytes, s = P, or N·m in
  the dual form) would take more than half of this machine's physical memory, or when it
  would cost more multiply-adds — N·m·P² + P³/3 (dual: (N·m)²·P + (N·m)³/3) — than the
  worst-case CG solve, 5·N·P·(``cg_max_iter`` + 1 + m) (about 5·N·P per product with G,
  one per iteration, plus the gradient and the diagonal); else ``"dense"``. Operation
  counts, not timings: nothing in the rule is tuned to a machine.

Every epoch's info (and so ``jacnet.training.fit``'s history) records the solver used,
``matrix_free`` (1.0 for CG, 0.0 for dense), ``cg_iterations``, the products with G
that epoch (all μ trials and, for BR, the trace probes; 0 on the dense path), and
``cg_tolerance``, the η its solves were stopped at (0.0 on the dense path: exact).

Data parallelism: with ``allreduce`` (a callable that sums a float64 array over all
processes in place, e.g. ``lambda a: comm.Allreduce(MPI.IN_PLACE, a)`` with mpi4py) each
process passes its own rows, and every quantity a decision depends on is summed before it
is used: the row count and total sample weight, JᵀHJ's lower triangle with Jᵀg (dense
path, one packed Allreduce), the G·v products, the diagonal and the trace probes
(matrix-free path), and the loss at the start
and at every μ trial. Every process then takes the same decisions and the same step, and
the parameters stay equal without being sent. The dual form (an N·m × N·m kernel that
couples all rows) is not used with ``allreduce``. Without it (the default) nothing is
summed.

Precision: the normal equations square J's condition number, so they are formed and
solved in float64 also for float32 models (the factors come from the float32 forward
pass, the products are accumulated in float64); the model and its parameters stay
float32. μ is on the scale of the unnormalised JᵀJ, as in MATLAB.

Contract with :func:`jacnet.training.fit`: ``full_batch = True`` and
``epoch(model, loss, X, target)`` performs one iteration on the whole training set and
returns ``{"loss", "mu", "grad_norm", ...}``; ``stop_reason`` is set when a stopping rule
fires. ``trainlm``'s validation rule (``max_fail``) is the fit loop's early stopping on
the validation loss (``patience`` defaults to ``max_fail``); the optimizers' own
:meth:`~SecondOrderOptimizer.fit` is a shorthand for that loop.

Examples
--------
>>> from jacnet import mlp
>>> x = np.linspace(-1, 1, 200).reshape(-1, 1)
>>> model = mlp([1, 10, 1], seed=0, dtype="float64")
>>> history = LevenbergMarquardt().fit(model, x, np.sin(3 * x), epochs=60)
>>> history["loss"][-1] < 1e-4
True
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from jacnet._validation import check_array
from jacnet.curvature import (
    DEFAULT_CHUNK_SIZE,
    GaussNewtonOperator,
    _check_curvature_sqrt,
    _gram,
    jtv,
    ntk,
    stochastic_lanczos_trace,
)
from jacnet.losses import Loss, MSELoss
from jacnet.network import Sequential, _forward_caches, _restore_caches
from jacnet.optim.first_order import OPTIMIZERS, _check_mask, _check_number

__all__ = [
    "BayesianRegularization",
    "CollapseWarning",
    "GaussNewton",
    "LevenbergMarquardt",
    "SecondOrderOptimizer",
    "SolverState",
]

_F64 = np.dtype(np.float64)

#: Sums a float64 array over all processes, in place (data parallelism; see the module
#: docstring).
Allreduce = Callable[[np.ndarray], None]


# ----------------------------------------------------------------------------- linear algebra
def _cholesky_solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``matrix @ x = rhs`` for symmetric positive definite ``matrix`` via Cholesky.

    ``matrix`` (float64, a scratch copy) is overwritten. Raises
    ``numpy.linalg.LinAlgError`` when it is not positive definite (the caller then raises
    its damping). With SciPy this is LAPACK's ``potrf`` and ``potrs``; otherwise NumPy
    factors and solves with the factor.
    """
    lapack = _lapack()
    if lapack is None:  # pragma: no cover - SciPy is optional
        factor = np.linalg.cholesky(matrix)
        if not np.all(np.isfinite(factor)):
            raise np.linalg.LinAlgError("non-finite Cholesky factor")
        return np.linalg.solve(factor.T, np.linalg.solve(factor, rhs))
    potrf, potrs = lapack
    # `matrix` is a fresh symmetric copy: factor it in place (its transpose is the
    # Fortran-ordered array LAPACK wants, and the same matrix).
    factor, info = potrf(matrix.T, lower=False, clean=False, overwrite_a=True)
    if info != 0 or not np.all(np.isfinite(factor.diagonal())):
        raise np.linalg.LinAlgError("the damped matrix is not positive definite")
    solution, info = potrs(factor, rhs, lower=False)
    if info != 0 or not np.all(np.isfinite(solution)):
        raise np.linalg.LinAlgError("the Cholesky solve failed")
    return np.asarray(solution)


_LAPACK: list[tuple[Any, Any] | None] = []


def _lapack() -> tuple[Any, Any] | None:
    """SciPy's float64 LAPACK ``potrf``/``potrs``, looked up once (an import statement
    inside the solve cost 0.4 ms per call, more than the 61 × 61 solve itself); None
    without SciPy."""
    if not _LAPACK:
        try:
            from scipy.linalg.lapack import dpotrf, dpotrs
        except ImportError:  # pragma: no cover - SciPy is optional
            _LAPACK.append(None)
        else:
            _LAPACK.append((dpotrf, dpotrs))
    return _LAPACK[0]


def _damped_copy(matrix: np.ndarray, scale: float, value: float | np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray:
    """``scale · matrix + diag(value)``, written into ``out`` when it has the shape (a
    buffer the μ trials reuse: a fresh (P, P) copy per trial cost 10 ms at P = 1377, its
    in-place copy 1 ms). Only the lower triangle need be valid: the upper one may hold
    whatever the reused buffer did (see ``_gram``'s ``lower_only``), and scaling it must
    neither warn nor raise."""
    if out is None or out.shape != matrix.shape or out.dtype != matrix.dtype:
        out = np.empty_like(matrix)
    if scale == 1.0:
        np.copyto(out, matrix)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(matrix, scale, out=out)
    out.flat[:: out.shape[0] + 1] += value
    return out


def _allreduce_lower(allreduce: Allreduce, jtj: np.ndarray, jte: np.ndarray) -> None:
    """Sum JᵀHJ's lower triangle and Jᵀg over all processes in one call: P(P+1)/2 + P
    floats instead of P² + P. The triangle is packed row by row (each row's part is
    contiguous, so packing and unpacking are P slice copies, not a gather); the upper
    triangle is left as it was, unread by the solver."""
    n = jtj.shape[0]
    ends = np.cumsum(np.arange(1, n + 1)).tolist()
    packed = np.empty(ends[-1] + n, dtype=_F64)
    for i, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        packed[start:end] = jtj[i, : i + 1]
    packed[ends[-1]:] = jte
    allreduce(packed)
    for i, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        jtj[i, : i + 1] = packed[start:end]
    jte[...] = packed[ends[-1]:]


def _whole_blocks(model: Sequential, mask: np.ndarray) -> bool:
    """Whether a weight-decay mask covers whole parameter blocks (weights, biases) only."""
    return all(bool(mask[cols].all()) or not mask[cols].any()
               for cols in model.layer_block_slices())


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits_in_memory(n_params: int, owner: str) -> None:
    """Refuse, with the way out, a P × P system larger than half of this machine's memory."""
    needed, available = 8 * n_params * n_params, _physical_memory()
    if available is not None and needed > available // 2:
        raise MemoryError(
            f"{owner}: the network has {n_params} parameters, so JᵀJ (P × P, float64) needs "
            f"{needed / 2**30:.1f} GiB of this machine's {available / 2**30:.1f} GiB. Use "
            "solver='cg' (matrix-free: no P × P array) or 'auto', a smaller network, a "
            "first-order optimizer, or (MSE without a weight-decay mask, "
            "e.g. MLPRegressor(alpha=0)) fewer samples than parameters, where the dual form "
            "solves an N × N system instead."
        )


class _NormalEquations:
    """JᵀHJ and Jᵀg at one θ, and damped solves with them, primal or dual.

    ``grad_rows`` is g (B, m), ``sqrt_h`` C with CᵀC = H (see :func:`gauss_newton`;
    None for H = I). Solves (c JᵀHJ + d I) Δ = c Jᵀg + a w for a fixed vector w (the
    parameters, for weight decay and Bayesian regularisation); ``d`` and ``a`` may be
    vectors in the primal form (a weight-decay mask). The dual form needs H = s_b² I
    (``sqrt_h`` None or shape (B,)) and g = s_b² e: with Ĵ = SJ, ê = Se it uses K = ĴĴᵀ
    and Woodbury: Δ = Ĵᵀ (K + (d/c) I)⁻¹ (ê − (a/d) Ĵ w) + (a/d) w.
    """

    #: The matrix-free system's inner-iteration record; a Cholesky solve takes none.
    iterations = 0
    tolerance = 0.0

    def __init__(self, model: Sequential, X: np.ndarray, grad_rows: np.ndarray,
                 chunk_size: int | None, dual: bool, sqrt_h: np.ndarray | None = None,
                 buffer: np.ndarray | None = None, mask: np.ndarray | None = None,
                 cached_forward: bool = False, allreduce: Allreduce | None = None,
                 factor_buffer: np.ndarray | None = None) -> None:
        self.model, self.X, self.dual = model, X, dual
        #: Where each μ trial writes its damped matrix and Cholesky factors it (reused).
        self.factor_buffer = factor_buffer
        self.mask = mask  # the dual form with a weight-decay mask made of whole blocks
        self.n_params = model.n_params
        self.row_scale = sqrt_h
        if dual:
            assert sqrt_h is None or sqrt_h.ndim == 1
            assert allreduce is None  # JJᵀ couples every process's rows
            if model.dtype != _F64:
                # As the primal form accumulates JᵀJ in float64: a float32 kernel JJᵀ has
                # eigenvalues of ±1e-6 that break Cholesky at small μ.
                model, X = model.astype(_F64), X.astype(_F64)
                self.model, self.X = model, X
            e = grad_rows.astype(_F64)
            if mask is None:
                kernels = [ntk(model, X)]
            else:  # K = K_masked + K_free, kept apart: each gets its own damping
                in_mask = [bool(mask[cols].all()) for cols in model.layer_block_slices()]
                kernels = [ntk(model, X, block_weights=[float(f) for f in in_mask]),
                           ntk(model, X, block_weights=[float(not f) for f in in_mask])]
            if sqrt_h is not None:
                e = e / np.where(sqrt_h > 0, sqrt_h, 1.0)[:, None]  # ê = S e = S⁻¹ g
                s = np.repeat(sqrt_h, model.out_features)
                kernels = [k * s[:, None] * s[None, :] for k in kernels]
            self.e, self.kernels = e.ravel(), [k.astype(_F64, copy=False) for k in kernels]
            self.kernel = self.kernels[0] if mask is None else self.kernels[0] + self.kernels[1]
            self.jte = jtv(model, X, grad_rows.astype(_F64), chunk_size=chunk_size)
        else:
            if sqrt_h is not None:
                sqrt_h = _check_curvature_sqrt(sqrt_h, X.shape[0], model.out_features,
                                               "LevenbergMarquardt", _F64)
            step = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
            # Cholesky, the diagonal and eigvalsh read the lower triangle only.
            jtj, jte = _gram(model, X, grad_rows, sqrt_h, step, _F64, buffer,
                             forward=not cached_forward, lower_only=True)
            assert jte is not None
            if allreduce is not None:  # this process's rows only: sum over all of them
                _allreduce_lower(allreduce, jtj, jte)
            self.jtj, self.jte = jtj, jte
        self._jw: np.ndarray | None = None

    def _row_scaled_jvp(self, direction: np.ndarray) -> np.ndarray:
        """Ĵ v for a parameter direction v, flattened like the residuals."""
        rows = self.model.jvp(self.X, param_tangent=direction)[1].astype(_F64)
        if self.row_scale is not None:
            rows *= self.row_scale[:, None]
        return rows.ravel()

    def _row_scaled_jtv(self, coeff: np.ndarray) -> np.ndarray:
        """Ĵᵀ u for u indexed like the residuals."""
        rows = coeff.reshape(self.X.shape[0], -1)
        if self.row_scale is not None:
            rows = rows * self.row_scale[:, None]
        return jtv(self.model, self.X, rows).astype(_F64)

    def _solve_masked_dual(self, c: float, d: float | np.ndarray, a: float | np.ndarray,
                           w: np.ndarray | None) -> np.ndarray:
        """(c ĴᵀĴ + D) Δ = c Ĵᵀê + a ⊙ w with D = diag(d) constant on the masked and on the
        free parameters, by Woodbury: Δ = D⁻¹ Ĵᵀ (c ê − v) + (a/d) ⊙ w, where
        v = (I/c + Ĵ D⁻¹ Ĵᵀ)⁻¹ Ĵ D⁻¹ (c Ĵᵀê + a ⊙ w) and Ĵ D⁻¹ Ĵᵀ = K_m/d_m + K_f/d_f."""
        assert self.mask is not None
        d_vec = np.broadcast_to(np.asarray(d, dtype=_F64), self.mask.shape)
        a_vec = np.broadcast_to(np.asarray(a, dtype=_F64), self.mask.shape)
        d_masked = float(d_vec[self.mask][0]) if self.mask.any() else 1.0
        d_free = float(d_vec[~self.mask][0]) if (~self.mask).any() else 1.0
        weighted = self.kernels[0] / d_masked + self.kernels[1] / d_free
        projected = c * (weighted @ self.e)
        decay = None if w is None or not a_vec.any() else (a_vec / d_vec) * w
        if decay is not None:
            projected = projected + self._row_scaled_jvp(decay)
        weighted.flat[:: weighted.shape[0] + 1] += 1.0 / c  # a temporary: damped in place
        v = _cholesky_solve(weighted, projected)
        step = self._row_scaled_jtv(c * self.e - v) / d_vec
        return step if decay is None else step + decay

    def diagonal(self) -> np.ndarray:
        """The diagonal of JᵀHJ (of ĴĴᵀ in the dual form)."""
        return np.diag(self.kernel if self.dual else self.jtj)

    def trace(self) -> float:
        """tr(JᵀHJ) (= tr(ĴĴᵀ) in the dual form)."""
        return float(np.trace(self.kernel if self.dual else self.jtj))

    def eigenvalues(self) -> np.ndarray:
        """The eigenvalues of JᵀJ that can be non-zero (those of JJᵀ in the dual form)."""
        return np.linalg.eigvalsh(self.kernel if self.dual else self.jtj)

    def effective_parameters(self, beta: float, alpha: float, seed: int, n_probes: int,
                             n_steps: int) -> float:
        """γ = Σ βλᵢ/(βλᵢ + α) over the eigenvalues λᵢ of JᵀJ, exact (the estimator's
        arguments are those of :class:`_MatrixFree`'s, unused here)."""
        eig = np.clip(self.eigenvalues(), 0.0, None)
        return float(np.sum(beta * eig / (beta * eig + alpha)))

    def _damped(self, matrix: np.ndarray, c: float, d: float | np.ndarray) -> np.ndarray:
        """c · matrix + diag(d) in :attr:`factor_buffer` (allocated by the first trial)."""
        self.factor_buffer = _damped_copy(matrix, c, d, self.factor_buffer)
        return self.factor_buffer

    def solve(self, c: float, d: float | np.ndarray, a: float | np.ndarray = 0.0,
              w: np.ndarray | None = None) -> np.ndarray:
        no_decay = w is None or (np.isscalar(a) and a == 0.0)
        if not self.dual:
            rhs = c * self.jte if no_decay or w is None else c * self.jte + a * w
            return _cholesky_solve(self._damped(self.jtj, c, d), rhs)
        if self.mask is not None:
            return self._solve_masked_dual(c, d, a, w)
        assert isinstance(a, float) and isinstance(d, float)
        coeff_rhs = self.e
        if a != 0.0 and w is not None:
            if self._jw is None:
                jw = self.model.jvp(self.X, param_tangent=w)[1].astype(_F64)
                if self.row_scale is not None:
                    jw *= self.row_scale[:, None]
                self._jw = jw.ravel()
            coeff_rhs = self.e - (a / d) * self._jw
        coeff = _cholesky_solve(self._damped(self.kernel, 1.0, d / c), coeff_rhs)
        coeff_rows = coeff.reshape(self.X.shape[0], -1)
        if self.row_scale is not None:
            coeff_rows = coeff_rows * self.row_scale[:, None]
        step = jtv(self.model, self.X, coeff_rows).astype(_F64)
        if a != 0.0 and w is not None:
            step += (a / d) * w
        return step


# ----------------------------------------------------------------------------- matrix-free
#: The inner solver's choices (see the module docstring).
SOLVERS = ("dense", "cg", "auto")
PRECONDITIONERS = ("jacobi", "kfac")
#: An undamped K-FAC block's damping, as a fraction of its mean diagonal (measured on
#: Gauss–Newton, 3-16-16-1, 200 rows, 60 epochs: loss 1.2e-2 with none, 3.1e-8 with
#: 1e-4, 7.2e-8 with 1e-3, 6.4e-7 with 1e-2; Jacobi 3.4e-5. Not for a damped block:
#: as a floor under LM's μ it took LM at P = 10,273 (docs/benchmarks.md) 346 products
#: to a loss of 1.65e-7 instead of 139).
_KFAC_DAMPING = 1e-4


class _MatrixFree:
    """JᵀHJ as a product and damped solves by truncated preconditioned conjugate gradients.

    The same interface as :class:`_NormalEquations` (``jte``, :meth:`solve`,
    :meth:`diagonal`, :meth:`trace`, :meth:`effective_parameters`), never a P × P array:
    a :class:`jacnet.curvature.GaussNewtonOperator` is built once per epoch from the
    forward pass the epoch starts with (the accepted trial's, handed on in the
    :class:`SolverState`) and the C_b of :meth:`SecondOrderOptimizer._curvature` (on the
    unnormalised scale Σ wᵢ ℓᵢ), so each product G·v is a tangent through the kept pass,
    H_b per sample and one backward pass, with no forward pass; Jᵀg is one backward pass
    through the same pass; the preconditioner's K-FAC factors (or diag(G), Jacobi's) come
    from the factored Jacobian once per epoch. Memory O(N·m + k·P) beyond the forward
    pass's activations (k ≤ 2·``max_iter``: the kept search directions and their
    products), plus K-FAC's two factors per layer (k² + (n+1)² floats). The
    products run in the model's dtype; the CG vectors are float64.
    """

    dual = False

    def __init__(self, model: Sequential, grad_rows: np.ndarray, sqrt_h: np.ndarray | None,
                 allreduce: Allreduce | None, max_iter: int, chunk_size: int | None = None,
                 preconditioner: str = "kfac") -> None:
        self.model, self.allreduce = model, allreduce
        self.preconditioner = preconditioner
        #: Per layer: (columns, k, eigenvalues and vectors of A and of B/t) for "kfac".
        self._kfac: list[tuple[list[slice], int, np.ndarray, np.ndarray, np.ndarray,
                               np.ndarray]] | None = None
        self.n_params, self.max_iter = model.n_params, max_iter
        self.operator = GaussNewtonOperator.from_forward_pass(
            model, grad_rows.shape[0], sqrt_h, chunk_size=chunk_size)
        self.jte = self._summed(self.operator.jtv(grad_rows.astype(model.dtype)).astype(_F64))
        self._diagonal: np.ndarray | None = None
        #: The tolerance on the relative residual ‖(cG + D)Δ − r‖/‖r‖ (set per epoch).
        self.tolerance = 0.5
        #: CG iterations (products with G) taken by all solves so far, and the last
        #: solve's relative residual.
        self.iterations = 0
        self.residual = math.nan
        #: Search directions of this epoch's solves (row i of ``_kept[0]``) and their
        #: products with G (``_kept[1]``), the first ``_n_kept`` rows (see :meth:`solve`);
        #: the buffer grows by doubling, to at most ``max_iter`` rows.
        self._kept = np.empty((2, 0, self.n_params), dtype=_F64)
        self._n_kept = 0

    def _summed(self, array: np.ndarray) -> np.ndarray:
        if self.allreduce is not None:
            self.allreduce(array)
        return array

    def product(self, direction: np.ndarray) -> np.ndarray:
        """JᵀHJ v (P,), float64, summed over processes."""
        with np.errstate(over="ignore", invalid="ignore"):
            out = self.operator.matvec(direction.astype(self.model.dtype))
        return self._summed(out.astype(_F64))

    def diagonal(self) -> np.ndarray:
        """diag(JᵀHJ), float64, summed over processes (computed once)."""
        if self._diagonal is None:
            self._diagonal = self._summed(self.operator.diagonal().astype(_F64))
        return self._diagonal

    def trace(self) -> float:
        """tr(JᵀHJ), exact: the sum of the diagonal."""
        return float(self.diagonal().sum())

    def solve(self, c: float, d: float | np.ndarray, a: float | np.ndarray = 0.0,
              w: np.ndarray | None = None) -> np.ndarray:
        """Δ with ‖(c JᵀHJ + D)Δ − (c Jᵀg + a w)‖ ≤ ``tolerance`` ‖c Jᵀg + a w‖, D = diag(d),
        by conjugate gradients preconditioned as ``preconditioner`` says (K-FAC's blocks
        c A⊗B/t + d̄ I, or Jacobi's c diag(JᵀHJ) + D), stopped there or after
        ``max_iter`` iterations (truncated: every iterate lowers the quadratic model, so an
        early stop is a shorter step, not a wrong one).

        CG starts from the Galerkin solution in the span of the search directions of this
        epoch's earlier solves (the same G; a μ trial differs only in D), Δ₀ = V y with
        (Vᵀ(cG + D)V) y = Vᵀr: the minimum of the new quadratic model over that span, got
        from the kept products G V without a new one. The first solve of an epoch starts
        from Δ = 0. Either start has model value ≤ 0 and CG lowers it from there, so the
        step is a descent direction whatever μ is.
        """
        rhs = c * self.jte if w is None else c * self.jte + a * w
        damping = np.broadcast_to(np.asarray(d, dtype=_F64), rhs.shape)
        precondition = self._preconditioner(c, damping)
        rhs_norm = float(np.linalg.norm(rhs))
        self.residual = 0.0
        if rhs_norm == 0.0:
            return np.zeros_like(rhs)
        x, r = self._recycled_start(c, damping, rhs)
        self.residual = float(np.linalg.norm(r)) / rhs_norm
        if self.residual <= self.tolerance:
            return x
        z = precondition(r)
        p = z.copy()
        rz = float(r @ z)
        for _ in range(self.max_iter):
            product = self.product(p)
            q = c * product + damping * p
            self.iterations += 1
            curvature = float(p @ q)
            if not curvature > 0.0:
                break  # no positive curvature along p (G is only semi-definite): stop here
            self._keep(p, product, curvature)
            step = rz / curvature
            x += step * p
            r -= step * q
            self.residual = float(np.linalg.norm(r)) / rhs_norm
            if self.residual <= self.tolerance:
                break
            z = precondition(r)
            rz, rz_old = float(r @ z), rz
            p = z + (rz / rz_old) * p
        else:
            self.residual = float(np.linalg.norm(r)) / rhs_norm
        if not x.any():  # stopped before the first step: the preconditioned gradient
            x = precondition(rhs)
        return x

    def _preconditioner(self, c: float, damping: np.ndarray
                        ) -> Callable[[np.ndarray], np.ndarray]:
        """r ↦ M⁻¹r for M = c diag(G) + D ("jacobi") or, per layer, c A⊗B/t + d̄ I with d̄
        the layer's mean damping ("kfac")."""
        if self.preconditioner == "kfac":
            return self._kfac_inverse(c, damping)
        precond = c * self.diagonal() + damping
        # A zero diagonal entry (a parameter the loss does not see, undamped): leave it
        # unpreconditioned rather than divide by zero.
        precond = np.where(precond > 0, precond, 1.0)
        return lambda r: r / precond

    def kfac_factors(self) -> list[tuple[list[slice], int, np.ndarray, np.ndarray,
                                         np.ndarray, np.ndarray]]:
        """Per layer, K-FAC's G ≈ A ⊗ B/t (see
        :meth:`~jacnet.curvature.GaussNewtonOperator._kronecker_sums`; summed over
        processes) as its columns, k and the eigendecompositions (λ_A, Q_A, λ_B, Q_B) of
        A and B/t; computed once per epoch."""
        if self._kfac is None:
            groups = self.operator._kronecker_sums()
            flat = self._summed(np.concatenate(
                [np.concatenate([g.a.ravel(), g.b.ravel(), [g.weight]]) for g in groups]))
            self._kfac, at = [], 0
            for group in groups:
                k, n = group.a.shape[0], group.b.shape[0]
                a = flat[at:at + k * k].reshape(k, k)
                b = flat[at + k * k:at + k * k + n * n].reshape(n, n)
                weight = flat[at + k * k + n * n]
                at += k * k + n * n + 1
                # t = 0: the layer's rows carry no curvature (A = 0 too); B/t is moot.
                b = b / weight if weight > 0.0 else b
                values_a, vectors_a = np.linalg.eigh(a)
                values_b, vectors_b = np.linalg.eigh(b)
                # Both are Gram matrices: a negative eigenvalue is rounding.
                self._kfac.append((group.cols, k, np.maximum(values_a, 0.0), vectors_a,
                                   np.maximum(values_b, 0.0), vectors_b))
        return self._kfac

    def _kfac_inverse(self, c: float, damping: np.ndarray
                      ) -> Callable[[np.ndarray], np.ndarray]:
        """r ↦ M⁻¹r with M block diagonal, one block c A⊗B/t + d̄ I per layer (d̄ the mean
        of D over the layer's parameters: exact for a scalar D), by the eigendecompositions:
        (Q_A⊗Q_B)(c Λ_A⊗Λ_B + d̄)⁻¹(Q_A⊗Q_B)ᵀ, applied to the layer's (k, n) matrix V as
        Q_A ((Q_Aᵀ V Q_B) / (c λ_A λ_Bᵀ + d̄)) Q_Bᵀ."""
        layers = []
        for cols, k, values_a, vectors_a, values_b, vectors_b in self.kfac_factors():
            mean = float(np.mean(np.concatenate([damping[part] for part in cols])))
            if mean == 0.0:
                # Undamped (Gauss–Newton's D = 0): a small fraction of the block's mean
                # diagonal, c tr(A)tr(B/t)/(kn), else the factors' smallest eigenvalues,
                # which G's need not share, dominate a truncated step.
                mean = _KFAC_DAMPING * c * float(values_a.mean()) * float(values_b.mean())
            scale = c * np.outer(values_a, values_b) + mean
            # A direction G and D do not see (undamped): leave it unpreconditioned, as the
            # Jacobi preconditioner leaves a zero diagonal entry.
            scale = np.where(scale > 1e-12 * max(float(scale.max()), 0.0), scale, 1.0)
            layers.append((cols, k, vectors_a, vectors_b, scale))

        def apply(r: np.ndarray) -> np.ndarray:
            z = np.empty_like(r)
            for cols, k, vectors_a, vectors_b, scale in layers:
                v = np.concatenate([r[part].reshape(k, -1) for part in cols], axis=1)
                v = vectors_a @ ((vectors_a.T @ v @ vectors_b) / scale) @ vectors_b.T
                at = 0
                for part in cols:
                    width = (part.stop - part.start) // k
                    z[part] = v[:, at:at + width].ravel()
                    at += width
            return z  # every parameter is in one group: a BlockRow covers θ
        return apply

    def _keep(self, direction: np.ndarray, product: np.ndarray, curvature: float) -> None:
        """Keep a search direction and its product with G (both scaled to unit A-norm, so
        the projected matrix is near the identity) for the next solves' start, while the
        kept pairs number fewer than ``max_iter``."""
        k = self._n_kept
        if k >= self.max_iter:
            return
        if k == self._kept.shape[1]:
            grown = np.empty((2, min(self.max_iter, max(8, 2 * k)), self.n_params), dtype=_F64)
            grown[:, :k] = self._kept[:, :k]
            self._kept = grown
        unit = 1.0 / math.sqrt(curvature)
        np.multiply(direction, unit, out=self._kept[0, k])
        np.multiply(product, unit, out=self._kept[1, k])
        self._n_kept = k + 1

    def _recycled_start(self, c: float, damping: np.ndarray, rhs: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(Δ₀, r₀ = rhs − (cG + D)Δ₀): zero, or the Galerkin solution over the kept
        directions V. Vᵀ(cG + D)V is formed from the kept G V (k² dot products, no product
        with G); directions it cannot tell apart (its eigenvalues below 1e-10 of the
        largest, as from two solves' nearly parallel directions) are left out."""
        if not self._n_kept:
            return np.zeros_like(rhs), rhs.copy()
        V, GV = self._kept[0, :self._n_kept], self._kept[1, :self._n_kept]
        projected = c * (V @ GV.T) + (V * damping) @ V.T
        projected = 0.5 * (projected + projected.T)
        values, vectors = np.linalg.eigh(projected)
        kept = values > 1e-10 * values[-1]
        if not values[-1] > 0.0 or not kept.any():
            return np.zeros_like(rhs), rhs.copy()
        values, vectors = values[kept], vectors[:, kept]
        coefficients = vectors @ ((vectors.T @ (V @ rhs)) / values)
        start = coefficients @ V
        return start, rhs - c * (coefficients @ GV) - damping * start

    def effective_parameters(self, beta: float, alpha: float, seed: int, n_probes: int,
                             n_steps: int) -> float:
        """γ = P − α tr((β JᵀJ + αI)⁻¹) = tr(F), F = βG(βG + αI)⁻¹, by stochastic Lanczos
        quadrature (:func:`~jacnet.curvature.stochastic_lanczos_trace`) with a fixed seed:
        the same probes every epoch and in every process. G is the epoch's start's (as
        trainbr's JᵀJ): the model is put back at that θ for the products, then returned to
        the parameters and forward pass it holds now."""
        now, caches = self.model.params.copy(), _forward_caches(self.model)
        self.model.params[...] = self.operator.params
        try:
            estimate = stochastic_lanczos_trace(
                lambda v: beta * self.product(v) + alpha * v, self.n_params,
                function=lambda nodes: 1.0 - alpha / nodes, n_probes=n_probes,
                n_steps=n_steps, seed=seed)
        finally:
            self.model.params[...] = now
            _restore_caches(self.model, caches)
        self.iterations += n_probes * min(n_steps, self.n_params)
        return float(np.clip(estimate.estimate, 0.0, self.n_params))


# ----------------------------------------------------------------------------- solver state
@dataclass(frozen=True)
class SolverState:
    """What one epoch hands the next: the forward pass at the parameters it ended with.

    An epoch whose trial step is accepted has just run the forward pass (and computed the
    loss) that the next epoch starts from: :meth:`SecondOrderOptimizer.iterate` returns it
    and takes it back, so the next epoch needs no pass of its own before it builds the
    Jacobian (the ``state → state`` loop of Optimistix, or ``scipy.optimize.least_squares``'
    loop variables). ``jacnet.training.fit`` carries it from epoch to epoch.

    It belongs to the data it was computed on: pass it back only with the same ``X``,
    target and sample weights (it is not checked against them). It is used only while the
    model's parameters and train/eval mode are those it records (anything that changed
    them, e.g. a callback, makes the next epoch evaluate afresh); the layers' caches are
    put back from it, so passes on other data in between (validation, metrics) do no harm.

    Attributes
    ----------
    params : ndarray, shape (P,)
        θ the pass was run at (a copy).
    training : bool
        The model's mode during the pass.
    prediction : ndarray, shape (N, m)
        The network's output on the training rows.
    value : float
        The training loss there (weighted, without weight decay; the sum over all
        processes with ``allreduce``).
    caches : tuple of dict
        Each layer's arrays from that pass (see ``_forward_caches``).
    """

    params: np.ndarray
    training: bool
    prediction: np.ndarray
    value: float
    caches: tuple[dict[str, np.ndarray | None], ...]

    @classmethod
    def record(cls, model: Sequential, prediction: np.ndarray, value: float) -> SolverState:
        """The state of the forward pass that produced ``prediction``, run just now."""
        return cls(model.params.copy(), model.training, prediction, float(value),
                   _forward_caches(model))

    def describes(self, model: Sequential, n_samples: int) -> bool:
        """Whether ``model`` is still at this state's θ and mode (O(P), no data compared)."""
        return (self.training == model.training and len(self.caches) == len(model.layers)
                and self.prediction.shape == (n_samples, model.out_features)
                and np.array_equal(self.params, model.params))

    def restore(self, model: Sequential) -> None:
        """Put this pass's caches back into the layers (for the Jacobian's factors)."""
        _restore_caches(model, self.caches)


# ----------------------------------------------------------------------------- base class
class SecondOrderOptimizer:
    """Base class of the full-batch optimizers: checks, the epoch contract and ``fit``.

    Attributes
    ----------
    full_batch : bool
        Always True: the fit loop calls :meth:`iterate` (or :meth:`epoch`) once per epoch
        on all the data.
    stop_reason : str or None
        Set by :meth:`epoch` when a stopping rule fires (``"goal"``, ``"min_grad"``,
        ``"mu_max"``, ``"line_search"``).
    """

    full_batch: ClassVar[bool] = True
    name: ClassVar[str] = ""
    # The damping schedule of _damped_search (set by the optimizers that use it).
    mu: float
    mu_dec: float
    mu_inc: float
    mu_max: float
    _config: dict[str, Any]

    def __init__(self, *, goal: float, min_grad: float, max_fail: int,
                 chunk_size: int | None, allreduce: Allreduce | None = None,
                 solver: str = "dense", cg_tol: float | None = None,
                 cg_max_iter: int = 100, preconditioner: str = "kfac") -> None:
        owner = type(self).__name__
        if solver not in SOLVERS:
            raise ValueError(
                f"The 'solver' parameter of {owner} must be one of {', '.join(map(repr, SOLVERS))}"
                f"; got {solver!r} instead. 'dense' factors JᵀJ (P × P), 'cg' is matrix-free, "
                "'auto' picks by size."
            )
        self.solver = solver
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"The 'preconditioner' parameter of {owner} must be one of "
                f"{', '.join(map(repr, PRECONDITIONERS))}; got {preconditioner!r} instead. "
                "'jacobi' divides by diag(G) + D, 'kfac' inverts Kronecker factors per layer."
            )
        self.preconditioner = preconditioner
        self.cg_tol = None if cg_tol is None else _check_number(
            cg_tol, "cg_tol", owner, low=0.0, high=1.0, low_closed=False, high_closed=False)
        self.cg_max_iter = _check_number(cg_max_iter, "cg_max_iter", owner, low=1, integer=True)
        if allreduce is not None and not callable(allreduce):
            raise TypeError(
                f"{owner}: allreduce must be a callable that sums a float64 array over all "
                "processes in place (e.g. lambda a: comm.Allreduce(MPI.IN_PLACE, a)); got "
                f"{type(allreduce).__name__}."
            )
        self.allreduce = allreduce
        self.goal = _check_number(goal, "goal", owner, low=0.0)
        self.min_grad = _check_number(min_grad, "min_grad", owner, low=0.0)
        self.max_fail = _check_number(max_fail, "max_fail", owner, low=0, integer=True)
        if chunk_size is not None:
            chunk_size = _check_number(chunk_size, "chunk_size", owner, low=1, integer=True)
        self.chunk_size = chunk_size
        self.stop_reason: str | None = None
        self.n_epochs = 0
        self._buffer: np.ndarray | None = None
        self._factor: np.ndarray | None = None
        self._totals = (0, 0.0)  # rows and total weight over all processes, this epoch
        #: The forcing term's memory: the previous epoch's ‖∇loss‖ and η (nan: none yet).
        self.forcing_grad_norm = math.nan
        self.forcing_tolerance = math.nan

    #: Whether this optimizer trains with any loss that has a curvature (else only a
    #: least-squares loss, one whose curvature factor is the identity).
    _any_loss: ClassVar[bool] = True
    _sample_weight: np.ndarray | None = None

    # -- checks ----------------------------------------------------------------------
    def _check(self, model: Any, loss: Any, X: Any, target: Any
               ) -> tuple[Sequential, Loss, np.ndarray, np.ndarray]:
        owner = type(self).__name__
        if not isinstance(loss, Loss):
            raise TypeError(
                f"{owner} needs the residuals of a least-squares loss: pass "
                f"jacnet.losses.MSELoss() (or a Loss whose curvature_sqrt is the identity); "
                f"got {type(loss).__name__}."
                if not self._any_loss else
                f"{owner} needs a jacnet.losses.Loss with a curvature (MSELoss, "
                "CrossEntropyLoss, BCEWithLogitsLoss, or a subclass that defines "
                f"value_and_grad and curvature_sqrt); got {type(loss).__name__}."
            )
        if not isinstance(model, Sequential):
            raise TypeError(f"{owner}: model must be a jacnet Sequential; got {type(model).__name__}.")
        X = model.check_input(X)
        if not loss.takes_labels:
            target = check_array(target, "target", ndim=(1, 2), dtype=model.dtype, owner=owner)
            if target.ndim == 1 and model.out_features == 1:
                target = target.reshape(-1, 1)
            if target.shape != (X.shape[0], model.out_features):
                raise ValueError(
                    f"{owner}: target must have shape (n_samples, n_outputs) = ({X.shape[0]}, "
                    f"{model.out_features}) to match X and the network; got {target.shape}."
                )
        target = loss.prepare_target(target, model.out_features, dtype=model.dtype)
        if target.shape[0] != X.shape[0]:
            raise ValueError(f"{owner}: target has {target.shape[0]} rows but X has "
                             f"{X.shape[0]}; pass one target per sample.")
        return model, loss, X, target

    def _check_sample_weight(self, sample_weight: Any, n_samples: int, dtype: Any
                             ) -> np.ndarray | None:
        if sample_weight is None:
            return None
        owner = type(self).__name__
        weights = check_array(sample_weight, "sample_weight", ndim=1, dtype=_F64, owner=owner)
        if weights.shape[0] != n_samples or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(
                f"{owner}: sample_weight must hold one non-negative weight per row of X "
                f"({n_samples}), not all zero; got shape {weights.shape}"
                f"{'' if weights.shape[0] != n_samples else ' with negative or zero total'}."
            )
        return weights

    def _scale(self, loss: Loss) -> float:
        """The loss's factor on Σ wᵢ ℓᵢ: 1/N (1/Σw with weights) for a mean, else 1; N
        and Σw over all processes."""
        if loss.reduction != "mean":
            return 1.0
        n_rows, total_weight = self._totals
        return 1.0 / n_rows if self._sample_weight is None else 1.0 / total_weight

    def _sum(self, value: float) -> float:
        """A scalar summed over all processes (itself without ``allreduce``)."""
        if self.allreduce is None:
            return value
        buffer = np.array([value], dtype=_F64)
        self.allreduce(buffer)
        return float(buffer[0])

    def _evaluate(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray
                  ) -> tuple[np.ndarray, float]:
        """One forward pass: the prediction (B, m) and the (weighted) loss, in float64."""
        # A trial step may overflow the network: its loss is then inf (or nan), rejected
        # by the μ loop, and the epoch's start refuses it with a clear error.
        with np.errstate(over="ignore", invalid="ignore"):
            prediction = model.forward(X)
            z = prediction.astype(_F64, copy=False)
            weights = self._sample_weight
            if weights is None and self.allreduce is None:
                return prediction, float(loss.value_and_grad(z, target)[0])
            if weights is None:  # Σ ℓᵢ of this process's rows
                local = float(loss.value_and_grad(z, target)[0]) / loss._scale(X.shape[0])
            else:
                local = float(np.asarray(loss.per_sample(z, target), dtype=_F64) @ weights)
            value = self._scale(loss) * self._sum(local)
        return prediction, value

    def _start(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
               state: SolverState | None) -> SolverState:
        """The forward pass an epoch starts from: ``state``'s (its caches put back into the
        layers) while it describes the model, else a fresh one. The loss must be finite:
        no step can lower an infinite or undefined loss."""
        if state is not None and state.describes(model, X.shape[0]):
            state.restore(model)
        else:
            state = SolverState.record(model, *self._evaluate(model, loss, X, target))
        if not math.isfinite(state.value):
            raise ValueError(
                f"{type(self).__name__}: the loss at the current parameters is {state.value} "
                "(the network's output overflows or is not a number), so no step can lower "
                "it. Scale the inputs and targets (e.g. jacnet.data.StandardScaler), or start "
                "from smaller weights."
            )
        return state

    def _trial(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray
               ) -> SolverState:
        """The forward pass at the trial parameters now in ``model``, as a state to hand
        on if the step is accepted."""
        return SolverState.record(model, *self._evaluate(model, loss, X, target))

    def _curvature(self, loss: Loss, prediction: np.ndarray, target: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """What the loss says about the prediction, on the unnormalised scale Σ wᵢ ℓᵢ.

        Returns g (B, m), row b = w_b ∂ℓ_b/∂z_b; C with C_bᵀC_b = w_b H_b from the loss's
        :meth:`~jacnet.losses.Loss.curvature_sqrt` (None for H_b = I without weights,
        √w_b of shape (B,) for H_b = I with them); and whether the loss's factor is the
        identity (a least-squares loss: then the dual form JJᵀ can be used, and Bayesian
        regularisation's β is a noise precision).
        """
        z = prediction.astype(_F64, copy=False)
        unscale = 1.0 / loss._scale(z.shape[0])
        rows = np.asarray(loss.grad(z, target), dtype=_F64) * unscale
        root = np.asarray(loss.curvature_sqrt(z, target), dtype=_F64)
        identity = root.shape == z.shape and bool(np.all(root == 1.0))
        weights = self._sample_weight
        if weights is not None:
            rows = rows * weights[:, None]
        if identity:
            return rows, None if weights is None else np.sqrt(weights), True
        if weights is not None:
            root = root * np.sqrt(weights).reshape((-1,) + (1,) * (root.ndim - 1))
        return rows, root, False

    def _system(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
                rows: np.ndarray, sqrt_h: np.ndarray | None, dual: bool,
                mask: np.ndarray | None = None) -> _NormalEquations | _MatrixFree:
        """The normal equations of the loss on the unnormalised scale (Σ wᵢ ℓᵢ), dense
        (built from the forward pass the layers hold, that of :meth:`_start`) or
        matrix-free, as ``solver`` says."""
        if self._matrix_free(model, X, dual):
            return _MatrixFree(model, rows, sqrt_h, self.allreduce, self.cg_max_iter,
                               self.chunk_size, self.preconditioner)
        return _NormalEquations(model, X, rows, self.chunk_size, dual, sqrt_h,
                                buffer=self._gram_buffer(model, dual),
                                mask=mask if dual else None, cached_forward=True,
                                allreduce=self.allreduce,
                                factor_buffer=self._factor_buffer(
                                    X.shape[0] * model.out_features if dual else model.n_params,
                                    dual and mask is not None))

    def _matrix_free(self, model: Sequential, X: np.ndarray, dual: bool) -> bool:
        """Whether this epoch solves by conjugate gradients: ``solver="cg"``, or ``"auto"``
        and the dense system does not fit in half of this machine's memory or would cost
        more multiply-adds than the worst-case CG solve (see the module docstring)."""
        if self.solver != "auto":
            return self.solver == "cg"
        # With ``allreduce`` every process decides for all the rows (N summed in iterate)
        # and takes CG if any process lacks the memory: one choice, one process's choice.
        n_params, n_outputs = model.n_params, model.out_features
        n_samples = X.shape[0] if self.allreduce is None else self._totals[0]
        n_rows = n_samples * n_outputs
        size = n_rows if dual else n_params  # the side of the matrix Cholesky factors
        available = _physical_memory()
        short = available is not None and 8 * size * size > available // 2
        if self._sum(float(short)) > 0:
            return True
        dense = n_rows * n_rows * n_params if dual else n_rows * n_params * n_params
        dense += size ** 3 / 3
        matrix_free = 5 * n_samples * n_params * (self.cg_max_iter + 1 + n_outputs)
        return matrix_free < dense

    def _inner(self, system: _NormalEquations | _MatrixFree, grad_norm: float) -> None:
        """Set the CG stopping rule for this epoch: ``cg_tol``, or Eisenstat and Walker's
        forcing term (choice 2; see the module docstring), whose memory moves on here."""
        eta = self.forcing(grad_norm)
        self.forcing_grad_norm, self.forcing_tolerance = grad_norm, eta
        if isinstance(system, _MatrixFree):
            system.tolerance = self.cg_tol if self.cg_tol is not None else eta

    def forcing(self, grad_norm: float) -> float:
        """Eisenstat and Walker's forcing term (choice 2, γ = 0.9, α = 2, η_max = 0.9) for
        an epoch starting with gradient norm ``grad_norm``, from the previous epoch's
        gradient norm and η (0.5 for the first epoch)."""
        previous, last = self.forcing_grad_norm, self.forcing_tolerance
        if not (previous > 0.0 and math.isfinite(previous) and math.isfinite(last)):
            return 0.5
        eta = 0.9 * (grad_norm / previous) ** 2
        if 0.9 * last ** 2 > 0.1:  # their safeguard against a sudden drop of η
            eta = max(eta, 0.9 * last ** 2)
        return min(eta, 0.9)

    @staticmethod
    def _solver_info(info: dict[str, float], system: _NormalEquations | _MatrixFree
                     ) -> dict[str, float]:
        """The inner solver in the epoch's record: ``matrix_free`` (1 for CG, 0 for the
        dense Cholesky path), ``cg_iterations`` (products with G this epoch) and
        ``cg_tolerance`` (the η its solves stopped at; 0 for the exact dense solve)."""
        info["matrix_free"] = float(isinstance(system, _MatrixFree))
        info["cg_iterations"] = float(system.iterations)
        info["cg_tolerance"] = float(system.tolerance)
        return info

    def reset(self) -> None:
        """Start afresh: μ back to its configured value, no stop reason, no JᵀJ or factor
        buffer (:meth:`fit` and ``jacnet.training.fit`` call this before training, as
        MATLAB's ``train`` starts every call from ``trainParam``)."""
        if "mu" in self._config:
            self.mu = float(self._config["mu"])
        self.stop_reason = None
        self.n_epochs = 0
        self._buffer = self._factor = None
        self.forcing_grad_norm = self.forcing_tolerance = math.nan

    def _converged(self, value: float, grad_norm: float) -> bool:
        """trainlm's first two stopping rules: the loss reached ``goal``, or the gradient
        norm fell below ``min_grad``; sets ``stop_reason``."""
        if value <= self.goal:
            self.stop_reason = "goal"
        elif grad_norm < self.min_grad:
            self.stop_reason = "min_grad"
        return self.stop_reason is not None

    def _damped_search(self, model: Sequential, theta: np.ndarray,
                       solve: Callable[[float], np.ndarray],
                       accept: Callable[[], Any]) -> Any:
        """trainlm's μ loop: try θ − Δ(μ); keep the first step that ``accept`` takes.

        ``solve(mu)`` gives Δ; ``accept()`` judges the parameters now in ``model`` and
        returns None to reject them. On acceptance μ ← μ·μ_dec and ``accept``'s result is
        returned; on rejection (or a failed factorisation) θ is restored and μ ← μ·μ_inc.
        When μ passes μ_max, ``stop_reason`` is "mu_max" and None is returned.
        """
        start = model.params.copy()
        while self.mu <= self.mu_max:
            try:
                step: np.ndarray | None = solve(self.mu)
            except np.linalg.LinAlgError:
                step = None
            if step is not None and np.all(np.isfinite(step)):
                model.params[...] = theta - step
                result = accept()
                if result is not None:
                    self.mu = max(self.mu * self.mu_dec, 1e-20)
                    return result
                model.params[...] = start
            self.mu *= self.mu_inc
        self.stop_reason = "mu_max"
        return None

    def _gram_buffer(self, model: Sequential, dual: bool) -> np.ndarray | None:
        """One (P, P) float64 array reused for JᵀJ every epoch (fresh pages cost more than
        the products for large P); None in the dual form, which never forms JᵀJ."""
        if dual:
            return None
        shape = (model.n_params, model.n_params)
        if self._buffer is None or self._buffer.shape != shape:
            _check_fits_in_memory(model.n_params, type(self).__name__)
            self._buffer = np.empty(shape, dtype=_F64)
        return self._buffer

    def _factor_buffer(self, size: int, unused: bool) -> np.ndarray | None:
        """One (s, s) float64 array reused by every μ trial of every epoch for the damped
        matrix and its Cholesky factor (s = P, or N·m in the dual form); None where the
        epoch's solves factor a matrix of their own (the dual form with a mask)."""
        if unused:
            return None
        if self._factor is None or self._factor.shape != (size, size):
            self._factor = None  # the old one is freed before the new one is taken
            self._factor = np.empty((size, size), dtype=_F64)
        return self._factor

    def _use_dual(self, model: Sequential, X: np.ndarray) -> bool:
        """Fewer residuals than parameters, all in this process (the dual's N·m × N·m
        kernel couples every pair of rows, so it is not split over processes)."""
        return self.allreduce is None and X.shape[0] * model.out_features < model.n_params

    # -- public API --------------------------------------------------------------------
    def iterate(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
                state: SolverState | None = None, *, sample_weight: Any = None
                ) -> tuple[SolverState, dict[str, float]]:
        """One iteration on the whole training set, from and to an explicit state.

        Updates ``model.params`` in place, as :meth:`epoch`, and returns the forward pass
        at the parameters it ends with: pass that back as ``state`` to the next call on
        the same data (see :class:`SolverState`), and that call runs no forward pass of its
        own before building the Jacobian.

        Parameters
        ----------
        model, loss, X, target, sample_weight
            As for :meth:`epoch`.
        state : SolverState, optional
            What the previous call on the same data returned; None (or a state of other
            parameters) starts with a forward pass.

        Returns
        -------
        state : SolverState
        info : dict
            As :meth:`epoch` returns it.
        """
        model, loss, X, target = self._check(model, loss, X, target)
        self._sample_weight = self._check_sample_weight(sample_weight, X.shape[0], model.dtype)
        self.stop_reason = None
        n_rows = X.shape[0]
        total_weight = n_rows if self._sample_weight is None else float(self._sample_weight.sum())
        if self.allreduce is not None:
            totals = np.array([n_rows, total_weight], dtype=_F64)
            self.allreduce(totals)
            n_rows, total_weight = round(float(totals[0])), float(totals[1])
        self._totals = (n_rows, total_weight)
        try:
            state, info = self._step(model, loss, X, target, state)
        finally:
            self._sample_weight = None
        self.n_epochs += 1
        return state, info

    def epoch(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
              sample_weight: Any = None) -> dict[str, float]:
        """One iteration on the whole training set; updates ``model.params`` in place.

        :meth:`iterate` without a state: the epoch starts with a forward pass at the
        current parameters.

        Parameters
        ----------
        model : Sequential
        loss : Loss
            Any loss with a curvature (:class:`BayesianRegularization`: a least-squares
            loss, one whose ``curvature_sqrt`` is the identity, e.g. ``MSELoss``).
        X : ndarray, shape (N, in_features)
        target : ndarray, shape (N, out_features) (or (N,) class labels)
        sample_weight : ndarray, shape (N,), optional
            Non-negative weights: the loss becomes Σ wᵢ ℓᵢ / Σ w (``"mean"``) or Σ wᵢ ℓᵢ.

        Returns
        -------
        dict
            ``"loss"`` (after the step), ``"mu"``, ``"grad_norm"`` (‖∂loss/∂θ‖ before the
            step) and optimizer-specific entries.

        Raises
        ------
        TypeError
            ``loss`` is not one this optimizer can train with.
        ValueError
            ``X``, ``target`` or ``sample_weight`` of the wrong shape.
        """
        return self.iterate(model, loss, X, target, sample_weight=sample_weight)[1]

    def _step(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
              state: SolverState | None) -> tuple[SolverState, dict[str, float]]:
        raise NotImplementedError

    def fit(self, model: Sequential, X: Any, y: Any, *, epochs: int = 1000, X_val: Any = None,
            y_val: Any = None, verbose: bool = False, loss: Loss | None = None,
            sample_weight: Any = None) -> dict[str, Any]:
        """Train with the ``trainlm`` stopping rules; return the history.

        A shorthand for :func:`jacnet.training.fit` with this optimizer (the one training
        loop: ``fit(model, X, y, optimizer=self, epochs=epochs, validation_data=(X_val,
        y_val))``, no metrics, no progress bar), returning its history as lists. Stops
        after ``epochs`` epochs, or when a rule of :meth:`epoch` fires, or (with
        validation data and ``max_fail`` > 0) when the validation loss has not improved
        for ``max_fail`` epochs in a row. With validation data and ``max_fail`` > 0 the
        parameters with the best validation loss are restored at the end, whatever
        stopped training (as MATLAB's ``train`` returns the best validation network).

        Parameters
        ----------
        model : Sequential
        X : array-like, shape (N, in_features)
        y : array-like, shape (N,) or (N, out_features)
        epochs : int, default 1000
        X_val, y_val : array-like, optional
        verbose : bool, default False
            Print one line per epoch.
        loss : Loss, optional
            Default ``MSELoss()``.
        sample_weight : array-like, shape (N,), optional
            Per-sample weights of the training loss (see :meth:`epoch`).

        Returns
        -------
        dict
            Lists per epoch under ``"loss"``, ``"mu"``, ``"grad_norm"`` (and
            ``"val_loss"``, ``"gamma"``... where they apply), and ``"stop_reason"``:
            ``"goal"``, ``"min_grad"``, ``"mu_max"``, ``"line_search"``, ``"max_fail"``
            or ``"epochs"``.
        """
        # The fit loop sits above the optimizers; imported here, where it is used.
        from jacnet.training import EarlyStopping, LambdaCallback
        from jacnet.training import fit as train

        owner = type(self).__name__
        epochs = _check_number(epochs, "epochs", owner, low=1, integer=True)
        validation = None
        if X_val is not None or y_val is not None:
            if X_val is None or y_val is None:
                raise ValueError(f"{owner}.fit: pass both X_val and y_val, or neither.")
            validation = (X_val, y_val)
        callbacks: list[Any] = []
        stopper = None
        if validation is not None and self.max_fail:
            stopper = EarlyStopping("val_loss", patience=int(self.max_fail))
            callbacks.append(stopper)
        if verbose:
            callbacks.append(LambdaCallback(on_epoch_end=lambda epoch, logs: print(
                f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()
                                               if k not in ("epoch", "time")))))
        history = train(model, X, y, loss=MSELoss() if loss is None else loss, optimizer=self,
                        epochs=epochs, validation_data=validation, early_stopping=False,
                        metrics=[], callbacks=callbacks, progress=False,
                        sample_weight=sample_weight)
        lists: dict[str, Any] = {key: history[key] for key in history.columns
                                 if key not in ("epoch", "time")}
        if stopper is not None and stopper.stopped_epoch:
            lists["stop_reason"] = "max_fail"
        else:
            lists["stop_reason"] = history.stop_reason or "epochs"
        return lists

    def state_dict(self) -> dict[str, float | int]:
        """The state needed to resume: plain numbers (``mu``, the epoch count and the
        forcing term's memory)."""
        return {"n_epochs": int(self.n_epochs), "forcing_grad_norm": self.forcing_grad_norm,
                "forcing_tolerance": self.forcing_tolerance, **self._state()}

    def _state(self) -> dict[str, float]:
        return {}

    def load_state_dict(self, state: Any) -> None:
        """Restore a state saved by :meth:`state_dict` (a dict or an ``NpzFile``)."""
        expected = set(self.state_dict())
        keys = set(state.keys())
        if keys != expected:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state has keys {sorted(keys)} "
                f"but this optimizer needs {sorted(expected)}; load a state saved by the "
                "same kind of optimizer."
            )
        self.n_epochs = int(state["n_epochs"])
        for key in expected - {"n_epochs"}:
            setattr(self, key, float(state[key]))

    def _solver_config(self) -> dict[str, Any]:
        return {"solver": self.solver, "cg_tol": self.cg_tol, "cg_max_iter": self.cg_max_iter,
                "preconditioner": self.preconditioner}

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments; ``get_optimizer(opt.name, **opt.get_config())`` rebuilds it."""
        return dict(self._config)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"




# ----------------------------------------------------------------------------- LM
class LevenbergMarquardt(SecondOrderOptimizer):
    """Levenberg–Marquardt with MATLAB ``trainlm``'s rules and defaults, full batch.

    Each epoch solves (JᵀJ + (μ + λ/s) I) Δ = Jᵀe + (λ/s) θ (λ = ``weight_decay``, s the
    loss's 1/N for a mean) and takes θ − Δ if it lowers the loss, then μ ← μ·μ_dec;
    otherwise μ ← μ·μ_inc and the solve is repeated. With N·m < P residuals the dual
    form Δ = Jᵀ(JJᵀ + μI)⁻¹e is used.

    Parameters
    ----------
    mu : float, default 1e-3
        Initial damping (on the scale of the unnormalised JᵀJ).
    mu_dec, mu_inc : float, default 0.1, 10
        Factors applied after a successful / failed trial step.
    mu_max : float, default 1e10
        Stop (``stop_reason = "mu_max"``) when μ exceeds it.
    goal : float, default 0
        Stop when the loss is at or below it.
    min_grad : float, default 1e-7
        Stop when ‖∂loss/∂θ‖ falls below it.
    max_fail : int, default 6
        Validation failures allowed in :meth:`fit` (the fit loop's ``patience``).
    weight_decay : float, default 0
        L2 penalty (λ/2)‖θ‖² added to the loss.
    weight_decay_mask : numpy.ndarray of bool, shape (n_params,), optional
        Decay only the entries of θ where True (e.g. weights, not biases); the penalty is
        then (λ/2) Σ_{mask} θᵢ². A mask that is not all True uses the primal form.
    chunk_size : int, optional
        Samples per chunk when accumulating JᵀJ (memory only; default 1024).
    solver : {"dense", "cg", "auto"}, default "dense"
        The inner solver (see the module docstring): exact Cholesky of JᵀJ (or JJᵀ),
        matrix-free preconditioned conjugate gradients, or a choice by size and memory.
    cg_tol : float in (0, 1), optional
        CG's tolerance on the relative residual; default Eisenstat and Walker's forcing
        term (choice 2, see the module docstring), which adapts it to the epochs' progress.
    cg_max_iter : int, default 100
        CG iterations per solve at most.
    preconditioner : {"kfac", "jacobi"}, default "kfac"
        CG's preconditioner (``solver="cg"`` only; see the module docstring): K-FAC's
        per-layer Kronecker factors A ⊗ B inverted exactly with the damping, or the
        diagonal c diag(G) + D (K-FAC took far fewer products with G to the same loss on
        every network measured in ``docs/benchmarks.md``, for a little more work per
        epoch: two Gram matrices and two eigendecompositions per layer).
    allreduce : callable, optional
        ``allreduce(array)`` sums a float64 array over all processes in place; each
        process then passes only its own rows (see the module docstring). Not part of
        :meth:`get_config` (a callable is not a setting to save).

    Notes
    -----
    Any loss with a curvature trains in the generalised Gauss–Newton form
    (JᵀHJ + μI) Δ = Jᵀg (see the module docstring); the loss must decrease for a step to
    be taken, as for MSE.

    Examples
    --------
    >>> from jacnet import mlp
    >>> from jacnet.losses import MSELoss
    >>> model = mlp([1, 5, 1], seed=0, dtype="float64")
    >>> X = np.linspace(-1, 1, 50).reshape(-1, 1)
    >>> lm = LevenbergMarquardt()
    >>> info = lm.epoch(model, MSELoss(), X, X ** 2)
    >>> sorted(info), info["loss"] < 0.5 * float(np.mean(X ** 4))
    (['cg_iterations', 'cg_tolerance', 'grad_norm', 'loss', 'matrix_free', 'mu'], True)
    """

    name: ClassVar[str] = "lm"

    def __init__(self, mu: float = 1e-3, mu_dec: float = 0.1, mu_inc: float = 10.0,
                 mu_max: float = 1e10, goal: float = 0.0, min_grad: float = 1e-7,
                 max_fail: int = 6, weight_decay: float = 0.0,
                 chunk_size: int | None = None, weight_decay_mask: Any = None,
                 allreduce: Allreduce | None = None, solver: str = "dense",
                 cg_tol: float | None = None, cg_max_iter: int = 100,
                 preconditioner: str = "kfac") -> None:
        super().__init__(goal=goal, min_grad=min_grad, max_fail=max_fail, chunk_size=chunk_size,
                         allreduce=allreduce, solver=solver, cg_tol=cg_tol,
                         cg_max_iter=cg_max_iter, preconditioner=preconditioner)
        owner = type(self).__name__
        self._weight_decay_mask = _check_mask(weight_decay_mask, owner)
        self.mu = _check_number(mu, "mu", owner, low=0.0, low_closed=False)
        self.mu_dec = _check_number(mu_dec, "mu_dec", owner, low=0.0, high=1.0, low_closed=False)
        self.mu_inc = _check_number(mu_inc, "mu_inc", owner, low=1.0, low_closed=False)
        self.mu_max = _check_number(mu_max, "mu_max", owner, low=0.0, low_closed=False)
        self.weight_decay = _check_number(weight_decay, "weight_decay", owner, low=0.0)
        self._config = {"mu": self.mu, "mu_dec": self.mu_dec, "mu_inc": self.mu_inc,
                        "mu_max": self.mu_max, "goal": self.goal, "min_grad": self.min_grad,
                        "max_fail": self.max_fail, "weight_decay": self.weight_decay,
                        "chunk_size": self.chunk_size, **self._solver_config()}
        if self._weight_decay_mask is not None:
            # Structure, not a hyperparameter, but needed to rebuild the same optimizer.
            self._config["weight_decay_mask"] = self._weight_decay_mask.copy()

    @property
    def weight_decay_mask(self) -> np.ndarray | None:
        """Which entries of θ the weight decay applies to (None: all)."""
        return self._weight_decay_mask

    def _state(self) -> dict[str, float]:
        return {"mu": float(self.mu)}

    def _decay_vector(self, n_params: int) -> np.ndarray | None:
        mask = self._weight_decay_mask
        if mask is None:
            return None
        if mask.shape != (n_params,):
            raise ValueError(
                f"LevenbergMarquardt: weight_decay_mask has shape {mask.shape}; it must have "
                f"the shape of the model's params ({n_params},), one flag per parameter."
            )
        return None if mask.all() else mask.astype(_F64)

    def _penalty(self, theta: np.ndarray, mask: np.ndarray | None) -> float:
        kept = theta if mask is None else theta * mask
        return 0.5 * self.weight_decay * float(kept @ theta)

    def _step(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
              state: SolverState | None) -> tuple[SolverState, dict[str, float]]:
        start = self._start(model, loss, X, target, state)
        value = start.value
        scale = self._scale(loss)
        decay = self.weight_decay / scale  # λ on the unnormalised scale of JᵀJ
        mask = self._decay_vector(model.n_params) if decay else None
        theta = model.params.astype(_F64)
        if decay:
            value += self._penalty(theta, mask)
        rows, sqrt_h, identity = self._curvature(loss, start.prediction, target)
        dual = (identity and self._use_dual(model, X)
                and (mask is None or _whole_blocks(model, mask)))
        system = self._system(model, loss, X, target, rows, sqrt_h, dual,
                              None if mask is None else mask.astype(bool))
        decay_term: float | np.ndarray = decay if mask is None else decay * mask
        gradient = system.jte + decay_term * theta if decay else system.jte
        grad_norm = scale * float(np.linalg.norm(gradient))
        self._inner(system, grad_norm)
        info = {"loss": value, "mu": self.mu, "grad_norm": grad_norm}
        if self._converged(value, grad_norm):
            return start, self._solver_info(info, system)

        def accept() -> tuple[SolverState, float] | None:
            trial = self._trial(model, loss, X, target)
            total = trial.value
            if decay:
                total += self._penalty(model.params.astype(_F64), mask)
            return (trial, total) if total < value else None

        accepted = self._damped_search(
            model, theta, lambda mu: system.solve(1.0, mu + decay_term, decay_term, theta), accept)
        info["mu"] = self.mu
        self._solver_info(info, system)
        if accepted is None:
            return start, info
        info["loss"] = accepted[1]
        return accepted[0], info


# ----------------------------------------------------------------------------- GN
class GaussNewton(SecondOrderOptimizer):
    """Gauss–Newton: the undamped step (JᵀJ) Δ = Jᵀe with a backtracking line search.

    The step is Levenberg–Marquardt's with μ → 0: μ is 0 unless JᵀJ (or JJᵀ in the dual
    form) is not positive definite, in which case the smallest of 1e-12·max diag, ×10,
    … that makes Cholesky succeed is used. Then θ ← θ − tΔ with the largest t in 1, ½,
    ¼, … that satisfies the Armijo condition loss(θ − tΔ) ≤ loss(θ) − c t ∇lossᵀΔ; the
    loss never increases. If no t in ``max_backtracks`` halvings works, θ is kept and
    ``stop_reason = "line_search"``.

    Undamped steps are only as good as JᵀJ's conditioning: for softmax cross-entropy
    JᵀHJ is always singular (adding a constant to every logit changes nothing), and on
    ill-conditioned networks the line search accepts only tiny steps. Prefer
    :class:`LevenbergMarquardt` there; Gauss–Newton is for well-posed least squares.

    Parameters
    ----------
    c : float, default 1e-4
        Armijo's sufficient-decrease constant.
    max_backtracks : int, default 30
    goal, min_grad, max_fail, chunk_size, solver, cg_tol, cg_max_iter, allreduce
        As for :class:`LevenbergMarquardt`.
    preconditioner : {"kfac", "jacobi"}, default "kfac"
        As for :class:`LevenbergMarquardt`. The step is undamped (D = 0), so each K-FAC
        block is damped for the preconditioner alone by 10⁻⁴ of its mean diagonal.

    Examples
    --------
    >>> from jacnet import mlp
    >>> model = mlp([1, 4, 1], seed=0, dtype="float64")
    >>> X = np.linspace(-1, 1, 40).reshape(-1, 1)
    >>> history = GaussNewton().fit(model, X, np.tanh(2 * X), epochs=30)
    >>> all(np.diff(history["loss"]) <= 0)
    True
    """

    name: ClassVar[str] = "gn"

    def __init__(self, c: float = 1e-4, max_backtracks: int = 30, goal: float = 0.0,
                 min_grad: float = 1e-7, max_fail: int = 6,
                 chunk_size: int | None = None, allreduce: Allreduce | None = None,
                 solver: str = "dense", cg_tol: float | None = None,
                 cg_max_iter: int = 100, preconditioner: str = "kfac") -> None:
        super().__init__(goal=goal, min_grad=min_grad, max_fail=max_fail, chunk_size=chunk_size,
                         allreduce=allreduce, solver=solver, cg_tol=cg_tol,
                         cg_max_iter=cg_max_iter, preconditioner=preconditioner)
        owner = type(self).__name__
        self.c = _check_number(c, "c", owner, low=0.0, high=1.0, low_closed=False)
        self.max_backtracks = _check_number(max_backtracks, "max_backtracks", owner, low=1,
                                            integer=True)
        self._config = {"c": self.c, "max_backtracks": self.max_backtracks, "goal": self.goal,
                        "min_grad": self.min_grad, "max_fail": self.max_fail,
                        "chunk_size": self.chunk_size, **self._solver_config()}

    def _step(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
              state: SolverState | None) -> tuple[SolverState, dict[str, float]]:
        start = self._start(model, loss, X, target, state)
        value = start.value
        scale = self._scale(loss)
        rows, sqrt_h, identity = self._curvature(loss, start.prediction, target)
        system = self._system(model, loss, X, target, rows, sqrt_h,
                              identity and self._use_dual(model, X))
        grad_norm = scale * float(np.linalg.norm(system.jte))
        self._inner(system, grad_norm)
        info = {"loss": value, "mu": 0.0, "grad_norm": grad_norm, "step_size": 0.0}
        if self._converged(value, grad_norm):
            return start, self._solver_info(info, system)
        diagonal = system.diagonal()
        jitter, step = 0.0, None
        while step is None:
            try:
                step = system.solve(1.0, jitter)
            except np.linalg.LinAlgError:
                jitter = 1e-12 * float(diagonal.max()) if jitter == 0.0 else jitter * 10.0
                if jitter > float(diagonal.max()) or not math.isfinite(jitter):
                    self.stop_reason = "line_search"
                    return start, self._solver_info(info, system)
        slope = scale * float(system.jte @ step)  # ∇lossᵀΔ > 0: −Δ is a descent direction
        theta = model.params.astype(_F64)
        saved = model.params.copy()
        t = 1.0
        for _ in range(self.max_backtracks):
            model.params[...] = theta - t * step
            trial = self._trial(model, loss, X, target)
            if trial.value <= value - self.c * t * slope and trial.value <= value:
                info.update(loss=trial.value, mu=jitter, step_size=t)
                return trial, self._solver_info(info, system)
            t *= 0.5
        model.params[...] = saved
        self.stop_reason = "line_search"
        return start, self._solver_info(info, system)


# ----------------------------------------------------------------------------- BR
class BayesianRegularization(SecondOrderOptimizer):
    """Bayesian regularisation (MATLAB ``trainbr``): LM on F = β E_D + α E_W, α and β by evidence.

    E_D = Σ e² over all N residuals, E_W = Σ θ². Each epoch takes the LM step
    (β JᵀJ + (α + μ) I) Δ = β Jᵀe + α θ on F, and after a successful step re-estimates
    (MacKay): γ = P − α tr((β JᵀJ + α I)⁻¹) = Σ βλᵢ / (βλᵢ + α) over the eigenvalues λᵢ
    of JᵀJ (the effective number of parameters), α = γ / (2 E_W), β = (N − γ) / (2 E_D).
    Start as ``trainbr`` for γ = P and β = (N − γ)/(2 E_D) (1 if not positive), but with
    α = 10⁻³ β tr(JᵀJ)/P rather than ``trainbr``'s γ/(2 E_W): that value reflects the
    initial weights' scale, which MATLAB's Nguyen–Widrow initialisation on data mapped to
    [−1, 1] makes large (so α small); from small Glorot weights it is large, the prior
    wins over the data on small sets, and the evidence updates collapse to γ ≈ 1 and a
    constant fit (sinc(10x) on 100 points: MSE 0.12, γ 0.95 on every seed).

    Parameters
    ----------
    mu : float, default 0.005
        Initial damping (``trainbr``'s default).
    mu_dec, mu_inc, mu_max, goal, min_grad, max_fail, chunk_size
        As for :class:`LevenbergMarquardt` (``max_fail`` defaults to 0: off, as in
        ``trainbr``).
    solver, cg_tol, cg_max_iter, preconditioner, allreduce
        As for :class:`LevenbergMarquardt`.
    trace_probes, trace_steps : int, default 10, 20
        ``solver="cg"``: the probes and Lanczos steps of γ's stochastic estimate (cost:
        their product in products with G per accepted epoch). Measured on sinc(10x),
        100 points, 1-20-1: within 4% of the exact γ (``tests/test_second_order.py``).

    Attributes
    ----------
    alpha, beta, gamma : float
        The current hyperparameters and effective number of parameters (NaN before
        the first epoch).

    Examples
    --------
    >>> from jacnet import mlp
    >>> model = mlp([1, 10, 1], seed=0, dtype="float64")
    >>> X = np.linspace(-1, 1, 30).reshape(-1, 1)
    >>> history = BayesianRegularization().fit(model, X, np.sin(3 * X), epochs=20)
    >>> 0 < history["gamma"][-1] <= model.n_params
    True
    """

    name: ClassVar[str] = "br"
    # trainbr's β is the noise precision of least-squares residuals.
    _any_loss: ClassVar[bool] = False

    def __init__(self, mu: float = 0.005, mu_dec: float = 0.1, mu_inc: float = 10.0,
                 mu_max: float = 1e10, goal: float = 0.0, min_grad: float = 1e-7,
                 max_fail: int = 0, chunk_size: int | None = None,
                 allreduce: Allreduce | None = None, solver: str = "dense",
                 cg_tol: float | None = None, cg_max_iter: int = 100,
                 trace_probes: int = 10, trace_steps: int = 20,
                 preconditioner: str = "kfac") -> None:
        super().__init__(goal=goal, min_grad=min_grad, max_fail=max_fail, chunk_size=chunk_size,
                         allreduce=allreduce, solver=solver, cg_tol=cg_tol,
                         cg_max_iter=cg_max_iter, preconditioner=preconditioner)
        self.trace_probes = _check_number(trace_probes, "trace_probes", type(self).__name__,
                                          low=1, integer=True)
        self.trace_steps = _check_number(trace_steps, "trace_steps", type(self).__name__,
                                         low=1, integer=True)
        owner = type(self).__name__
        self.mu = _check_number(mu, "mu", owner, low=0.0, low_closed=False)
        self.mu_dec = _check_number(mu_dec, "mu_dec", owner, low=0.0, high=1.0, low_closed=False)
        self.mu_inc = _check_number(mu_inc, "mu_inc", owner, low=1.0, low_closed=False)
        self.mu_max = _check_number(mu_max, "mu_max", owner, low=0.0, low_closed=False)
        self.alpha = self.beta = self.gamma = math.nan
        self._collapse_warned = False
        self._config = {"mu": self.mu, "mu_dec": self.mu_dec, "mu_inc": self.mu_inc,
                        "mu_max": self.mu_max, "goal": self.goal, "min_grad": self.min_grad,
                        "max_fail": self.max_fail, "chunk_size": self.chunk_size,
                        **self._solver_config(), "trace_probes": self.trace_probes,
                        "trace_steps": self.trace_steps}

    def reset(self) -> None:
        super().reset()
        self.alpha = self.beta = self.gamma = math.nan  # re-initialised from the data
        self._collapse_warned = False

    def _state(self) -> dict[str, float]:
        return {"mu": float(self.mu), "alpha": float(self.alpha), "beta": float(self.beta),
                "gamma": float(self.gamma)}

    def _step(self, model: Sequential, loss: Loss, X: np.ndarray, target: np.ndarray,
              state: SolverState | None) -> tuple[SolverState, dict[str, float]]:
        if self._sample_weight is not None:
            raise ValueError(
                "BayesianRegularization does not take sample_weight: its β = (N − γ)/(2 E_D) "
                "counts unweighted residuals. Use LevenbergMarquardt with weight_decay, or "
                "repeat rows."
            )
        start = self._start(model, loss, X, target, state)
        value = start.value
        rows, sqrt_h, identity = self._curvature(loss, start.prediction, target)
        if not identity:
            raise TypeError(
                "BayesianRegularization needs a least-squares loss, one whose curvature_sqrt "
                "is the identity (e.g. jacnet.losses.MSELoss()): its β is the noise precision "
                f"of the residuals. {type(loss).__name__}'s curvature is not the identity; "
                "train it with LevenbergMarquardt (weight_decay for a prior)."
            )
        scale = self._scale(loss)
        n_residuals, n_params = self._totals[0] * model.out_features, model.n_params
        theta = model.params.astype(_F64)
        sse, ssw = 2.0 * value / scale, float(theta @ theta)
        if math.isnan(self.gamma):
            self.gamma = float(n_params)
            self.beta = 1.0 if sse == 0.0 else (n_residuals - self.gamma) / (2.0 * sse)
            if self.beta <= 0.0:
                self.beta = 1.0
            self.alpha = math.nan
        system = self._system(model, loss, X, target, rows, sqrt_h, self._use_dual(model, X))
        if math.isnan(self.alpha):
            # Not trainbr's γ/(2 E_W): that measures the initial weights' scale, not the
            # data's. From small initial weights (Glorot, ‖θ‖² ≈ 4 for 1-20-1) it makes the
            # prior outweigh the data term on small data sets, the first steps shrink θ,
            # and MacKay's update then locks in γ ≈ 1 and a constant fit. Start instead
            # with a prior weak next to the data's curvature, α = 10⁻³ β tr(JᵀJ)/P, and
            # let the evidence updates raise it.
            self.alpha = _INITIAL_ALPHA * _mean_data_curvature(self.beta, system)
        alpha, beta = self.alpha, self.beta
        objective = beta * sse + alpha * ssw
        grad_norm = 2.0 * float(np.linalg.norm(beta * system.jte + alpha * theta))
        self._inner(system, grad_norm)
        info = {"loss": value, "mu": self.mu, "grad_norm": grad_norm, "gamma": self.gamma,
                "alpha": alpha, "beta": beta, "objective": objective}
        if self._converged(value, grad_norm):
            return start, self._solver_info(info, system)

        def accept() -> tuple[SolverState, float, float] | None:
            trial = self._trial(model, loss, X, target)
            new_theta = model.params.astype(_F64)
            new_sse, new_ssw = 2.0 * trial.value / scale, float(new_theta @ new_theta)
            if beta * new_sse + alpha * new_ssw >= objective:
                return None
            return trial, new_sse, new_ssw

        accepted = self._damped_search(
            model, theta, lambda mu: system.solve(beta, alpha + mu, alpha, theta), accept)
        info["mu"] = self.mu
        if accepted is None:
            return start, self._solver_info(info, system)
        new_state, new_sse, new_ssw = accepted
        new_value = new_state.value
        # MacKay's update, with JᵀJ at the start of the epoch (as trainbr): exact on the
        # dense path, stochastic Lanczos quadrature (seed 0) on the matrix-free one.
        self.gamma = system.effective_parameters(beta, alpha, 0, self.trace_probes,
                                                 self.trace_steps)
        self.alpha = 1.0 if new_ssw == 0.0 else self.gamma / (2.0 * new_ssw)
        self.beta = 1.0 if new_sse == 0.0 else (n_residuals - self.gamma) / (2.0 * new_sse)
        info.update(loss=new_value, gamma=self.gamma, alpha=self.alpha, beta=self.beta,
                    objective=self.beta * new_sse + self.alpha * new_ssw)
        if self.gamma < 1.5 and self.n_epochs >= 5 and not self._collapse_warned:
            self._collapse_warned = True
            warnings.warn(
                f"BayesianRegularization: γ = {self.gamma:.2f} effective parameters after "
                f"{self.n_epochs + 1} epochs: the prior has won and the fit is close to a "
                "constant. This happens when the targets are small next to the weights' "
                "scale; standardise or min-max scale the targets (MATLAB's trainbr maps them "
                "to [-1, 1]), or use LevenbergMarquardt.",
                CollapseWarning, stacklevel=4)
        return new_state, self._solver_info(info, system)


class CollapseWarning(UserWarning):
    """Bayesian regularisation has driven the effective number of parameters to about one."""


#: BR's initial α as a fraction of β's mean curvature β tr(JᵀJ)/P (see BayesianRegularization).
_INITIAL_ALPHA = 1e-3


def _mean_data_curvature(beta: float, system: _NormalEquations | _MatrixFree) -> float:
    """β tr(JᵀJ)/P: the mean diagonal of BR's data term."""
    return beta * system.trace() / system.n_params


# The registry is typed for first-order optimizers; these share its name-based lookup.
for _cls in (LevenbergMarquardt, GaussNewton, BayesianRegularization):
    cast(dict[str, Any], OPTIMIZERS)[_cls.name] = _cls
