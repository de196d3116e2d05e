"""Back-propagation shown step by step, in the seed's notation, with every number checked.

:func:`explain` follows one sample through a network and writes down each step of the
backward pass as the seed does: the output gradient ∂E/∂z, the activation's diagonal
Jacobian diag(g′(s)), the Kronecker-structured ∂s/∂vec(W) = I ⊗ yᵀ, the weight gradient
∂E/∂W = δ yᵀ and the gradient handed down, ∂E/∂y = δᵀ W — then the same for the layer
below. Every value is computed from the core's Jacobian objects (``layer.jacobian()``,
``layer.param_jacobian()``, :func:`~jacnet.jacobians.compose`), and every one is checked
against the fast path (``backward``, ``model.grads``) and against central finite
differences in float64. With ``batch=``, it adds a batch: Δ (one row δ_bᵀ per sample)
and ∂E/∂W = Σ_b δ_b y_bᵀ = Δᵀ Y. The result renders to a terminal (rich, when
installed), to plain text and to Markdown.

:func:`explain` is a small driver: :class:`_Pass` holds the sample's forward and backward
pass, one builder per kind of step turns it into :class:`Step` objects, and
:class:`_Checker` computes every quantity another way (each layer's ``backward``, finite
differences) and compares.

:func:`inspect_model` summarises a network on data: its layers, parameter count and the
structure and singular values of its Jacobians. The command-line bodies of
``jacnet explain`` and ``jacnet inspect`` live in :mod:`jacnet.cli`.
"""

from __future__ import annotations

import copy
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
    "default_batch",
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


#: The batch of the guide (docs/backprop.md, section 7): the sample above and a second
#: row; targets repeated to the network's widths, classes 0 and 1 for cross-entropy.
DEFAULT_BATCH_X = ((0.5, -1.0, 2.0), (1.0, 0.0, -1.0))
DEFAULT_BATCH_TARGET = ((0.1, 0.8), (0.9, 0.2))


def default_batch(model: Sequential, loss: str | Loss = "mse", n_samples: int = 2, *,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The batch :func:`explain` shows for ``batch=n_samples``: the guide's two rows, then
    standard-normal inputs and uniform targets (random classes) drawn with ``seed``.

    >>> X, D = default_batch(seed_network())
    >>> X
    array([[ 0.5, -1. ,  2. ],
           [ 1. ,  0. , -1. ]])
    >>> D
    array([[0.1, 0.8],
           [0.9, 0.2]])
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) \
            or n_samples < 1:
        raise ValueError(f"the batch needs a positive number of samples; got {n_samples!r}.")
    n_in, n_out, labels = model.in_features, model.out_features, get_loss(loss).takes_labels
    rows = [np.resize(np.array(x), n_in) for x in DEFAULT_BATCH_X]
    targets = [np.array([b % n_out]) if labels else np.resize(np.array(d), n_out)
               for b, d in enumerate(DEFAULT_BATCH_TARGET)]
    rng = np.random.default_rng(seed)
    for _ in range(len(rows), n_samples):
        rows.append(rng.normal(size=n_in))
        targets.append(rng.integers(0, n_out, size=1) if labels else rng.uniform(size=n_out))
    X, D = np.stack(rows[:n_samples]), np.stack(targets[:n_samples])
    return X, D[:, 0] if labels else D

# --- what every step builder reads -------------------------------------------------------


@dataclass(frozen=True)
class _Pass:
    """One sample's forward and backward pass through the float64 model: what the step
    builders read, never change.

    ``tensors[i]`` is the input of layer i (``tensors[-1]`` the output z); ``grads`` is
    ``model.grads`` after ``Sequential.backward``, the fast path the weight gradients are
    checked against.
    """

    model: Sequential
    names: _Names
    tensors: tuple[np.ndarray, ...]
    target: np.ndarray
    loss: Loss
    loss_value: float
    grad_output: np.ndarray
    grads: np.ndarray
    rtol: float

    @classmethod
    def run(cls, model: Sequential, X: np.ndarray, d: np.ndarray, loss: Loss, rtol: float
            ) -> _Pass:
        """Forward ``X`` through ``model``, take E and ∂E/∂z, and back-propagate them."""
        tensors = [X]
        for layer in model.layers:
            tensors.append(layer.forward(tensors[-1]))
        E, grad_z = loss.value_and_grad(tensors[-1].copy(), d)
        model.backward(grad_z.copy())
        return cls(model, _names(model), tuple(tensors), d, loss, float(E), grad_z,
                   model.grads.copy(), rtol)

    def step(self, section: str, name: str, formula: str, kind: str, value: np.ndarray,
             structure: str, checks: Sequence[Comparison] = (),
             operator: JacobianOperator | None = None, note: str = "") -> Step:
        """A :class:`Step` judged by this pass's ``rtol``."""
        # + 0.0 turns the -0.0 of (negative) × 0 into 0.0, which reads better.
        return Step(section, name, formula, kind, np.array(value, dtype=np.float64) + 0.0,
                    structure, tuple(checks), self.rtol, operator, note)


# --- the checker -------------------------------------------------------------------------


class _Checker:
    """Every other way :func:`explain` computes a quantity, and the comparisons.

    The fast path is each layer's own ``backward`` on a copy of the model; the slow path is
    central finite differences in float64 on another copy, which this object alone
    perturbs (and restores).

    An activation whose input sits on a kink (ReLU at 0) has no derivative there: the
    layer takes a convention (f′(0) = 0, as PyTorch does), and central differences across
    the corner measure neither side. A finite-difference check whose perturbation reaches
    an input near a kink is still made; if it fails, it is left out of the verdict, the
    step says so (:meth:`finite_differences` returns the sentence) and :attr:`caveats`
    names the units. "Near" allows for a weight's perturbation moving an input by eps
    times the values below it; a check that passes is kept either way.
    """

    def __init__(self, sample: _Pass, eps: float):
        self.sample = sample
        self.eps = eps
        self.rtol = sample.rtol
        self._reference = sample.model.copy().eval()
        self.kinked, self._kink_texts = _kinks(sample, eps)
        #: Steps whose finite-difference check was left out of the verdict.
        self.dropped: list[str] = []
        self.backward_gradients = self._backward_chain()

    def _backward_chain(self) -> dict[int, np.ndarray]:
        """Layer index → the gradient its own ``backward`` hands down, chained from ∂E/∂z."""
        fast = self.sample.model.copy().eval()
        fast.forward(self.sample.tensors[0])
        gradients: dict[int, np.ndarray] = {}
        grad = self.sample.grad_output.copy()
        for i in range(len(fast.layers) - 1, -1, -1):
            result = fast.layers[i].backward(grad.copy())
            assert result is not None
            gradients[i] = grad = result
        return gradients

    # --- the checks ---------------------------------------------------------------------
    def crosses(self, j: int) -> bool:
        """Whether perturbing tensor j (a layer's input) reaches an input near a kink."""
        return any(i >= j for i in self.kinked)

    def finite_differences(self, name: str, value: np.ndarray,
                           reference: Callable[[], np.ndarray], crossed: bool
                           ) -> tuple[list[Comparison], str]:
        """The comparison of step ``name``'s value with finite differences (none when it
        fails across a kink) and the text to add to the step's note."""
        comparison = compare("vs finite differences", value, reference())
        if crossed and comparison.max_rel_error > self.rtol:
            self.dropped.append(name)
            return [], (" (Finite differences disagree here because they cross a kink: "
                        "not counted.)")
        return [comparison], ""

    @property
    def caveats(self) -> tuple[str, ...]:
        """The kink sentences, when some check was left out."""
        return tuple(self._kink_texts) if self.dropped else ()

    # --- finite differences -------------------------------------------------------------
    def _error_above(self, i: int, value: np.ndarray) -> np.ndarray:
        """E as a function of tensor i (the input of layer i)."""
        out = value
        for layer in self._reference.layers[i:]:
            out = layer.forward(out)
        return np.asarray(self.sample.loss.value_and_grad(out, self.sample.target)[0])

    def gradient(self, i: int) -> np.ndarray:
        """∂E/∂(tensor i) by finite differences."""
        return _finite_difference(partial(self._error_above, i), self.sample.tensors[i], self.eps)

    def layer_jacobian(self, i: int) -> np.ndarray:
        """∂(output of layer i)/∂(its input) by finite differences."""
        return _finite_difference(self._reference.layers[i].forward, self.sample.tensors[i],
                                  self.eps)[0, :, 0, :]

    def parameter(self, i: int, attr: str, *, of_error: bool) -> np.ndarray:
        """∂E/∂(layer i's ``attr``) (``of_error``) or ∂(its output)/∂``attr``."""
        layer = self._reference.layers[i]
        original = getattr(layer, attr).copy()
        x = self.sample.tensors[i]

        def f(value: np.ndarray) -> np.ndarray:
            getattr(layer, attr)[...] = value
            return self._error_above(i, x) if of_error else layer.forward(x)[0]

        result = _finite_difference(f, original, self.eps)
        getattr(layer, attr)[...] = original
        return result

    def network(self, *, of_error: bool) -> np.ndarray:
        """∂E/∂θ (``of_error``, shape (1, P)) or ∂z/∂θ (m × P) by finite differences."""
        ref, x, theta = self._reference, self.sample.tensors[0], self.sample.model.params.copy()

        def f(values: np.ndarray) -> np.ndarray:
            ref.params[:] = values
            z = ref.forward(x)
            return np.asarray(self.sample.loss.value_and_grad(z, self.sample.target)[0]) \
                if of_error else z[0]

        result = _finite_difference(f, theta, self.eps)
        ref.params[:] = theta
        return result[None, :] if of_error else result


def _kinks(sample: _Pass, eps: float) -> tuple[dict[int, np.ndarray], list[str]]:
    """Layer index → units whose activation input is at or near a kink, and a sentence
    for each such layer (see :class:`_Checker`)."""
    tensors, t = sample.tensors, sample.names.tensors
    kinked: dict[int, np.ndarray] = {}
    texts: list[str] = []
    for i, layer in enumerate(sample.model.layers):
        if isinstance(layer, Activation) and layer.kinks:
            scale = max([1.0] + [float(np.abs(tensors[j]).max()) for j in range(i + 1)])
            for row, u in enumerate(tensors[i]):
                distance = np.min(np.abs(u[:, None] - np.asarray(layer.kinks)[None, :]), axis=1)
                if not (distance <= 10.0 * eps * scale).any():
                    continue
                units = np.flatnonzero(distance <= 10.0 * eps * scale)
                kinked[i] = np.union1d(kinked.get(i, units), units)
                where = f" (sample {row} of the batch)" if len(tensors[i]) > 1 else ""
                texts.append(
                    f"{t[i]}{where}, the input of layer {i} ({type(layer).__name__}), is at or "
                    f"near its kink at unit{'s' if units.size > 1 else ''} "
                    f"{', '.join(map(str, units))}, where the function has no derivative; "
                    f"jacnet uses f′ = {_format_array(layer.derivative()[row][units])} there, "
                    "as PyTorch does. Finite differences across the corner measure neither "
                    "side, so the checks they fail are left out of the verdict.")
    return kinked, texts


# --- the step builders -------------------------------------------------------------------


def _forward_steps(p: _Pass) -> list[Step]:
    """x, each layer's output, d and E."""
    t, names, section = p.names.tensors, p.names, "Forward pass"
    steps = [p.step(section, t[0], "", "value", p.tensors[0][0], "input")]
    for i, layer in enumerate(p.model.layers):
        if isinstance(layer, Linear):
            bias_term = f" + {names.biases[i]}" if layer.bias is not None else ""
            formula = f"{names.weights[i]} {t[i]}{bias_term}"
        elif isinstance(layer, Activation):
            function = names.functions[i]
            formula = f"{function}({t[i]}), {function} = {type(layer).__name__.lower()}"
        else:
            formula = f"{type(layer).__name__.lower()}({t[i]})"
        steps.append(p.step(section, t[i + 1], formula, "value", p.tensors[i + 1][0], "vector"))
    _, loss_formula, _ = _loss_formulas(p.loss)
    steps.append(p.step(section, "d", "", "value", p.target[0], "target"))
    steps.append(p.step(section, "E", loss_formula, "value", np.array(p.loss_value), "the loss"))
    return steps


def _output_gradient_step(p: _Pass, checker: _Checker) -> Step:
    """∂E/∂z, where back-propagation starts (for softmax with cross-entropy: softmax(z) − onehot(d))."""
    _, _, grad_formula = _loss_formulas(p.loss)
    grad_z = p.grad_output
    return p.step("The output gradient", f"∂E/∂{p.names.tensors[-1]}", grad_formula, "gradient",
                  grad_z, "row vector",
                  [compare("vs finite differences", grad_z, checker.gradient(len(p.model.layers)))],
                  note="Where back-propagation starts: the derivative of the scalar E w.r.t. "
                       "the output vector is a row vector (a gradient).")


def _linear_steps(p: _Pass, checker: _Checker, i: int, grad: np.ndarray
                  ) -> tuple[list[Step], np.ndarray]:
    """A linear layer s = W y (+ b): ∂s/∂vec(W) = I ⊗ yᵀ, the weight gradient δ yᵀ, the bias
    gradient δᵀ, the Jacobian W and the gradient handed down δᵀ W; and that gradient."""
    layer = p.model.layers[i]
    assert isinstance(layer, Linear)
    names = p.names
    inp, out = names.tensors[i], names.tensors[i + 1]
    W = names.weights[i]
    bias_text = f" + {names.biases[i]}" if layer.bias is not None else ""
    ordinal = _ordinal(sum(isinstance(lay, Linear) for lay in p.model.layers[:i + 1]))
    section = f"Layer {i}, the {ordinal} linear layer: {out} = {W} {inp}{bias_text}"
    steps = _weight_steps(p, checker, i, grad, section)
    if layer.bias is not None:
        steps.append(_bias_step(p, checker, i, grad, section))
    jac: JacobianOperator = layer.jacobian()
    steps.append(p.step(section, f"∂{out}/∂{inp}", W, "jacobian", jac.dense()[0], _structure(jac),
                        [compare("vs finite differences", jac.dense()[0], checker.layer_jacobian(i))],
                        operator=jac))
    grad_below = jac.vjp(grad)
    name = f"∂E/∂{inp}"
    fd, why = checker.finite_differences(name, grad_below, partial(checker.gradient, i),
                                         checker.crosses(i))
    handed = "handed down to the layer below" if i > 0 else \
        "the input gradient (not needed for training; every layer computes it)"
    steps.append(p.step(section, name, f"{names.deltas[i]}ᵀ {W}", "gradient", grad_below,
                        "row vector",
                        [compare("vs the layer's backward", grad_below,
                                 checker.backward_gradients[i]), *fd],
                        note=f"The gradient from above times the Jacobian {W} (a VJP): {handed}."
                             + why))
    return steps, grad_below


def _weight_steps(p: _Pass, checker: _Checker, i: int, grad: np.ndarray, section: str
                  ) -> list[Step]:
    """∂s/∂vec(W) = I ⊗ yᵀ and ∂E/∂W = δ yᵀ of linear layer i, given δᵀ = ``grad``."""
    layer = p.model.layers[i]
    assert isinstance(layer, Linear)
    inp, out = p.names.tensors[i], p.names.tensors[i + 1]
    W, delta = p.names.weights[i], p.names.deltas[i]
    param_jac = layer.param_jacobian()
    assert isinstance(param_jac, BlockRow)
    kron = param_jac.blocks[0]
    steps = [p.step(section, f"∂{out}/∂vec({W})", f"I{_sub(layer.out_features)} ⊗ {inp}ᵀ",
                    "jacobian", kron.dense()[0], _structure(kron, inp),
                    [compare("vs finite differences", kron.dense()[0],
                             checker.parameter(i, "weight", of_error=False).reshape(kron.n_out, -1))],
                    operator=kron,
                    note=f"{W} is differentiated as the vector vec({W}) (row-major); the only "
                         f"non-zeros are {layer.out_features} copies of {inp}ᵀ.")]
    grad_weight = kron.vjp(grad).reshape(layer.weight.shape)
    name = f"∂E/∂{W}"
    fd, why = checker.finite_differences(
        name, grad_weight, partial(checker.parameter, i, "weight", of_error=True),
        checker.crosses(i + 1))
    weight_slice = p.model.parameter_slices()[f"{i}.weight"]
    steps.append(p.step(
        section, name, f"{delta} {inp}ᵀ", "weight gradient", grad_weight, "outer product (rank 1)",
        [compare(f"vs {delta} {inp}ᵀ (np.outer)", grad_weight,
                 np.outer(grad[0], p.tensors[i][0])),
         compare(f"vs backward (model.grads['{i}.weight'])", grad_weight,
                 p.grads[weight_slice].reshape(layer.weight.shape)),
         *fd],
        note=f"(∂E/∂{out}) · ∂{out}/∂vec({W}) reshaped to {W}'s shape, with "
             f"{delta}ᵀ = ∂E/∂{out}: used to update {W}." + why))
    return steps


def _bias_step(p: _Pass, checker: _Checker, i: int, grad: np.ndarray, section: str) -> Step:
    """∂E/∂b = δᵀ of linear layer i (∂s/∂b = I)."""
    layer = p.model.layers[i]
    param_jac = layer.param_jacobian()
    assert isinstance(param_jac, BlockRow)
    out, b, delta = p.names.tensors[i + 1], p.names.biases[i], p.names.deltas[i]
    grad_bias = param_jac.blocks[1].vjp(grad)[0]
    name = f"∂E/∂{b}"
    fd, why = checker.finite_differences(name, grad_bias,
                                         partial(checker.parameter, i, "bias", of_error=True),
                                         checker.crosses(i + 1))
    return p.step(section, name, f"{delta}ᵀ", "weight gradient", grad_bias, "row vector",
                  [compare(f"vs backward (model.grads['{i}.bias'])", grad_bias,
                           p.grads[p.model.parameter_slices()[f"{i}.bias"]]),
                   *fd],
                  note=f"∂{out}/∂{b} = I, so the bias gradient is {delta}ᵀ itself." + why)


def _elementwise_steps(p: _Pass, checker: _Checker, i: int, grad: np.ndarray
                       ) -> tuple[list[Step], np.ndarray]:
    """A layer without parameters (an activation: diag(f′(u)); softmax; dropout): its
    Jacobian and the gradient handed down; and that gradient."""
    layer = p.model.layers[i]
    inp, out = p.names.tensors[i], p.names.tensors[i + 1]
    function = p.names.functions[i]
    section = f"Layer {i}, {type(layer).__name__}: {out} = {function}({inp})"
    jac = layer.jacobian()
    formula = _jacobian_formula(layer, function, inp, out)
    diagonal = isinstance(jac, Diagonal)
    note = ("An elementwise function has a diagonal Jacobian: output k depends on "
            "input k only." if diagonal else "")
    name = f"∂{out}/∂{inp}"
    fd, why = checker.finite_differences(name, jac.dense()[0], partial(checker.layer_jacobian, i),
                                         i in checker.kinked)
    steps = [p.step(section, name, formula, "jacobian", jac.dense()[0], _structure(jac), fd,
                    operator=jac, note=note + why)]
    grad_below = jac.vjp(grad)
    name = f"∂E/∂{inp}"
    fd, why = checker.finite_differences(name, grad_below, partial(checker.gradient, i),
                                         checker.crosses(i))
    below = i - 1 if i > 0 and isinstance(p.model.layers[i - 1], Linear) else None
    rhs = f"∂E/∂{out} · {formula}" if formula else f"∂E/∂{out} · ∂{out}/∂{inp}"
    if below is not None:
        rhs += f" = {p.names.deltas[below]}ᵀ"
    elementwise = f" (elementwise: ∂E/∂{out} ⊙ {function}′({inp}))" if diagonal else ""
    steps.append(p.step(section, name, rhs, "gradient", grad_below, "row vector",
                        [compare("vs the layer's backward", grad_below,
                                 checker.backward_gradients[i]), *fd],
                        note="The gradient from above times the Jacobian, a VJP"
                             + elementwise + "." + why))
    return steps, grad_below


def _network_steps(p: _Pass, checker: _Checker) -> list[Step]:
    """∂z/∂θ of the whole network (a block row of Kronecker factors) and ∂E/∂θ."""
    section, z = "The whole network", p.names.tensors[-1]
    network_jac = jacobian(p.model, p.tensors[0], wrt="params", structured=True)
    assert isinstance(network_jac, BlockRow)
    weights = [p.names.weights[i] for i in sorted(p.names.weights)]
    # θ reaches the tensors above the lowest layer with parameters.
    crosses_theta = checker.crosses(p.model._lowest_with_params + 1)
    name = f"∂{z}/∂θ"
    fd, why = checker.finite_differences(name, network_jac.dense()[0],
                                         partial(checker.network, of_error=False), crosses_theta)
    steps = [p.step(section, name, f"[{' '.join(f'∂{z}/∂vec({w})' for w in weights)}]",
                    "jacobian", network_jac.dense()[0], _structure(network_jac), fd,
                    operator=network_jac,
                    note="θ is the model's flat parameter vector; each block is A ⊗ (layer "
                         "input)ᵀ, the Kronecker form kept through the chain rule." + why)]
    grad_theta = network_jac.vjp(p.grad_output)
    fd, why = checker.finite_differences("∂E/∂θ", grad_theta,
                                         partial(checker.network, of_error=True), crosses_theta)
    steps.append(p.step(section, "∂E/∂θ", f"∂E/∂{z} · ∂{z}/∂θ", "gradient", grad_theta,
                        "row vector",
                        [compare("vs backward (model.grads)", grad_theta, p.grads[None, :]), *fd],
                        note="The output gradient times the network's Jacobian: all weight "
                             "gradients at once." + why))
    return steps


def _batch_steps(p: _Pass, checker: _Checker) -> list[Step]:
    """A batch (``p`` holds B rows, E = Σ_b E_b): for each linear layer, Δ (one row δ_bᵀ per
    sample), ∂E/∂W = Σ_b δ_b y_bᵀ = Δᵀ Y and ∂E/∂b = 1ᵀ Δ, each checked against the
    one-sample gradients summed, ``backward`` on the batch and finite differences."""
    names, n_samples = p.names, p.tensors[0].shape[0]
    section = f"A batch of {n_samples} samples: E = Σ_b E_b"
    inputs, targets = names.tensors[0].upper(), "D"
    steps = [p.step(section, inputs, "rows x_bᵀ, one per sample", "value", p.tensors[0],
                    "one row per sample"),
             p.step(section, targets, "rows d_bᵀ", "value", p.target, "one row per sample"),
             p.step(section, "Σ_b E_b", "", "value", np.array(p.loss_value), "the loss")]
    grad = p.grad_output
    slices = p.model.parameter_slices()
    for i in range(len(p.model.layers) - 1, -1, -1):
        layer = p.model.layers[i]
        if isinstance(layer, Linear):
            inp, out = names.tensors[i], names.tensors[i + 1]
            W, delta = names.weights[i], names.deltas[i]
            Delta, Inp = delta.replace("δ", "Δ"), inp.upper()
            fd, why = checker.finite_differences(Delta, grad, partial(checker.gradient, i + 1),
                                                 checker.crosses(i + 1))
            steps.append(p.step(section, Delta, f"∂E/∂{out.upper()}", "gradient", grad,
                                "one row per sample", fd,
                                note=f"Row b is {delta}_bᵀ = ∂E_b/∂{out} at sample b: the "
                                     "backward pass runs on every row at once." + why))
            param_jac = layer.param_jacobian()
            assert isinstance(param_jac, BlockRow)
            grad_weight = grad.T @ p.tensors[i]
            name = f"Σ_b ∂E_b/∂{W}"
            fd, why = checker.finite_differences(
                name, grad_weight, partial(checker.parameter, i, "weight", of_error=True),
                checker.crosses(i + 1))
            steps.append(p.step(
                section, name, f"Σ_b {delta}_b {inp}_bᵀ = {Delta}ᵀ {Inp}", "weight gradient",
                grad_weight, f"sum of {n_samples} outer products (one matrix product)",
                [compare(f"vs the one-sample gradients {delta}_b {inp}_bᵀ, summed", grad_weight,
                         param_jac.blocks[0].vjp(grad).sum(axis=0).reshape(layer.weight.shape)),
                 compare(f"vs backward on the batch (model.grads['{i}.weight'])", grad_weight,
                         p.grads[slices[f"{i}.weight"]].reshape(layer.weight.shape)),
                 *fd],
                note=f"What backward computes for a batch: one product {Delta}ᵀ {Inp}, equal "
                     f"to the sum of the samples' {delta}_b {inp}_bᵀ." + why))
            if layer.bias is not None:
                b = names.biases[i]
                grad_bias = grad.sum(axis=0)
                name = f"Σ_b ∂E_b/∂{b}"
                fd, why = checker.finite_differences(
                    name, grad_bias, partial(checker.parameter, i, "bias", of_error=True),
                    checker.crosses(i + 1))
                steps.append(p.step(
                    section, name, f"Σ_b {delta}_bᵀ = 1ᵀ {Delta}", "weight gradient", grad_bias,
                    "row vector",
                    [compare(f"vs backward on the batch (model.grads['{i}.bias'])", grad_bias,
                             p.grads[slices[f"{i}.bias"]]), *fd],
                    note=f"The column sums of {Delta}." + why))
        grad = layer.jacobian().vjp(grad)
    return steps

def _loss_after_step(p: _Pass, lr: float) -> float:
    """E after one gradient-descent step θ ← θ − lr ∂E/∂θ (on a copy of the model)."""
    stepped = p.model.copy().eval()
    stepped.params[:] = p.model.params - lr * p.grads
    z = stepped.forward(p.tensors[0])
    return float(np.asarray(p.loss.value_and_grad(z, p.target)[0]))


def _one_sample(model: Sequential, loss: Loss, x: Any, target: Any
                ) -> tuple[np.ndarray, np.ndarray]:
    """(X, d): the sample as one row and its target as ``loss`` takes it (default: the
    guide's, :func:`default_sample`); ValueError naming the shape otherwise."""
    default_x, default_target = default_sample(model, loss)
    if x is None:
        x = default_x
    X = np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray) else x.astype(np.float64)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2 or X.shape[0] != 1:
        raise ValueError(
            f"explain follows one sample: x must have shape ({model.in_features},) or "
            f"(1, {model.in_features}); got {X.shape}. Pass a single row, e.g. X[0]."
        )
    X = model.check_input(X)
    if target is None:
        target = default_target
    target_arr = np.asarray(target)
    if not loss.takes_labels and target_arr.ndim <= 1:
        target_arr = target_arr.reshape(1, -1)
    elif loss.takes_labels and target_arr.ndim == 0:
        target_arr = target_arr.reshape(1)
    d = loss.prepare_target(target_arr, model.out_features, dtype=np.float64)
    if d.shape[0] != 1:
        raise ValueError(f"target must describe one sample; got {d.shape[0]} rows.")
    return X, d


def _the_batch(model: Sequential, loss: Loss, batch: Any, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(X, D) of ``batch``: a number of samples (:func:`default_batch`) or a pair of rows
    and their targets as ``loss`` takes them."""
    if isinstance(batch, (int, np.integer)) and not isinstance(batch, bool):
        X, targets = default_batch(model, loss, int(batch), seed=seed)
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        X, targets = batch
    else:
        raise TypeError("batch must be a number of samples or a pair (X, targets) of rows; "
                        f"got {type(batch).__name__}.")
    X = model.check_input(np.asarray(X, dtype=np.float64))
    D = loss.prepare_target(np.asarray(targets), model.out_features, dtype=np.float64)
    if D.shape[0] != X.shape[0]:
        raise ValueError(f"the batch has {X.shape[0]} rows of X but {D.shape[0]} targets; "
                         "give one target per row.")
    return X, D


def _summed(loss: Loss) -> Loss:
    """``loss`` with E = Σ_b E_b over a batch (reduction "sum")."""
    summed = copy.copy(loss)
    summed.reduction = "sum"
    return summed

def explain(model: Sequential | None = None, x: Any = None, target: Any = None, *,
            loss: str | Loss = "mse", lr: float = 0.5, eps: float = 1e-6, rtol: float = 1e-6,
            seed: int = 0, batch: Any = None) -> Explanation:
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
        For the default model's weights (and the extra rows of ``batch=n``).
    batch : int or (X, targets), optional
        Also show a batch, E = Σ_b E_b: for each linear layer Δ (one row δ_bᵀ per
        sample), ∂E/∂W = Σ_b δ_b y_bᵀ = Δᵀ Y and the bias gradient 1ᵀ Δ, checked against
        the one-sample gradients summed, ``backward`` on the batch and finite differences.
        A number takes :func:`default_batch`'s rows (the guide's, for 2).

    Returns
    -------
    Explanation

    Raises
    ------
    ValueError
        ``x`` with more than one row, a target of the wrong size, or a batch whose
        targets do not match its rows.
    TypeError
        A model that is not a :class:`~jacnet.network.Sequential`, or a ``batch`` that is
        neither a number nor a pair.

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
    X, d = _one_sample(m64, loss_fn, x, target)
    p = _Pass.run(m64, X, d, loss_fn, rtol)
    checker = _Checker(p, eps)
    steps = [*_forward_steps(p), _output_gradient_step(p, checker)]
    grad = p.grad_output
    for i in range(len(m64.layers) - 1, -1, -1):
        build = _linear_steps if isinstance(m64.layers[i], Linear) else _elementwise_steps
        layer_steps, grad = build(p, checker, i, grad)
        steps += layer_steps
    steps += _network_steps(p, checker)
    caveats = checker.caveats
    if batch is not None:
        X_batch, D_batch = _the_batch(m64, loss_fn, batch, seed)
        batch_pass = _Pass.run(m64.copy().eval(), X_batch, D_batch, _summed(loss_fn), rtol)
        batch_checker = _Checker(batch_pass, eps)
        steps += _batch_steps(batch_pass, batch_checker)
        caveats += batch_checker.caveats
    weights = " ".join(p.names.weights[i] for i in sorted(p.names.weights))
    return Explanation(m64, X[0], d[0], _loss_formulas(loss_fn)[0], p.loss_value, tuple(steps),
                       float(lr), _loss_after_step(p, lr), rtol, {"weights": weights}, caveats)


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
