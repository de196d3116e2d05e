"""Where a jacnet training step goes: NumPy calls, instructions and time per phase.

Load-independent figures first, because the machine these benchmarks run on is shared:

- ``--count``: NumPy entries per step, i.e. every call from the Python interpreter into
  NumPy's C library (a ufunc such as ``a += b`` or ``x @ w.T``, a reduction, an array
  method, an attribute read, an array freed), and the CPU instructions per step. Both
  come from ``valgrind --tool=callgrind`` (needs valgrind): the script runs itself under
  callgrind, collecting instructions only during ``--steps`` steps after 3 warm-up steps
  (so import and start-up drop out and the count repeats exactly), and counts the calls
  as the difference between full runs with and without the counted steps.
- ``--time``: the step split into forward, loss, backward and optimizer update
  (medians of interleaved repeats; these do depend on the load).

Usage::

    .venv/bin/python benchmarks/profile_step.py --count            # all configurations
    .venv/bin/python benchmarks/profile_step.py --time --threads 1
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import common  # sets the thread variables before NumPy is imported
import numpy as np
from common import fmt_time, markdown_table, median

import jacnet
from jacnet.losses import CrossEntropyLoss
from jacnet.optim import get_optimizer

CONFIGS = [
    ((64, 32, 10), 32),
    ((64, 128, 10), 128),
    ((784, 256, 256, 10), 128),
    ((784, 1024, 1024, 10), 512),
]
LR = {"sgd": 0.01, "adam": 1e-3}
NUMPY_OBJECT = re.compile(r"_multiarray_umath|_umath_linalg|numpy")


def setup(sizes: tuple[int, ...], batch: int, optimizer: str) -> dict[str, Any]:
    """The model, batch, loss and optimizer of one configuration (as bench_train.py)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    model = jacnet.mlp(sizes, activation="relu", seed=0, dtype="float32")
    return {"model": model, "X": X, "y": y, "loss": CrossEntropyLoss(),
            "opt": get_optimizer(optimizer, lr=LR[optimizer])}


def step(s: dict[str, Any]) -> float:
    """The per-batch work of ``jacnet.training.fit``."""
    model = s["model"]
    out = model.forward(s["X"])
    value, grad = s["loss"].value_and_grad(out, s["y"])
    model.backward(grad, input_grad=False)
    s["opt"].step(model.params, model.grads)
    return value


# --------------------------------------------------------------------------- callgrind
def _child(config: int, optimizer: str, n_steps: int) -> None:
    sizes, batch = CONFIGS[config]
    s = setup(sizes, batch, optimizer)
    for _ in range(3):
        step(s)
    # callgrind collects only inside functools.reduce (--toggle-collect): the counted
    # steps, without start-up, import and warm-up, whose counts vary from run to run.
    functools.reduce(lambda _, __: step(s), range(n_steps), None)


def _parse_callgrind(path: str) -> tuple[int, collections.Counter[str]]:
    """Total instructions, and calls from the interpreter into NumPy by callee name."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}
    total = 0
    calls: collections.Counter[str] = collections.Counter()
    ob = fn = cob = cfn = ""
    pending_calls = 0

    def resolve(kind: str, value: str) -> str:
        match = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not match:
            return value
        key, name = match.groups()
        table = names["ob" if kind.endswith("ob") else "fn"]
        if name is not None:
            table[key] = name
        return table.get(key, key)

    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
            elif line.startswith("ob="):
                ob = resolve("ob", line[3:].strip())
            elif line.startswith("fn="):
                fn = resolve("fn", line[3:].strip())
                cob = ob
            elif line.startswith("cob="):
                cob = resolve("cob", line[4:].strip())
            elif line.startswith(("cfn=", "cfi=", "cfl=")):
                if line.startswith("cfn="):
                    cfn = resolve("cfn", line[4:].strip())
            elif line.startswith("calls="):
                pending_calls = int(line.split("=")[1].split()[0])
            elif pending_calls and line[:1] in "0123456789+-*":
                # the cost line of that call: count it, and the call target ends with it
                if "libpython" in ob and NUMPY_OBJECT.search(cob):
                    calls[cfn] += pending_calls
                pending_calls = 0
                cob = ob
    del fn
    return total, calls


def _callgrind(config: int, optimizer: str, steps: int, toggle: bool) -> tuple[int, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        collect = ["--collect-atstart=no", "--toggle-collect=functools_reduce"] if toggle else []
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *collect,
             sys.executable, os.path.abspath(__file__), "--child", str(config), optimizer,
             str(steps), "--threads", str(common.N_THREADS)],
            check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _parse_callgrind(out)


def count(configs: list[int], optimizers: list[str], n_steps: int) -> str:
    """Instructions per step from a run that collects only the counted steps; NumPy
    entries per step from two full runs (n_steps and no counted steps), on the smallest
    configuration of the same depth: the Python code path, hence the entries, depend on
    the number of layers only, and the full runs of the large configurations are slow
    under callgrind."""
    rows = []
    entries: dict[tuple[int, str], tuple[float, str]] = {}
    for config in configs:
        sizes, batch = CONFIGS[config]
        for optimizer in optimizers:
            ir, _ = _callgrind(config, optimizer, n_steps, toggle=True)
            depth = len(sizes)
            if (depth, optimizer) not in entries:
                _, calls0 = _callgrind(config, optimizer, 0, toggle=False)
                _, calls1 = _callgrind(config, optimizer, n_steps, toggle=False)
                per_step = {k: (v - calls0.get(k, 0)) / n_steps for k, v in calls1.items()}
                top = sorted(per_step.items(), key=lambda kv: -kv[1])[:6]
                entries[depth, optimizer] = (sum(per_step.values()), ", ".join(
                    f"{name} {v:.0f}" for name, v in top))
            n_calls, top_text = entries[depth, optimizer]
            rows.append(["-".join(map(str, sizes)) + f", batch {batch}", optimizer,
                         f"{n_calls:.0f}", f"{ir / n_steps / 1e6:.3f} M", top_text])
            print(" | ".join(rows[-1]), flush=True)
    return markdown_table(["configuration", "optimizer", "NumPy entries / step",
                           "instructions / step", "most frequent entries"], rows)


# --------------------------------------------------------------------------- phases
def phases(configs: list[int], optimizers: list[str], repeats: int) -> str:
    rows = []
    for config in configs:
        sizes, batch = CONFIGS[config]
        for optimizer in optimizers:
            s = setup(sizes, batch, optimizer)
            model, loss, opt = s["model"], s["loss"], s["opt"]
            for _ in range(3):
                step(s)
            t: dict[str, list[float]] = collections.defaultdict(list)
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = model.forward(s["X"])
                t1 = time.perf_counter()
                _, grad = loss.value_and_grad(out, s["y"])
                t2 = time.perf_counter()
                model.backward(grad, input_grad=False)
                t3 = time.perf_counter()
                opt.step(model.params, model.grads)
                t4 = time.perf_counter()
                for name, a, b in (("forward", t0, t1), ("loss", t1, t2),
                                   ("backward", t2, t3), ("update", t3, t4)):
                    t[name].append(b - a)
            m = {k: median(v) for k, v in t.items()}
            total = sum(m.values())
            rows.append(["-".join(map(str, sizes)) + f", batch {batch}", optimizer,
                         fmt_time(total)] + [f"{fmt_time(m[k])} ({m[k] / total:.0%})"
                                             for k in ("forward", "loss", "backward", "update")])
            print(" | ".join(rows[-1]), flush=True)
    return markdown_table(["configuration", "optimizer", "step", "forward", "loss", "backward",
                           "update"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--count", action="store_true", help="NumPy entries and instructions")
    parser.add_argument("--time", action="store_true", help="time per phase")
    parser.add_argument("--configs", default="0,1,2,3", help="indices into CONFIGS")
    parser.add_argument("--optimizers", default="sgd,adam")
    parser.add_argument("--steps", type=int, default=5, help="counted steps (--count)")
    parser.add_argument("--repeats", type=int, default=50, help="timed steps (--time)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(int(args.child[0]), args.child[1], int(args.child[2]))
        return 0
    configs = [int(c) for c in args.configs.split(",")]
    optimizers = args.optimizers.split(",")
    if args.count:
        print(count(configs, optimizers, args.steps))
    if args.time:
        print(phases(configs, optimizers, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
