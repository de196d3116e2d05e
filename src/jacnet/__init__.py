"""jacnet: neural networks in which back-propagation is Jacobian algebra."""

from __future__ import annotations

__version__ = "0.1.0"
