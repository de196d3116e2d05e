"""Optimizers on the model's flat parameter vector, and learning-rate schedules.

Every optimizer updates one 1-D ``params`` array in place from ``grads``; see
``first_order`` (SGD, Adam, AdamW, RMSprop) and ``schedules``. New optimizers add
their module below and register in ``OPTIMIZERS`` if ``get_optimizer`` should build them.
"""

from __future__ import annotations

from jacnet.optim.first_order import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    clip_grad_norm,
    get_optimizer,
)
from jacnet.optim.schedules import (
    SCHEDULES,
    CosineAnnealingLR,
    ExponentialLR,
    LRSchedule,
    ReduceLROnPlateau,
    StepLR,
    get_schedule,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRSchedule",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepLR",
    "clip_grad_norm",
    "get_optimizer",
    "get_schedule",
]

from jacnet.optim.second_order import (  # registers "lm", "gn", "br"
    BayesianRegularization,
    GaussNewton,
    LevenbergMarquardt,
    SecondOrderOptimizer,
)

__all__ += ["BayesianRegularization", "GaussNewton", "LevenbergMarquardt", "SecondOrderOptimizer"]
