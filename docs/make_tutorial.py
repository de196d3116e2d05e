"""Write docs/tutorial.ipynb (no outputs) from the cells below, and optionally render it.

    python docs/make_tutorial.py            # write the notebook
    python docs/make_tutorial.py --html     # also execute it and write docs/tutorial.html

The HTML is made by nbconvert when it is installed; otherwise by the small renderer
here (nbclient executes the notebook; Markdown cells are shown as preformatted text,
code with its text and HTML outputs).
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "tutorial.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """# Back-propagation as Jacobian algebra — a tutorial notebook

This notebook follows the study note behind jacnet (*Gradient and Jacobian, Back
Propagation, Training of the 1st and 2nd Layer*) section by section. Every number is
computed by jacnet, and it is the same as in `docs/backprop.md` and in `jacnet explain`:
the sample is x = (0.5, −1, 2) with target d = (0.1, 0.8) on the note's network
(3 inputs, 4 sigmoid hidden units, 2 sigmoid outputs, no biases)."""),
    ("code", """import numpy as np

import jacnet
from jacnet.explain import explain, seed_network

np.set_printoptions(precision=4, suppress=True)"""),
    ("md", """## 1. Gradient and Jacobian

The derivative of a **scalar** w.r.t. a vector is the *gradient*, a row vector; the
derivative of a **vector** y ∈ Rᵐ w.r.t. x ∈ Rⁿ is the *Jacobian*, m × n (a row per
output, a column per input). The chain rule for vectors is a product of Jacobians:
the gradient w.r.t. the output times the Jacobian is the gradient w.r.t. the input."""),
    ("code", """layer = jacnet.mlp([3, 2], activation="sigmoid", output_activation="sigmoid",
                   bias=False, seed=0, dtype="float64")
x1 = np.array([[0.5, -1.0, 2.0]])
J = jacnet.jacobian(layer, x1)[0]      # 2 × 3: rows are outputs, columns inputs
grad_z = np.array([[1.0, -1.0]])        # a gradient w.r.t. the output
layer(x1)
print(J)
print("gradient times Jacobian:", grad_z @ J)
print("backward:               ", layer.backward(grad_z))"""),
    ("md", """## 2. The chain rule through one layer, and the note's MLP

Each layer, given ∂E/∂(output), computes (1) the gradient w.r.t. its own weights, used
to update them, and (2) the gradient w.r.t. its input, handed down to the layer below.
The network: u = V x, y = f(u), s = W y, z = g(s), E = ½‖d − z‖²."""),
    ("code", """model = seed_network()
x = np.array([0.5, -1.0, 2.0])
d = np.array([0.1, 0.8])
ex = explain(model, x, d)
model          # the layer table in a notebook"""),
    ("code", """for name in ["u", "y", "s", "z"]:
    print(ex[name].title, ex[name].value)
print("E =", round(ex.loss, 6))"""),
    ("md", """## 3. The 2nd layer first

∂E/∂W = ∂E/∂z · ∂z/∂s · ∂s/∂vec(W). For squared error ∂E/∂z = (z − d)ᵀ."""),
    ("code", """print(ex["∂E/∂z"].title, ex["∂E/∂z"].value)"""),
    ("md", """## 4. diag(f′): an elementwise activation has a diagonal Jacobian

Output k depends on net value k only, so ∂z/∂s = diag(g′(s)); times a row vector it is
an elementwise product, δᵀ = (z − d) ⊙ g′(s)."""),
    ("code", """step = ex["∂z/∂s"]
print(step.title, "—", step.structure)
print(step.value)
print(ex["∂E/∂s"].title, ex["∂E/∂s"].value)
step.operator      # the structured operator: only the diagonal is stored"""),
    ("md", """## 5. vec(W) and I ⊗ yᵀ

W is differentiated as the long vector vec(W) (row by row). ∂s/∂vec(W) is
m × (m·h) = 2 × 8 with copies of yᵀ on a staircase, the Kronecker form I ⊗ yᵀ, so
δᵀ (I ⊗ yᵀ), folded back to W's shape, is the outer product ∂E/∂W = δ yᵀ."""),
    ("code", """step = ex["∂s/∂vec(W)"]
print(step.title, step.shape)
print(step.value)
print(ex["∂E/∂W"].title)
print(ex["∂E/∂W"].value)
print(np.allclose(ex["∂E/∂W"].value, np.outer(ex["∂E/∂s"].value, ex["y"].value)))"""),
    ("md", """The gradient handed down: ∂s/∂y = W, so ∂E/∂y = δᵀ W. That finishes the 2nd layer."""),
    ("code", """print(ex["∂E/∂y"].title, ex["∂E/∂y"].value)"""),
    ("md", """## 6. Then the 1st layer

The 1st layer receives ∂E/∂y from above and repeats the pattern: diag(f′(u)), then
∂u/∂vec(V) = I₄ ⊗ xᵀ, so ∂E/∂V = (∂E/∂y ⊙ f′(u)) xᵀ."""),
    ("code", """print(ex["∂E/∂u"].title, ex["∂E/∂u"].value)
print(ex["∂E/∂V"].title)
print(ex["∂E/∂V"].value)
print("one gradient step (η = 0.5):", round(ex.loss, 6), "→", round(ex.loss_after_step, 6))"""),
    ("md", """## 7. What reverse mode never forms

`backward` is a chain of vector–Jacobian products (VJPs): it never builds a Jacobian.
The network's Jacobian w.r.t. θ is kept as Kronecker blocks A ⊗ xᵀ; written out it
would hold every zero of the staircase."""),
    ("code", """X = np.random.default_rng(0).normal(size=(64, 3))
op = jacnet.jacobian(model, X, wrt="params", structured=True)
dense_bytes = op.dense().nbytes
stored = sum(block.x.nbytes + (0 if block.left is None else block.left.nbytes)
             for block in op.blocks)
print(op.shape, "dense:", dense_bytes, "bytes; the Kronecker factors:", stored, "bytes")
op"""),
    ("md", """## 8. Exercise: break a derivative and watch gradcheck catch it

`gradcheck` compares back-propagation with the Jacobian and with finite differences.
Below, the sigmoid's derivative is made wrong by one part in a million; the check
fails and says where. (Put it back afterwards.)"""),
    ("code", """from jacnet.layers import Sigmoid

X = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -1.0]])
D = np.array([[0.1, 0.8], [0.9, 0.2]])
print(jacnet.gradcheck(model, X, D).passed)

original = Sigmoid._derivative
Sigmoid._derivative = lambda self, x, y: original(self, x, y) * (1 + 1e-6)
try:
    report = jacnet.gradcheck(model, X, D, raise_exception=False)
finally:
    Sigmoid._derivative = original
print(report.passed)
report"""),
    ("md", """## 9. Try it: sliders for x, d and the activation

Move the sliders: the Jacobians are recomputed. (Without a live kernel, e.g. in the
HTML page, the cell shows the starting values.)"""),
    ("code", """def show(x0=0.5, x1=-1.0, x2=2.0, d0=0.1, d1=0.8, activation="sigmoid"):
    net = seed_network(activation=activation)
    e = explain(net, [x0, x1, x2], [d0, d1])
    print("z =", e["z"].value, " E =", round(e.loss, 6))
    print(e["∂y/∂u"].title)
    print(e["∂y/∂u"].value)
    print(e["∂E/∂W"].title)
    print(e["∂E/∂W"].value)
    return e

try:
    import ipywidgets as widgets
except ImportError:
    show()
else:
    slider = dict(min=-3.0, max=3.0, step=0.1)
    widgets.interact(show, x0=widgets.FloatSlider(value=0.5, **slider),
                     x1=widgets.FloatSlider(value=-1.0, **slider),
                     x2=widgets.FloatSlider(value=2.0, **slider),
                     d0=widgets.FloatSlider(value=0.1, min=0, max=1, step=0.05),
                     d1=widgets.FloatSlider(value=0.8, min=0, max=1, step=0.05),
                     activation=["sigmoid", "tanh", "relu"])"""),
    ("md", """## 10. Training, with a progress display and a history table"""),
    ("code", """from jacnet.training import fit

net = jacnet.mlp([2, 16, 1], activation="tanh", seed=0)
Xm = np.random.default_rng(1).uniform(-1, 1, size=(200, 2))
ym = np.sin(3 * Xm[:, :1]) * Xm[:, 1:]
history = fit(net, Xm, ym, epochs=7, batch_size=20, lr=0.01)
history"""),
]


def build() -> object:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md"
                else nbformat.v4.new_code_cell(src) for kind, src in CELLS]
    return nb


def write(path: Path = NOTEBOOK) -> Path:
    import nbformat

    nb = build()
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(path)
    return path


def execute(path: Path = NOTEBOOK, timeout: int = 120) -> object:
    """Run the notebook in a fresh kernel (nbclient) from the repository root."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE.parent)}}).execute()
    return nb


def _render(nb: object) -> str:
    """A plain HTML page: Markdown as text, code with its outputs (no nbconvert)."""
    parts = ["<!doctype html><meta charset='utf-8'><title>jacnet tutorial</title>",
             "<style>body{max-width:60em;margin:auto;font-family:sans-serif}"
             "pre{background:#f6f8fa;padding:.6em;overflow-x:auto}"
             ".out{background:#fff;border-left:3px solid #ccc}</style>"]
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.cell_type == "markdown":
            parts.append(f"<pre style='background:none;white-space:pre-wrap'>"
                         f"{html.escape(cell.source)}</pre>")
            continue
        parts.append(f"<pre>{html.escape(cell.source)}</pre>")
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data and "Label(" not in \
                    data.get("text/plain", ""):
                parts.append("<p class='out'><i>(an interactive widget: run the notebook "
                             "to use it)</i></p>")
            elif "text/html" in data:
                parts.append(f"<div class='out'>{data['text/html']}</div>")
            elif "text/plain" in data:
                parts.append(f"<pre class='out'>{html.escape(data['text/plain'])}</pre>")
            elif output.get("output_type") == "stream":
                parts.append(f"<pre class='out'>{html.escape(output['text'])}</pre>")
    return "\n".join(parts) + "\n"


def render(path: Path = NOTEBOOK, out: Path | None = None) -> Path:
    out = out or path.with_suffix(".html")
    nb = execute(path)
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        text = _render(nb)
    else:
        text, _ = HTMLExporter().from_notebook_node(nb)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", action="store_true", help="also execute and render to HTML")
    args = parser.parse_args()
    print(f"wrote {write()}")
    if args.html:
        print(f"wrote {render()}")
    sys.exit(0)
