"""jacnet vs ``torch.func``: dense per-sample parameter Jacobian and JᵀJ (64-128-10 tanh, batch 256).

- ``jacnet.jacobian(model, X, wrt="params")`` → (B, m, P), one array in the order of
  ``model.params``; against ``torch.func.vmap(torch.func.jacrev(f))`` over
  ``functional_call``, both as torch returns it (a dict of per-parameter arrays) and
  concatenated into the same (B, m, P) array.
- JᵀJ (P × P, summed over samples and outputs): ``jacnet.curvature.gauss_newton``
  against the torch Jacobian, concatenated, then ``J.T @ J``.

Run alone (``.venv/bin/python benchmarks/bench_jacobian.py``) or from
``bench_train.py --all``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import common  # sets the thread variables before NumPy is imported
import numpy as np
from common import fmt_time, import_torch, interleaved, markdown_table, median, torch_mlp

import jacnet

SIZES, BATCH = (64, 128, 10), 256


def torch_jacobian_fns(model: Any, X: np.ndarray) -> tuple[Any, Any, Any]:
    torch = import_torch()
    from torch.func import functional_call, jacrev, vmap

    net = torch_mlp(model, activation="tanh")
    params = {k: v.detach() for k, v in net.named_parameters()}
    Xt = torch.from_numpy(X)

    def f(p: dict[str, Any], x: Any) -> Any:
        return functional_call(net, p, (x[None],))[0]

    per_sample = vmap(jacrev(f), in_dims=(None, 0))

    def as_dict() -> Any:
        return per_sample(params, Xt)

    def dense() -> Any:
        jac = per_sample(params, Xt)
        return torch.cat([j.reshape(BATCH, SIZES[-1], -1) for j in jac.values()], dim=2)

    def jtj() -> Any:
        J = dense().reshape(BATCH * SIZES[-1], -1)
        return J.T @ J

    return as_dict, dense, jtj


def run(repeats: int) -> tuple[str, list[str]]:
    from jacnet.curvature import gauss_newton

    model = jacnet.mlp(SIZES, activation="tanh", seed=0, dtype="float32")
    X = np.random.default_rng(0).standard_normal((BATCH, SIZES[0])).astype(np.float32)
    torch_dict, torch_dense, torch_jtj = torch_jacobian_fns(model, X)

    ours = jacnet.jacobian(model, X, wrt="params")
    theirs = torch_dense().numpy()
    assert ours.shape == theirs.shape == (BATCH, SIZES[-1], model.n_params)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gauss_newton(model, X)[0], torch_jtj().numpy(),
                               rtol=1e-3, atol=1e-3)

    samples = interleaved({
        "jacnet J": lambda: jacnet.jacobian(model, X, wrt="params"),
        "torch J (dict)": torch_dict,
        "torch J (concatenated)": torch_dense,
        "jacnet JᵀJ": lambda: gauss_newton(model, X),
        "torch JᵀJ": torch_jtj,
    }, repeats, warmup=1, min_time=0.05, budget=90.0)
    t = {k: median(v) for k, v in samples.items()}
    r_dict = t["jacnet J"] / t["torch J (dict)"]
    r_cat = t["jacnet J"] / t["torch J (concatenated)"]
    r_jtj = t["jacnet JᵀJ"] / t["torch JᵀJ"]
    mib = ours.nbytes / 2**20
    rows = [
        [f"dense J, (B, m, P) = {ours.shape}, {mib:.0f} MiB float32", fmt_time(t["jacnet J"]),
         f"{fmt_time(t['torch J (dict)'])} (dict) / {fmt_time(t['torch J (concatenated)'])} "
         "(concatenated)", f"{r_dict:.2f} / {r_cat:.2f}"],
        [f"JᵀJ, {model.n_params} × {model.n_params}", fmt_time(t["jacnet JᵀJ"]),
         fmt_time(t["torch JᵀJ"]), f"{r_jtj:.2f}"],
    ]
    table = markdown_table(["64-128-10 tanh, batch 256, float32", "jacnet",
                            "torch.func vmap(jacrev)", "jacnet/torch"], rows)
    ok = "reached" if r_dict <= 0.5 else "**not reached**"
    checks = [f"- dense parameter Jacobian: jacnet/torch.func {r_dict:.2f} against torch's "
              f"dict output, {r_cat:.2f} against it concatenated (≤ 0.5, {ok})",
              f"- JᵀJ: jacnet.curvature.gauss_newton / torch.func {r_jtj:.2f} (no target)"]
    print(table, flush=True)
    return table, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    assert args.threads == common.N_THREADS
    _table, checks = run(args.repeats)
    print("\n".join(checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
