"""The processor's handling of subnormal numbers: flush them to zero while training.

A float32 below the smallest normal number, 1.18e-38 (float64: 2.2e-308), is
*subnormal*. x86 processors compute with subnormal operands or results in microcode,
roughly 100 times slower per operation than with normal numbers, and training produces
them in bulk: Adam's moments of a unit that stopped receiving gradient (a dead ReLU)
decay geometrically through the subnormal range, softmax probabilities of confidently
wrong classes underflow, and every product with those values is slow too. One epoch of
784-256-10 with Adam slowed from 0.75 s to 1.8 s over five epochs that way.

:func:`flush_denormals` sets the calling thread's floating-point unit to replace
subnormal results by zero (FTZ) and to read subnormal operands as zero (DAZ), and puts
the previous setting back on exit. That changes results only in values smaller than
the smallest normal number, where float32 has already lost its relative precision (a
subnormal carries fewer than 23 significant bits). XLA (so JAX) runs its CPU kernels
this way by default; PyTorch offers the same switch as ``torch.set_flush_denormal``.
:func:`jacnet.training.fit` and the estimators' stochastic solvers train inside it.

Where it works: Linux (glibc or musl) on x86-64, through the MXCSR register's FTZ
(bit 15) and DAZ (bit 6) bits, and Linux on aarch64, through the FPCR's FZ bit (24),
both set with the C library's ``fegetenv``/``fesetenv``. The setting is verified by
arithmetic after it is made and undone if it did not take, so an unexpected C library
leaves the floating-point environment as it was (the aarch64 path has that check as its
test: the test suite has run on x86-64 only). Elsewhere (Windows, macOS) it does
nothing, and :func:`denormals_flushed` says so.

The setting belongs to one thread (a thread started inside the block inherits it).
NumPy's element-wise operations run on the calling thread and follow it; the worker
threads of a multi-threaded BLAS (OpenBLAS's with 2 or more threads, started when NumPy
loads it) keep their own, so the share of a matrix product computed there does not.
Training is covered all the same: its subnormals are born in element-wise operations
(softmax, the moment updates) and flushed there before a product sees them (see
``docs/benchmarks.md``).
"""

from __future__ import annotations

import platform
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ctypes

__all__ = ["denormals_flushed", "flush_denormals"]

_SMALLEST_NORMAL = sys.float_info.min  # 2.2e-308
# A float64 subnormal (2⁻¹⁰²⁴) from its bit pattern, not by arithmetic, so it is one
# even when jacnet is imported inside a flushing block.
_SUBNORMAL: float = struct.unpack("<d", (1 << 50).to_bytes(8, "little"))[0]


def denormals_flushed() -> bool:
    """Whether the calling thread now flushes subnormal results to zero.

    Observed, not looked up: half the smallest normal float64 is computed, and it is
    zero only when the floating-point unit flushes.

    Examples
    --------
    >>> with flush_denormals() as flushing:
    ...     denormals_flushed() == flushing
    True
    """
    half = _SMALLEST_NORMAL
    half *= 0.5
    return half == 0.0


def _operands_as_zero() -> bool:
    """Whether the calling thread reads subnormal operands as zero (x86's DAZ)."""
    value = _SUBNORMAL
    value *= 1.0
    return value == 0.0


class _Environment:
    """The C library's fegetenv/fesetenv and where this machine keeps the flush bits."""

    def __init__(self) -> None:
        self.word = -1  # index of the 32-bit word of fenv_t holding the bits; -1: none
        self.bits = 0
        self.reason = ""
        self._get: Any = None
        self._set: Any = None
        self._uint32: Any = None
        machine = platform.machine().lower()
        if not sys.platform.startswith("linux"):
            self.reason = (f"{sys.platform} is not supported: its C library's fenv_t has "
                           "another layout, so subnormals are computed as they are")
            return
        if machine in ("x86_64", "amd64"):
            # fenv_t on x86-64 Linux: the 28-byte x87 environment, then MXCSR.
            word, bits = 7, (1 << 15) | (1 << 6)  # FTZ, DAZ
        elif machine in ("aarch64", "arm64"):
            # fenv_t on aarch64 Linux: {fpcr, fpsr}; FZ flushes operands and results.
            word, bits = 0, 1 << 24
        else:
            self.reason = f"no known flush-to-zero control on {machine}"
            return
        import ctypes  # here, not at import: `import jacnet` stays light

        self._uint32 = ctypes.c_uint32
        # glibc's libm by name; musl keeps fegetenv in libc, which the process has loaded.
        for name in ("libm.so.6", None):
            try:
                libm = ctypes.CDLL(name)
                self._get, self._set = libm.fegetenv, libm.fesetenv
                break
            except (OSError, AttributeError) as exc:
                self.reason = f"the C library's fegetenv is unavailable ({exc})"
        if self._get is None:
            return
        self.word, self.bits, self.reason = word, bits, ""
        self._get.argtypes = self._set.argtypes = [ctypes.c_void_p]
        self._get.restype = self._set.restype = ctypes.c_int

    def get(self) -> ctypes.Array[ctypes.c_uint32]:
        # Larger than any fenv_t the layouts above describe, so a longer one fits too.
        env = (self._uint32 * 16)()
        if self._get(env) != 0:
            raise OSError("fegetenv failed")
        return env

    def set(self, env: ctypes.Array[ctypes.c_uint32]) -> None:
        if self._set(env) != 0:
            raise OSError("fesetenv failed")

    def flush_bits(self) -> int:
        """The calling thread's flush bits now."""
        return int(self.get()[self.word]) & self.bits

    def set_flush_bits(self, bits: int) -> None:
        """Set the calling thread's flush bits to ``bits`` (the rest as it is)."""
        env = self.get()
        env[self.word] = (env[self.word] & ~self.bits) | bits
        self.set(env)


_ENV: _Environment | None = None
_ENV_LOCK = threading.Lock()


def _environment() -> _Environment:
    global _ENV
    with _ENV_LOCK:
        if _ENV is None:
            _ENV = _Environment()
        return _ENV


@contextmanager
def flush_denormals() -> Iterator[bool]:
    """Flush subnormal floats to zero on the calling thread for the ``with`` block.

    Inside, operations whose exact result is below the smallest normal number (1.18e-38
    in float32, 2.2e-308 in float64) return zero, and subnormal operands count as zero;
    on exit, also through an exception, the thread's previous setting is put back (so
    blocks nest). Subnormal arithmetic costs about 100 times a normal operation on x86,
    and only values below the smallest normal number change.

    The setting is per thread: other threads, including a multi-threaded BLAS's worker
    threads, keep theirs. Exit the block on the thread that entered it.

    Yields
    ------
    bool
        Whether subnormals are flushed inside the block: False where this platform
        offers no control (see the module's notes), and the block then changes nothing.

    Examples
    --------
    >>> tiny = np.float32(1e-38)  # just below float32's smallest normal number
    >>> with flush_denormals() as flushing:
    ...     inside = tiny * np.float32(0.5)
    >>> bool(inside == 0) == flushing, bool(tiny * np.float32(0.5) > 0)
    (True, True)
    """
    env = _environment()
    if env.word < 0:
        yield denormals_flushed()
        return
    try:
        before = env.flush_bits()
        env.set_flush_bits(env.bits)
    except OSError:
        yield denormals_flushed()
        return
    try:
        if not (denormals_flushed() and (env.bits == 1 << 24 or _operands_as_zero())):
            # The bits are not where this C library keeps them: undo, compute as before.
            env.set_flush_bits(before)
            env.word, env.reason = -1, "setting the flush bits had no effect here"
        yield denormals_flushed()
    finally:
        if env.word >= 0:
            env.set_flush_bits(before)
