"""Optional one-pass Adam/AdamW update compiled with numba (``pip install 'jacnet[fast]'``).

The NumPy path of :class:`jacnet.optim.Adam` makes 13 whole-vector passes, each one of
``torch.optim.Adam``'s operations in its order. The kernel below makes one pass and, per
element, the same IEEE operations in the same order and precision: every constant is
cast to the array's dtype first, as NumPy 2 casts a Python float operand ("weak"
scalar), and numba compiles without fastmath, so nothing is contracted into an FMA or
reassociated. Its results are therefore bit-identical to the NumPy path's.

numba is imported only by :func:`load_adam_kernel`, on the first step that uses it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, cast

import numpy as np

#: Values of the kernel's ``decay_mode`` argument.
NO_DECAY, L2_SCALAR, L2_ARRAY, DECOUPLED, DECOUPLED_MASKED = range(5)

INSTALL_HINT = "pip install 'jacnet[fast]'"

_kernel: Callable[..., None] | None = None


def numba_available() -> bool:
    """Whether numba can be imported (checked without importing it)."""
    return importlib.util.find_spec("numba") is not None


def _adam_update(
    params: Any, grads: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any,
    decay: Any, mask: Any, decay_mode: int, amsgrad: bool, decay_scalar: Any,
    one_minus_beta1: Any, one_minus_beta2: Any, beta2: Any, bias_correction2_sqrt: Any,
    eps: Any, negative_step_size: Any,
) -> None:  # pragma: no cover - runs compiled
    # Each line is one NumPy pass of Adam._update, in its order (the comments name them).
    for i in range(params.shape[0]):
        p = params[i]
        g = grads[i]
        if decay_mode == 1:  # effective = params * weight_decay; effective += grads
            g = p * decay_scalar + g
        elif decay_mode == 2:  # the masked decay is an array (weight_decay or 0)
            g = p * decay[i] + g
        elif decay_mode == 3 or (decay_mode == 4 and mask[i]):  # AdamW (where the mask is True)
            p = p * decay_scalar  # params *= 1 - lr * weight_decay
        m = exp_avg[i]
        m = m + (g - m) * one_minus_beta1  # tmp = g - m; tmp *= 1 - b1; m += tmp
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + g * one_minus_beta2 * g  # tmp = g*(1-b2); tmp *= g; v*=b2; v+=tmp
        exp_avg_sq[i] = v
        if amsgrad:  # np.maximum(max_v, v): the first operand if NaN or >=
            top = max_exp_avg_sq[i]
            if not (top >= v or top != top):
                top = v
            max_exp_avg_sq[i] = top
            v = top
        denominator = np.sqrt(v) / bias_correction2_sqrt + eps  # sqrt; /= ...; += eps
        params[i] = p + m / denominator * negative_step_size  # m / tmp; *= -step; params += tmp


def load_adam_kernel() -> Callable[..., None]:
    """Compile (once per process; cached on disk by numba) and return the Adam kernel.

    Raises
    ------
    ImportError
        numba is not installed; the message names ``pip install 'jacnet[fast]'``.
    """
    global _kernel
    if _kernel is None:
        try:
            import numba
        except ImportError as exc:
            raise ImportError(
                f"The fused Adam update needs numba, which is not installed: {INSTALL_HINT} "
                "(or pass fused=False to use the NumPy update)."
            ) from exc
        # fastmath=False (numba's default) is what keeps every rounding NumPy's.
        def compiled(cache: bool) -> Callable[..., None]:
            jit = numba.njit(cache=cache, nogil=True, fastmath=False, error_model="numpy")
            return cast(Callable[..., None], jit(_adam_update))

        try:  # the compiled code is cached beside the module, or in the user's cache
            _kernel = compiled(cache=True)
        except RuntimeError:  # no writable cache location: compile in every process
            _kernel = compiled(cache=False)
    return _kernel


def fused_constants(dtype: np.dtype[Any], values: dict[str, float]) -> dict[str, Any]:
    """Cast Python floats to ``dtype`` as NumPy 2 casts a weak scalar operand."""
    cast = dtype.type
    return {key: cast(value) for key, value in values.items()}
