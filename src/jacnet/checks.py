"""Derivative checks: back-propagation against the materialised Jacobian and finite differences.

Like Lua torch's Jacobian tester, each check builds the same derivative several ways and
reports *how large* the worst mismatch is and *where* it is, not a bare bool. Checks run
on a float64 copy of the network, so a float32 model can be checked too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jacnet._validation import check_choice
from jacnet.losses import Loss, get_loss
from jacnet.network import Sequential, jacobian


class GradientCheckError(AssertionError):
    """A derivative disagreed with its reference by more than the tolerance."""


@dataclass(frozen=True)
class Comparison:
    """One derivative compared with a reference, entry by entry.

    An entry passes when ``|a − b| <= atol + rtol·|b|`` (b the reference), as in
    ``torch.autograd.gradcheck``: the absolute bound covers entries near zero, where
    finite differences carry rounding noise of about ``1e-16·|f| / eps``; the relative
    bound covers large entries.

    Attributes
    ----------
    name : str
        What was compared, e.g. ``"backward vs finite differences"``.
    max_abs_error : float
        max |a − b| over all entries.
    max_rel_error : float
        ``max_abs_error`` divided by the largest |b| (the reference's scale).
    location : str
        Where the largest |a − b| is (``"sample 3, output 1, 2.weight[0, 4]"``).
    atol, rtol : float or None
        The tolerances the entries were judged by; ``None`` when not judged.
    n_failed : int
        How many entries broke ``atol + rtol·|b|``.
    failure : str
        The entry that broke its bound by the largest factor, with its error and bound
        (empty when none did).
    """

    name: str
    max_abs_error: float
    max_rel_error: float
    location: str
    atol: float | None = None
    rtol: float | None = None
    n_failed: int = 0
    failure: str = ""

    @property
    def passed(self) -> bool:
        """Whether every entry stayed within ``atol + rtol·|b|``."""
        return self.n_failed == 0

    @property
    def bound(self) -> str:
        """Which bound decided: ``"atol"``, ``"rtol"``, ``"atol + rtol·|b|"``, or ``"FAILED"``."""
        if self.atol is None or self.rtol is None:
            return ""
        if not self.passed:
            return "FAILED"
        if self.max_abs_error <= self.atol:
            return "atol"
        return "atol + rtol·|b|"

    def __str__(self) -> str:
        text = (f"{self.name}: max abs error {self.max_abs_error:.3e}, max rel error "
                f"{self.max_rel_error:.3e} at {self.location}")
        if self.bound == "FAILED":
            return f"{text} — FAILED: {self.failure}"
        if self.bound:
            return f"{text} — within {self.bound}"
        return text


def compare(name: str, actual: np.ndarray, reference: np.ndarray,
            describe: Callable[[tuple[int, ...]], str] | None = None, *,
            atol: float | None = None, rtol: float | None = None) -> Comparison:
    """Compare two arrays of the same shape; locate the largest difference.

    With ``atol`` and ``rtol``, also judge every entry by ``|a − b| <= atol + rtol·|b|``
    and describe the entry that broke its bound by the largest factor.

    >>> str(compare("a vs b", np.array([1.0, 2.0]), np.array([1.0, 2.5])))
    'a vs b: max abs error 5.000e-01, max rel error 2.000e-01 at index (1,)'
    >>> c = compare("a vs b", np.array([1e-9, 2.0]), np.array([0.0, 2.0]), atol=1e-8, rtol=1e-7)
    >>> c.passed, c.bound
    (True, 'atol')
    """
    if actual.shape != reference.shape:
        raise ValueError(f"{name}: shapes differ, {actual.shape} vs {reference.shape}.")
    diff = np.abs(actual - reference)
    if diff.size == 0:
        return Comparison(name, 0.0, 0.0, "(empty)", atol, rtol)
    flat = int(np.argmax(diff))
    index = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    scale = float(np.max(np.abs(reference)))
    max_abs = float(diff.reshape(-1)[flat])
    rel = max_abs / scale if scale > 0 else max_abs
    where = describe(index) if describe else f"index {index}"
    if atol is None or rtol is None:
        return Comparison(name, max_abs, rel, where)
    bound = atol + rtol * np.abs(reference)
    broken = ~(diff <= bound)  # NaN counts as broken
    n_failed = int(np.count_nonzero(broken))
    failure = ""
    if n_failed:
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(broken, diff / bound, -1.0)
        factor = np.where(np.isnan(factor), np.inf, factor)
        worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(factor)), diff.shape))
        error, ref = float(diff[worst]), float(abs(reference[worst]))
        failure = (f"|a − b| = {error:.3e} > atol + rtol·|b| = {atol:.1e} + {rtol:.1e}·"
                   f"{ref:.3e} = {float(bound[worst]):.3e} at "
                   f"{describe(worst) if describe else f'index {worst}'} "
                   f"(relative error {error / ref if ref > 0 else float('inf'):.3e}; "
                   f"{n_failed} of {diff.size} entries outside the bound)")
    return Comparison(name, max_abs, rel, where, atol, rtol, n_failed, failure)


@dataclass(frozen=True)
class CheckReport:
    """The comparisons of one check; it passes when every entry of every comparison
    stays within ``atol + rtol·|reference|``.

    ``str(report)`` lists every comparison and which bound held or failed;
    ``report.worst`` is the failing comparison (or, when all pass, the largest relative one).
    """

    comparisons: list[Comparison] = field(default_factory=list)
    rtol: float = 1e-7
    atol: float = 1e-8

    @property
    def worst(self) -> Comparison:
        failed = [c for c in self.comparisons if not c.passed]
        if failed:
            return failed[0]
        return max(self.comparisons, key=lambda c: c.max_rel_error)

    @property
    def max_rel_error(self) -> float:
        return max(c.max_rel_error for c in self.comparisons)

    @property
    def max_abs_error(self) -> float:
        return max(c.max_abs_error for c in self.comparisons)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        lines = [f"derivative check {status} (atol {self.atol:.1e}, rtol {self.rtol:.1e})"]
        lines += [f"  {c}" for c in self.comparisons]
        return "\n".join(lines)

    def __repr__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        return (f"<CheckReport {status}: {len(self.comparisons)} comparisons, max abs error "
                f"{self.max_abs_error:.1e}, atol {self.atol:.0e}, rtol {self.rtol:.0e}>")

    def _repr_html_(self) -> str:
        from html import escape
        status = "passed" if self.passed else "FAILED"
        color = "#1a7f37" if self.passed else "#cf222e"
        rows = "".join(
            f"<tr><td>{escape(c.name)}</td><td>{c.max_abs_error:.3e}</td>"
            f"<td>{c.max_rel_error:.3e}</td><td>{escape(c.location)}</td>"
            f"<td>{escape(c.bound if c.passed else 'FAILED: ' + c.failure)}</td></tr>"
            for c in self.comparisons)
        return (f"<div><b style='color:{color}'>derivative check {status}</b> "
                f"(atol {self.atol:.1e}, rtol {self.rtol:.1e})<table><thead><tr>"
                "<th>comparison</th><th>max abs error</th><th>max rel error</th>"
                "<th>at</th><th>bound</th></tr></thead>"
                f"<tbody>{rows}</tbody></table></div>")


def _check_tolerances(eps: float, atol: float, rtol: float) -> None:
    """One clear error for a step or tolerance that cannot work."""
    for name, value, minimum in (("eps", eps, "> 0"), ("atol", atol, ">= 0"),
                                 ("rtol", rtol, ">= 0")):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a finite number {minimum}; got {value!r}.") from None
        ok = np.isfinite(number) and (number > 0 if name == "eps" else number >= 0)
        if not ok:
            fix = ("a finite-difference step of 0 or NaN measures nothing; pass e.g. "
                   "eps=1e-6" if name == "eps" else f"pass e.g. {name}=1e-7")
            raise ValueError(f"{name} must be a finite number {minimum}; got {value!r}: {fix}.")


def _finite_difference(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, eps: float
                       ) -> np.ndarray:
    """Central differences of f at x, one column per entry of x: shape f(x).shape + x.shape.

    The step is taken in a C-ordered float64 copy of x, so that ``x.reshape(-1)`` is a view
    and each perturbation reaches the array f sees (a Fortran-ordered x, such as every
    pandas DataFrame's values, would otherwise be reshaped into a copy, never perturbed).
    """
    x = np.array(x, dtype=np.float64, order="C", copy=True)
    base = f(x)
    out = np.empty((*base.shape, *x.shape))
    flat_x = x.reshape(-1)
    out_view = out.reshape((*base.shape, flat_x.size))
    for j in range(flat_x.size):
        saved = flat_x[j]
        flat_x[j] = saved + eps
        plus = np.array(f(x), dtype=np.float64)  # a copy: f may return (a view of) x
        flat_x[j] = saved - eps
        minus = np.array(f(x), dtype=np.float64)
        flat_x[j] = saved
        out_view[..., j] = (plus - minus) / (2.0 * eps)
    return out


def _prepare(model: Sequential, X: Any) -> tuple[Sequential, np.ndarray]:
    model64 = model.astype(np.float64)
    return model64, np.ascontiguousarray(model64.check_input(X))


def jacobian_check(model: Sequential, X: Any, wrt: str = "input", *, eps: float = 1e-6,
                   atol: float = 1e-8, rtol: float = 1e-7, raise_exception: bool = True
                   ) -> CheckReport:
    """Check the network's Jacobian four ways, in float64.

    The materialised structured Jacobian (:func:`~jacnet.network.jacobian`) is compared
    with (1) rows built by ``backward`` from unit output gradients (VJPs), (2) columns
    built by ``jvp`` from unit tangents, and (3) central finite differences.

    Parameters
    ----------
    model : Sequential
        Checked on a float64 copy; the model itself is not changed.
    X : array-like, shape (B, in_features)
    wrt : {"input", "params"}
    eps : float, default 1e-6
        Finite-difference step: finite and > 0.
    atol, rtol : float, default 1e-8, 1e-7
        An entry passes when ``|a − b| <= atol + rtol·|b|``, b the reference (as in
        ``torch.autograd.gradcheck``). ``atol`` absorbs the rounding noise of finite
        differences on entries near zero (about ``1e-16·|f| / eps``); ``rtol`` still
        catches a derivative that is wrong by 1e-6 of itself.
    raise_exception : bool, default True
        Raise :class:`GradientCheckError` on failure (otherwise just return the report).

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> from jacnet.network import mlp
    >>> model = mlp([3, 5, 2], activation="tanh", seed=0)
    >>> report = jacobian_check(model, np.random.default_rng(0).normal(size=(4, 3)))
    >>> report.passed, len(report.comparisons)
    (True, 3)
    """
    wrt = check_choice(wrt, "wrt", ("input", "params"))
    _check_tolerances(eps, atol, rtol)
    model64, X = _prepare(model, X)
    model64.eval()
    n_samples, n_out = X.shape[0], model64.out_features
    dense = np.asarray(jacobian(model64, X, wrt=wrt))
    n_cols = dense.shape[2]

    # (1) VJP rows: backward from each unit output gradient.
    vjp_rows = np.empty_like(dense)
    for k in range(n_out):
        unit = np.zeros((n_samples, n_out))
        unit[:, k] = 1.0
        if wrt == "input":
            model64.forward(X)
            result = model64.backward(unit)
            assert result is not None
            vjp_rows[:, k, :] = result
        else:
            for b in range(n_samples):  # backward sums over the batch: one sample at a time
                model64.forward(X[b:b + 1])
                model64.backward(unit[b:b + 1], input_grad=False)
                vjp_rows[b, k, :] = model64.grads
    # (2) JVP columns: forward mode with each unit tangent.
    jvp_cols = np.empty_like(dense)
    for j in range(n_cols):
        if wrt == "input":
            tangent = np.zeros_like(X)
            tangent[:, j] = 1.0
            jvp_cols[:, :, j] = model64.jvp(X, tangent=tangent)[1]
        else:
            direction = np.zeros(model64.n_params)
            direction[j] = 1.0
            jvp_cols[:, :, j] = model64.jvp(X, param_tangent=direction)[1]
    # (3) Central finite differences.
    if wrt == "input":
        fd = _finite_difference(model64.forward, X, eps)  # (B, m, B, n): keep the diagonal
        fd = np.stack([fd[b, :, b, :] for b in range(n_samples)])
    else:
        original = model64.params.copy()

        def outputs(theta: np.ndarray) -> np.ndarray:
            model64.params[:] = theta
            return model64.forward(X)

        fd = _finite_difference(outputs, original, eps)
        model64.params[:] = original

    def describe(index: tuple[int, ...]) -> str:
        b, k, j = index
        column = model64.locate(j) if wrt == "params" else f"input {j}"
        return f"sample {b}, output {k}, {column}"

    report = CheckReport([
        compare("Jacobian vs VJP rows (backward)", dense, vjp_rows, describe,
                atol=atol, rtol=rtol),
        compare("Jacobian vs JVP columns", dense, jvp_cols, describe, atol=atol, rtol=rtol),
        compare("Jacobian vs finite differences", dense, fd, describe, atol=atol, rtol=rtol),
    ], rtol=rtol, atol=atol)
    if raise_exception and not report.passed:
        raise GradientCheckError(str(report))
    return report


def gradcheck(model: Sequential, X: Any, target: Any, loss: str | Loss = "mse", *,
              eps: float = 1e-6, atol: float = 1e-8, rtol: float = 1e-7,
              raise_exception: bool = True
              ) -> CheckReport:
    """Check ∂loss/∂θ and ∂loss/∂X from ``backward`` against the Jacobian and finite differences.

    Three ways, in float64: back-propagation; the loss gradient times the materialised
    Jacobian (gᵀJ summed over samples); central finite differences of the loss.

    Parameters
    ----------
    model : Sequential
    X : array-like, shape (B, in_features)
    target : array-like
        Targets as the loss takes them (values, or class labels for cross-entropy).
    loss : str or Loss, default "mse"
    eps, atol, rtol, raise_exception
        As in :func:`jacobian_check`: an entry fails only where
        ``|a − b| > atol + rtol·|b|``, so a trained model whose gradients are near zero
        passes on the absolute bound.

    Returns
    -------
    CheckReport

    Raises
    ------
    GradientCheckError
        With the size and location of the worst mismatch, when ``raise_exception``.

    Examples
    --------
    >>> from jacnet.network import mlp
    >>> model = mlp([2, 4, 3], activation="relu", seed=1)
    >>> X = np.random.default_rng(0).normal(size=(6, 2))
    >>> print(gradcheck(model, X, [0, 1, 2, 0, 1, 2], loss="cross_entropy"))  # doctest: +ELLIPSIS
    derivative check passed (atol 1.0e-08, rtol 1.0e-07)
      backward vs Jacobian (params): ...
    """
    loss_fn = get_loss(loss)
    _check_tolerances(eps, atol, rtol)
    model64, X = _prepare(model, X)
    model64.eval()
    target = loss_fn.prepare_target(target, model64.out_features, dtype=np.float64)
    if target.shape[0] != X.shape[0]:
        raise ValueError(f"target has {target.shape[0]} samples but X has {X.shape[0]}.")

    output = model64.forward(X)
    _, grad_output = loss_fn.value_and_grad(output, target)
    grad_input = model64.backward(grad_output)
    grad_params = model64.grads.copy()

    jac_params = np.asarray(jacobian(model64, X, wrt="params"))
    jac_input = np.asarray(jacobian(model64, X, wrt="input"))
    via_jacobian_params = np.einsum("bm,bmp->p", grad_output, jac_params)
    via_jacobian_input = np.einsum("bm,bmn->bn", grad_output, jac_input)

    original = model64.params.copy()

    def loss_at_params(theta: np.ndarray) -> np.ndarray:
        model64.params[:] = theta
        return np.asarray(loss_fn.value_and_grad(model64.forward(X), target)[0])

    fd_params = _finite_difference(loss_at_params, original, eps)
    model64.params[:] = original
    fd_input = _finite_difference(
        lambda x: np.asarray(loss_fn.value_and_grad(model64.forward(x), target)[0]), X, eps)

    def describe_param(index: tuple[int, ...]) -> str:
        return model64.locate(index[0])

    def describe_input(index: tuple[int, ...]) -> str:
        return f"sample {index[0]}, input {index[1]}"

    report = CheckReport([
        compare("backward vs Jacobian (params)", grad_params, via_jacobian_params, describe_param,
                atol=atol, rtol=rtol),
        compare("backward vs finite differences (params)", grad_params, fd_params,
                describe_param, atol=atol, rtol=rtol),
        compare("backward vs Jacobian (input)", np.asarray(grad_input), via_jacobian_input,
                describe_input, atol=atol, rtol=rtol),
        compare("backward vs finite differences (input)", np.asarray(grad_input), fd_input,
                describe_input, atol=atol, rtol=rtol),
    ], rtol=rtol, atol=atol)
    if raise_exception and not report.passed:
        raise GradientCheckError(str(report))
    return report
