"""Losses: the value, its gradient w.r.t. the prediction, and the Gauss–Newton curvature.

The gradient is where back-propagation starts — the seed's ∂E/∂z = (z − d)ᵀ for MSE —
and the curvature (the Hessian of the loss w.r.t. the prediction, per sample) is what
Gauss–Newton and Levenberg–Marquardt put between Jᵀ and J.

Every loss is a sum over each sample's outputs, and ``reduction`` says how samples are
combined: ``"mean"`` (the default) divides by the number of samples, ``"sum"`` does not.

``value_and_grad`` and ``curvature`` trust their arguments (the training loop calls them
on data it has already checked); calling the loss object, ``loss(prediction, target)``,
checks both first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jacnet._validation import check_array, check_choice
from jacnet.jacobians import Diagonal, JacobianOperator, PerSample


class Loss:
    """Base class: subclasses implement ``value_and_grad`` and ``curvature``."""

    #: whether targets are class labels (integers) rather than values
    takes_labels = False

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = check_choice(reduction, "reduction", ("mean", "sum"))

    def _scale(self, n_samples: int) -> float:
        return 1.0 / n_samples if self.reduction == "mean" else 1.0

    # --- checked entry points -------------------------------------------------------
    def __call__(self, prediction: Any, target: Any) -> float:
        """The loss of ``prediction`` against ``target``, both checked first."""
        prediction = check_array(prediction, "prediction", owner=type(self).__name__)
        target = self.prepare_target(target, prediction.shape[1], dtype=prediction.dtype)
        self._check_batch(prediction, target)
        return self.value_and_grad(prediction, target)[0]

    def prepare_target(self, target: Any, n_outputs: int, dtype: Any = np.float64) -> np.ndarray:
        """Check ``target`` once and convert it to the form the fast methods use.

        Parameters
        ----------
        target : array-like, shape (B,) or (B, n_outputs)
        n_outputs : int
            The width of the predictions it will be compared with.
        dtype : float dtype
            The predictions' dtype (targets are converted to it).

        Returns
        -------
        ndarray, shape (B, n_outputs) (or (B,) integer labels for label losses).
        """
        name = type(self).__name__
        target = check_array(target, "target", ndim=(1, 2), dtype=dtype, owner=name)
        if target.ndim == 1:
            if n_outputs != 1:
                labels = target.size and bool(np.all(target == np.round(target)))
                hint = (" These look like class labels: train with loss='cross_entropy'."
                        if labels and not self.takes_labels else "")
                raise ValueError(
                    f"{name}: target has shape {target.shape} but the network has "
                    f"{n_outputs} outputs; pass a target of shape (n_samples, {n_outputs})."
                    + hint
                )
            target = target.reshape(-1, 1)
        if target.shape[1] != n_outputs:
            raise ValueError(
                f"{name}: target has {target.shape[1]} columns but the network has "
                f"{n_outputs} outputs."
            )
        return target

    @staticmethod
    def _check_batch(prediction: np.ndarray, target: np.ndarray) -> None:
        if prediction.shape[0] != target.shape[0]:
            raise ValueError(
                f"prediction has {prediction.shape[0]} samples but target has "
                f"{target.shape[0]}; they must match row for row."
            )

    # --- fast paths -----------------------------------------------------------------
    def value_and_grad(self, prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss (a float) and ∂loss/∂prediction (same shape and dtype as ``prediction``)."""
        raise NotImplementedError

    def per_sample(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Each sample's loss ℓᵢ (before the reduction), shape (B,).

        The reduced loss is ``mean`` or ``sum`` of these; weighting samples (the fit
        loop's ``sample_weight``) starts from them.
        """
        raise NotImplementedError

    def grad(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """∂loss/∂prediction, shape (B, m)."""
        return self.value_and_grad(prediction, target)[1]

    def curvature(self, prediction: np.ndarray, target: np.ndarray) -> JacobianOperator:
        """∂²loss/∂prediction², one (m × m) block per sample: the Gauss–Newton middle factor."""
        raise NotImplementedError

    def curvature_sqrt(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """A square root C of each sample's curvature, CᵀC = H, on the unnormalised scale.

        The reduction's 1/B is left out: the curvature of one sample's own loss is factored.
        The base class factors :meth:`curvature` with ``eigh`` (negative eigenvalues
        clipped to 0), so a custom loss need only define ``curvature``.

        Parameters
        ----------
        prediction, target : ndarray, shape (B, m) (target as the loss takes it)

        Returns
        -------
        ndarray, shape (B, m) (a diagonal root, C = diag(c)) or (B, k, m) (a full root)

        Examples
        --------
        >>> import numpy as np
        >>> from jacnet.losses import CrossEntropyLoss
        >>> z = np.array([[0.3, -1.0, 2.0]])
        >>> c = CrossEntropyLoss().curvature_sqrt(z, np.array([2]))
        >>> h = CrossEntropyLoss().curvature(z, np.array([2])).dense()[0]
        >>> bool(np.allclose(c[0].T @ c[0], h))
        True
        """
        hess = self.curvature(prediction, target).dense()
        hess = hess / self._scale(prediction.shape[0])
        values, vectors = np.linalg.eigh(0.5 * (hess + hess.transpose(0, 2, 1)))
        root = np.sqrt(np.clip(values, 0.0, None))
        return (root[:, :, None] * vectors.transpose(0, 2, 1)).astype(prediction.dtype,
                                                                       copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "reduction": self.reduction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MSELoss(Loss):
    """The seed's squared error: E = ½‖d − z‖² per sample, averaged (or summed) over samples.

    Gradient ∂E/∂z = (z − d), divided by the number of samples for ``"mean"``; curvature
    the identity (times the same factor), so Gauss–Newton is exact in the residuals
    r = z − d. Note the ½ and the sum over outputs: PyTorch's ``MSELoss`` is
    mean((z − d)²) over all elements, i.e. 2/m times this.

    Examples
    --------
    >>> loss = MSELoss()
    >>> loss(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    2.5
    >>> loss.grad(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    array([[1., 2.]])
    """

    def residuals(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """r = z − d, shape (B, m); the loss is ½ Σ r² times the reduction factor."""
        return prediction - target

    def per_sample(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        diff = prediction - target
        return 0.5 * np.einsum("ij,ij->i", diff, diff)

    def value_and_grad(self, prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        diff = prediction - target
        scale = self._scale(prediction.shape[0])
        value = 0.5 * scale * float(np.vdot(diff, diff))
        diff *= scale
        return value, diff

    def curvature(self, prediction: np.ndarray, target: np.ndarray) -> Diagonal:
        return Diagonal(np.full(prediction.shape, self._scale(prediction.shape[0]),
                                dtype=prediction.dtype))

    def curvature_sqrt(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """H = I per sample, so C = I: a diagonal root of ones, shape (B, m)."""
        return np.ones(prediction.shape, dtype=prediction.dtype)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss(Loss):
    """Softmax and negative log-likelihood fused, from logits: −Σ_k d_k log softmax(z)_k.

    Targets are integer class labels of shape (B,) or class weights of shape (B, m):
    one-hot rows, probabilities, or any non-negative rows (label smoothing, counts). With
    a row total s = Σ_k d_k the loss is s·logsumexp(z) − dᵀz, so the gradient is
    s·softmax(z) − d and the curvature s·(diag(p) − p pᵀ), p = softmax(z); for labels and
    probabilities s = 1 (softmax(z) − d and diag(p) − p pᵀ).

    Examples
    --------
    >>> loss = CrossEntropyLoss()
    >>> round(loss(np.array([[0.0, 0.0]]), np.array([1])), 6)
    0.693147
    >>> loss.grad(np.array([[0.0, 0.0]]), np.array([1]))
    array([[ 0.5, -0.5]])
    """

    takes_labels = True

    def prepare_target(self, target: Any, n_outputs: int, dtype: Any = np.float64) -> np.ndarray:
        if n_outputs < 2:
            raise ValueError(
                "CrossEntropyLoss needs a network with at least 2 outputs (one logit per "
                "class); for a single logit use BCEWithLogitsLoss."
            )
        arr = check_array(target, "target", ndim=(1, 2), owner="CrossEntropyLoss")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]  # a column of labels (e.g. a one-column DataFrame)
        if arr.ndim == 2:
            return super().prepare_target(arr, n_outputs, dtype)
        return check_labels(arr, n_outputs)

    def per_sample(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        log_p = _log_softmax(prediction)
        if target.ndim == 1:
            return -log_p[np.arange(prediction.shape[0]), target]
        return -np.einsum("ij,ij->i", target, log_p)

    def value_and_grad(self, prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        # One exp serves both: softmax = e / Σe and log-softmax = shifted − log Σe (the
        # profile of a small training step showed the second exp of the log-softmax).
        shifted = prediction - np.maximum.reduce(prediction, axis=1, keepdims=True)
        grad = np.exp(shifted)
        total = np.add.reduce(grad, axis=1, keepdims=True)
        log_total = np.log(total)
        n = prediction.shape[0]
        scale = self._scale(n)
        grad /= total
        if target.ndim == 1:
            # Each label's entry by its flat index, found once for the gather and the
            # one-hot subtraction: two-array fancy indexing made two index iterators
            # (same values, ~12 % fewer instructions for the loss at batch 32).
            m = prediction.shape[1]
            index = np.arange(0, n * m, m)
            index += target
            value = -float(np.add.reduce(shifted.reshape(-1).take(index) - log_total.reshape(-1)))
            grad.reshape(-1)[index] -= 1.0
        else:
            value = -float(np.vdot(target, shifted - log_total))
            # −dᵀ log softmax(z) = s·logsumexp(z) − dᵀz: the softmax term carries the row
            # total s, which is 1 only for probabilities.
            grad *= np.add.reduce(target, axis=1, keepdims=True)
            grad -= target
        grad *= scale
        return value * scale, grad

    @staticmethod
    def _row_totals(target: np.ndarray) -> np.ndarray | None:
        """s = Σ_k d_k per row, shape (B,), for 2-D targets; None for labels (s = 1)."""
        return None if target.ndim == 1 else np.add.reduce(target, axis=1)

    def curvature(self, prediction: np.ndarray, target: np.ndarray) -> PerSample:
        p = np.exp(_log_softmax(prediction))
        hess = -p[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        hess[:, idx, idx] += p
        totals = self._row_totals(target)
        if totals is not None:
            hess *= totals[:, None, None]
        hess *= self._scale(p.shape[0])
        return PerSample(hess)

    def curvature_sqrt(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """√s·S, S = diag(√p) − √p pᵀ, shape (B, m, m): SᵀS = diag(p) − ppᵀ since Σp = 1.

        A row whose total s is negative (negative target entries) has a concave loss; its
        root is 0, as the base class clips negative eigenvalues.
        """
        p = np.exp(_log_softmax(prediction))
        root_p = np.sqrt(p)
        root = -root_p[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        root[:, idx, idx] += root_p
        totals = self._row_totals(target)
        if totals is not None:
            root *= np.sqrt(np.clip(totals, 0.0, None))[:, None, None].astype(root.dtype,
                                                                               copy=False)
        return root


def check_labels(labels: Any, n_classes: int, name: str = "target") -> np.ndarray:
    """Check integer class labels in [0, n_classes) and return them as int64, shape (B,).

    >>> check_labels([0, 2, 1], 3)
    array([0, 2, 1])
    >>> check_labels([0, 3], 3)
    Traceback (most recent call last):
    ...
    ValueError: target labels must be integers in [0, 3); got 3 at index 1. ...
    """
    arr = check_array(labels, name, ndim=1)
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        bad = int(np.flatnonzero(arr != np.round(arr))[0])
        raise ValueError(
            f"{name} labels must be integers; got {arr[bad]} at index {bad}. For soft "
            "targets pass a 2-D array of class probabilities instead."
        )
    codes = arr.astype(np.int64)
    out_of_range = (codes < 0) | (codes >= n_classes)
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"{name} labels must be integers in [0, {n_classes}); got {codes[bad]} at index "
            f"{bad}. The network has {n_classes} outputs: encode the classes as 0..{n_classes - 1} "
            "or widen the output layer."
        )
    return codes


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy from logits, per output: softplus(z) − d z, summed over outputs.

    Targets in [0, 1] of shape (B, m) (or (B,) with one output). Gradient σ(z) − d;
    curvature diag(σ(z)(1 − σ(z))). Stable for logits of any size.

    Examples
    --------
    >>> loss = BCEWithLogitsLoss()
    >>> round(loss(np.array([[0.0]]), np.array([1.0])), 6)
    0.693147
    """

    def prepare_target(self, target: Any, n_outputs: int, dtype: Any = np.float64) -> np.ndarray:
        arr = super().prepare_target(target, n_outputs, dtype)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                "BCEWithLogitsLoss: target values must lie in [0, 1] (labels or "
                f"probabilities); got values from {arr.min()} to {arr.max()}."
            )
        return arr

    @staticmethod
    def _per_output(z: np.ndarray, target: np.ndarray, e: np.ndarray) -> np.ndarray:
        # softplus(z) − d z = max(z, 0) − d z + log1p(e^(−|z|)), stable on both tails
        return np.maximum(z, 0.0) - target * z + np.log1p(e)

    def per_sample(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        e = np.exp(-np.abs(prediction))
        return self._per_output(prediction, target, e).sum(axis=1)

    def value_and_grad(self, prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        z = prediction
        e = np.exp(-np.abs(z))
        per_output = self._per_output(z, target, e)
        scale = self._scale(z.shape[0])
        sigma = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)
        grad = sigma - target
        grad *= scale
        return scale * float(per_output.sum()), grad

    def curvature(self, prediction: np.ndarray, target: np.ndarray) -> Diagonal:
        e = np.exp(-np.abs(prediction))
        # σ(1 − σ) = e^(−|z|) / (1 + e^(−|z|))², symmetric in z
        return Diagonal(e / (1.0 + e) ** 2 * self._scale(prediction.shape[0]))

    def curvature_sqrt(self, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
        """√(σ(1 − σ)) per output, a diagonal root of shape (B, m)."""
        e = np.exp(-np.abs(prediction))
        return np.sqrt(e) / (1.0 + e)


LOSSES: dict[str, type[Loss]] = {
    "mse": MSELoss,
    "cross_entropy": CrossEntropyLoss,
    "ce": CrossEntropyLoss,
    "bce": BCEWithLogitsLoss,
    "bce_with_logits": BCEWithLogitsLoss,
}


def get_loss(name: str | Loss, **kwargs: Any) -> Loss:
    """A loss by name (``"mse"``, ``"cross_entropy"``, ``"bce"``) or the loss itself.

    >>> get_loss("mse")
    MSELoss(reduction='mean')
    """
    if isinstance(name, Loss):
        return name
    key = str(name).lower().replace("-", "_")
    if key not in LOSSES:
        options = ", ".join(repr(k) for k in LOSSES)
        raise ValueError(f"loss must be one of {options}; got {name!r}.")
    return LOSSES[key](**kwargs)
