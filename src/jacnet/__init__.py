"""jacnet: neural networks in which back-propagation is Jacobian algebra.

>>> import jacnet
>>> model = jacnet.mlp([4, 8, 3], activation="tanh", seed=0)
>>> model(np.zeros((2, 4))).shape
(2, 3)
"""

from __future__ import annotations

from jacnet.checks import CheckReport, GradientCheckError, gradcheck, jacobian_check
from jacnet.explain import Explanation, explain
from jacnet.fpu import denormals_flushed, flush_denormals
from jacnet.jacobians import (
    BlockRow,
    Diagonal,
    JacobianOperator,
    Kronecker,
    Matrix,
    PerSample,
    compose,
)
from jacnet.layers import (
    GELU,
    Dropout,
    Identity,
    Layer,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)
from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss, get_loss
from jacnet.network import Sequential, jacobian, mlp
from jacnet.training import History

__version__ = "0.1.0"

__all__ = [
    "GELU",
    "BCEWithLogitsLoss",
    "BlockRow",
    "CheckReport",
    "CrossEntropyLoss",
    "Diagonal",
    "Dropout",
    "Explanation",
    "GradientCheckError",
    "History",
    "Identity",
    "JacobianOperator",
    "Kronecker",
    "Layer",
    "LeakyReLU",
    "Linear",
    "Loss",
    "MSELoss",
    "Matrix",
    "PerSample",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "compose",
    "denormals_flushed",
    "explain",
    "flush_denormals",
    "get_loss",
    "gradcheck",
    "jacobian",
    "jacobian_check",
    "mlp",
]
