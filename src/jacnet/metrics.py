"""Metrics: accuracy for classification, MSE, MAE and R² for regression.

Each metric is a small streaming object: the training loop calls ``update`` once per
mini-batch with the network's raw outputs and the prepared targets, then ``result``
at the end of the epoch, so the training metrics cost one cheap reduction per batch
and no extra pass over the data. Called directly, ``metric(prediction, target)``
checks its arguments and returns the value for the whole array.

Predictions are what the network outputs: logits for cross-entropy (accuracy takes the
arg-max) or for binary cross-entropy (accuracy thresholds at 0), values for regression.
Sums are accumulated in Python floats (float64), whatever the network's dtype.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from jacnet._validation import check_array
from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss

__all__ = [
    "MAE",
    "METRICS",
    "MSE",
    "R2",
    "Accuracy",
    "Metric",
    "accuracy",
    "default_metrics",
    "get_metric",
    "mean_absolute_error",
    "mean_squared_error",
    "r2_score",
]


class Metric:
    """Base class: ``reset``, ``update(prediction, target)`` per batch, ``result()``.

    Attributes
    ----------
    name : str
        Key in the training history (``"accuracy"``; ``"val_accuracy"`` on validation data).
    greater_is_better : bool
        True for accuracy and R², False for errors.
    """

    name: ClassVar[str] = ""
    greater_is_better: ClassVar[bool] = False

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        raise NotImplementedError

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one batch: ``prediction`` (B, m) network outputs, ``target`` as prepared by the loss."""
        raise NotImplementedError

    def result(self) -> float:
        """The metric over every sample passed to :meth:`update` since :meth:`reset`."""
        raise NotImplementedError

    def totals(self, n_outputs: int) -> np.ndarray:
        """The running sums behind :meth:`result`, as one float64 array.

        A data-parallel run adds these over the processes (one ``Allreduce``) and hands
        the sum back to :meth:`set_totals`, so a metric is exact over every shard's rows.
        ``n_outputs`` (the network's outputs) fixes the length even on a rank that saw no rows.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot be combined across processes; implement "
            "totals(n_outputs) and set_totals(array) (its running sums) to use it in a "
            "data-parallel run.")

    def set_totals(self, totals: np.ndarray) -> None:
        """Replace the running sums with ``totals`` (as :meth:`totals` lays them out)."""
        raise NotImplementedError

    def __call__(self, prediction: Any, target: Any) -> float:
        """The metric of a whole ``prediction`` (B, m) against ``target`` (B,) or (B, m)."""
        pred = check_array(prediction, "prediction", owner=type(self).__name__)
        tgt = check_array(target, "target", ndim=(1, 2), owner=type(self).__name__)
        if tgt.shape[0] != pred.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: prediction has {pred.shape[0]} rows but target has "
                f"{tgt.shape[0]}; they must match row for row."
            )
        self.reset()
        self.update(pred, self._shape_target(tgt, pred))
        value = self.result()
        self.reset()
        return value

    def _shape_target(self, target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        if target.ndim == 1 and prediction.shape[1] == 1:
            return target.reshape(-1, 1)
        if target.ndim == 2 and target.shape[1] != prediction.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: target has {target.shape[1]} columns but prediction "
                f"has {prediction.shape[1]}."
            )
        return target

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Accuracy(Metric):
    """Fraction of correct predictions.

    With several outputs the predicted class is the arg-max of the row and the target
    is a class label (B,) or a one-hot/probability row (B, m), compared by arg-max.
    With one output the prediction is a logit thresholded at ``threshold`` (0 for
    logits; pass 0.5 for sigmoid probabilities) and the target a 0/1 value; so is every
    output when ``multilabel`` is True (binary cross-entropy on several outputs), and the
    result is then the fraction of correct (sample, output) pairs.

    Examples
    --------
    >>> Accuracy()(np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), np.array([0, 1, 1]))
    0.6666666666666666
    >>> Accuracy()(np.array([[1.5], [-0.5]]), np.array([1.0, 1.0]))
    0.5
    """

    name = "accuracy"
    greater_is_better = True

    def __init__(self, threshold: float = 0.0, *, multilabel: bool = False) -> None:
        self.threshold = float(threshold)
        self.multilabel = bool(multilabel)
        super().__init__()

    def reset(self) -> None:
        self._correct = 0
        self._count = 0

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        if self.multilabel or prediction.shape[1] == 1:
            hit = (prediction > self.threshold) == (target.reshape(prediction.shape) > 0.5)
            self._correct += int(np.count_nonzero(hit))
            self._count += hit.size
            return
        predicted = prediction.argmax(axis=1)
        labels = target.argmax(axis=1) if target.ndim == 2 else target
        self._correct += int(np.count_nonzero(predicted == labels))
        self._count += predicted.shape[0]

    def result(self) -> float:
        return self._correct / self._count if self._count else float("nan")

    def totals(self, n_outputs: int) -> np.ndarray:
        return np.array([self._correct, self._count], dtype=np.float64)

    def set_totals(self, totals: np.ndarray) -> None:
        self._correct, self._count = round(float(totals[0])), round(float(totals[1]))


class _ErrorMetric(Metric):
    """Mean over every sample and output of f(prediction − target)."""

    def reset(self) -> None:
        self._total = 0.0
        self._count = 0

    def _reduce(self, diff: np.ndarray) -> float:
        raise NotImplementedError

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        diff = prediction - target.reshape(prediction.shape)
        self._total += self._reduce(diff)
        self._count += diff.size

    def result(self) -> float:
        return self._total / self._count if self._count else float("nan")

    def totals(self, n_outputs: int) -> np.ndarray:
        return np.array([self._total, self._count], dtype=np.float64)

    def set_totals(self, totals: np.ndarray) -> None:
        self._total, self._count = float(totals[0]), round(float(totals[1]))


class MSE(_ErrorMetric):
    """Mean squared error over all samples and outputs, mean((z − d)²), as scikit-learn.

    Note the training loss ``MSELoss`` is ½‖z − d‖² per sample; this metric is the
    conventional figure to report.

    Examples
    --------
    >>> MSE()(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]))
    2.5
    """

    name = "mse"

    def _reduce(self, diff: np.ndarray) -> float:
        flat = diff.reshape(-1)
        return float(np.dot(flat, flat))


class MAE(_ErrorMetric):
    """Mean absolute error over all samples and outputs, mean(|z − d|).

    Examples
    --------
    >>> MAE()(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]))
    1.5
    """

    name = "mae"

    def _reduce(self, diff: np.ndarray) -> float:
        return float(np.abs(diff).sum())


class R2(Metric):
    """Coefficient of determination 1 − SS_res/SS_tot, averaged over outputs (as scikit-learn).

    Accumulated from running sums, so batches may arrive in any order. An output whose
    target is constant scores 1 if predicted exactly, else 0 (scikit-learn's convention).

    Examples
    --------
    >>> round(R2()(np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0])), 6)
    0.785714
    """

    name = "r2"
    greater_is_better = True

    def reset(self) -> None:
        self._count = 0
        self._sum: np.ndarray | float = 0.0
        self._sum_sq: np.ndarray | float = 0.0
        self._ss_res: np.ndarray | float = 0.0

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        target = target.reshape(prediction.shape).astype(np.float64, copy=False)
        diff = prediction.astype(np.float64, copy=False) - target
        self._ss_res = self._ss_res + (diff * diff).sum(axis=0)
        self._sum = self._sum + target.sum(axis=0)
        self._sum_sq = self._sum_sq + (target * target).sum(axis=0)
        self._count += int(prediction.shape[0])

    def result(self) -> float:
        if self._count == 0:
            return float("nan")
        mean = np.asarray(self._sum) / self._count
        ss_tot = np.maximum(np.asarray(self._sum_sq) - self._count * mean * mean, 0.0)
        ss_res = np.asarray(self._ss_res)
        # A constant target column (ss_tot ~ 0 up to rounding of the running sums).
        constant = ss_tot <= 1e-12 * np.maximum(np.asarray(self._sum_sq), 1e-300)
        scores = np.where(constant, np.where(ss_res == 0.0, 1.0, 0.0),
                          1.0 - ss_res / np.where(constant, 1.0, ss_tot))
        return float(np.mean(scores))

    def totals(self, n_outputs: int) -> np.ndarray:
        sums = [np.broadcast_to(np.asarray(v, dtype=np.float64), (n_outputs,))
                for v in (self._sum, self._sum_sq, self._ss_res)]
        return np.concatenate([[float(self._count)], *sums])

    def set_totals(self, totals: np.ndarray) -> None:
        self._count = round(float(totals[0]))
        self._sum, self._sum_sq, self._ss_res = (np.array(part) for part in
                                                 np.split(np.asarray(totals[1:]), 3))


METRICS: dict[str, type[Metric]] = {
    "accuracy": Accuracy,
    "acc": Accuracy,
    "mse": MSE,
    "mae": MAE,
    "r2": R2,
}


def get_metric(metric: str | Metric) -> Metric:
    """A metric by name (``"accuracy"``, ``"mse"``, ``"mae"``, ``"r2"``) or the metric itself.

    >>> get_metric("r2")
    R2()
    """
    if isinstance(metric, Metric):
        return metric
    key = str(metric).lower()
    if key not in METRICS:
        options = ", ".join(repr(k) for k in METRICS)
        raise ValueError(f"metrics must name one of {options}; got {metric!r}.")
    return METRICS[key]()


def default_metrics(loss: Loss) -> list[Metric]:
    """The metrics the training loop reports by default for ``loss``.

    Accuracy for (binary) cross-entropy, MSE, MAE and R² for regression losses.

    >>> from jacnet.losses import MSELoss
    >>> [m.name for m in default_metrics(MSELoss())]
    ['mse', 'mae', 'r2']
    """
    if isinstance(loss, CrossEntropyLoss):
        return [Accuracy()]
    if isinstance(loss, BCEWithLogitsLoss):
        return [Accuracy(multilabel=True)]
    return [MSE(), MAE(), R2()]


def accuracy(target: Any, prediction: Any) -> float:
    """Fraction of correct predictions; see :class:`Accuracy` for what counts as correct.

    >>> accuracy([0, 1], np.array([[0.9, 0.1], [0.8, 0.2]]))
    0.5
    """
    return Accuracy()(np.asarray(prediction, dtype=float), target)


def mean_squared_error(target: Any, prediction: Any) -> float:
    """Mean over samples and outputs of (prediction − target)².

    >>> mean_squared_error([1.0, 2.0], [[1.0], [4.0]])
    2.0
    """
    return MSE()(_as_2d(prediction), target)


def mean_absolute_error(target: Any, prediction: Any) -> float:
    """Mean over samples and outputs of |prediction − target|.

    >>> mean_absolute_error([1.0, 2.0], [[1.0], [4.0]])
    1.0
    """
    return MAE()(_as_2d(prediction), target)


def r2_score(target: Any, prediction: Any) -> float:
    """Coefficient of determination, averaged over outputs.

    >>> r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    1.0
    """
    return R2()(_as_2d(prediction), target)


def _as_2d(prediction: Any) -> np.ndarray:
    arr = np.asarray(prediction, dtype=float)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr
