"""Back-propagation shown step by step, in the seed's notation, with every number checked.

:func:`explain` follows one sample through a network and writes down each step of the
backward pass as the seed does: the output gradient ∂E/∂z, the activation's diagonal
Jacobian diag(g′(s)), the Kronecker-structured ∂s/∂vec(W) = I ⊗ yᵀ, the weight gradient
∂E/∂W = δ yᵀ and the gradient handed down, ∂E/∂y = δᵀ W — then the same for the layer
below. Every value is computed from the core's Jacobian objects (``layer.jacobian()``,
``layer.param_jacobian()``, :func:`~jacnet.jacobians.compose`), and every one is checked
against the fast path (``backward``, ``model.grads``) and against central finite
differences in float64. The result renders to a terminal (rich, when installed), to
plain text and to Markdown.

:func:`inspect_model` summarises a network on data: its layers, parameter count and the
structure and singular values of its Jacobians. The command-line bodies of
``jacnet explain`` and ``jacnet inspect`` live in :mod:`jacnet.cli`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from jacnet.checks import Comparison, _finite_difference, compare
from jacnet.jacobians import BlockRow, Diagonal, JacobianOperator, Kronecker, Matrix, PerSample
from jacnet.layers import Activation, Dropout, Layer, Linear, Softmax
from jacnet.losses import CrossEntropyLoss, Loss, MSELoss, get_loss
from jacnet.network import Sequential, jacobian, mlp

__all__ = [
    "Explanation",
    "Inspection",
    "Step",
    "default_sample",
    "explain",
    "inspect_model",
    "seed_network",
]

_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _sub(number: int) -> str:
    return str(number).translate(_SUBSCRIPTS)


# ======================================================================================
# Result objects
# ======================================================================================


@dataclass(frozen=True, repr=False)
class Step:
    """One quantity of the backward (or forward) pass, with its checks.

    Attributes
    ----------
    section : str
        The part of the pass it belongs to (``"Layer 3: s = W y"``).
    name : str
        The derivative in the seed's notation, e.g. ``"∂z/∂s"``.
    formula : str
        What it equals, e.g. ``"diag(g′(s))"``.
    kind : str
        ``"value"`` (forward pass), ``"gradient"`` (a row vector ∂E/∂·),
        ``"jacobian"`` or ``"weight gradient"``.
    value : ndarray
        The numbers for the sample: 1 × n for a gradient, m × n for a Jacobian,
        the weight's shape for a weight gradient.
    structure : str
        How it is stored: ``"diagonal"``, ``"Kronecker: I₂ ⊗ yᵀ"``, ``"dense"``, ...
    checks : tuple of Comparison
        The same quantity computed other ways (backward, finite differences).
    rtol : float
        The largest relative error a check may show and still pass.
    operator : JacobianOperator or None
        The structured operator behind a Jacobian step.
    note : str
        One sentence saying what the step means.
    """

    section: str
    name: str
    formula: str
    kind: str
    value: np.ndarray
    structure: str
    checks: tuple[Comparison, ...] = ()
    rtol: float = 1e-6
    operator: JacobianOperator | None = None
    note: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`value`."""
        return tuple(self.value.shape)

    @property
    def fd_error(self) -> float | None:
        """Largest relative error against finite differences (None when not checked)."""
        errors = [c.max_rel_error for c in self.checks if "finite differences" in c.name]
        return max(errors) if errors else None

    @property
    def max_error(self) -> float:
        """Largest relative error of all checks (0 when there are none)."""
        return max((c.max_rel_error for c in self.checks), default=0.0)

    @property
    def passed(self) -> bool:
        """Whether every check stayed within :attr:`rtol`."""
        return self.max_error <= self.rtol

    @property
    def title(self) -> str:
        """``"name = formula"`` (just the name when there is no formula)."""
        return f"{self.name} = {self.formula}" if self.formula else self.name

    def __repr__(self) -> str:
        verdict = "" if not self.checks else ", passed" if self.passed else ", FAILED"
        return (f"<Step {self.title}: {self.kind}, {self.structure}, "
                f"{_shape_text(self.shape)}{verdict}>")


def _format_array(value: np.ndarray, precision: int = 4) -> str:
    if value.ndim == 0:
        return f"{float(value):.{precision}g}"
    with np.printoptions(precision=precision, suppress=True, linewidth=100, threshold=400,
                         edgeitems=4):
        return np.array2string(value)


def _shape_text(shape: tuple[int, ...]) -> str:
    return " × ".join(str(n) for n in shape) if shape else "scalar"


def _check_text(step: Step) -> str:
    if not step.checks:
        return ""
    parts = [f"{c.name}: {c.max_rel_error:.1e}" for c in step.checks]
    verdict = "passed" if step.passed else "FAILED"
    return "checks (relative error) — " + "; ".join(parts) + f" — {verdict}"


class _Report:
    """Shared rendering of a titled list of steps (text, Markdown, rich)."""

    steps: tuple[Step, ...]
    rtol: float

    def _title(self) -> str:
        raise NotImplementedError

    def _preamble(self) -> list[str]:
        raise NotImplementedError

    def _closing(self) -> list[str]:
        raise NotImplementedError

    @property
    def sections(self) -> list[str]:
        """Section titles in order."""
        seen: list[str] = []
        for step in self.steps:
            if step.section not in seen:
                seen.append(step.section)
        return seen

    @property
    def n_checks(self) -> int:
        """Number of comparisons made."""
        return sum(len(step.checks) for step in self.steps)

    @property
    def max_error(self) -> float:
        """Largest relative error of any check."""
        return max((step.max_error for step in self.steps), default=0.0)

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(step.passed for step in self.steps)

    def __getitem__(self, name: str) -> Step:
        """The step called ``name`` (``"∂E/∂W"``), or the one whose title starts with it."""
        for step in self.steps:
            if step.name == name:
                return step
        for step in self.steps:
            if step.title.startswith(name):
                return step
        names = ", ".join(step.name for step in self.steps)
        raise KeyError(f"no step named {name!r}; the steps are: {names}.")

    def summary(self) -> str:
        """One line: how many checks, the largest error, passed or not."""
        verdict = "all passed" if self.passed else "SOME FAILED"
        return (f"{self.n_checks} checks, largest relative error {self.max_error:.1e} "
                f"(tolerance {self.rtol:.0e}): {verdict}.")

    # --- renderers --------------------------------------------------------------------
    def to_markdown(self) -> str:
        """The report as Markdown: one section per layer, one block per step."""
        lines = [f"# {self._title()}", "", *self._preamble(), ""]
        for section in self.sections:
            lines += [f"## {section}", ""]
            for step in (s for s in self.steps if s.section == section):
                lines.append(f"**{step.title}** — {step.structure}, {_shape_text(step.shape)}")
                lines.append("")
                if step.note:
                    lines += [step.note, ""]
                lines += ["```text", _format_array(step.value), "```", ""]
                if step.checks:
                    lines += [_check_text(step), ""]
        lines += [*self._closing(), ""]
        return "\n".join(lines)

    def to_text(self) -> str:
        """The report as plain text (what ``str()`` gives)."""
        lines = [self._title(), "=" * len(self._title()), *self._preamble()]
        for section in self.sections:
            lines += ["", section, "-" * len(section)]
            for step in (s for s in self.steps if s.section == section):
                lines.append(f"{step.title}   [{step.structure}, {_shape_text(step.shape)}]")
                if step.note:
                    lines.append(f"  {step.note}")
                lines += ["  " + row for row in _format_array(step.value).splitlines()]
                if step.checks:
                    lines.append("  " + _check_text(step))
        lines += ["", *self._closing()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        """Short, for a plain REPL: what was explained and the verdict (``print`` it for all)."""
        return (f"<{type(self).__name__}: {len(self.steps)} steps in {len(self.sections)} "
                f"sections; {self.summary()} print() it for the steps>")

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def to_rich(self) -> Any:
        """A rich renderable (``rich.console.Group``) for ``Console().print``.

        Raises
        ------
        ImportError
            When rich is not installed (``pip install 'jacnet[cli]'``).
        """
        try:
            from rich.console import Group
            from rich.panel import Panel
            from rich.rule import Rule
            from rich.text import Text
        except ImportError as exc:  # pragma: no cover - rich is in the test extra
            raise ImportError(
                "rendering for the terminal needs rich: pip install 'jacnet[cli]' "
                "(or use .to_text() / .to_markdown())."
            ) from exc
        parts: list[Any] = [Rule(self._title()), Text("\n".join(self._preamble()))]
        for section in self.sections:
            parts.append(Rule(section, style="cyan"))
            for step in (s for s in self.steps if s.section == section):
                # Structure and shape open the body: a panel subtitle is cut to the
                # panel's width, and long ones ("Kronecker: I₄ ⊗ xᵀ, 4 × 12") were.
                body = Text(f"{step.structure}, {_shape_text(step.shape)}\n", style="dim")
                if step.note:
                    body.append(step.note + "\n", style="italic")
                body.append(_format_array(step.value))
                if step.checks:
                    body.append("\n" + _check_text(step), style="green" if step.passed else "bold red")
                parts.append(Panel(body, title=step.title, title_align="left", expand=False))
        parts.append(Text("\n".join(self._closing()),
                          style="bold green" if self.passed else "bold red"))
        return Group(*parts)


@dataclass(frozen=True, repr=False)
class Explanation(_Report):
    """The backward pass of one sample, step by step (returned by :func:`explain`).

    Index it by a step's name (``explanation["∂E/∂W"]``); render it with
    :meth:`to_markdown`, :meth:`to_text` (``str()``) or :meth:`to_rich`.

    Attributes
    ----------
    model : Sequential
        The float64 copy of the network that was explained.
    x : ndarray, shape (in_features,)
    target : ndarray
        As the loss takes it (values of shape (out_features,), or a class label).
    loss_name : str
    loss : float
        E at the sample.
    steps : tuple of Step
    lr : float
        Step size of the gradient-descent step shown at the end.
    loss_after_step : float
        E after θ ← θ − lr ∂E/∂θ.
    rtol : float
    symbols : dict of str
        Names used in the report (``"weights"``: the weight symbols in layer order).
    caveats : tuple of str
        What the report cannot check and why (an activation's input on a kink, where
        finite differences straddle the corner).
    """

    model: Sequential
    x: np.ndarray
    target: np.ndarray
    loss_name: str
    loss: float
    steps: tuple[Step, ...]
    lr: float
    loss_after_step: float
    rtol: float = 1e-6
    symbols: dict[str, str] = field(default_factory=dict)
    caveats: tuple[str, ...] = ()

    def _title(self) -> str:
        return "Back-propagation, step by step"

    def _preamble(self) -> list[str]:
        layers = ", ".join(repr(layer) for layer in self.model.layers)
        return [
            f"Network: {layers} ({self.model.n_params} parameters, float64).",
            f"One sample x = {_format_array(self.x)}, target d = {_format_array(self.target)}, "
            f"loss {self.loss_name}.",
            "Each gradient is a row vector; the gradient handed down is the gradient from "
            "above times the layer's Jacobian, a vector–Jacobian product (VJP: what "
            "backward computes). Forward mode multiplies the same Jacobian by a column "
            "vector, a Jacobian–vector product (JVP).",
            *self.caveats,
        ]

    def _closing(self) -> list[str]:
        weights = ", ".join(f"{w} ← {w} − η ∂E/∂{w}" for w in self.symbols.get("weights", "").split())
        return [
            f"Gradient descent with η = {self.lr:g}: {weights}.",
            f"E = {self.loss:.6g} before the step, {self.loss_after_step + 0.0:.6g} after.",
            self.summary(),
        ]


# ======================================================================================
# Names in the seed's notation
# ======================================================================================


@dataclass
class _Names:
    tensors: list[str]            # tensors[i] = input of layer i; tensors[-1] = z
    weights: dict[int, str]       # layer index → weight symbol (Linear layers)
    biases: dict[int, str]
    deltas: dict[int, str]        # layer index → δ symbol of the Linear's output gradient
    functions: dict[int, str]     # layer index → function symbol (other layers)


def _names(model: Sequential) -> _Names:
    """Symbols for the tensors and weights: the seed's x, V, u, f, y, W, s, g, z for two layers."""
    layers = model.layers
    linear = [i for i, layer in enumerate(layers) if isinstance(layer, Linear)]
    n_linear = len(linear)
    if n_linear == 1:
        weights, nets, outs, funcs, biases = ["W"], ["s"], ["z"], ["g"], ["b"]
    elif n_linear == 2:
        weights, nets, outs, funcs = ["V", "W"], ["u", "s"], ["y", "z"], ["f", "g"]
        biases = ["b₁", "b₂"]
    else:
        ks = [_sub(k + 1) for k in range(n_linear)]
        weights = [f"W{k}" for k in ks]
        nets = [f"s{k}" for k in ks]
        outs = [f"y{k}" for k in ks]
        funcs = [f"f{k}" for k in ks]
        biases = [f"b{k}" for k in ks]
    tensors = ["x"]
    names = _Names(tensors, {}, {}, {}, {})
    k = 0
    used: set[str] = {"x"}
    for i, layer in enumerate(layers):
        if isinstance(layer, Linear):
            k += 1
            name = nets[k - 1]
            names.weights[i] = weights[k - 1]
            names.biases[i] = biases[k - 1]
            names.deltas[i] = "δ" if k == n_linear else f"δ{_sub(k)}"
        else:
            name = outs[k - 1] if k else "x"
            names.functions[i] = funcs[k - 1] if k else "h"
        while name in used:
            name += "′"
        used.add(name)
        tensors.append(name)
    if tensors[-1] != "z":
        tensors[-1] = "z"
    return names


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _structure(op: JacobianOperator, input_name: str = "y") -> str:
    if isinstance(op, Diagonal):
        return "diagonal"
    if isinstance(op, Kronecker):
        if op.left is None:
            return f"Kronecker: I{_sub(op.n_rows)} ⊗ {input_name}ᵀ"
        return f"Kronecker: A ⊗ {input_name}ᵀ"
    if isinstance(op, Matrix):
        return "dense (the weight matrix itself)"
    if isinstance(op, BlockRow):
        kinds = ", ".join(_structure(block).split(":")[0] for block in op.blocks)
        return f"block row [{kinds}]"
    if isinstance(op, PerSample):
        return "dense"
    return type(op).__name__


def _jacobian_formula(layer: Layer, function: str, inp: str, out: str) -> str:
    if isinstance(layer, Softmax):
        return f"diag({out}) − {out} {out}ᵀ"
    if isinstance(layer, Dropout):
        return "diag(mask / (1 − p))"
    if isinstance(layer, Activation):
        return f"diag({function}′({inp}))"
    return ""


def _loss_formulas(loss: Loss) -> tuple[str, str, str]:
    """(name, E formula, ∂E/∂z formula) for the one-sample loss."""
    if isinstance(loss, MSELoss):
        return "MSE", "½‖d − z‖²", "(z − d)ᵀ"
    if isinstance(loss, CrossEntropyLoss):
        return "cross-entropy", "−log softmax(z)_d", "(softmax(z) − onehot(d))ᵀ"
    name = type(loss).__name__
    return name, f"{name}(z, d)", ""


# ======================================================================================
# explain
# ======================================================================================


def seed_network(sizes: Sequence[int] = (3, 4, 2), activation: str = "sigmoid",
                 output_activation: str | None = "sigmoid", *, bias: bool = False,
                 seed: int = 0) -> Sequential:
    """The seed's two-layer network x → V → f → W → g, in float64.

    Parameters
    ----------
    sizes : sequence of int, default (3, 4, 2)
        ``(n, h, m)``: inputs, hidden units, outputs (any :func:`~jacnet.network.mlp` sizes).
    activation, output_activation : str
        f and g (``output_activation=None`` for a linear output).
    bias : bool, default False
        The seed's layers have no bias (s = W y); ``True`` adds b with ∂s/∂b = I.
    seed : int, default 0

    Returns
    -------
    Sequential

    Examples
    --------
    >>> seed_network()
    Sequential(
      (0) Linear(in_features=3, out_features=4, bias=False),
      (1) Sigmoid(),
      (2) Linear(in_features=4, out_features=2, bias=False),
      (3) Sigmoid()
    )  # 20 parameters, float64
    """
    return mlp(sizes, activation, output_activation, bias=bias, seed=seed, dtype=np.float64)


#: The sample of the guide (docs/backprop.md, section 3): x and the target d, each
#: repeated (``np.resize``) to the network's widths; cross-entropy takes class 0.
DEFAULT_X = (0.5, -1.0, 2.0)
DEFAULT_TARGET = (0.1, 0.8)


def default_sample(model: Sequential, loss: str | Loss = "mse") -> tuple[np.ndarray, np.ndarray]:
    """The sample :func:`explain` uses when none is given: the guide's, fitted to ``model``.

    x = (0.5, −1, 2, 0.5, −1, …) with ``in_features`` entries and d = (0.1, 0.8, 0.1, …)
    with ``out_features`` entries, or class 0 for a loss that takes labels; so on the
    seed network ``jacnet explain`` prints the numbers of docs/backprop.md.

    >>> default_sample(seed_network())
    (array([ 0.5, -1. ,  2. ]), array([0.1, 0.8]))
    """
    x = np.resize(np.array(DEFAULT_X), model.in_features)
    if get_loss(loss).takes_labels:
        return x, np.array([0])
    return x, np.resize(np.array(DEFAULT_TARGET), model.out_features)


@dataclass
class _KinkChecker:
    """The finite-difference checks of :func:`explain`, aware of activation kinks.

    A check whose perturbation reaches an activation input at or near a kink (``kinked``:
    layer index → units) and that fails is left out of the verdict; :meth:`fd` then
    returns the sentence saying so, and :attr:`caveats` names the units.
    """

    kinked: dict[int, np.ndarray]
    texts: list[str]
    rtol: float
    n_dropped: int = 0

    def crosses(self, j: int) -> bool:
        """Whether perturbing tensor j (a layer's input) reaches an input near a kink."""
        return any(i >= j for i in self.kinked)

    def fd(self, value: np.ndarray, reference: Callable[[], np.ndarray], crossed: bool
           ) -> tuple[list[Comparison], str]:
        """The comparison with finite differences (none when it fails across a kink) and
        the text to add to the step's note."""
        comparison = compare("vs finite differences", value, reference())
        if crossed and comparison.max_rel_error > self.rtol:
            self.n_dropped += 1
            return [], (" (Finite differences disagree here because they cross a kink: "
                        "not counted.)")
        return [comparison], ""

    @property
    def caveats(self) -> tuple[str, ...]:
        """The kink sentences, when some check was left out."""
        return tuple(self.texts) if self.n_dropped else ()


def explain(model: Sequential | None = None, x: Any = None, target: Any = None, *,
            loss: str | Loss = "mse", lr: float = 0.5, eps: float = 1e-6, rtol: float = 1e-6,
            seed: int = 0) -> Explanation:
    """Back-propagate one sample and record every step, each checked.

    For each layer from the output down: its Jacobian (``layer.jacobian()``: diagonal for
    an activation, the weight matrix for a linear layer), for a linear layer its Jacobian
    w.r.t. vec(W) (``layer.param_jacobian()``: I ⊗ yᵀ) and the weight gradient δ yᵀ, and
    the gradient handed down (the gradient from above times the Jacobian). Then the whole
    network's ∂z/∂θ (:func:`~jacnet.network.jacobian`) and one gradient-descent step.

    Every Jacobian is compared with central finite differences of the layer; every
    gradient with the layer's ``backward`` (or the model's ``grads`` after
    ``Sequential.backward``) and with finite differences of E. All in float64.

    Parameters
    ----------
    model : Sequential, optional
        Default: :func:`seed_network`, the seed's 2-layer network (3 → 4 → 2, sigmoid).
        Explained on a float64 copy; the model itself is not changed.
    x : array-like, shape (in_features,) or (1, in_features), optional
        The sample; default: the guide's, :func:`default_sample` (x = (0.5, −1, 2) on
        the seed network).
    target : array-like, optional
        d, as the loss takes it: shape (out_features,) for MSE, a class label for
        cross-entropy; default: :func:`default_sample`'s (d = (0.1, 0.8)).
    loss : str or Loss, default "mse"
        E; "mse" is the seed's ½‖d − z‖².
    lr : float, default 0.5
        η of the gradient-descent step shown at the end.
    eps : float, default 1e-6
        Finite-difference step.
    rtol : float, default 1e-6
        Largest relative error a check may show and pass.
    seed : int, default 0
        For the default model's weights.

    Returns
    -------
    Explanation

    Raises
    ------
    ValueError
        ``x`` with more than one row, or a target of the wrong size.

    Examples
    --------
    >>> ex = explain()
    >>> ex["∂z/∂s"].structure, ex["∂s/∂vec(W)"].formula, ex["∂s/∂vec(W)"].shape
    ('diagonal', 'I₂ ⊗ yᵀ', (2, 8))
    >>> bool(np.allclose(ex["∂E/∂W"].value, np.outer(ex["∂E/∂s"].value, ex["y"].value)))
    True
    >>> ex.passed
    True
    """
    loss_fn = get_loss(loss)
    if model is None:
        model = seed_network(seed=seed)
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a jacnet Sequential; got {type(model).__name__}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a number > 0; got {lr!r}.")
    m64 = model.astype(np.float64).eval()
    default_x, default_target = default_sample(m64, loss_fn)
    if x is None:
        x = default_x
    X = np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray) else x.astype(np.float64)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2 or X.shape[0] != 1:
        raise ValueError(
            f"explain follows one sample: x must have shape ({m64.in_features},) or "
            f"(1, {m64.in_features}); got {X.shape}. Pass a single row, e.g. X[0]."
        )
    X = m64.check_input(X)
    if target is None:
        target = default_target
    target_arr = np.asarray(target)
    if not loss_fn.takes_labels and target_arr.ndim <= 1:
        target_arr = target_arr.reshape(1, -1)
    elif loss_fn.takes_labels and target_arr.ndim == 0:
        target_arr = target_arr.reshape(1)
    d = loss_fn.prepare_target(target_arr, m64.out_features, dtype=np.float64)
    if d.shape[0] != 1:
        raise ValueError(f"target must describe one sample; got {d.shape[0]} rows.")

    names = _names(m64)
    t = names.tensors
    loss_name, loss_formula, grad_formula = _loss_formulas(loss_fn)
    steps: list[Step] = []

    def add(section: str, name: str, formula: str, kind: str, value: np.ndarray, structure: str,
            checks: Sequence[Comparison] = (), operator: JacobianOperator | None = None,
            note: str = "") -> None:
        # + 0.0 turns the -0.0 of (negative) × 0 into 0.0, which reads better.
        steps.append(Step(section, name, formula, kind, np.array(value, dtype=np.float64) + 0.0,
                          structure, tuple(checks), rtol, operator, note))

    # --- forward pass --------------------------------------------------------------
    tensors = [X]
    for layer in m64.layers:
        tensors.append(layer.forward(tensors[-1]))
    z = tensors[-1]
    E, grad_z = loss_fn.value_and_grad(z.copy(), d)
    section = "Forward pass"
    add(section, t[0], "", "value", X[0], "input")
    for i, layer in enumerate(m64.layers):
        if isinstance(layer, Linear):
            bias_term = f" + {names.biases[i]}" if layer.bias is not None else ""
            formula = f"{names.weights[i]} {t[i]}{bias_term}"
        elif isinstance(layer, Activation):
            function = names.functions[i]
            formula = f"{function}({t[i]}), {function} = {type(layer).__name__.lower()}"
        else:
            formula = f"{type(layer).__name__.lower()}({t[i]})"
        add(section, t[i + 1], formula, "value", tensors[i + 1][0], "vector")
    add(section, "d", "", "value", d[0], "target")
    add(section, "E", loss_formula, "value", np.array(E), "the loss")

    # References: a copy whose layers the finite differences may run freely, and one
    # for the fast path (each layer's own backward).
    ref = m64.copy().eval()
    fast = m64.copy().eval()
    fast.forward(X)

    def error_from(i: int) -> Callable[[np.ndarray], np.ndarray]:
        def f(value: np.ndarray) -> np.ndarray:
            out = value
            for layer in ref.layers[i:]:
                out = layer.forward(out)
            return np.asarray(loss_fn.value_and_grad(out, d)[0])
        return f

    def fd_gradient(i: int) -> np.ndarray:
        return _finite_difference(error_from(i), tensors[i], eps)

    # An activation whose input sits on a kink (ReLU at 0) has no derivative there: the
    # layer takes a convention (f′(0) = 0, as PyTorch does), and central differences
    # across the corner measure neither side. A finite-difference check whose
    # perturbation reaches an input near a kink is still made; if it fails, it is left
    # out of the verdict, the step says so, and the report names the unit. "Near" allows
    # for a weight's perturbation moving an input by eps times the values below it; a
    # check that passes is kept either way.
    kinked: dict[int, np.ndarray] = {}
    kink_texts: list[str] = []
    for i, layer in enumerate(m64.layers):
        if isinstance(layer, Activation) and layer.kinks:
            u = tensors[i][0]
            scale = max([1.0] + [float(np.abs(tensors[j]).max()) for j in range(i + 1)])
            distance = np.min(np.abs(u[:, None] - np.asarray(layer.kinks)[None, :]), axis=1)
            if (distance <= 10.0 * eps * scale).any():
                kinked[i] = units = np.flatnonzero(distance <= 10.0 * eps * scale)
                kink_texts.append(
                    f"{t[i]}, the input of layer {i} ({type(layer).__name__}), is at or near "
                    f"its kink at unit{'s' if units.size > 1 else ''} "
                    f"{', '.join(map(str, units))}, where the function has no derivative; "
                    f"jacnet uses f′ = {_format_array(layer.derivative()[0][units])} there, as "
                    "PyTorch does. Finite differences across the corner measure neither "
                    "side, so the checks they fail are left out of the verdict.")
    checker = _KinkChecker(kinked, kink_texts, rtol)
    crosses = checker.crosses

    def fd_layer_jacobian(i: int) -> np.ndarray:
        return _finite_difference(ref.layers[i].forward, tensors[i], eps)[0, :, 0, :]

    def fd_weight(i: int, attr: str, of_error: bool) -> np.ndarray:
        layer = ref.layers[i]
        original = getattr(layer, attr).copy()

        def f(value: np.ndarray) -> np.ndarray:
            getattr(layer, attr)[...] = value
            if of_error:
                return error_from(i)(tensors[i])
            return layer.forward(tensors[i])[0]

        result = _finite_difference(f, original, eps)
        getattr(layer, attr)[...] = original
        return result

    # --- the output gradient ---------------------------------------------------------
    section = "The output gradient"
    add(section, f"∂E/∂{t[-1]}", grad_formula, "gradient", grad_z, "row vector",
        [compare("vs finite differences", grad_z, fd_gradient(len(m64.layers)))],
        note="Where back-propagation starts: the derivative of the scalar E w.r.t. the "
             "output vector is a row vector (a gradient).")

    # --- layer by layer, from the top ------------------------------------------------
    m64.backward(grad_z.copy())
    grads = m64.grads.copy()
    slices = m64.parameter_slices()
    grad = grad_z
    fast_grad = grad_z.copy()
    for i in range(len(m64.layers) - 1, -1, -1):
        layer = m64.layers[i]
        inp, out = t[i], t[i + 1]
        fast_result = fast.layers[i].backward(fast_grad.copy())
        assert fast_result is not None
        fast_grad = fast_result
        if isinstance(layer, Linear):
            W, delta = names.weights[i], names.deltas[i]
            bias_text = f" + {names.biases[i]}" if layer.bias is not None else ""
            ordinal = _ordinal(sum(isinstance(lay, Linear) for lay in m64.layers[:i + 1]))
            section = f"Layer {i}, the {ordinal} linear layer: {out} = {W} {inp}{bias_text}"
            param_jac = layer.param_jacobian()
            kron = param_jac.blocks[0]
            add(section, f"∂{out}/∂vec({W})", f"I{_sub(layer.out_features)} ⊗ {inp}ᵀ", "jacobian",
                kron.dense()[0], _structure(kron, inp),
                [compare("vs finite differences", kron.dense()[0],
                         fd_weight(i, "weight", of_error=False).reshape(kron.n_out, -1))],
                operator=kron,
                note=f"{W} is differentiated as the vector vec({W}) (row-major); the only "
                     f"non-zeros are {layer.out_features} copies of {inp}ᵀ.")
            grad_weight = kron.vjp(grad).reshape(layer.weight.shape)
            fd, why = checker.fd(grad_weight, partial(fd_weight, i, "weight", of_error=True),
                                 crosses(i + 1))
            add(section, f"∂E/∂{W}", f"{delta} {inp}ᵀ", "weight gradient", grad_weight,
                "outer product (rank 1)",
                [compare(f"vs {delta} {inp}ᵀ (np.outer)", grad_weight, np.outer(grad[0], tensors[i][0])),
                 compare(f"vs backward (model.grads['{i}.weight'])", grad_weight,
                         grads[slices[f"{i}.weight"]].reshape(layer.weight.shape)),
                 *fd],
                note=f"(∂E/∂{out}) · ∂{out}/∂vec({W}) reshaped to {W}'s shape, with "
                     f"{delta}ᵀ = ∂E/∂{out}: used to update {W}." + why)
            if layer.bias is not None:
                b = names.biases[i]
                grad_bias = param_jac.blocks[1].vjp(grad)[0]
                fd, why = checker.fd(grad_bias, partial(fd_weight, i, "bias", of_error=True),
                                     crosses(i + 1))
                add(section, f"∂E/∂{b}", f"{delta}ᵀ", "weight gradient", grad_bias, "row vector",
                    [compare(f"vs backward (model.grads['{i}.bias'])", grad_bias,
                             grads[slices[f"{i}.bias"]]),
                     *fd],
                    note=f"∂{out}/∂{b} = I, so the bias gradient is {delta}ᵀ itself." + why)
            jac: JacobianOperator = layer.jacobian()
            add(section, f"∂{out}/∂{inp}", W, "jacobian", jac.dense()[0], _structure(jac),
                [compare("vs finite differences", jac.dense()[0], fd_layer_jacobian(i))],
                operator=jac)
            grad_below = jac.vjp(grad)
            fd, why = checker.fd(grad_below, partial(fd_gradient, i), crosses(i))
            handed = "handed down to the layer below" if i > 0 else \
                "the input gradient (not needed for training; every layer computes it)"
            add(section, f"∂E/∂{inp}", f"{delta}ᵀ {W}", "gradient", grad_below, "row vector",
                [compare("vs the layer's backward", grad_below, fast_grad),
                 *fd],
                note=f"The gradient from above times the Jacobian {W} (a VJP): {handed}." + why)
        else:
            function = names.functions[i]
            section = f"Layer {i}, {type(layer).__name__}: {out} = {function}({inp})"
            jac = layer.jacobian()
            formula = _jacobian_formula(layer, function, inp, out)
            note = ("An elementwise function has a diagonal Jacobian: output k depends on "
                    "input k only." if isinstance(jac, Diagonal) else "")
            fd, why = checker.fd(jac.dense()[0], partial(fd_layer_jacobian, i), i in kinked)
            add(section, f"∂{out}/∂{inp}", formula, "jacobian", jac.dense()[0], _structure(jac),
                fd, operator=jac, note=note + why)
            grad_below = jac.vjp(grad)
            fd, why = checker.fd(grad_below, partial(fd_gradient, i), crosses(i))
            below = i - 1 if i > 0 and isinstance(m64.layers[i - 1], Linear) else None
            rhs = f"∂E/∂{out} · {formula}" if formula else f"∂E/∂{out} · ∂{out}/∂{inp}"
            if below is not None:
                rhs += f" = {names.deltas[below]}ᵀ"
            add(section, f"∂E/∂{inp}", rhs, "gradient", grad_below, "row vector",
                [compare("vs the layer's backward", grad_below, fast_grad),
                 *fd],
                note=("The gradient from above times the Jacobian, a VJP"
                               + (" (elementwise: ∂E/∂" + out + " ⊙ " + function + "′(" + inp + "))"
                                  if isinstance(jac, Diagonal) else "") + "." + why))
        grad = grad_below

    # --- the whole network -----------------------------------------------------------
    section = "The whole network"
    theta = m64.params.copy()
    network_jac = jacobian(m64, X, wrt="params", structured=True)
    assert isinstance(network_jac, BlockRow)

    def outputs_at(values: np.ndarray) -> np.ndarray:
        ref.params[:] = values
        return ref.forward(X)[0]

    def error_at(values: np.ndarray) -> np.ndarray:
        ref.params[:] = values
        return np.asarray(loss_fn.value_and_grad(ref.forward(X), d)[0])

    def fd_at(function: Callable[[np.ndarray], np.ndarray]) -> Callable[[], np.ndarray]:
        def reference() -> np.ndarray:
            result = _finite_difference(function, theta, eps)
            ref.params[:] = theta
            return result
        return reference

    weights = [names.weights[i] for i in sorted(names.weights)]
    # θ reaches the tensors above the lowest layer with parameters.
    crosses_theta = crosses(m64._lowest_with_params + 1)
    fd, why = checker.fd(network_jac.dense()[0], fd_at(outputs_at), crosses_theta)
    add(section, f"∂{t[-1]}/∂θ", f"[{' '.join(f'∂{t[-1]}/∂vec({w})' for w in weights)}]", "jacobian",
        network_jac.dense()[0], _structure(network_jac), fd, operator=network_jac,
        note="θ is the model's flat parameter vector; each block is A ⊗ (layer "
             "input)ᵀ, the Kronecker form kept through the chain rule." + why)
    grad_theta = network_jac.vjp(grad_z)
    fd, why = checker.fd(grad_theta, lambda: fd_at(error_at)()[None, :], crosses_theta)
    add(section, "∂E/∂θ", f"∂E/∂{t[-1]} · ∂{t[-1]}/∂θ", "gradient", grad_theta, "row vector",
        [compare("vs backward (model.grads)", grad_theta, grads[None, :]), *fd],
        note="The output gradient times the network's Jacobian: all weight "
             "gradients at once." + why)

    loss_after = float(error_at(theta - lr * grads))
    ref.params[:] = theta
    return Explanation(m64, X[0], d[0], loss_name, float(E), tuple(steps), float(lr), loss_after,
                       rtol, {"weights": " ".join(weights)},
                       checker.caveats)


# ======================================================================================
# inspect
# ======================================================================================


def _singular_values(op: JacobianOperator) -> np.ndarray:
    """Singular values of each sample's Jacobian, shape (B, min(m, n)), largest first."""
    if isinstance(op, Diagonal):
        return -np.sort(-np.abs(op.diagonal), axis=1)
    if isinstance(op, Matrix):
        values = np.linalg.svd(op.matrix, compute_uv=False)
        return np.broadcast_to(values, (op.batch_size, values.size))
    return np.linalg.svd(op.dense(), compute_uv=False)


def _stored_bytes(op: JacobianOperator) -> int:
    """Bytes the structured operator keeps (its factors), as opposed to op.dense()."""
    if isinstance(op, BlockRow):
        return sum(_stored_bytes(block) for block in op.blocks)
    if isinstance(op, Kronecker):
        return op.x.nbytes + (0 if op.left is None else op.left.nbytes)
    if isinstance(op, Diagonal):
        return op.diagonal.nbytes
    if isinstance(op, Matrix):
        return op.matrix.nbytes
    if isinstance(op, PerSample):
        return op.jacobians.nbytes
    return int(np.prod(op.shape)) * 8


@dataclass(frozen=True, repr=False)
class Inspection:
    """Architecture and Jacobian summary of a network on data (from :func:`inspect_model`).

    Attributes
    ----------
    model : Sequential
    n_samples : int
        How many rows of the data the Jacobians were taken at.
    layers : list of dict
        One row per layer: ``index``, ``layer``, ``out_features``, ``n_params``,
        ``jacobian`` (structure of ∂output/∂input), ``param_jacobian``, ``sigma_max``
        and ``sigma_min`` (median over samples of the layer Jacobian's largest and
        smallest singular value) and ``grad_norm`` (‖∂E/∂θ_layer‖ when targets were given).
    network : dict
        ``input_jacobian_shape``, ``sigma_max``, ``sigma_min`` (of ∂z/∂x, median over
        samples), ``param_jacobian_shape``, ``param_jacobian_structure``, ``stored_bytes``
        and ``dense_bytes`` of ∂z/∂θ, and ``loss`` when targets were given.
    """

    model: Sequential
    n_samples: int
    layers: list[dict[str, Any]]
    network: dict[str, Any]

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["#", "layer", "out", "params", "∂out/∂in", "σ max", "σ min", "∂out/∂θ"]
        with_grad = any(row["grad_norm"] is not None for row in self.layers)
        if with_grad:
            header.append("‖∂E/∂θ‖")
        rows = []
        for row in self.layers:
            cells = [str(row["index"]), row["layer"], str(row["out_features"]), str(row["n_params"]),
                     row["jacobian"], f"{row['sigma_max']:.3g}", f"{row['sigma_min']:.3g}",
                     row["param_jacobian"] or "—"]
            if with_grad:
                norm = row["grad_norm"]
                cells.append("—" if norm is None else f"{norm:.3g}")
            rows.append(cells)
        return header, rows

    def _lines(self) -> list[str]:
        net = self.network
        lines = [
            f"{self.model.n_params} parameters ({self.model.dtype}), {len(self.model.layers)} layers, "
            f"Jacobians at {self.n_samples} samples.",
            f"∂z/∂x per sample: {_shape_text(net['input_jacobian_shape'])}, singular values "
            f"{net['sigma_min']:.3g} … {net['sigma_max']:.3g} (median over samples).",
            f"∂z/∂θ per sample: {_shape_text(net['param_jacobian_shape'])}, "
            f"{net['param_jacobian_structure']}: {net['stored_bytes']:,} bytes stored for "
            f"{self.n_samples} samples instead of {net['dense_bytes']:,} dense.",
        ]
        if net.get("loss") is not None:
            lines.append(f"Loss on these samples: {net['loss']:.6g}.")
        return lines

    def to_markdown(self) -> str:
        """The summary as Markdown (a table of layers, then the network's Jacobians)."""
        header, rows = self._rows()
        lines = ["# Model summary", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join([*lines, "", *self._lines(), ""])

    def to_text(self) -> str:
        """The summary as plain text (what ``str()`` gives)."""
        header, rows = self._rows()
        widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
        table = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
                 for cells in [header, *rows]]
        return "\n".join([*table, "", *self._lines()])

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return (f"<Inspection: {len(self.model.layers)} layers, {self.model.n_params} "
                f"parameters, Jacobians at {self.n_samples} samples; print() it for the table>")

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def to_rich(self) -> Any:
        """A rich renderable (needs rich: ``pip install 'jacnet[cli]'``)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        header, rows = self._rows()
        table = Table(title="Model summary")
        for name in header:
            table.add_column(name)
        for cells in rows:
            table.add_row(*cells)
        return Group(table, Text("\n".join(self._lines())))


def inspect_model(model: Sequential, X: Any, y: Any = None, *, loss: str | Loss = "mse",
                  max_samples: int = 32) -> Inspection:
    """Summarise a network's layers and Jacobians on data.

    Parameters
    ----------
    model : Sequential
    X : array-like, shape (n_samples, in_features)
        Only the first ``max_samples`` rows are used.
    y : array-like, optional
        Targets for those rows, as ``loss`` takes them; adds the loss and per-layer
        gradient norms.
    loss : str or Loss, default "mse"
    max_samples : int, default 32

    Returns
    -------
    Inspection

    Examples
    --------
    >>> model = mlp([2, 8, 8, 1], activation="relu", seed=0)
    >>> info = inspect_model(model, np.random.default_rng(0).normal(size=(16, 2)))
    >>> [row["jacobian"] for row in info.layers][:2]
    ['dense (the weight matrix itself)', 'diagonal']
    >>> info.network["param_jacobian_shape"]
    (1, 105)
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a jacnet Sequential; got {type(model).__name__}.")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"max_samples must be a positive integer; got {max_samples!r}.")
    m = model.copy().eval()
    X = m.check_input(X)[:max_samples]
    if X.shape[0] == 0:
        raise ValueError("X has no rows; inspect needs at least one sample.")
    grad_norms: list[float | None] = [None] * len(m.layers)
    loss_value = None
    if y is not None:
        loss_fn = get_loss(loss)
        target = loss_fn.prepare_target(np.asarray(y)[:max_samples], m.out_features, dtype=m.dtype)
        if target.shape[0] != X.shape[0]:
            raise ValueError(f"y has {target.shape[0]} rows but X has {X.shape[0]}; they must match.")
        loss_value, grad_out = loss_fn.value_and_grad(m.forward(X), target)
        m.backward(grad_out, input_grad=False)
        grad_norms = [float(np.linalg.norm(m.grads[s])) if layer.n_params else None
                      for layer, s in zip(m.layers, m.layer_slices)]
    m.forward(X)
    rows = []
    for i, layer in enumerate(m.layers):
        op = layer.jacobian()
        sigma = _singular_values(op)
        param = layer.param_jacobian()
        rows.append({
            "index": i, "layer": repr(layer), "out_features": op.n_out, "n_params": layer.n_params,
            "jacobian": _structure(op), "sigma_max": float(np.median(sigma[:, 0])),
            "sigma_min": float(np.median(sigma[:, -1])),
            "param_jacobian": None if param is None else _structure(param).replace(
                "block row ", ""),
            "grad_norm": grad_norms[i],
        })
    input_jac = jacobian(m, X, wrt="input", structured=True)
    assert isinstance(input_jac, JacobianOperator)
    sigma = _singular_values(input_jac)
    param_jac = jacobian(m, X, wrt="params", structured=True)
    assert isinstance(param_jac, JacobianOperator)
    network = {
        "input_jacobian_shape": (input_jac.n_out, input_jac.n_in),
        "sigma_max": float(np.median(sigma[:, 0])), "sigma_min": float(np.median(sigma[:, -1])),
        "param_jacobian_shape": (param_jac.n_out, param_jac.n_in),
        "param_jacobian_structure": _structure(param_jac),
        "stored_bytes": _stored_bytes(param_jac),
        "dense_bytes": int(np.prod(param_jac.shape)) * m.dtype.itemsize,
        "loss": loss_value,
    }
    return Inspection(m, int(X.shape[0]), rows, network)
