"""``import jacnet`` time, what it pulls in, and peak memory of a Fashion-MNIST-sized run.

Each measurement is a fresh Python process (an import is only cold once per process):

- import: the median over repeats of the wall time of ``import jacnet`` inside the
  process (interpreter start-up excluded), and the heavy optional libraries found in
  ``sys.modules`` afterwards (there must be none: PyTorch, scikit-learn, matplotlib,
  SciPy, pandas and rich are imported only by the functions that use them);
- memory: peak resident set size (``VmHWM``) of one epoch of ``jacnet.training.fit``
  on 60,000 × 784 float32 samples (784-256-10, Adam, batch 128), next to the same epoch
  in PyTorch, and to the process holding only the data.

Run alone (``.venv/bin/python benchmarks/bench_import.py``) or from
``bench_train.py --all``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import common  # sets the thread variables before NumPy is imported
from common import markdown_table, median

HEAVY = ("torch", "sklearn", "matplotlib", "scipy", "pandas", "rich")

IMPORT_SCRIPT = f"""
import json, sys, time
start = time.perf_counter()
import jacnet
elapsed = time.perf_counter() - start
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"seconds": elapsed, "heavy": heavy}}))
"""

MEMORY_SCRIPT = """
import json, resource, sys
import numpy as np
who = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.random((60_000, 784), dtype=np.float32)
y = rng.integers(0, 10, 60_000)
def peak():
    # VmHWM belongs to this process image; ru_maxrss would keep the parent's high-water
    # mark across fork + exec.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # KiB -> MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if who == "data":
    pass
elif who == "jacnet":
    import jacnet
    from jacnet.training import fit
    model = jacnet.mlp([784, 256, 10], activation="relu", seed=0, dtype="float32")
    fit(model, X, y, loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=1,
        batch_size=128, progress=False)
else:
    import torch
    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    order = torch.randperm(60_000)
    for start in range(0, 60_000, 128):
        idx = order[start:start + 128]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
        opt.step()
print(json.dumps({"peak_mib": peak()}))
"""


def _run(script: str, *args: str) -> dict:
    env_path = f"{common.REPO_ROOT}/src"
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(repeats: int) -> tuple[str, list[str]]:
    imports = [_run(IMPORT_SCRIPT) for _ in range(repeats)]
    seconds = median([r["seconds"] for r in imports])
    heavy = sorted({m for r in imports for m in r["heavy"]})
    peaks = {who: _run(MEMORY_SCRIPT, who)["peak_mib"] for who in ("data", "jacnet", "torch")}
    rows = [
        ["`import jacnet` (median of fresh processes)", f"{seconds * 1e3:.0f} ms",
         "heavy modules imported: " + (", ".join(heavy) if heavy else "none")],
        ["peak RSS, data only (60,000 × 784 float32 = 179 MiB)", f"{peaks['data']:.0f} MiB", ""],
        ["peak RSS, one epoch of `jacnet.training.fit`", f"{peaks['jacnet']:.0f} MiB",
         f"{peaks['jacnet'] - peaks['data']:+.0f} MiB over the data"],
        ["peak RSS, the same epoch in PyTorch", f"{peaks['torch']:.0f} MiB",
         f"{peaks['torch'] - peaks['data']:+.0f} MiB over the data"],
    ]
    table = markdown_table(["measure", "value", "note"], rows)
    ok = seconds <= 0.25 and not heavy
    checks = [f"- `import jacnet`: {seconds * 1e3:.0f} ms, heavy modules: "
              f"{', '.join(heavy) if heavy else 'none'} (≤ 0.25 s and none, "
              f"{'reached' if ok else '**not reached**'})",
              f"- peak memory of a Fashion-MNIST-sized epoch: jacnet {peaks['jacnet']:.0f} MiB, "
              f"PyTorch {peaks['torch']:.0f} MiB (no target)"]
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
