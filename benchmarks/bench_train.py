"""jacnet vs PyTorch vs hand-written NumPy (vs scikit-learn): training speed on a CPU.

One run, contenders interleaved round-robin, medians and ratios of medians:

1. ``step``  — one training step (forward, cross-entropy from logits with integer labels,
   backward, optimizer update; SGD and Adam), float32, four MLP sizes; jacnet vs PyTorch
   vs a minimal hand-written NumPy loop (the floor), plus the bare matrix products of the
   step (NumPy matmul on the same shapes) for the achieved-FLOP/s ratio.
2. ``epoch`` — one epoch over 60,000 × 784 float32 samples, 784-256-10, Adam, batch 128:
   jacnet (``fit`` and the bare loop) and the NumPy floor, each with subnormal results
   flushed to zero (``jacnet.flush_denormals``, fit's default, as XLA always runs) and
   without, vs JAX-jit vs PyTorch vs scikit-learn ``MLPClassifier(solver="adam").partial_fit``.
3. ``jacobian`` and 4. ``import`` live in ``bench_jacobian.py`` and ``bench_import.py``;
   ``--all`` runs them here too.

Usage (see benchmarks/README.md)::

    .venv/bin/python benchmarks/bench_train.py --all            # full suite, ~10 min
    .venv/bin/python benchmarks/bench_train.py --all --quick    # smoke run, ~2 min
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from functools import partial
from typing import Any

import common  # sets the thread variables before NumPy is imported
import numpy as np
from common import (
    N_THREADS,
    NumpyMLP,
    fmt_time,
    import_jax,
    import_torch,
    interleaved,
    layer_arrays,
    machine_description,
    markdown_table,
    median,
    parallelism,
    torch_mlp,
    verdict,
)

import jacnet
from jacnet.losses import CrossEntropyLoss
from jacnet.optim import get_optimizer

STEP_CONFIGS = [
    ((64, 32, 10), 32),
    ((64, 128, 10), 128),
    ((784, 256, 256, 10), 128),
    ((784, 1024, 1024, 10), 512),
]
LR = {"sgd": 0.01, "adam": 1e-3}


def adam_kernel_available() -> bool:
    """Whether jacnet's default Adam uses the compiled one-pass update (numba installed)."""
    from jacnet.optim import _fused

    return _fused.numba_available()


def jacnet_trainer(model: Any, optimizer: str, fused: bool | None = None) -> Any:
    """The per-batch work of the fit loop, exactly as ``jacnet.training.fit`` does it.

    ``fused`` is Adam's (None: the compiled update where numba is installed; False: the
    13 NumPy passes); SGD has no compiled update."""
    loss = CrossEntropyLoss()
    extra = {"fused": fused} if optimizer == "adam" else {}
    opt = get_optimizer(optimizer, lr=LR[optimizer], **extra)

    def step(X: np.ndarray, y: np.ndarray) -> float:
        out = model.forward(X)
        value, grad = loss.value_and_grad(out, y)
        model.backward(grad, input_grad=False)
        opt.step(model.params, model.grads)
        return value

    step.optimizer = opt  # type: ignore[attr-defined]
    return step


def subnormal_count(model: Any, optimizer: Any) -> int:
    """Entries of θ, its gradient and the optimizer's buffers that are subnormal now."""
    tiny = np.finfo(model.params.dtype).tiny
    arrays = [model.params, model.grads, *getattr(optimizer, "_state", {}).values()]
    return sum(int(np.count_nonzero((np.abs(a) < tiny) & (a != 0))) for a in arrays)


def torch_trainer(model: Any, optimizer: str) -> Any:
    torch = import_torch()
    net = torch_mlp(model)
    cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    opt = cls(net.parameters(), lr=LR[optimizer])
    cross_entropy = torch.nn.functional.cross_entropy

    def step(X: Any, y: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(net(X), y)
        loss.backward()
        opt.step()
        return loss

    return step


def jax_loss(params: Any, X: Any, y: Any) -> Any:
    """The JAX contenders' loss: the ReLU MLP's logits, mean cross-entropy with integer labels."""
    import jax
    import optax

    h = X
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def jax_trainer(model: Any, optimizer: str) -> Any:
    """JAX's compiled step: the whole forward, loss, backward and optax update in one
    ``jax.jit`` call with the parameters and optimizer state donated, from a copy of
    ``model``'s initial weights; None without JAX. ``step.compile_time`` is the seconds
    spent tracing and compiling, kept out of the steady-state figures."""
    jax = import_jax()
    if jax is None:
        return None
    import jax.numpy as jnp
    import optax

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in layer_arrays(model)]
    # torch.optim.Adam's defaults, as the other contenders use.
    tx = (optax.sgd(LR[optimizer]) if optimizer == "sgd"
          else optax.adam(LR[optimizer], b1=0.9, b2=0.999, eps=1e-8))

    def update(params: Any, opt_state: Any, X: Any, y: Any) -> Any:
        value, grads = jax.value_and_grad(jax_loss)(params, X, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    state = {"params": params, "opt": tx.init(params), "compiled": None}

    def step(X: Any, y: Any) -> float:
        if state["compiled"] is None:
            started = time.perf_counter()
            state["compiled"] = jax.jit(update, donate_argnums=(0, 1)).lower(
                state["params"], state["opt"], X, y).compile()
            step.compile_time = time.perf_counter() - started  # type: ignore[attr-defined]
        state["params"], state["opt"], value = state["compiled"](state["params"], state["opt"], X, y)
        return float(value)  # waits for the result, as the other contenders' steps do

    step.compile_time = float("nan")  # type: ignore[attr-defined]
    return step


def step_flops(sizes: tuple[int, ...], batch: int) -> float:
    """Multiply–add FLOPs of a step: forward, weight gradients, input gradients above layer 0."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    per_matmul = [2.0 * batch * n_in * n_out for n_in, n_out in pairs]
    return 2 * sum(per_matmul) + sum(per_matmul[1:])


def matmul_only(model: Any, X: np.ndarray) -> Any:
    """The step's matrix products alone, preallocated: what NumPy's BLAS reaches on its shapes."""
    weights = [w for w, _ in layer_arrays(model)]
    batch = X.shape[0]
    acts = [X] + [np.ones((batch, w.shape[0]), np.float32) for w in weights]
    grads_w = [np.empty_like(w) for w in weights]
    grads_in = [np.empty((batch, w.shape[1]), np.float32) for w in weights]

    def run() -> None:
        for i in range(len(weights)):
            np.matmul(acts[i], weights[i].T, out=acts[i + 1])
        for i in range(len(weights) - 1, -1, -1):
            w = weights[i]
            np.matmul(acts[i + 1].T, acts[i], out=grads_w[i])
            if i > 0:
                np.matmul(acts[i + 1], w, out=grads_in[i])

    return run


def bench_steps(repeats: int, configs: list[tuple[tuple[int, ...], int]]) -> tuple[str, list[str]]:
    torch = import_torch()
    rows, checks = [], []
    used_threads: dict[str, float] = {}
    kernel = adam_kernel_available()
    for sizes, batch in configs:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], batch)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        name = "-".join(map(str, sizes))
        # larger configurations take ~10 ms a step; keep the run bounded
        n_rep = max(15, repeats // 4) if batch * sizes[1] > 100_000 else repeats
        for optimizer in ("sgd", "adam"):
            model = jacnet.mlp(sizes, activation="relu", seed=0, dtype="float32")
            floor = NumpyMLP(model, optimizer, LR[optimizer])
            torch_step = torch_trainer(model, optimizer)
            jax_step = jax_trainer(model, optimizer)
            jac_step = jacnet_trainer(model, optimizer)
            bare = matmul_only(model, X)
            contenders = {
                "jacnet": partial(jac_step, X, y),
                **({"jacnet_numpy": partial(jacnet_trainer(
                    jacnet.mlp(sizes, activation="relu", seed=0, dtype="float32"), optimizer,
                    fused=False), X, y)} if optimizer == "adam" and kernel else {}),
                "torch": partial(torch_step, Xt, yt),
                "numpy": partial(floor.step, X, y),
                "matmul": bare,
            }
            if jax_step is not None:
                import jax.numpy as jnp

                Xj, yj = jnp.asarray(X), jnp.asarray(y, dtype=jnp.int32)
                # Same initial weights, same batch: the first losses agree to float32 rounding.
                first_jax, first_jacnet = jax_step(Xj, yj), jac_step(X, y)
                if abs(first_jax - first_jacnet) > 1e-4 * abs(first_jacnet):
                    raise RuntimeError(f"{name} {optimizer}: JAX's first loss {first_jax} "
                                       f"differs from jacnet's {first_jacnet}")
                contenders["jax"] = partial(jax_step, Xj, yj)
                if optimizer == "sgd" and (sizes, batch) == configs[-1]:
                    used_threads.update({k: parallelism(contenders[k]) for k in
                                         ("jacnet", "torch", "jax", "matmul")})
            samples = interleaved(contenders, n_rep, warmup=3, min_time=0.01, budget=30.0)
            t = {k: median(v) for k, v in samples.items()}
            r_np, r_torch = t["jacnet"] / t["numpy"], t["jacnet"] / t["torch"]
            r_jax = t["jacnet"] / t["jax"] if "jax" in t else float("nan")
            # Each round times every contender once, close together: the spread of the
            # per-round ratios is how far a loaded machine moved the ratio of medians.
            per_round = [a / b for a, b in zip(samples["jacnet"], samples.get("jax", []))]
            spread = f"{min(per_round):.2f}–{max(per_round):.2f}" if per_round else "—"
            # JAX runs with subnormals flushed; the jacnet and floor steps here do not.
            # After thousands of steps on one batch Adam's moments of dead units could
            # decay into subnormals: count them, so a slow row would say why.
            subnormals = subnormal_count(model, jac_step.optimizer)
            flops = step_flops(sizes, batch)
            flop_share = t["matmul"] / t["jacnet"]
            unfused = "jacnet_numpy" in t and "jax" in t
            rows.append([
                f"{name}, batch {batch}", optimizer, fmt_time(t["jacnet"]), fmt_time(t["torch"]),
                fmt_time(t["jax"]) if "jax" in t else "—",
                fmt_time(jax_step.compile_time) if jax_step is not None else "—",
                fmt_time(t["numpy"]), f"{r_np:.2f}", f"{r_torch:.2f}", f"{r_jax:.2f}", spread,
                fmt_time(t["jacnet_numpy"]) if unfused else "—",
                f"{t['jacnet_numpy'] / t['jax']:.2f}" if unfused else "—",
                f"{t['numpy'] / t['jax']:.2f}" if "jax" in t else "—",
                f"{t['matmul'] / t['jax']:.2f}" if "jax" in t else "—", str(subnormals),
                f"{flops / t['jacnet'] / 1e9:.1f} / {flops / t['matmul'] / 1e9:.1f}",
                f"{flop_share:.0%}",
            ])
            if "jax" in t:
                checks.append(f"- step {name} {optimizer}: jacnet/JAX-jit {r_jax:.2f} (≤ 1.0, "
                              f"{verdict(r_jax, 1.0)})")
            largest = sizes == STEP_CONFIGS[-1][0]
            torch_target = 1.0 if largest else 0.5
            checks.append(f"- step {name} {optimizer}: jacnet/numpy {r_np:.2f} (≤ 1.2, "
                          f"{verdict(r_np, 1.2)}); jacnet/torch {r_torch:.2f} "
                          f"(≤ {torch_target}, {verdict(r_torch, torch_target)})")
            if largest:
                checks.append(f"- step {name} {optimizer}: FLOP/s {flop_share:.0%} of bare "
                              f"NumPy matmul (≥ 80 %, "
                              f"{'reached' if flop_share >= 0.8 else '**not reached**'})")
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(
        ["configuration", "optimizer", "jacnet", "PyTorch", "JAX-jit", "JAX compile",
         "NumPy floor", "jacnet/NumPy", "jacnet/PyTorch", "jacnet/JAX",
         "jacnet/JAX per round", "jacnet, NumPy Adam update", "… /JAX", "NumPy floor/JAX",
         "bare products/JAX",
         "subnormals in jacnet's θ, ∇θ, state", "GFLOP/s jacnet / matmul",
         "FLOP/s share"], rows)
    table += ("\n\njacnet: " + ("Adam's compiled one-pass update (numba; bit-identical to "
              "the NumPy passes); 'jacnet, NumPy Adam update': the same step with "
              "`fused=False`, its 13 NumPy passes." if kernel else
              "numba is not installed: Adam's 13 NumPy passes.") +
              "\n\nbare products/JAX: the step's matrix products alone (NumPy matmul into "
              "preallocated arrays, nothing else) ÷ JAX's whole compiled step; what a NumPy "
              "step adds to them (bias adds, ReLU and its mask, the loss, the optimizer's "
              "whole-vector passes) must fit in the rest for any NumPy implementation to "
              "reach JAX.")
    if used_threads:
        # CPU time ÷ wall time of each contender's SGD step on the largest configuration:
        # the thread setting took effect where this is at most the thread count.
        table += "\n\nThreads in use (CPU time ÷ wall time, largest configuration): " + ", ".join(
            f"{k} {v:.2f}" for k, v in used_threads.items())
    return table, checks


# --------------------------------------------------------------------------- epoch
def jacnet_epoch(X: np.ndarray, y: np.ndarray, batch: int) -> dict[str, Any]:
    """One epoch of Adam on 784-256-10 with ``jacnet.training.fit``, the bare loop and the
    NumPy floor, each with subnormal results flushed to zero (``jacnet.flush_denormals``,
    what ``fit`` does by default and XLA always does) and without. Each contender trains
    its own model from the same initial weights, epoch after epoch, so the later epochs
    are those in which subnormals appear (Adam's moments of dead units decay into them)."""
    runs: dict[str, Any] = {}
    try:
        from jacnet.training import fit
    except ImportError:  # the fit loop is optional here: the bare loop is the reference
        fit = None
    flush_names = {True: "flushed", False: "subnormals kept"}
    kernel = adam_kernel_available()
    # (fused, label): the default (the compiled update where numba is installed) and,
    # where it is, the NumPy update beside it
    updates = [(None, ", compiled Adam" if kernel else "")]
    if kernel:
        updates.append((False, ", NumPy Adam"))
    if fit is not None:
        for flush in (True, False):
            for fused, label in updates if flush else updates[:1]:
                fit_model = jacnet.mlp([784, 256, 10], activation="relu", seed=0, dtype="float32")
                opt = get_optimizer("adam", lr=1e-3, fused=fused)

                def run_fit(fit_model: Any = fit_model, opt: Any = opt, flush: bool = flush) -> None:
                    fit(fit_model, X, y, loss="cross_entropy", optimizer=opt, epochs=1,
                        batch_size=batch, shuffle=True, progress=False, flush_denormals=flush)

                runs[f"jacnet fit ({flush_names[flush]}{label})"] = run_fit
    model = jacnet.mlp([784, 256, 10], activation="relu", seed=0, dtype="float32")
    for flush in (True, False):
        for fused, label in updates if flush else updates[:1]:
            loop_model = jacnet.mlp([784, 256, 10], activation="relu", seed=0, dtype="float32")
            runs[f"jacnet loop ({flush_names[flush]}{label})"] = _epoch_of(
                jacnet_trainer(loop_model, "adam", fused=fused), X, y, batch, flush)
    for flush in (True, False):
        floor = NumpyMLP(model, "adam", 1e-3)
        runs[f"NumPy floor loop ({flush_names[flush]})"] = _epoch_of(floor.step, X, y, batch,
                                                                     flush)
    runs["model"] = model
    return runs


def _epoch_of(step: Any, X: np.ndarray, y: np.ndarray, batch: int, flush: bool) -> Any:
    """One shuffled pass of ``step(X_batch, y_batch)``, inside ``flush_denormals`` or not."""
    rng = np.random.default_rng(0)

    def run() -> None:
        with jacnet.flush_denormals() if flush else nullcontext():
            order = rng.permutation(len(X))
            for start in range(0, len(X), batch):
                idx = order[start:start + batch]
                step(X[idx], y[idx])

    return run


def jax_epoch(model: Any, X: np.ndarray, y: np.ndarray, batch: int) -> Any:
    """One epoch of JAX's compiled Adam step from ``model``'s initial weights, as a JAX user
    would write it: the data on the device once, each step gathering its rows inside the
    compiled call; None without JAX."""
    jax = import_jax()
    if jax is None:
        return None
    import jax.numpy as jnp
    import optax

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in layer_arrays(model)]
    tx = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8)
    Xd, yd = jnp.asarray(X), jnp.asarray(y, dtype=jnp.int32)

    @partial(jax.jit, donate_argnums=(0, 1))
    def update(params: Any, opt_state: Any, idx: Any) -> Any:
        value, grads = jax.value_and_grad(jax_loss)(params, Xd[idx], yd[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    state = {"params": params, "opt": tx.init(params)}
    rng = np.random.default_rng(0)

    def run() -> None:
        order = rng.permutation(len(X)).astype(np.int32)
        value = None
        for start in range(0, len(X), batch):
            state["params"], state["opt"], value = update(
                state["params"], state["opt"], order[start:start + batch])
        jax.block_until_ready(value)

    return run


def bench_epoch(repeats: int) -> tuple[str, list[str]]:
    torch = import_torch()
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    n, batch = 60_000, 128
    X = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    runs = jacnet_epoch(X, y, batch)
    model = runs.pop("model")
    # torch: the same initial weights, index batches from a shuffled permutation
    net = torch_mlp(model)
    topt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def torch_run() -> None:
        order = torch.randperm(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            topt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
            loss.backward()
            topt.step()

    sk = MLPClassifier(hidden_layer_sizes=(256,), solver="adam", batch_size=batch,
                       learning_rate_init=1e-3, alpha=0.0, shuffle=True, random_state=0)
    sk.partial_fit(X[:batch], y[:batch], classes=np.arange(10))

    def sklearn_run() -> None:
        sk.partial_fit(X, y)

    contenders = {**runs, "torch": torch_run, "sklearn": sklearn_run}
    jax_run = jax_epoch(model, X, y, batch)
    if jax_run is not None:
        contenders["jax"] = jax_run
    # The warm-up epoch compiles JAX's step for both batch shapes (128 and the last, 96).
    samples = interleaved(contenders, repeats, warmup=1, budget=150.0)
    t = {k: median(v) for k, v in samples.items()}
    rows, checks = [], []
    t_jax = t.get("jax", float("nan"))
    for name in runs:
        r_sk, r_torch, r_jax = t[name] / t["sklearn"], t[name] / t["torch"], t[name] / t_jax
        per_round = [a / b for a, b in zip(samples[name], samples.get("jax", []))]
        rows.append([name, fmt_time(t[name]), fmt_time(t["torch"]),
                     fmt_time(t_jax) if "jax" in t else "—",
                     fmt_time(t["sklearn"]), f"{r_sk:.2f}", f"{r_torch:.2f}", f"{r_jax:.2f}",
                     f"{min(per_round):.2f}–{max(per_round):.2f}" if per_round else "—"])
        if name.startswith("NumPy"):
            continue
        checks.append(f"- epoch ({name}): jacnet/scikit-learn {r_sk:.2f} (≤ 0.33, "
                      f"{verdict(r_sk, 1 / 3)}); jacnet/PyTorch {r_torch:.2f} (≤ 1.0, "
                      f"{verdict(r_torch, 1.0)})"
                      + (f"; jacnet/JAX-jit {r_jax:.2f} (≤ 1.0, {verdict(r_jax, 1.0)})"
                         if "jax" in t else ""))
    table = markdown_table(
        ["epoch, 60,000 × 784 float32, 784-256-10 ReLU, Adam, batch 128", "time", "PyTorch",
         "JAX-jit", f"scikit-learn ({sk.coefs_[0].dtype})", "/scikit-learn", "/PyTorch", "/JAX",
         "/JAX per round"],
        rows)
    table += ("\n\nflushed: inside `jacnet.flush_denormals()` (subnormal results and operands "
              "are zero on the calling thread; `fit`'s default; XLA, hence JAX, always runs "
              "so); subnormals kept: without it, as PyTorch and scikit-learn run by default. "
              "Each row trains its own model epoch after epoch (warm-up epoch first), so "
              "later samples are later epochs.")
    print(table, flush=True)
    return table, checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for every library (OMP/OpenBLAS/MKL and torch); default 2")
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="samples per contender")
    parser.add_argument("--only", default="step,epoch",
                        help="comma-separated sections: step, epoch, jacobian, import")
    parser.add_argument("--all", action="store_true", help="every section: step, epoch, "
                        "jacobian (bench_jacobian.py) and import (bench_import.py)")
    parser.add_argument("--markdown", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    assert args.threads == N_THREADS
    sections = ["step", "epoch", "jacobian", "import"] if args.all else args.only.split(",")
    repeats = args.repeats or (10 if args.quick else 30)
    started = time.time()
    report = [f"# jacnet benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
              "Command: `" + " ".join(["python", *sys.argv]) + "`", ""]
    report += [f"- {k}: {v}" for k, v in machine_description().items()] + [""]
    print("\n".join(report), flush=True)
    checks: list[str] = []
    if "step" in sections:
        table, c = bench_steps(repeats, STEP_CONFIGS)
        report += ["## Training step (float32, ReLU MLP, cross-entropy)", "", table, ""]
        checks += c
    if "epoch" in sections:
        table, c = bench_epoch(2 if args.quick else 4)
        report += ["## One epoch", "", table, ""]
        checks += c
    if "jacobian" in sections:
        import bench_jacobian

        table, c = bench_jacobian.run(3 if args.quick else 15)
        report += ["## Parameter Jacobian", "", table, ""]
        checks += c
    if "import" in sections:
        import bench_import

        table, c = bench_import.run(3 if args.quick else 15)
        report += ["## Import time and peak memory", "", table, ""]
        checks += c
    report += ["## Targets", "", *checks, "", f"(suite ran {time.time() - started:.0f} s)"]
    text = "\n".join(report)
    print("\n".join(report[-len(checks) - 4:]), flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    common.N_THREADS  # noqa: B018  (keep the thread-pinning import visibly used)
    return 0


if __name__ == "__main__":
    sys.exit(main())
