"""Figures: training curves, Jacobian heat maps, gradient flow and decision boundaries.

matplotlib is an optional dependency (``pip install 'jacnet[plot]'``), imported inside
each function with the non-interactive Agg backend, so ``import jacnet.plot`` stays light.
Every function returns the matplotlib ``Figure`` and, given ``path``, writes it as a PNG
(atomically: a half-written file never replaces a good one).

Examples
--------
>>> from jacnet.plot import plot_jacobian
>>> fig = plot_jacobian(np.diag([1.0, 2.0, 3.0]), title="a diagonal Jacobian")
>>> fig.get_size_inches().tolist()
[6.0, 4.5]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jacnet.jacobians import BlockRow, JacobianOperator
from jacnet.layers import Layer, Linear, Sigmoid
from jacnet.losses import Loss, get_loss
from jacnet.network import Sequential, mlp

__all__ = [
    "GradientFlow",
    "compare_gradient_flow",
    "gradient_flow",
    "plot_decision_boundary",
    "plot_explanation",
    "plot_gradient_flow",
    "plot_history",
    "plot_jacobian",
    "plot_predictive",
]

DPI = 100


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or a clear ImportError."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "jacnet's figures need matplotlib: pip install 'jacnet[plot]'."
        ) from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str] | None) -> None:
    """Write ``fig`` as PNG to ``path`` atomically (nothing when ``path`` is None)."""
    if path is None:
        return
    from jacnet.io import atomic_write

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:
        fig.savefig(handle, dpi=DPI, format="png")


def _finish(fig: Any, path: str | os.PathLike[str] | None) -> Any:
    _save(fig, path)
    _pyplot().close(fig)  # figures are returned, not kept open by pyplot
    return fig


# ======================================================================================
# Training curves
# ======================================================================================

_NOT_METRICS = {"epoch", "loss", "val_loss", "lr", "mu", "time", "step", "seconds",
                # the full-batch optimizers' diagnostics, not quality measures
                "grad_norm", "alpha", "beta", "gamma", "objective", "step_size"}


def _history_dict(history: Any) -> dict[str, list[float]]:
    data = history.to_dict() if hasattr(history, "to_dict") else history
    if isinstance(data, Mapping) and isinstance(data.get("columns"), Mapping):
        data = data["columns"]  # History.to_dict(): {"records": ..., "columns": {key: [...]}}
    if not isinstance(data, Mapping):
        raise TypeError(
            "history must be a History (with .to_dict()) or a dict of lists such as "
            f"{{'epoch': [...], 'loss': [...]}}; got {type(history).__name__}."
        )
    if "loss" not in data:
        raise ValueError(f"history has no 'loss'; its keys are {sorted(data)}.")
    out: dict[str, list[float]] = {}
    for key, values in data.items():
        if isinstance(values, (list, tuple, np.ndarray)) and len(values) and all(
                v is None or isinstance(v, (int, float, np.number)) for v in values):
            out[str(key)] = [np.nan if v is None else float(v) for v in values]
    return out


def plot_history(history: Any, path: str | os.PathLike[str] | None = None, *,
                 title: str | None = None) -> Any:
    """Training curves: loss (and validation loss), metrics, and the learning rate or μ.

    Parameters
    ----------
    history : History or dict of lists
        Anything with ``to_dict()`` (``jacnet.training.History``) or a dict with
        ``"loss"`` and optionally ``"epoch"``, ``"val_loss"``, metric names
        (``"accuracy"``, ``"val_accuracy"``), ``"lr"`` and ``"mu"`` (Levenberg–Marquardt).
    path : path, optional
        Write the figure there as PNG (1000 × 350 pixels).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One panel for the loss (log scale when positive), one for the metrics if any,
        one for ``lr``/``mu`` (log scale) if present.

    Examples
    --------
    >>> fig = plot_history({"loss": [1.0, 0.5, 0.3], "lr": [0.1, 0.1, 0.05]})
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['loss', 'lr']
    """
    data = _history_dict(history)
    n = len(data["loss"])
    epochs = data.get("epoch", list(range(1, n + 1)))
    metrics = [k for k in data if k not in _NOT_METRICS and not k.startswith("val_")]
    rates = [k for k in ("lr", "mu") if k in data]
    panels = 1 + bool(metrics) + bool(rates)
    plt = _pyplot()
    fig, axes = plt.subplots(1, panels, figsize=(10, 3.5), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    for key in ("loss", "val_loss"):
        if key in data:
            ax.plot(epochs, data[key], marker="." if n < 50 else None,
                    label="training" if key == "loss" else "validation")
    if min(v for v in data["loss"] if not np.isnan(v)) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    if metrics:
        ax = axes.pop(0)
        for key in metrics:
            ax.plot(epochs, data[key], label=key)
            if "val_" + key in data:
                ax.plot(epochs, data["val_" + key], linestyle="--", label="val_" + key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metrics[0] if len(metrics) == 1 else "metric")
        ax.legend()
    if rates:
        ax = axes.pop(0)
        for key in rates:
            ax.plot(epochs, data[key], label="learning rate" if key == "lr" else "μ (LM damping)")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(rates[0] if len(rates) == 1 else "lr / μ")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


# ======================================================================================
# Jacobian heat maps
# ======================================================================================


def plot_jacobian(jacobian: np.ndarray | JacobianOperator, path: str | os.PathLike[str] | None = None,
                  *, title: str = "Jacobian", sample: int = 0, xlabel: str | None = None,
                  ylabel: str = "output i", annotate_max: int = 48) -> Any:
    """Heat map of one sample's Jacobian: rows are outputs, columns inputs (or parameters).

    Zeros are white and the colour scale is symmetric, so structure shows at a glance:
    a diagonal activation Jacobian, the staircase of I ⊗ yᵀ, the blocks of a
    :class:`~jacnet.jacobians.BlockRow` (separated by lines and labelled).

    Parameters
    ----------
    jacobian : ndarray of shape (m, n) or (B, m, n), or JacobianOperator
    path : path, optional
        Write the figure there as PNG (600 × 450 pixels).
    title : str
    sample : int, default 0
        Which sample of a batch to show.
    xlabel, ylabel : str
    annotate_max : int, default 48
        Matrices with at most this many entries get each value written in its cell.

    Returns
    -------
    matplotlib.figure.Figure
    """
    blocks: list[tuple[str, int]] = []
    if isinstance(jacobian, JacobianOperator):
        if isinstance(jacobian, BlockRow):
            blocks = [(name, block.n_in) for name, block in zip(jacobian.names, jacobian.blocks)]
        if not 0 <= sample < jacobian.batch_size:
            raise ValueError(f"sample must be in 0..{jacobian.batch_size - 1}; got {sample}.")
        matrix = jacobian.dense()[sample]
    else:
        array = np.asarray(jacobian, dtype=np.float64)
        if array.ndim == 3:
            if not 0 <= sample < array.shape[0]:
                raise ValueError(f"sample must be in 0..{array.shape[0] - 1}; got {sample}.")
            array = array[sample]
        if array.ndim != 2:
            raise ValueError(
                "jacobian must be a matrix (m, n), a batch (B, m, n) or a JacobianOperator; "
                f"got an array of shape {np.shape(jacobian)}."
            )
        matrix = array
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    limit = float(np.max(np.abs(matrix))) or 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                      interpolation="nearest")
    fig.colorbar(image, ax=ax)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if matrix.size <= annotate_max:  # small: write each value in its cell
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * limit else "black")
    if blocks:
        edges = np.cumsum([0] + [width for _, width in blocks])
        for edge in edges[1:-1]:
            ax.axvline(edge - 0.5, color="black", linewidth=1)
        top = ax.secondary_xaxis("top")
        top.set_xticks((edges[:-1] + edges[1:]) / 2 - 0.5, [name for name, _ in blocks])
        top.tick_params(length=0, labelsize=8)
    m, n = matrix.shape
    ax.set_title(f"{title}  ({m} × {n})", fontsize=10)
    ax.set_xlabel(xlabel or ("parameter j (θ order)" if blocks else "input j"))
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return _finish(fig, path)


_SLUG = {"∂": "d", "′": "prime", "ᵀ": "T", "⊗": "kron", "·": "", "θ": "theta", "δ": "delta",
         "₀": "0", "₁": "1", "₂": "2", "₃": "3", "₄": "4", "₅": "5", "₆": "6", "₇": "7",
         "₈": "8", "₉": "9"}


def figure_name(step: Any) -> str:
    """A file stem saying what a step's figure shows, from its name and formula.

    >>> from jacnet.explain import explain
    >>> figure_name(explain()["∂z/∂s"])
    'dz_ds_diag_gprime_s'
    """
    text = f"{step.name} {step.formula}".replace("vec(", "vec").replace(",", " ")
    text = "".join(_SLUG.get(char, char) for char in text)
    words = "".join(char if char.isascii() and char.isalnum() else " " for char in text).split()
    return "_".join(words)[:60]


def plot_explanation(explanation: Any, directory: str | os.PathLike[str]) -> list[Path]:
    """Heat maps of the Jacobians of a :func:`jacnet.explain.explain` result, one PNG each.

    Each file is named by what it shows (:func:`figure_name`: ``dz_ds_diag_gprime_s.png``
    for ∂z/∂s = diag(g′(s))); ``index.md`` lists every file with its step, structure and
    shape, and ``graph.png`` is the computational graph (:func:`plot_graph`).

    Returns
    -------
    list of Path
        The heat maps in the order of the steps, then ``graph.png`` and ``index.md``.
    """
    out = Path(directory)
    written = []
    lines = ["# Figures of `jacnet explain`", "", "| file | step | structure | shape |",
             "|---|---|---|---|"]
    jacobian_steps = [s for s in explanation.steps if s.kind == "jacobian"]
    used: set[str] = set()
    for step in jacobian_steps:
        stem = figure_name(step)
        while stem in used:
            stem += "_"
        used.add(stem)
        path = out / f"{stem}.png"
        plot_jacobian(step.operator if step.operator is not None else step.value, path,
                      title=f"{step.title}\n{step.structure}")
        written.append(path)
        shape = " × ".join(str(n) for n in step.shape)
        lines.append(f"| [{path.name}]({path.name}) | {step.title} | {step.structure} | {shape} |")
    graph = out / "graph.png"
    plot_graph(explanation, graph)
    written.append(graph)
    lines.append(f"| [{graph.name}]({graph.name}) | the computational graph: forward values "
                 "above the edges, backward gradients below | | |")
    index = out / "index.md"
    _write_text(index, "\n".join(lines) + "\n")
    written.append(index)
    return written


def _write_text(path: Path, text: str) -> None:
    from jacnet.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _short(value: np.ndarray) -> str:
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    shown = ", ".join(f"{v:.2g}" for v in flat[:4])
    return f"({shown}{', …' if flat.size > 4 else ''})"


def plot_graph(explanation: Any, path: str | os.PathLike[str] | None = None) -> Any:
    """The computational graph of an explanation: x → … → z → E, with the forward value of
    each tensor above its edge and the backward gradient ∂E/∂(tensor) below it.

    Parameters
    ----------
    explanation : Explanation
        From :func:`jacnet.explain.explain`.
    path : path, optional
        Write the figure there as PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    steps = {step.name: step for step in explanation.steps}
    forward = [s for s in explanation.steps if s.kind == "value" and s.section == "Forward pass"
               and s.name not in ("d", "E")]
    layers = explanation.model.layers
    plt = _pyplot()
    n = len(forward)
    fig, ax = plt.subplots(figsize=(2.2 * (n + 1), 3.2))
    ax.set_xlim(-0.6, n + 0.6)
    ax.set_ylim(-1.2, 1.2)
    ax.axis("off")
    box = {"boxstyle": "round,pad=0.35", "facecolor": "#f0f4ff", "edgecolor": "#3b5bdb"}
    for k, step in enumerate(forward):
        ax.text(k, 0, step.name, ha="center", va="center", fontsize=12, bbox=box)
        if k < n - 1:
            op = type(layers[k]).__name__ if k < len(layers) else ""
            ax.annotate("", xy=(k + 0.8, 0), xytext=(k + 0.2, 0),
                        arrowprops={"arrowstyle": "->", "color": "#3b5bdb"})
            ax.text(k + 0.5, 0.12, op, ha="center", va="bottom", fontsize=8, color="#555555")
        ax.text(k, 0.55, _short(step.value), ha="center", va="bottom", fontsize=7,
                color="#1c3d8c")
        gradient = steps.get(f"∂E/∂{step.name}")
        if gradient is not None:
            ax.text(k, -0.45, f"∂E/∂{step.name} =\n{_short(gradient.value)}", ha="center",
                    va="top", fontsize=7, color="#b02a37")
    ax.text(n + 0.15, 0, f"E = {explanation.loss:.4g}", ha="center", va="center", fontsize=12,
            bbox={**box, "facecolor": "#fff0f0", "edgecolor": "#b02a37"})
    ax.annotate("", xy=(n - 0.45, 0), xytext=(n - 0.8, 0),
                arrowprops={"arrowstyle": "->", "color": "#3b5bdb"})
    ax.text(n / 2, 1.1, "forward values (blue, above) · backward gradients ∂E/∂· (red, "
            "below): each gradient is the one to its right times a Jacobian (a VJP)",
            ha="center", va="top", fontsize=8)
    fig.tight_layout()
    return _finish(fig, path)


# ======================================================================================
# Gradient flow
# ======================================================================================


@dataclass
class GradientFlow:
    """Per-layer gradient norms and layer-Jacobian singular values recorded during training.

    Attributes
    ----------
    name : str
        A label (``"sigmoid"``).
    epochs : list of int
        When each record was taken (0 = before training).
    loss : list of float
    grad_norms : ndarray, shape (n_records, n_linear)
        ‖∂E/∂W_k‖ (Frobenius) of each linear layer's weight, on the recording batch.
    singular_values : list of ndarray
        One per record, shape (n_linear, r): the singular values of each block's input
        Jacobian ∂y_k/∂y_{k−1} = diag(f′(s_k)) W_k (averaged over the recording batch,
        largest first; r is the smallest width).
    """

    name: str
    epochs: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norms: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    singular_values: list[np.ndarray] = field(default_factory=list)


def _blocks(model: Sequential) -> list[list[int]]:
    """Layer indices grouped as [Linear, following non-linear layers...]."""
    groups: list[list[int]] = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Linear) or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def _record(model: Sequential, X: np.ndarray, target: np.ndarray, loss_fn: Loss,
            flow: GradientFlow, epoch: int) -> None:
    loss, grad_out = loss_fn.value_and_grad(model.forward(X), target)
    model.backward(grad_out, input_grad=False)
    norms = [float(np.linalg.norm(model.grads[model.parameter_slices()[f"{g[0]}.weight"]]))
             for g in _blocks(model) if isinstance(model.layers[g[0]], Linear)]
    spectra = []
    for group in _blocks(model):
        op = model.layers[group[0]].jacobian()
        for i in group[1:]:
            op = model.layers[i].jacobian() @ op
        spectra.append(np.linalg.svd(op.dense(), compute_uv=False).mean(axis=0))
    width = min(s.size for s in spectra)
    flow.epochs.append(epoch)
    flow.loss.append(float(loss))
    flow.grad_norms = np.vstack([flow.grad_norms.reshape(-1, len(norms)), norms])
    flow.singular_values.append(np.array([s[:width] for s in spectra]))


def gradient_flow(model: Sequential, X: Any, y: Any, *, loss: str | Loss = "mse", epochs: int = 5,
                  lr: float = 0.1, batch_size: int = 32, seed: int = 0, name: str = "model",
                  record_samples: int = 64) -> GradientFlow:
    """Train ``model`` with plain SGD for a few epochs, recording how gradients flow.

    Before training and after each epoch: each linear layer's weight-gradient norm and
    the singular values of each layer block's Jacobian diag(f′(s_k)) W_k, on the first
    ``record_samples`` rows. With sigmoid, whose derivative is at most ¼, those
    singular values are small and the gradient norms shrink layer by layer toward
    the input (vanishing gradients); with ReLU and He initialisation they stay near 1.

    Parameters
    ----------
    model : Sequential
        Trained in place.
    X : array-like, shape (n_samples, in_features)
    y : array-like
        Targets as ``loss`` takes them.
    loss : str or Loss, default "mse"
    epochs : int, default 5
    lr : float, default 0.1
    batch_size : int, default 32
    seed : int, default 0
        Shuffling.
    name : str
        Label for the plots.
    record_samples : int, default 64

    Returns
    -------
    GradientFlow

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(64, 4))
    >>> flow = gradient_flow(mlp([4, 8, 8, 1], seed=0), X, X[:, :1], epochs=2)
    >>> flow.epochs, flow.grad_norms.shape, flow.singular_values[0].shape
    ([0, 1, 2], (3, 3), (3, 1))
    """
    from jacnet.optim import SGD

    loss_fn = get_loss(loss)
    X = model.check_input(X)
    target = loss_fn.prepare_target(y, model.out_features, dtype=model.dtype)
    if target.shape[0] != X.shape[0]:
        raise ValueError(f"y has {target.shape[0]} rows but X has {X.shape[0]}; they must match.")
    rng = np.random.default_rng(seed)
    optimizer = SGD(lr=lr)
    flow = GradientFlow(name)
    probe = slice(0, record_samples)
    _record(model, X[probe], target[probe], loss_fn, flow, 0)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(X.shape[0])
        for start in range(0, X.shape[0], batch_size):
            batch = order[start:start + batch_size]
            _, grad_out = loss_fn.value_and_grad(model.forward(X[batch]), target[batch])
            model.backward(grad_out, input_grad=False)
            optimizer.step(model.params, model.grads)
        _record(model, X[probe], target[probe], loss_fn, flow, epoch)
    return flow


def compare_gradient_flow(activations: Sequence[str] = ("sigmoid", "relu"), *, depth: int = 8,
                          width: int = 32, epochs: int = 5, n_samples: int = 512, lr: float = 0.1,
                          seed: int = 0) -> dict[str, GradientFlow]:
    """The classic demonstration: the same deep net with each activation, trained briefly.

    Data: the ``moons`` data set (two classes, 2-D) with cross-entropy, so the
    comparison is on a real task. Each network has ``depth`` hidden layers of
    ``width`` units, default initialisation (Glorot for sigmoid, He for ReLU).

    Returns
    -------
    dict of str → GradientFlow
        One record per activation.
    """
    from jacnet.data import load_dataset

    data = load_dataset("moons", n_samples=n_samples, seed=seed)
    flows = {}
    for activation in activations:
        model = mlp([2] + [width] * depth + [2], activation=activation, seed=seed, dtype=np.float64)
        flows[activation] = gradient_flow(model, data.X, data.y, loss="cross_entropy", epochs=epochs,
                                          lr=lr, seed=seed, name=activation)
    return flows


def plot_gradient_flow(records: GradientFlow | Mapping[str, GradientFlow] | Sequence[GradientFlow],
                       path: str | os.PathLike[str] | None = None) -> Any:
    """Three panels showing vanishing or exploding gradients.

    Left: ‖∂E/∂W_k‖ per layer k (input layer first), before and after training, log
    scale. Middle: the singular values of each layer's Jacobian diag(f′(s_k)) W_k after
    the last epoch (the median, and the range of the largest and smallest), log scale —
    below 1 means the gradient shrinks on its way down. Right: the loss per epoch.

    Parameters
    ----------
    records : GradientFlow, or several (a dict name → GradientFlow or a list)
    path : path, optional
        Write the figure there as PNG (1200 × 400 pixels).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(records, GradientFlow):
        flows = [records]
    elif isinstance(records, Mapping):
        flows = list(records.values())
    else:
        flows = list(records)
    if not flows or not all(isinstance(f, GradientFlow) for f in flows):
        raise TypeError("records must be GradientFlow objects (from gradient_flow()).")
    plt = _pyplot()
    fig, (ax_norm, ax_sv, ax_loss) = plt.subplots(1, 3, figsize=(12, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, flow in enumerate(flows):
        color = colors[k % len(colors)]
        layers = np.arange(1, flow.grad_norms.shape[1] + 1)
        ax_norm.plot(layers, flow.grad_norms[0], color=color, linestyle=":", marker="o",
                     label=f"{flow.name}, epoch 0")
        ax_norm.plot(layers, flow.grad_norms[-1], color=color, marker="o",
                     label=f"{flow.name}, epoch {flow.epochs[-1]}")
        sv = flow.singular_values[-1]
        ax_sv.fill_between(layers, sv[:, -1], sv[:, 0], color=color, alpha=0.2)
        ax_sv.plot(layers, np.median(sv, axis=1), color=color, marker="o", label=flow.name)
        ax_loss.plot(flow.epochs, flow.loss, color=color, marker="o", label=flow.name)
    ax_norm.set(yscale="log", xlabel="layer k (1 = input side)", ylabel="‖∂E/∂W_k‖",
                title="weight-gradient norm per layer")
    ax_sv.axhline(1.0, color="grey", linewidth=0.8)
    ax_sv.set(yscale="log", xlabel="layer k (1 = input side)", ylabel="singular value",
              title="σ of diag(f′(s_k)) W_k: median, range")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    for ax in (ax_norm, ax_sv, ax_loss):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path)


# ======================================================================================
# Decision boundary
# ======================================================================================


def _last_activation(model: Sequential) -> Layer:
    return model.layers[-1]


def plot_decision_boundary(model: Sequential, X: Any, y: Any, path: str | os.PathLike[str] | None = None,
                           *, resolution: int = 200, title: str | None = None) -> Any:
    """Class regions of a classifier on 2-D data, with the samples on top.

    The predicted class is the arg-max of the outputs; a single output is thresholded
    at 0.5 after a final :class:`~jacnet.layers.Sigmoid`, else at 0 (a logit).

    Parameters
    ----------
    model : Sequential
        With ``in_features == 2``.
    X : array-like, shape (n_samples, 2)
    y : array-like, shape (n_samples,)
        Class labels (for the colours of the points).
    path : path, optional
        Write the figure there as PNG (600 × 500 pixels).
    resolution : int, default 200
        Grid points per axis.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if model.in_features != 2:
        raise ValueError(
            f"plot_decision_boundary needs a model with 2 inputs (2-D data); this one has "
            f"{model.in_features}."
        )
    X = np.asarray(model.check_input(X), dtype=np.float64)
    labels = np.asarray(y).reshape(-1)
    if labels.shape[0] != X.shape[0]:
        raise ValueError(f"y has {labels.shape[0]} entries but X has {X.shape[0]} rows.")
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0)) + 1e-9
    lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
    xs = np.linspace(lo[0], hi[0], resolution)
    ys = np.linspace(lo[1], hi[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.column_stack([gx.ravel(), gy.ravel()]).astype(model.dtype)
    was_training = model.training
    model.eval()
    out = model.forward(grid)
    model.train(was_training)
    if out.shape[1] == 1:
        threshold = 0.5 if isinstance(_last_activation(model), Sigmoid) else 0.0
        classes = (out[:, 0] > threshold).astype(int)
    else:
        classes = out.argmax(axis=1)
    n_classes = int(max(classes.max(), labels.max() if labels.size else 0)) + 1
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    levels = np.arange(n_classes + 1) - 0.5
    ax.contourf(gx, gy, classes.reshape(gx.shape), levels=levels, cmap="coolwarm", alpha=0.3)
    ax.scatter(X[:, 0], X[:, 1], c=labels, cmap="coolwarm", vmin=0, vmax=max(n_classes - 1, 1),
               edgecolors="black", linewidths=0.4, s=18)
    ax.set(xlabel="x₁", ylabel="x₂", title=title or "decision boundary")
    fig.tight_layout()
    return _finish(fig, path)


# ======================================================================================
# Predictive uncertainty
# ======================================================================================

def _mean_std(predictor: Any, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(mean, total std, epistemic std or None) of one output, each shape (n_grid, m)."""
    from jacnet.laplace import Laplace

    if isinstance(predictor, Laplace):
        pred = predictor.predictive(grid)
        return pred.mean, pred.std, np.sqrt(pred.epistemic_var)
    if not callable(getattr(predictor, "predict", None)):
        raise TypeError(
            f"plot_predictive: predictor must be a fitted jacnet Laplace or have "
            f"predict(X, return_std=True) (jacnet's MLPRegressor with laplace set, scikit-learn's "
            f"GaussianProcessRegressor, BayesianRidge); got {type(predictor).__name__}.")
    mean, std = predictor.predict(grid, return_std=True)
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return mean.reshape(len(grid), -1), std.reshape(len(grid), -1), None


def plot_predictive(predictor: Any, X: Any, y: Any, path: str | os.PathLike[str] | None = None,
                    *, grid: Any = None, n_std: float = 2.0, output: int = 0,
                    title: str | None = None) -> Any:
    """A 1-D regression's prediction with its ±``n_std`` σ(x) band, and the data.

    Parameters
    ----------
    predictor : Laplace or estimator
        A fitted :class:`jacnet.laplace.Laplace` (regression; the band of its epistemic
        part is drawn inside the total one), or anything with ``predict(X,
        return_std=True)`` such as :class:`jacnet.sklearn.MLPRegressor` fitted with
        ``laplace`` set.
    X : array-like, shape (n_samples, 1)
        The training inputs (drawn as points).
    y : array-like, shape (n_samples,) or (n_samples, m)
    path : path, optional
        Write the figure there as PNG (700 × 450 pixels).
    grid : array-like, shape (n_grid,) or (n_grid, 1), optional
        Where to draw the prediction; default 400 points over the data's range widened by
        half of it on each side (so the band's growth away from the data shows).
    n_std : float, default 2.0
        Half-width of the band in standard deviations.
    output : int, default 0
        Which output of a multi-output model.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Its axes hold the mean as the first line and the total band as the first
        filled area.

    Raises
    ------
    ValueError
        ``X`` is not one column, ``y`` does not match it, or ``output`` is out of range.

    Examples
    --------
    >>> from jacnet import mlp
    >>> from jacnet.laplace import Laplace
    >>> X = np.linspace(-1, 1, 30).reshape(-1, 1)
    >>> y = np.sin(3 * X) + 0.1 * np.random.default_rng(0).standard_normal(X.shape)
    >>> la = Laplace(mlp([1, 6, 1], seed=0, dtype="float64"), prior_precision=1.0,
    ...              noise_precision=100.0).fit(X, y)
    >>> fig = plot_predictive(la, X, y)
    >>> fig.axes[0].get_xlabel()
    'x'
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2 or X.shape[1] != 1:
        raise ValueError(f"plot_predictive draws 1-D input: X must have shape (n_samples, 1); "
                         f"got {X.shape}. For more inputs, plot a slice of them yourself.")
    targets = np.asarray(y, dtype=np.float64)
    if targets.ndim not in (1, 2) or targets.shape[0] != X.shape[0] or targets.size == 0:
        raise ValueError(f"y must have {X.shape[0]} rows, one per row of X; got shape "
                         f"{targets.shape}.")
    targets = targets.reshape(X.shape[0], -1)
    if grid is None:
        lo, hi = float(X.min()), float(X.max())
        width = (hi - lo) or 1.0
        grid = np.linspace(lo - width / 2, hi + width / 2, 400)
    grid = np.asarray(grid, dtype=np.float64).reshape(-1, 1)
    mean, std, epistemic = _mean_std(predictor, grid)
    if not 0 <= output < mean.shape[1] or output >= targets.shape[1]:
        raise ValueError(f"output must be in [0, {min(mean.shape[1], targets.shape[1])}); "
                         f"got {output}.")
    xs, mu, sd = grid[:, 0], mean[:, output], std[:, output]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, mu, color="C0", label="prediction")
    ax.fill_between(xs, mu - n_std * sd, mu + n_std * sd, color="C0", alpha=0.2,
                    label=f"±{n_std:g}σ (total)")
    if epistemic is not None:
        ep = epistemic[:, output]
        ax.fill_between(xs, mu - n_std * ep, mu + n_std * ep, color="C0", alpha=0.3,
                        label=f"±{n_std:g}σ (weights only)")
    ax.scatter(X[:, 0], targets[:, output], s=8, color="black", alpha=0.6, label="data")
    ax.axvspan(float(X.min()), float(X.max()), color="grey", alpha=0.07, lw=0)
    ax.set(xlabel="x", ylabel="y" if targets.shape[1] == 1 else f"y[{output}]",
           title=title or "prediction with uncertainty")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return _finish(fig, path)
