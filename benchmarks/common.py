"""Shared benchmark machinery: thread pinning, interleaved timing, the contenders' models.

Every benchmark script imports this module *before* NumPy or PyTorch so that the thread
count (``--threads``, default 2) is fixed for every library the same way: the
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` variables are set first,
then threadpoolctl (when installed) and ``torch.set_num_threads`` confirm it.

Timing is interleaved: each repeat runs every contender once, in a rotating order, so
that a noisy neighbour on a shared machine slows all contenders alike; the report is
the median per contender and ratios of medians.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def threads_from_argv(argv: Sequence[str] | None = None, default: int = 2) -> int:
    """Read ``--threads N`` from the command line before anything imports NumPy."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return default


def pin_threads(n_threads: int) -> None:
    """Give every BLAS/OpenMP pool ``n_threads`` threads (call before importing NumPy)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n_threads)


N_THREADS = threads_from_argv()
pin_threads(N_THREADS)

import numpy as np  # noqa: E402  (after the thread variables on purpose)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(REPO_ROOT, "src") not in sys.path:
    sys.path.insert(0, os.path.join(REPO_ROOT, "src"))


def import_torch() -> Any:
    """PyTorch with the same thread count, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(N_THREADS)
    return torch


def import_jax() -> Any:
    """JAX on the CPU with the same thread count, or None when it is not installed.

    XLA has no thread-count option of its own: with one thread the Eigen pool is switched
    off (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``); with more
    it uses every core this process may run on, so ``--threads N`` below the core count
    also restricts the process's CPU affinity (see :func:`restrict_affinity`). Either way
    :func:`parallelism` measures what each library really uses, and the report prints it.
    """
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if N_THREADS == 1 and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1").strip()
    try:
        import jax
        import optax  # noqa: F401  (the optimizers of the JAX contender)
    except ImportError:
        return None
    return jax


def restrict_affinity(n_threads: int) -> bool:
    """Run this process on its first ``n_threads`` allowed cores (for every library alike);
    False where the platform cannot."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
        if n_threads < len(allowed):
            os.sched_setaffinity(0, allowed[:n_threads])
        return True
    except (AttributeError, OSError):
        return False


def parallelism(fn: Callable[[], Any], seconds: float = 0.3) -> float:
    """CPU time ÷ wall time while ``fn`` runs repeatedly for about ``seconds``: about the
    number of threads it keeps busy (the check that a thread setting took effect)."""
    fn()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        fn()
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def machine_description() -> dict[str, str]:
    """CPU, memory, library versions and the BLAS kernel in use, for the report."""
    info: dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu"] = f"{cpu}, {os.cpu_count()} logical cores"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        info["memory"] = f"{kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info["threads"] = str(N_THREADS)
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE", "(unset)")
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"
                and "numpy" in p.get("filepath", "")]
        if blas:
            info["numpy BLAS"] = (f"{blas[0].get('internal_api')} {blas[0].get('version')} "
                                  f"kernel {blas[0].get('architecture')}, "
                                  f"{blas[0].get('num_threads')} threads")
    except ImportError:
        pass
    torch = import_torch()
    if torch is not None:
        info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    try:
        import sklearn

        info["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    return info


def interleaved(
    contenders: dict[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 2,
    inner: int = 1,
    min_time: float = 0.0,
    budget: float | None = None,
) -> dict[str, list[float]]:
    """Time each contender ``repeats`` times, round-robin in rotating order.

    Parameters
    ----------
    contenders : dict name → zero-argument callable
    repeats : int
        Samples per contender.
    warmup : int
        Untimed rounds first (allocations, caches, lazy initialisation).
    inner : int
        Calls per sample (the sample is the mean over them); raised automatically so
        that one sample lasts at least ``min_time`` seconds (from the median of three
        calibration calls).
    budget : float, optional
        Stop after this many seconds once 5 repeats are done (a loaded machine can make
        a contender's calls many times slower than usual).

    Returns
    -------
    dict name → list of seconds per call.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    inners = dict.fromkeys(names, inner)
    if min_time > 0:
        for name in names:
            calls = []
            for _ in range(3):
                start = time.perf_counter()
                contenders[name]()
                calls.append(time.perf_counter() - start)
            inners[name] = max(inner, int(min_time / max(median(calls), 1e-9)) + 1)
    samples: dict[str, list[float]] = {name: [] for name in names}
    began = time.perf_counter()
    for r in range(repeats):
        if budget is not None and r >= 5 and time.perf_counter() - began > budget:
            break
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn, n_calls = contenders[name], inners[name]
            start = time.perf_counter()
            for _ in range(n_calls):
                fn()
            samples[name].append((time.perf_counter() - start) / n_calls)
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ratio: float, target: float) -> str:
    return "reached" if ratio <= target else "**not reached**"


# ---------------------------------------------------------------------------------
# The contenders' models, all built from one jacnet model's initial parameters.
# ---------------------------------------------------------------------------------
def layer_arrays(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every Linear layer of a jacnet Sequential, as views."""
    return [(layer.weight, layer.bias) for layer in model.layers if layer.n_params]


def torch_mlp(model: Any, activation: str = "relu") -> Any:
    """A ``torch.nn.Sequential`` with the same architecture and a copy of the weights."""
    torch = import_torch()
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    modules = []
    pairs = layer_arrays(model)
    for i, (weight, bias) in enumerate(pairs):
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float32)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(weight)))
            linear.bias.copy_(torch.from_numpy(np.array(bias)))
        modules.append(linear)
        if i < len(pairs) - 1:
            modules.append(acts[activation]())
    return torch.nn.Sequential(*modules)


class NumpyMLP:
    """The floor: a minimal hand-written NumPy ReLU MLP training step, no abstraction.

    Parameters live in one flat float32 vector (so the optimizer is a few whole-vector
    operations, the cheapest form), with each layer's weight (out, in) and bias as views.
    The loss is softmax cross-entropy from logits with integer labels, mean over the batch.
    """

    def __init__(self, model: Any, optimizer: str, lr: float) -> None:
        self.params = np.array(model.params)
        self.grads = np.zeros_like(self.params)
        self.layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        offset = 0
        for weight, bias in layer_arrays(model):
            n_w, n_b = weight.size, bias.size
            W = self.params[offset:offset + n_w].reshape(weight.shape)
            gW = self.grads[offset:offset + n_w].reshape(weight.shape)
            b = self.params[offset + n_w:offset + n_w + n_b]
            gb = self.grads[offset + n_w:offset + n_w + n_b]
            self.layers.append((W, b, gW, gb))
            offset += n_w + n_b
        self.optimizer, self.lr = optimizer, lr
        self.m = np.zeros_like(self.params)
        self.v = np.zeros_like(self.params)
        self.tmp = np.zeros_like(self.params)
        self.t = 0

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        acts = [X]
        h = X
        last = len(self.layers) - 1
        for i, (W, b, _, _) in enumerate(self.layers):
            h = h @ W.T
            h += b
            if i < last:
                np.maximum(h, 0.0, out=h)
            acts.append(h)
        # loss = mean(log Σ exp(z) − z_y); gradient (softmax(z) − onehot(y)) / B
        logits = acts[-1]
        logits -= logits.max(axis=1, keepdims=True)
        n = X.shape[0]
        rows = np.arange(n)
        picked = logits[rows, y]
        np.exp(logits, out=logits)
        total = logits.sum(axis=1, keepdims=True)
        loss = float(np.log(total).sum() - picked.sum()) / n
        logits /= total
        logits[rows, y] -= 1.0
        logits *= 1.0 / n
        g = logits
        for i in range(last, -1, -1):
            W, _, gW, gb = self.layers[i]
            np.matmul(g.T, acts[i], out=gW)
            g.sum(axis=0, out=gb)
            if i > 0:
                g = g @ W
                g *= acts[i] > 0
        if self.optimizer == "sgd":
            self.grads *= -self.lr
            self.params += self.grads
            return loss
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        m, v, tmp, grad = self.m, self.v, self.tmp, self.grads
        m *= b1
        np.multiply(grad, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / (1.0 - b2**self.t) ** 0.5
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= -self.lr / (1.0 - b1**self.t)
        self.params += tmp
        return loss


# Fewer threads than cores: every library (XLA included, which has no thread option for
# N > 1) runs on the same N cores.
AFFINITY_SET = restrict_affinity(N_THREADS)


def write_report(report: Sequence[str], markdown: str | None) -> None:
    """Print the report's sections, and write them to ``markdown`` when a path is given."""
    text = "\n".join(report)
    print("\n" + text)
    if markdown:
        with open(markdown, "w") as f:
            f.write(text)
