"""Learning-rate schedules: they change ``optimizer.lr`` once per epoch.

The training loop calls ``schedule.step()`` after each epoch (``step(metric)`` for
:class:`ReduceLROnPlateau`). The values match ``torch.optim.lr_scheduler`` epoch by
epoch: the same recursive ("chainable") formulas are used, so rounding agrees too.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from jacnet.optim.first_order import Optimizer, _check_number

__all__ = [
    "SCHEDULES",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRSchedule",
    "ReduceLROnPlateau",
    "StepLR",
    "get_schedule",
]


class LRSchedule:
    """Base class: holds the optimizer, its initial ``lr`` and the epoch counter.

    Subclasses implement ``_next_lr(lr)``, the learning rate for epoch ``last_epoch``
    given the current one, and list extra state in ``_state_keys``.
    """

    name: ClassVar[str] = ""
    _state_keys: ClassVar[tuple[str, ...]] = ()
    _config: dict[str, Any]

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__} needs a jacnet optimizer (e.g. jacnet.optim.Adam); "
                f"got {type(optimizer).__name__}."
            )
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self) -> float:
        """Advance one epoch, set ``optimizer.lr`` and return it."""
        self.last_epoch += 1
        lr = self._next_lr(float(self.optimizer.lr))
        self.optimizer.lr = lr
        return lr

    def get_last_lr(self) -> float:
        """Return the optimizer's current learning rate."""
        return float(self.optimizer.lr)

    def state_dict(self) -> dict[str, float | int]:
        """Return the schedule's state as plain numbers (for ``np.savez``)."""
        keys = ("base_lr", "last_epoch", *self._state_keys)
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: Any) -> None:
        """Restore a state saved by :meth:`state_dict` (a dict or an ``NpzFile``).

        The optimizer's ``lr`` is part of the optimizer's own state and is not changed.
        """
        expected = {"base_lr", "last_epoch", *self._state_keys}
        if set(state.keys()) != expected:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected keys {sorted(expected)}; "
                f"got {sorted(state.keys())}."
            )
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        for key in self._state_keys:
            current = getattr(self, key)
            setattr(self, key, type(current)(state[key]))

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments other than the optimizer (JSON-able)."""
        return dict(self._config)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._config.items())
        return f"{type(self).__name__}({args})"

    def _next_lr(self, lr: float) -> float:
        raise NotImplementedError


class StepLR(LRSchedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr(epoch) = base_lr * gamma ** (epoch // step_size)``, as ``torch.optim.lr_scheduler.StepLR``.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Epochs between decays, >= 1.
    gamma : float, default 0.1
        Multiplicative factor, > 0.

    Examples
    --------
    >>> from jacnet.optim import SGD
    >>> schedule = StepLR(SGD(lr=1.0), step_size=2, gamma=0.5)
    >>> [schedule.step() for _ in range(4)]
    [1.0, 0.5, 0.5, 0.25]
    """

    name = "step"

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size = _check_number(step_size, "step_size", "StepLR", low=1, integer=True)
        self.gamma = _check_number(gamma, "gamma", "StepLR", low=0.0, low_closed=False)
        self._config = {"step_size": self.step_size, "gamma": self.gamma}

    def _next_lr(self, lr: float) -> float:
        return lr * self.gamma if self.last_epoch % self.step_size == 0 else lr


class ExponentialLR(LRSchedule):
    """Multiply the learning rate by ``gamma`` every epoch: ``lr = base_lr * gamma ** epoch``.

    Parameters
    ----------
    optimizer : Optimizer
    gamma : float
        Multiplicative factor, > 0.

    Examples
    --------
    >>> from jacnet.optim import SGD
    >>> schedule = ExponentialLR(SGD(lr=1.0), gamma=0.5)
    >>> [schedule.step() for _ in range(3)]
    [0.5, 0.25, 0.125]
    """

    name = "exponential"

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        super().__init__(optimizer)
        self.gamma = _check_number(gamma, "gamma", "ExponentialLR", low=0.0, low_closed=False)
        self._config = {"gamma": self.gamma}

    def _next_lr(self, lr: float) -> float:
        return lr * self.gamma


class CosineAnnealingLR(LRSchedule):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs.

    ``lr(epoch) = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``,
    computed recursively as ``torch.optim.lr_scheduler.CosineAnnealingLR`` does (past
    ``T_max`` the learning rate rises again, periodically).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Half period in epochs, >= 1.
    eta_min : float, default 0.0
        Smallest learning rate, >= 0.

    Examples
    --------
    >>> from jacnet.optim import SGD
    >>> schedule = CosineAnnealingLR(SGD(lr=1.0), T_max=2)
    >>> [round(schedule.step(), 12) for _ in range(4)]
    [0.5, 0.0, 0.5, 1.0]
    """

    name = "cosine"

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        self.T_max = _check_number(T_max, "T_max", "CosineAnnealingLR", low=1, integer=True)
        self.eta_min = _check_number(eta_min, "eta_min", "CosineAnnealingLR", low=0.0)
        self._config = {"T_max": self.T_max, "eta_min": self.eta_min}

    def _next_lr(self, lr: float) -> float:
        epoch, period, eta_min = self.last_epoch, self.T_max, self.eta_min
        if (epoch - 1 - period) % (2 * period) == 0:  # the trough: recursion would divide by 0
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / period)) / 2
        return (1 + math.cos(math.pi * epoch / period)) / (
            1 + math.cos(math.pi * (epoch - 1) / period)
        ) * (lr - eta_min) + eta_min


class ReduceLROnPlateau(LRSchedule):
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    A metric improves when it beats the best so far by more than ``threshold``
    (relative: ``best * (1 - threshold)`` in "min" mode). After more than ``patience``
    epochs without improvement, ``lr = max(lr * factor, min_lr)``; then ``cooldown``
    epochs are ignored. As ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}, default "min"
        Whether the metric should decrease (a loss) or increase (an accuracy).
    factor : float, default 0.1
        Multiplicative factor in (0, 1).
    patience : int, default 10
        Epochs without improvement tolerated, >= 0.
    threshold : float, default 1e-4
        Smallest improvement that counts, >= 0.
    min_lr : float, default 0.0
        Lower bound on the learning rate, >= 0.
    threshold_mode : {"rel", "abs"}, default "rel"
        Relative or absolute threshold.
    cooldown : int, default 0
        Epochs to wait after a reduction before counting again, >= 0.
    eps : float, default 1e-8
        Reductions smaller than this are skipped, >= 0.

    Examples
    --------
    >>> from jacnet.optim import SGD
    >>> schedule = ReduceLROnPlateau(SGD(lr=1.0), factor=0.5, patience=1)
    >>> [schedule.step(loss) for loss in [3.0, 2.0, 2.0, 2.0, 2.0]]
    [1.0, 1.0, 1.0, 0.5, 0.5]
    """

    name = "plateau"
    _state_keys = ("best", "num_bad_epochs", "cooldown_counter")

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        min_lr: float = 0.0,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(optimizer)
        owner = "ReduceLROnPlateau"
        for value, name, choices in (
            (mode, "mode", ("min", "max")),
            (threshold_mode, "threshold_mode", ("rel", "abs")),
        ):
            if value not in choices:
                raise ValueError(
                    f"The {name!r} parameter of {owner} must be one of "
                    f"{', '.join(map(repr, choices))}; got {value!r} instead."
                )
        self.mode, self.threshold_mode = str(mode), str(threshold_mode)
        self.factor = _check_number(factor, "factor", owner, low=0.0, high=1.0, low_closed=False)
        self.patience = _check_number(patience, "patience", owner, low=0, integer=True)
        self.threshold = _check_number(threshold, "threshold", owner, low=0.0)
        self.min_lr = _check_number(min_lr, "min_lr", owner, low=0.0)
        self.cooldown = _check_number(cooldown, "cooldown", owner, low=0, integer=True)
        self.eps = _check_number(eps, "eps", owner, low=0.0)
        self._config = {
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "min_lr": self.min_lr,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "eps": self.eps,
        }
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def step(self, metric: float) -> float:  # type: ignore[override]
        """Record this epoch's ``metric``, maybe reduce ``optimizer.lr``, and return it."""
        try:
            current = float(metric)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"ReduceLROnPlateau.step needs the monitored metric as a number "
                f"(e.g. the validation loss); got {metric!r}."
            ) from exc
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old_lr = float(self.optimizer.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return float(self.optimizer.lr)

    def _is_better(self, value: float) -> bool:
        best, threshold = self.best, self.threshold
        if self.mode == "min":
            bound = best * (1.0 - threshold) if self.threshold_mode == "rel" else best - threshold
            return value < bound
        bound = best * (threshold + 1.0) if self.threshold_mode == "rel" else best + threshold
        return value > bound


SCHEDULES: dict[str, type[LRSchedule]] = {
    cls.name: cls for cls in (StepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau)
}


def get_schedule(name: str, optimizer: Optimizer, **kwargs: Any) -> LRSchedule:
    """Build a schedule from its name: "step", "exponential", "cosine" or "plateau".

    Examples
    --------
    >>> from jacnet.optim import SGD
    >>> get_schedule("cosine", SGD(lr=0.1), T_max=10)
    CosineAnnealingLR(T_max=10, eta_min=0.0)
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in SCHEDULES:
        options = ", ".join(repr(option) for option in sorted(SCHEDULES))
        raise ValueError(f"Unknown schedule {name!r}; choose one of {options}.")
    return SCHEDULES[key](optimizer, **kwargs)
