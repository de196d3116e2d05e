"""The fit loop: mini-batches, epochs, validation, callbacks, history, checkpoints.

:func:`fit` trains a :class:`~jacnet.network.Sequential` with a first-order optimizer
(mini-batches from a seeded shuffle: forward, ``loss.value_and_grad``, backward as a
chain of VJPs, optional clipping, ``optimizer.step`` on the flat parameter vector) or
with a full-batch second-order optimizer (one ``optimizer.iterate(model, loss, X, target,
state)`` per epoch, the solver state each epoch returns handed to the next, or
``optimizer.epoch(model, loss, X, target)`` for an optimizer without ``iterate``:
Levenberg–Marquardt, Gauss–Newton, Bayesian regularisation; with validation
data, their ``max_fail`` is the early-stopping patience, MATLAB ``trainlm``'s validation
stop). Progress, early stopping and checkpoints are callbacks like any user callback;
every epoch appends one record to the :class:`History`. This is the only training loop:
the second-order optimizers' ``fit`` and the estimators' ``lm``/``br`` solvers run in it.

A checkpoint holds everything the rest of the run depends on — parameters, optimizer
and schedule state, the shuffling generator's state, dropout generators, early-stopping
state and history — so a run resumed from it ends bit for bit where the uninterrupted
run would have.
"""

from __future__ import annotations

import copy
import csv
import io as _stdio
import json
import math
import os
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from jacnet import fpu
from jacnet._validation import check_array, check_positive_int
from jacnet.distributed import Communicator, SingleProcess
from jacnet.io import atomic_write, load_checkpoint, save_checkpoint
from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss, get_loss
from jacnet.metrics import Metric, default_metrics, get_metric
from jacnet.network import Sequential
from jacnet.optim import (
    OPTIMIZERS,
    LRSchedule,
    Optimizer,
    ReduceLROnPlateau,
    clip_grad_norm,
    get_schedule,
)

__all__ = [
    "Callback",
    "DivergenceWarning",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "ModelCheckpoint",
    "ProgressBar",
    "TrainingState",
    "evaluate",
    "fit",
    "resolve_optimizer",
]


class DivergenceWarning(UserWarning):
    """Training stopped because the loss (or a parameter) became NaN or infinite."""


# --------------------------------------------------------------------------- history
class History:
    """Per-epoch records of a training run.

    Each record is a dict with ``epoch`` (1-based), ``loss`` (mean training loss over
    the epoch's batches), the training metrics, ``val_loss`` and ``val_<metric>`` when
    there is validation data, ``lr``, ``time`` (seconds) and whatever a full-batch
    optimizer reports (``mu``, ``gamma``, ...).

    Attributes
    ----------
    records : list of dict
    monitor : str
        The key :attr:`best_epoch` minimises (``"val_loss"`` with validation data).
    stop_reason : str or None
        Why training stopped before ``epochs`` (early stopping, divergence, an
        optimizer's stopping rule), or None.

    Examples
    --------
    >>> history = History([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}])
    >>> history["loss"], history.best_epoch, len(history)
    ([0.5, 0.25], 2, 2)
    """

    def __init__(self, records: Iterable[dict[str, Any]] = (), *, monitor: str = "loss",
                 stop_reason: str | None = None) -> None:
        self.records: list[dict[str, Any]] = [dict(r) for r in records]
        self.monitor = monitor
        self.stop_reason = stop_reason

    def append(self, record: dict[str, Any]) -> None:
        """Add one epoch's record."""
        self.records.append(record)

    @property
    def columns(self) -> list[str]:
        """Every key that appears in a record, in order of first appearance."""
        seen: dict[str, None] = {}
        for record in self.records:
            seen.update(dict.fromkeys(record))
        return list(seen)

    def __getitem__(self, key: str) -> list[Any]:
        """One column: the value of ``key`` for every epoch (NaN where absent)."""
        if key not in self.columns:
            raise KeyError(f"no {key!r} in the history; it has {self.columns}.")
        return [record.get(key, float("nan")) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.records)

    @property
    def best_epoch(self) -> int | None:
        """The epoch with the smallest finite :attr:`monitor` value (None if none)."""
        best, best_epoch = math.inf, None
        for record in self.records:
            value = record.get(self.monitor)
            if isinstance(value, (int, float)) and math.isfinite(value) and value < best:
                best, best_epoch = value, int(record["epoch"])
        return best_epoch

    def to_dict(self) -> dict[str, Any]:
        """``{"records": [...], "columns": {key: [values]}, "monitor", "best_epoch", "stop_reason"}``."""
        return {
            "records": [dict(r) for r in self.records],
            "columns": {key: self[key] for key in self.columns},
            "monitor": self.monitor,
            "best_epoch": self.best_epoch,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> History:
        """Rebuild a history from :meth:`to_dict` (e.g. the JSON file)."""
        return cls(state.get("records", []), monitor=state.get("monitor", "loss"),
                   stop_reason=state.get("stop_reason"))

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write one row per epoch, one column per key (atomically)."""
        buffer = _stdio.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        with atomic_write(path, "w") as f:
            f.write(buffer.getvalue())

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        text = json.dumps(self.to_dict(), indent=2)
        with atomic_write(path, "w") as f:
            f.write(text + "\n")

    def __repr__(self) -> str:
        last = self.records[-1] if self.records else {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items()
                          if k not in ("epoch", "time") and isinstance(v, float))
        return f"History(epochs={len(self)}{', ' + shown if shown else ''})"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The records, one dict per epoch: so ``pd.DataFrame(history)`` is a table."""
        return iter(self.records)

    def to_pandas(self) -> Any:
        """The history as a ``pandas.DataFrame``, one row per epoch, indexed by ``epoch``.

        ``pd.DataFrame(history)`` gives the same table with a plain index;
        ``pd.DataFrame(history.to_dict()["columns"])`` too (``to_dict`` itself also holds
        the monitor and stop reason, so it is not a table).

        >>> History([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]).to_pandas()
               loss
        epoch
        1      0.50
        2      0.25
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("History.to_pandas needs pandas: pip install pandas "
                              "(or use history.records, a list of dicts).") from None
        frame = pd.DataFrame(self.records, columns=self.columns)
        return frame.set_index("epoch") if "epoch" in frame.columns else frame

    #: Epochs shown at each end of a long history's notebook table.
    _html_edge_rows = 10

    def _repr_html_(self) -> str:
        """Notebook display: one row per epoch (the first and last ten of a long run)."""
        from html import escape
        columns = self.columns
        edge = self._html_edge_rows
        shown: list[dict[str, Any] | None] = list(self.records)
        if len(shown) > 2 * edge:
            shown = [*self.records[:edge], None, *self.records[-edge:]]

        def cell(value: Any) -> str:
            if isinstance(value, float):
                return f"{value:.4g}"
            return escape(str(value))

        rows = "".join(
            "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>"
            if r is not None else f"<tr><td colspan='{len(columns)}'>…</td></tr>"
            for r in shown)
        best = self.best_epoch
        notes = [f"{len(self)} epochs", f"best {escape(self.monitor)} at epoch {best}"
                 if best is not None else ""]
        if self.stop_reason:
            notes.append(f"stopped: {escape(self.stop_reason)}")
        head = "".join(f"<th>{escape(c)}</th>" for c in columns)
        return (f"<div><b>History</b>: {'; '.join(n for n in notes if n)}</div><table>"
                f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


# --------------------------------------------------------------------------- callbacks
class TrainingState:
    """What callbacks see of a run: the model, optimizer, history and a way to stop it.

    Attributes
    ----------
    model : Sequential
    loss : Loss
    optimizer : Optimizer (or a full-batch optimizer)
    schedule : LRSchedule or None
    history : History
    epoch : int
        The last completed epoch (0 before the first).
    epochs : int
        The epoch training stops at.
    comm : Communicator
        The processes of a data-parallel run (:class:`~jacnet.distributed.SingleProcess`
        otherwise); every rank runs the callbacks, and a callback that writes files
        should do so only where ``comm.rank == 0``, as :class:`ModelCheckpoint` does.
    stop_reason : str or None
        Set by :meth:`stop`; the loop ends after the current epoch.
    """

    def __init__(self, model: Sequential, loss: Loss, optimizer: Any,
                 schedule: LRSchedule | None, history: History, epochs: int) -> None:
        self.model, self.loss, self.optimizer, self.schedule = model, loss, optimizer, schedule
        self.comm: Communicator = SingleProcess()
        self.history, self.epochs = history, epochs
        self.epoch = 0
        self.stop_reason: str | None = None
        self.extra_state: dict[str, Any] = {}  # filled by the loop for checkpoints

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after this epoch, saying why (kept in ``history.stop_reason``)."""
        if self.stop_reason is None:
            self.stop_reason = reason


class Callback:
    """Base class of callbacks: override any of the hooks.

    The loop sets :attr:`state` (a :class:`TrainingState`) before ``on_train_begin``.
    Callbacks that must survive a resume implement ``state_dict``/``load_state_dict``
    (plain numbers and arrays).

    Examples
    --------
    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, epoch, logs):
    ...         print(epoch, round(logs["loss"], 2))
    """

    state: TrainingState

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        """Called once before the first epoch."""

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        """Called after each mini-batch step (1-based ``batch``; ``logs["n_batches"]``).

        The loop calls it only for callbacks that override it, so the hot path pays
        nothing otherwise; full-batch optimizers have no batches and never call it.
        """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """Called after each epoch with its history record (``logs``)."""

    def on_train_end(self, logs: dict[str, Any]) -> None:
        """Called once when training stops, with the last record (empty if none)."""

    def state_dict(self) -> dict[str, Any] | None:
        """State to keep in checkpoints (None: nothing)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=print)``."""

    def __init__(self, on_train_begin: Callable[[dict[str, Any]], Any] | None = None,
                 on_epoch_end: Callable[[int, dict[str, Any]], Any] | None = None,
                 on_train_end: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self._begin, self._epoch, self._end = on_train_begin, on_epoch_end, on_train_end

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if self._begin:
            self._begin(logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self._epoch:
            self._epoch(epoch, logs)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self._end:
            self._end(logs)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the parameters of the best epoch are put back when training
    ends (for whatever reason).

    Parameters
    ----------
    monitor : str, default "val_loss"
        A history key; ``"val_loss"`` falls back to ``"loss"`` without validation data.
    patience : int, default 10
    min_delta : float, default 0.0
    mode : {"min", "max"}, default "min"
    restore_best : bool, default True

    Attributes
    ----------
    best, best_epoch : float, int
        The best value of ``monitor`` so far and its epoch (0: none yet).
    stopped_epoch : int
        The epoch at which this callback stopped training (0: it did not).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                 mode: str = "min", restore_best: bool = True) -> None:
        self.monitor = monitor
        self.patience = check_positive_int(patience, "patience", minimum=0)
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"min_delta must be a number >= 0; got {min_delta!r}.")
        self.min_delta = float(min_delta)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}.")
        self.mode = mode
        self.restore_best = bool(restore_best)
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.wait = 0
        self.stopped_epoch = 0
        self.best_params: np.ndarray | None = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if self.best_params is None:
            self.best_params = self.state.model.params.copy()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        key = self.monitor if self.monitor in logs or self.monitor != "val_loss" else "loss"
        if key not in logs:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r} but the history has only "
                f"{sorted(logs)}; pass monitor= one of those."
            )
        value = float(logs[key])
        improved = (value < self.best - self.min_delta if self.mode == "min"
                    else value > self.best + self.min_delta)
        if improved and math.isfinite(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            assert self.best_params is not None
            np.copyto(self.best_params, self.state.model.params)
        else:
            self.wait += 1
            if self.wait >= self.patience and self.state.stop_reason is None:
                self.stopped_epoch = epoch
                self.state.stop(
                    f"early stopping: {key} did not improve for {self.patience} epochs "
                    f"(best {self.best:.6g} at epoch {self.best_epoch})"
                )

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.restore_best and self.best_params is not None and self.best_epoch > 0:
            np.copyto(self.state.model.params, self.best_params)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_params": self.best_params}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.wait = int(state["wait"])
        params = state.get("best_params")
        self.best_params = None if params is None else np.array(params, copy=True)


class ModelCheckpoint(Callback):
    """Save a resumable checkpoint every ``every`` epochs and when training ends.

    Parameters
    ----------
    path : str or PathLike
        The checkpoint file, rewritten atomically each time.
    every : int, default 1
    """

    def __init__(self, path: str | os.PathLike[str], every: int = 1) -> None:
        self.path = path
        self.every = check_positive_int(every, "checkpoint_every")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if epoch % self.every == 0 and self.state.stop_reason is None:
            self.save()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.save()

    def save(self) -> None:
        """Write the current training state to :attr:`path` (rank 0 of a data-parallel run)."""
        if self.state.comm.rank == 0:
            save_checkpoint(self.path, self.state.model, _snapshot(self.state))


def _in_notebook() -> bool:
    """Whether we run in a Jupyter kernel (IPython is only looked at if already imported)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _clock(seconds: float) -> str:
    whole = max(round(seconds), 0)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ProgressBar(Callback):
    """Training progress: a bar in Jupyter or a terminal, plain lines elsewhere.

    Shows the epoch, the batch within it, the latest losses, the time spent and an
    estimate of the time left; whatever the display, it ends showing the final state
    (``epoch 7/7`` after a 7-epoch run), so a saved notebook is not left mid-run.

    Parameters
    ----------
    display : {"auto", "widget", "html", "rich", "plain"}, default "auto"
        ``"widget"``: an ipywidgets bar (Jupyter); ``"html"``: an HTML ``<progress>``
        updated in place (Jupyter without ipywidgets); ``"rich"``: a rich bar on stderr
        (a terminal); ``"plain"``: one line every ``interval`` seconds and at the end on
        ``file``. ``"auto"`` picks widget or html in Jupyter, rich when stderr is a
        terminal and rich is installed, plain otherwise.
    interval : float, default 10.0
        Seconds between plain lines; bars refresh at most ten times a second.
    file : text stream, optional
        Where plain lines and the rich bar go (default ``sys.stderr``).

    Attributes
    ----------
    status : str
        The text the display shows now: ``"epoch 3/7 (batch 12/40) · loss 0.0123 ·
        0:00:02, about 0:00:03 left"`` (the batch while inside an epoch).
    fraction : float
        How much of the run is done, counting finished batches of the current epoch.
    kind : str
        The display chosen (``"widget"``, ``"html"``, ``"rich"`` or ``"plain"``).
    view : object or None
        The display object (its widgets or last HTML/line), kept after training ends.

    Examples
    --------
    >>> import io
    >>> from jacnet.network import mlp
    >>> out = io.StringIO()
    >>> X = np.linspace(-1, 1, 8)[:, None]
    >>> bar = ProgressBar("plain", interval=0, file=out)
    >>> _ = fit(mlp([1, 3, 1], seed=0), X, X, epochs=3, callbacks=[bar], progress=False)
    >>> bar.status.split(" · ")[0], out.getvalue().count("\\n")
    ('epoch 3/3', 3)
    """

    _displays = ("auto", "widget", "html", "rich", "plain")
    _refresh = 0.1  # seconds between bar redraws

    def __init__(self, display: str = "auto", *, interval: float = 10.0,
                 file: Any = None) -> None:
        if display not in self._displays:
            raise ValueError(f"display must be one of {self._displays}; got {display!r}.")
        if not (isinstance(interval, (int, float)) and math.isfinite(interval)
                and interval >= 0):
            raise ValueError(f"interval must be a number of seconds >= 0; got {interval!r}.")
        self.display, self.interval, self.file = display, float(interval), file
        self.epoch = self.epochs = self.first_epoch = 0
        self.batch = self.n_batches = 0
        self.losses = ""
        self._started = self._last_draw = 0.0
        self.view: Any = None
        self._open = False
        self.kind = ""

    # -- what is shown ---------------------------------------------------------------
    @property
    def fraction(self) -> float:
        todo = self.epochs - self.first_epoch
        if todo <= 0:
            return 1.0
        within = self.batch / self.n_batches if self.n_batches else 0.0
        return min((self.epoch - self.first_epoch + within) / todo, 1.0)

    @property
    def status(self) -> str:
        if 0 < self.batch < self.n_batches:  # inside an epoch: the one running
            parts = [f"epoch {self.epoch + 1}/{self.epochs} (batch {self.batch}/"
                     f"{self.n_batches})"]
        else:
            parts = [f"epoch {self.epoch}/{self.epochs}"]
        if self.losses:
            parts.append(self.losses)
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        done = self.fraction
        left = elapsed * (1 - done) / done if done > 0 else float("nan")
        parts.append(f"{_clock(elapsed)}"
                     + (f", about {_clock(left)} left" if math.isfinite(left) and done < 1
                        else ""))
        return " · ".join(parts)

    # -- the hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.epochs, self.epoch = self.state.epochs, self.state.epoch
        self.first_epoch = self.state.epoch
        self.batch = self.n_batches = 0
        self._started = self._last_draw = time.perf_counter()
        self.kind = self._choose()
        self.view = {"widget": _WidgetView, "html": _HTMLView, "rich": _RichView,
                     "plain": _PlainView}[self.kind](self)
        self.view.show(self)
        self._open = True

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        self.batch, self.n_batches = batch, int(logs.get("n_batches", 0))
        self._draw()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.epoch, self.batch = epoch, 0
        self.losses = "  ".join(f"{k} {v:.4g}" for k, v in logs.items()
                                if k not in ("epoch", "time", "lr") and isinstance(v, float))
        self._draw(epoch_end=True)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self._open:
            self.batch = 0
            self.view.close(self)  # the final state, whatever the throttling skipped
            self._open = False

    # -- helpers -----------------------------------------------------------------------
    def _draw(self, epoch_end: bool = False) -> None:
        if not self._open:
            return
        now = time.perf_counter()
        wait = self.interval if self.kind == "plain" else self._refresh
        if now - self._last_draw >= wait and (epoch_end or self.kind != "plain"):
            self._last_draw = now
            self.view.update(self)

    def _choose(self) -> str:
        if self.display != "auto":
            return self.display
        if _in_notebook():
            try:
                import ipywidgets  # noqa: F401
            except ImportError:
                return "html"
            return "widget"
        stream = self.file if self.file is not None else sys.stderr
        if getattr(stream, "isatty", lambda: False)():
            try:
                import rich  # noqa: F401
            except ImportError:
                return "plain"
            return "rich"
        return "plain"


class _PlainView:
    """One line per report on ``file``: for logs, CI and anything that is not a terminal."""

    def __init__(self, bar: ProgressBar) -> None:
        self.file = bar.file if bar.file is not None else sys.stderr
        self.last = ""

    def show(self, bar: ProgressBar) -> None:
        pass

    def update(self, bar: ProgressBar) -> None:
        self.last = bar.status
        print(self.last, file=self.file, flush=True)

    def close(self, bar: ProgressBar) -> None:
        if bar.status != self.last:
            self.update(bar)


class _RichView:
    """A rich bar (stderr by default)."""

    def __init__(self, bar: ProgressBar) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        console = Console(file=bar.file, stderr=bar.file is None)
        self.progress = Progress(BarColumn(), TextColumn("{task.fields[status]}"),
                                 console=console, transient=False, auto_refresh=False)
        self.task: Any = None

    def show(self, bar: ProgressBar) -> None:
        self.progress.start()
        self.task = self.progress.add_task("train", total=1.0, status=bar.status)
        self.progress.update(self.task, completed=bar.fraction)

    def update(self, bar: ProgressBar) -> None:
        self.progress.update(self.task, completed=bar.fraction, status=bar.status,
                             refresh=True)

    def close(self, bar: ProgressBar) -> None:
        self.update(bar)
        self.progress.stop()


class _HTMLView:
    """An HTML ``<progress>`` updated in place (Jupyter without ipywidgets)."""

    def __init__(self, bar: ProgressBar) -> None:
        from IPython.display import HTML, display

        self._html, self._display = HTML, display
        self.handle: Any = None
        self.last = ""

    def _render(self, bar: ProgressBar) -> Any:
        from html import escape
        self.last = (f"<progress value='{bar.fraction:.4f}' max='1' style='width:20em'>"
                     f"</progress> <code>{escape(bar.status)}</code>")
        return self._html(self.last)

    def show(self, bar: ProgressBar) -> None:
        self.handle = self._display(self._render(bar), display_id=True)

    def update(self, bar: ProgressBar) -> None:
        content = self._render(bar)
        if self.handle is not None:
            self.handle.update(content)

    def close(self, bar: ProgressBar) -> None:
        self.update(bar)


class _WidgetView:
    """An ipywidgets bar and label (Jupyter); the saved notebook keeps its final state."""

    def __init__(self, bar: ProgressBar) -> None:
        import ipywidgets
        from IPython.display import display

        self.progress = ipywidgets.FloatProgress(value=0.0, min=0.0, max=1.0)
        self.label = ipywidgets.Label(value=bar.status)
        self.box = ipywidgets.HBox([self.progress, self.label])
        self._display = display
        self.handle: Any = None

    def show(self, bar: ProgressBar) -> None:
        self.handle = self._display(self.box, display_id=True)

    def update(self, bar: ProgressBar) -> None:
        self.progress.value = bar.fraction
        self.label.value = bar.status

    def close(self, bar: ProgressBar) -> None:
        self.update(bar)
        self.progress.bar_style = "success" if bar.epoch >= bar.epochs else "warning"
        if self.handle is not None:
            # Re-send the output: its text/plain (what a saved notebook or its HTML shows
            # without the widget state) is then the final one, not "epoch 0/N".
            self.handle.update(self.box)


# --------------------------------------------------------------------------- evaluation
def evaluate(model: Sequential, X: Any, y: Any, *, loss: str | Loss = "mse",
             metrics: Sequence[str | Metric] | None = None,
             batch_size: int = 4096) -> dict[str, float]:
    """The loss and metrics of ``model`` on ``(X, y)``, in evaluation mode.

    Parameters
    ----------
    model : Sequential
    X : array-like, shape (n_samples, in_features)
    y : array-like, shape (n_samples,) or (n_samples, out_features)
    loss : str or Loss, default "mse"
    metrics : list of str or Metric, optional
        Default by loss: accuracy for cross-entropy, mse/mae/r2 for regression.
    batch_size : int, default 4096
        Rows per forward pass (bounds memory, not the result).

    Returns
    -------
    dict
        ``{"loss": ..., "<metric>": ...}`` as Python floats.

    Examples
    --------
    >>> from jacnet import mlp
    >>> model = mlp([2, 2], seed=0)
    >>> sorted(evaluate(model, np.eye(2), [0, 1], loss="cross_entropy"))
    ['accuracy', 'loss']
    """
    loss_fn = get_loss(loss)
    metric_objs = _metrics_for(loss_fn, metrics)
    X_arr = model.check_input(X)
    target = loss_fn.prepare_target(y, model.out_features, dtype=model.dtype)
    _check_rows(X_arr, target, "y")
    check_positive_int(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, loss_fn, metric_objs, X_arr, target, batch_size)
    finally:
        model.train(was_training)


def _evaluate(model: Sequential, loss: Loss, metrics: list[Metric], X: np.ndarray,
              target: np.ndarray, batch_size: int,
              comm: Communicator | None = None) -> dict[str, float]:
    """Loss and metrics over ``X`` (with ``comm``: over every rank's shard of the rows)."""
    for metric in metrics:
        metric.reset()
    total, n = 0.0, X.shape[0]
    for start in range(0, n, batch_size):
        xb, tb = X[start:start + batch_size], target[start:start + batch_size]
        out = model.forward(xb)
        value, _ = loss.value_and_grad(out, tb)
        total += value * (xb.shape[0] if loss.reduction == "mean" else 1.0)
        for metric in metrics:
            metric.update(out, tb)
    if comm is not None:
        total, n = _sum_over_ranks(comm, [total, n], metrics, model.out_features)
    results = {"loss": total / n if loss.reduction == "mean" else total}
    results.update({metric.name: metric.result() for metric in metrics})
    return results


def _sum_over_ranks(comm: Communicator, sums: list[float], metrics: Sequence[Metric],
                    n_outputs: int) -> list[float]:
    """Add ``sums`` and the metrics' running totals over the ranks, in one Allreduce."""
    parts = [np.asarray(sums, dtype=np.float64)]
    parts += [metric.totals(n_outputs) for metric in metrics]
    buffer = comm.allreduce(np.concatenate(parts))
    at = len(sums)
    for metric, part in zip(metrics, parts[1:]):
        metric.set_totals(buffer[at:at + part.size])
        at += part.size
    return [float(v) for v in buffer[:len(sums)]]


def _metrics_for(loss: Loss, metrics: Sequence[str | Metric] | None) -> list[Metric]:
    if metrics is None:
        return default_metrics(loss)
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    return [copy.deepcopy(get_metric(m)) for m in metrics]


def _check_rows(X: np.ndarray, target: np.ndarray, name: str) -> None:
    if X.shape[0] != target.shape[0]:
        raise ValueError(
            f"X has {X.shape[0]} rows but {name} has {target.shape[0]}; they must describe "
            "the same samples, row for row."
        )
    if X.shape[0] == 0:
        raise ValueError("X has no rows; there is nothing to train on.")


# --------------------------------------------------------------------------- optimizers
def resolve_optimizer(optimizer: str | Any, model: Sequential, *, lr: float | None = None,
                      weight_decay: float = 0.0, **options: Any) -> Any:
    """An optimizer instance from a registry name (or the instance itself).

    A name is looked up in ``jacnet.optim.OPTIMIZERS`` ("sgd", "adam", "adamw",
    "rmsprop", and the full-batch "lm", "gn", "br"). Weight decay, when the optimizer takes a
    ``weight_decay_mask``, is masked off the biases. ``options`` are further constructor
    arguments of a named optimizer (e.g. ``solver="cg"`` for "lm").

    Examples
    --------
    >>> from jacnet import mlp
    >>> resolve_optimizer("sgd", mlp([2, 1]), lr=0.1)
    SGD(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0)
    """
    if not isinstance(optimizer, str):
        if not (hasattr(optimizer, "step") or hasattr(optimizer, "epoch")):
            raise TypeError(
                f"optimizer must be a name ({', '.join(sorted(OPTIMIZERS))}) or an optimizer "
                f"object with step() or epoch(); got {type(optimizer).__name__}."
            )
        if lr is not None or options:
            given = "lr=" if lr is not None else f"{next(iter(options))}="
            raise ValueError(f"{given} applies only when optimizer is given by name; set it on "
                             "the optimizer object instead.")
        return optimizer
    key = optimizer.lower()
    if key not in OPTIMIZERS:
        names = ", ".join(repr(o) for o in sorted(OPTIMIZERS))
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {names}.")
    cls = OPTIMIZERS[key]
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if lr is not None:
        if "lr" not in accepted:
            raise ValueError(f"optimizer {optimizer!r} takes no learning rate; drop lr=.")
        kwargs["lr"] = lr
    if weight_decay:
        if "weight_decay" not in accepted:
            raise ValueError(f"optimizer {optimizer!r} takes no weight_decay.")
        kwargs["weight_decay"] = weight_decay
        if "weight_decay_mask" in accepted:
            kwargs["weight_decay_mask"] = _no_bias_mask(model)
    for name, value in options.items():
        if name not in accepted or name in ("self", "lr", "weight_decay"):
            raise ValueError(f"optimizer {optimizer!r} takes no {name}=; drop it.")
        kwargs[name] = value
    return cls(**kwargs)


def _no_bias_mask(model: Sequential) -> np.ndarray:
    mask = np.ones(model.n_params, dtype=bool)
    for name, where in model.parameter_slices().items():
        if name.endswith(".bias"):
            mask[where] = False
    return mask


def _resolve_schedule(schedule: Any, optimizer: Any, epochs: int) -> LRSchedule | None:
    if schedule is None:
        return None
    if isinstance(schedule, LRSchedule):
        if schedule.optimizer is not optimizer:
            raise ValueError(
                "schedule= drives another optimizer object than the one being trained, so "
                "it would change nothing here; pass that optimizer as optimizer=, or give the "
                "schedule by name (schedule='step')."
            )
        return schedule
    if not isinstance(optimizer, Optimizer):
        raise ValueError("schedule= needs a first-order optimizer with a learning rate.")
    if isinstance(schedule, str):
        defaults: dict[str, dict[str, Any]] = {
            "cosine": {"T_max": epochs}, "step": {"step_size": max(1, epochs // 3)},
            "exponential": {"gamma": 0.95}, "plateau": {},
        }
        return get_schedule(schedule, optimizer, **defaults.get(schedule.lower(), {}))
    if isinstance(schedule, tuple) and len(schedule) == 2:
        return get_schedule(schedule[0], optimizer, **dict(schedule[1]))
    if callable(schedule):
        built = schedule(optimizer)
        if not isinstance(built, LRSchedule):
            raise TypeError(
                f"schedule(optimizer) must return an LRSchedule; got {type(built).__name__}.")
        return built
    raise TypeError(
        "schedule must be None, a name ('cosine', 'step', 'exponential', 'plateau'), a "
        f"(name, kwargs) pair, an LRSchedule or a function optimizer -> LRSchedule; got {schedule!r}."
    )


# --------------------------------------------------------------------------- checkpoints
def _rng_states(model: Sequential) -> list[Any]:
    """Bit-generator states of layers that draw random numbers (dropout)."""
    return [layer._rng.bit_generator.state if hasattr(layer, "_rng") else None
            for layer in model.layers]


def _snapshot(state: TrainingState) -> dict[str, Any]:
    optimizer = state.optimizer
    return {
        "epoch": state.epoch,
        "epochs": state.epochs,
        "optimizer": {
            "name": getattr(optimizer, "name", type(optimizer).__name__),
            "state": optimizer.state_dict() if hasattr(optimizer, "state_dict") else None,
        },
        "schedule": None if state.schedule is None else state.schedule.state_dict(),
        "history": state.history.to_dict(),
        "callbacks": state.extra_state.get("callbacks", {}),
        "layer_rngs": _rng_states(state.model),
        **{k: v for k, v in state.extra_state.items() if k != "callbacks"},
    }


# --------------------------------------------------------------------------- the loop
def fit(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    loss: str | Loss = "mse",
    optimizer: str | Any = "adam",
    lr: float | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = 0,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    early_stopping: bool | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    schedule: Any = None,
    clip_norm: float | None = None,
    weight_decay: float = 0.0,
    metrics: Sequence[str | Metric] | None = None,
    callbacks: Iterable[Callback] = (),
    progress: bool | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    sample_weight: Any = None,
    comm: Communicator | None = None,
    flush_denormals: bool = True,
) -> History:
    """Train ``model`` on ``(X, y)`` in place and return the per-epoch history.

    Parameters
    ----------
    model : Sequential
        Trained in place (its ``params``).
    X : array-like, shape (n_samples, in_features)
    y : array-like, shape (n_samples,) or (n_samples, out_features)
        Class labels for cross-entropy, values for regression.
    loss : str or Loss, default "mse"
        "mse", "cross_entropy", "bce" or a :class:`~jacnet.losses.Loss`.
    optimizer : str or optimizer, default "adam"
        A registry name ("sgd", "adam", "adamw", "rmsprop"; "lm", "gn", "br" when the
        second-order module is installed) or an instance. Full-batch optimizers
        (``full_batch = True``) run one ``epoch(model, loss, X, target)`` per epoch.
    lr : float, optional
        Learning rate when ``optimizer`` is a name (default: the optimizer's).
    epochs : int, default 100
        Total epochs; a resumed run continues up to this number.
    batch_size : int, default 32
    shuffle : bool, default True
        Reshuffle the rows every epoch with a generator seeded by ``seed``.
    seed : int or None, default 0
        Seeds the shuffling and the validation split (None: fresh entropy, recorded
        in checkpoints).
    validation_data : (X_val, y_val), optional
    validation_split : float, default 0.0
        Fraction of the rows (chosen at random with ``seed``) held out for validation
        when ``validation_data`` is not given.
    early_stopping : bool, optional
        Stop when the validation loss (training loss without validation data) has not
        improved by ``min_delta`` for ``patience`` epochs. Default (None): on for a
        full-batch optimizer with a validation stop (``max_fail`` > 0, as
        Levenberg–Marquardt's 6) when there is validation data — MATLAB ``trainlm``'s
        validation rule, which also returns the network of the best validation loss —
        and off otherwise.
    patience : int, optional
        Default: the full-batch optimizer's ``max_fail`` when it has one (> 0), else 10.
    min_delta : float, default 0.0
    restore_best : bool, default True
        With early stopping, put back the best epoch's parameters at the end.
    schedule : optional
        An :class:`~jacnet.optim.LRSchedule`, a name ("cosine", "step", "exponential",
        "plateau"), a ``(name, kwargs)`` pair or a function ``optimizer -> LRSchedule``;
        stepped once per epoch (with the monitored loss for "plateau").
    clip_norm : float, optional
        Rescale each mini-batch gradient to at most this Euclidean norm.
    weight_decay : float, default 0.0
        L2 penalty (decoupled for AdamW) when ``optimizer`` is a name; never on biases.
    metrics : list of str or Metric, optional
        Default by loss: accuracy for (binary) cross-entropy, mse/mae/r2 otherwise.
        Training metrics are accumulated over the epoch's batches.
    callbacks : iterable of Callback
    progress : bool, optional
        Show a :class:`ProgressBar` (a widget in Jupyter, a bar in a terminal, plain
        lines otherwise); default: in Jupyter and when stderr is a terminal.
    checkpoint : path, optional
        Where to write checkpoints (every ``checkpoint_every`` epochs, default 1, and at
        the end).
    checkpoint_every : int, optional
    resume_from : path, optional
        A checkpoint to continue from: parameters, optimizer, schedule, history,
        epoch and generator states are restored; pass the same data and arguments.
    sample_weight : array-like, shape (n_samples,), optional
        Non-negative weights; each batch minimises Σ wᵢ lossᵢ / Σ wᵢ (a full-batch
        optimizer: the whole training set's, passed to its ``epoch`` and judged by it, so
        Bayesian regularisation refuses weights). Metrics stay unweighted.
    comm : Communicator, optional
        Train data-parallel over the processes of ``comm`` (e.g.
        :func:`jacnet.distributed.world` under ``mpiexec``): ``X``, ``y``,
        ``sample_weight`` and ``validation_data`` are then this rank's shard of the rows,
        the rows numbered as the shards stacked in rank order
        (:func:`jacnet.distributed.shard_rows` cuts such shards). Batches, shuffling and the
        validation split are drawn over all rows as one process would draw them; each
        step Allreduces the flat gradient (a full-batch optimizer: its sums), so every
        rank takes the step a single process would, up to the rounding of the sums.
        Every rank starts from rank 0's parameters; only rank 0 writes checkpoints or
        shows progress; an error on one rank stops every rank (an error while checking
        the data is raised on every rank; one during training aborts the job). Dropout
        draws each rank's masks from its own layers' generators, so a run with dropout
        is not the single-process run. Default: one process.
    flush_denormals : bool, default True
        Train inside :func:`jacnet.flush_denormals`: results below the smallest normal
        float (1.18e-38 in float32, 2.2e-308 in float64) become zero on the calling
        thread, which is also where callbacks run. Subnormal numbers cost about 100
        times a normal operation on x86, and training makes many (Adam's moments of dead
        ReLU units decay through them, softmax probabilities underflow): an epoch can
        take twice as long. Flushing changes no value larger than that bound, so on
        data that never goes subnormal the run is bit for bit the one without it. XLA
        (JAX) flushes by default; PyTorch offers ``torch.set_flush_denormal``. False:
        leave the floating-point environment as it is.

    Returns
    -------
    History

    Raises
    ------
    ValueError, TypeError
        Bad data or arguments, before any training happens.

    Warns
    -----
    DivergenceWarning
        The loss became NaN/infinite: training stops, the parameters of the last
        completed epoch are kept and ``history.stop_reason`` says what happened.

    Examples
    --------
    >>> from jacnet import mlp
    >>> X = np.linspace(-1, 1, 64).reshape(-1, 1)
    >>> model = mlp([1, 8, 1], seed=0)
    >>> history = fit(model, X, X ** 2, epochs=20, lr=0.01, progress=False)
    >>> len(history), history["loss"][-1] < history["loss"][0]
    (20, True)
    """
    if not isinstance(flush_denormals, (bool, np.bool_)):
        raise TypeError(f"flush_denormals must be True or False; got {flush_denormals!r}.")
    flushing = fpu.flush_denormals() if flush_denormals else nullcontext()
    loop = _Loop(model, X, y, loss=loss, optimizer=optimizer, lr=lr, epochs=epochs,
                 batch_size=batch_size, shuffle=shuffle, seed=seed,
                 validation_data=validation_data, validation_split=validation_split,
                 schedule=schedule, clip_norm=clip_norm, weight_decay=weight_decay,
                 metrics=metrics, sample_weight=sample_weight, comm=comm)
    comm = loop.comm
    cbs = list(callbacks)
    error = None
    try:
        _add_callbacks(loop, cbs, early_stopping=early_stopping, patience=patience,
                       min_delta=min_delta, restore_best=restore_best, checkpoint=checkpoint,
                       checkpoint_every=checkpoint_every,
                       progress=progress if comm is None or comm.rank == 0 else False)
    except Exception as exc:
        if comm is None:
            raise
        error = exc
    if comm is None:
        with flushing:
            return loop.run(cbs, resume_from)
    comm.agree(error)
    with comm.failing_together(), _summing_over_ranks(loop), flushing:
        return loop.run(cbs, resume_from)


@contextmanager
def _summing_over_ranks(loop: _Loop) -> Iterator[None]:
    """A full-batch optimizer sums over the ranks for the length of the run (through its
    ``allreduce``); a first-order step needs nothing: the loop sums its gradient."""
    optimizer = loop.optimizer
    if not loop.full_batch or loop.comm is None or optimizer.allreduce is not None:
        yield
        return
    optimizer.allreduce = loop.comm.allreduce
    try:
        yield
    finally:
        optimizer.allreduce = None


def _add_callbacks(loop: _Loop, cbs: list[Callback], *, early_stopping: bool | None,
                   patience: int | None, min_delta: float, restore_best: bool,
                   checkpoint: Any, checkpoint_every: int | None, progress: bool | None) -> None:
    """Check the user's callbacks and add the ones that fit's arguments ask for."""
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be jacnet Callback objects; got {type(cb).__name__}.")
    validation_stop = int(getattr(loop.optimizer, "max_fail", 0) or 0) if loop.full_batch else 0
    if early_stopping is None:  # trainlm's validation stop, for optimizers that have one
        early_stopping = validation_stop > 0 and loop.X_val is not None
    if patience is None:
        patience = validation_stop if validation_stop > 0 else 10
    if early_stopping:
        cbs.append(EarlyStopping("val_loss", patience=patience, min_delta=min_delta,
                                 restore_best=restore_best))
    if checkpoint is not None:
        folder = Path(checkpoint).parent
        if not folder.is_dir():
            raise FileNotFoundError(
                f"checkpoint={str(checkpoint)!r}: the folder {folder} does not exist; create "
                "it first (checked before training, so no epoch is lost).")
        cbs.append(ModelCheckpoint(checkpoint, every=checkpoint_every or 1))
    elif checkpoint_every is not None:
        raise ValueError("checkpoint_every= needs checkpoint= a file path to write to.")
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)()) or _in_notebook()
    if progress:
        cbs.append(ProgressBar())


class _Loop:
    """One training run's data and objects; ``run`` executes the epochs."""

    def __init__(self, model: Sequential, X: Any, y: Any, *, loss: str | Loss, optimizer: Any,
                 lr: float | None, epochs: int, batch_size: int, shuffle: bool, seed: int | None,
                 validation_data: Any, validation_split: float, schedule: Any,
                 clip_norm: float | None, weight_decay: float,
                 metrics: Sequence[str | Metric] | None, sample_weight: Any,
                 comm: Communicator | None = None) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"model must be a jacnet Sequential; got {type(model).__name__}.")
        self.model = model
        self.loss = get_loss(loss)
        self.epochs = check_positive_int(epochs, "epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.shuffle = bool(shuffle)
        if seed is None:
            seed = secrets.randbits(63)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise TypeError(f"seed must be a non-negative integer or None; got {seed!r}.")
        self.seed = int(seed)
        if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a number > 0 or None; got {clip_norm!r}.")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        # What a resumed run must share with the run it continues (checked in _resume).
        self.settings: dict[str, Any] = {
            "loss": self.loss.get_config(), "batch_size": self.batch_size, "lr": lr,
            "validation_split": float(validation_split),
            "validation_data": validation_data is not None, "clip_norm": self.clip_norm,
        }
        self.optimizer = resolve_optimizer(optimizer, model, lr=lr, weight_decay=weight_decay)
        self.full_batch = bool(getattr(self.optimizer, "full_batch", False))
        self.schedule = _resolve_schedule(schedule, self.optimizer, self.epochs)
        self.metrics = _metrics_for(self.loss, metrics)
        self.val_metrics = [copy.deepcopy(m) for m in self.metrics]

        # Validate the data once; the epoch loop trusts it. In a data-parallel run each
        # rank checks its shard, and a bad shard stops every rank with an error.
        self.comm = comm if comm is not None and comm.size > 1 else None
        if self.comm is not None and self.full_batch and not hasattr(self.optimizer, "allreduce"):
            raise TypeError(
                f"{type(self.optimizer).__name__} cannot train data-parallel: a full-batch "
                "optimizer sums its per-row quantities over the ranks through an `allreduce` "
                "attribute (a callable that sums a float64 array in place), and it has none. "
                "Use lm, gn, br or a first-order optimizer, or train without comm=.")
        if self.comm is None:
            self._check_data(X, y, sample_weight, validation_data, validation_split)
        else:
            error = None
            try:
                self._check_data(X, y, sample_weight, validation_data, validation_split)
            except Exception as exc:
                error = exc
            self.comm.agree(error)
            # Every rank starts from rank 0's parameters (one broadcast of θ).
            self.comm.broadcast(model.params)
        self._split(validation_split)
        self.solver_state: Any = None  # a full-batch optimizer's state between epochs
        self.rng = np.random.default_rng(self.seed)

    def _check_data(self, X: Any, y: Any, sample_weight: Any, validation_data: Any,
                    validation_split: float) -> None:
        """Check this process's rows, weights and validation data (no communication)."""
        model = self.model
        X_arr = model.check_input(X)
        target = self.loss.prepare_target(y, model.out_features, dtype=model.dtype)
        _check_rows(X_arr, target, "y")
        weights = None
        if sample_weight is not None:
            # A full-batch optimizer solves in float64 whatever the model's type: keep the
            # weights' precision for it.
            weights = check_array(sample_weight, "sample_weight", ndim=1,
                                  dtype=np.float64 if self.full_batch else model.dtype)
            if weights.shape[0] != X_arr.shape[0] or (weights < 0).any() or (
                    self.comm is None and weights.sum() <= 0):
                raise ValueError(
                    f"sample_weight must have one non-negative weight per row of X "
                    f"({X_arr.shape[0]}), not all zero; got shape {weights.shape}."
                )
            if not self.full_batch and not isinstance(
                    self.loss, (MSELoss, CrossEntropyLoss, BCEWithLogitsLoss)):
                raise TypeError("sample_weight needs one of the built-in losses (mse, "
                                f"cross_entropy, bce); got {type(self.loss).__name__}.")
        self.X_val = self.t_val = None
        if validation_data is not None:
            if validation_split:
                raise ValueError("pass validation_data or validation_split, not both.")
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise TypeError("validation_data must be a pair (X_val, y_val).")
            self.X_val = check_array(validation_data[0], "validation_data[0] (X_val)",
                                     dtype=model.dtype, n_columns=model.in_features)
            self.t_val = self.loss.prepare_target(validation_data[1], model.out_features,
                                                  dtype=model.dtype)
            _check_rows(self.X_val, self.t_val, "y_val")
        elif validation_split and not (isinstance(validation_split, float)
                                       and 0.0 < validation_split < 1.0):
            raise ValueError(
                f"validation_split must be a fraction in (0, 1); got {validation_split!r}.")
        self.X, self.target, self.weights = X_arr, target, weights

    def _split(self, validation_split: float) -> None:
        """Number the rows over the ranks and hold out the validation rows.

        The rows of a data-parallel run are numbered as if the shards were stacked in
        rank order; this rank holds rows ``[row_offset, row_offset + len(X))`` of the
        ``n_rows`` training rows, and the shuffling and the validation split are drawn
        over all ``n_rows`` exactly as a single process would draw them.
        """
        X_arr, target, weights = self.X, self.target, self.weights
        n_local = X_arr.shape[0]
        lo, n_total = 0, n_local
        if self.comm is not None:
            counts = np.zeros(self.comm.size + 1)
            counts[self.comm.rank] = n_local
            counts[-1] = 0.0 if weights is None else float(weights.sum(dtype=np.float64))
            self.comm.allreduce(counts)
            lo, n_total = int(counts[:self.comm.rank].sum()), int(counts[:-1].sum())
            if weights is not None and counts[-1] <= 0:
                raise ValueError("sample_weight is zero on every rank's rows; give some row "
                                 "a positive weight.")
        if validation_split:
            n_val = math.ceil(validation_split * n_total)
            if n_val >= n_total:
                raise ValueError(f"validation_split={validation_split} leaves no rows for training.")
            order = np.random.default_rng([self.seed, 1]).permutation(n_total)
            is_val = np.zeros(n_total, dtype=bool)
            is_val[order[:n_val]] = True
            mine = is_val[lo:lo + n_local]
            val_rows, train_rows = np.flatnonzero(mine), np.flatnonzero(~mine)
            self.X_val, self.t_val = X_arr[val_rows], target[val_rows]
            X_arr, target = X_arr[train_rows], target[train_rows]
            if weights is not None:
                weights = weights[train_rows]
            lo -= int(np.count_nonzero(is_val[:lo]))
            n_total -= n_val
        self.X, self.target, self.weights = X_arr, target, weights
        self.row_offset, self.n_rows = lo, n_total

    # -- the epochs ----------------------------------------------------------------
    def run(self, callbacks: list[Callback], resume_from: Any) -> History:
        model = self.model
        monitor = "val_loss" if self.X_val is not None else "loss"
        history = History(monitor=monitor)
        state = TrainingState(model, self.loss, self.optimizer, self.schedule, history, self.epochs)
        if self.comm is not None:
            state.comm = self.comm
        state.extra_state["seed"] = self.seed
        state.extra_state["settings"] = self.settings
        if self.full_batch and hasattr(self.optimizer, "reset"):
            self.optimizer.reset()  # μ (and BR's α, β, γ) from their start, as MATLAB's train
        if resume_from is not None:
            self._resume(state, callbacks, resume_from)
        for cb in callbacks:
            cb.state = state
        was_training = model.training
        batch_hooks = [cb for cb in callbacks
                       if type(cb).on_batch_end is not Callback.on_batch_end]
        last: dict[str, Any] = {}
        last_good = model.params.copy()
        try:
            for cb in callbacks:
                cb.on_train_begin({})
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                while state.epoch < self.epochs and state.stop_reason is None:
                    epoch = state.epoch + 1
                    np.copyto(last_good, model.params)
                    opt_state = (self.optimizer.state_dict()
                                 if hasattr(self.optimizer, "state_dict") else None)
                    rng_state = self.rng.bit_generator.state
                    started = time.perf_counter()
                    lr = getattr(self.optimizer, "lr", None)
                    model.train()
                    record = (self._full_batch_epoch(state) if self.full_batch
                              else self._epoch(batch_hooks))
                    bad = record.get("diverged")
                    if bad is None and not np.isfinite(model.params).all():
                        bad = "a parameter became NaN or infinite"
                    if bad is not None:
                        np.copyto(model.params, last_good)
                        if opt_state is not None:
                            self.optimizer.load_state_dict(opt_state)
                        self.rng.bit_generator.state = rng_state
                        reason = (f"diverged at epoch {epoch}: {bad}; kept the parameters of "
                                  f"epoch {epoch - 1}. Lower the learning rate (or use "
                                  "clip_norm=) and check the data for extreme values.")
                        state.stop(reason)
                        warnings.warn(reason, DivergenceWarning, stacklevel=3)
                        break
                    if self.X_val is not None and self.t_val is not None:
                        model.eval()
                        val = _evaluate(model, self.loss, self.val_metrics, self.X_val,
                                        self.t_val, max(self.batch_size, 4096), self.comm)
                        record.update({f"val_{k}": v for k, v in val.items()})
                    if lr is not None:
                        record["lr"] = float(lr)
                    record["time"] = time.perf_counter() - started
                    record = {"epoch": epoch, **record}
                    history.append(record)
                    state.epoch = epoch
                    if self.schedule is not None:
                        if isinstance(self.schedule, ReduceLROnPlateau):
                            self.schedule.step(record[monitor])
                        else:
                            self.schedule.step()
                    stop = getattr(self.optimizer, "stop_reason", None)
                    if self.full_batch and stop:
                        state.stop(str(stop))
                    state.extra_state["callbacks"] = {}
                    for cb in callbacks:
                        cb.on_epoch_end(epoch, record)
                        self._collect_callback_states(state, callbacks)
                    last = record
        except BaseException:
            # An error or Ctrl-C mid-epoch: no checkpoint of a half-done epoch, but close
            # the progress bar so the terminal is left clean.
            for cb in callbacks:
                if isinstance(cb, ProgressBar):
                    cb.on_train_end({})
            model.train(was_training)
            raise
        history.stop_reason = state.stop_reason
        self._collect_callback_states(state, callbacks)
        for cb in callbacks:
            cb.on_train_end(last)
        model.train(was_training)
        return history

    def _collect_callback_states(self, state: TrainingState, callbacks: list[Callback]) -> None:
        states = {}
        for i, cb in enumerate(callbacks):
            cb_state = cb.state_dict()
            if cb_state is not None:
                states[f"{i}:{type(cb).__name__}"] = cb_state
        state.extra_state["callbacks"] = states
        state.extra_state["rng"] = self.rng.bit_generator.state

    def _epoch(self, batch_hooks: Sequence[Callback] = ()) -> dict[str, Any]:
        """One pass over the shuffled training rows in mini-batches (the lean path).

        ``batch_hooks``: the callbacks that override ``on_batch_end`` (usually none).
        In a data-parallel run the batches are drawn over all ``n_rows`` rows, each rank
        computes the gradient of the batch's rows it holds, weighted by their share of the
        batch, and one Allreduce of the flat gradient makes it the whole batch's.
        """
        model, loss, optimizer, comm = self.model, self.loss, self.optimizer, self.comm
        params, grads = model.params, model.grads
        metrics, clip, weights = self.metrics, self.clip_norm, self.weights
        X, target, n, bs = self.X, self.target, self.n_rows, self.batch_size
        # Each batch gathers its own rows: the same bytes as shuffling the whole data set
        # up front, but they stay in cache and the data set is never copied whole.
        order = self.rng.permutation(n) if self.shuffle else None
        for metric in metrics:
            metric.reset()
        total = 0.0
        isfinite = math.isfinite
        mean = loss.reduction == "mean"  # the epoch's loss: mean over samples, or their sum
        batch_weights = None if comm is None or weights is None else self._batch_weights(order)
        for start in range(0, n, bs):
            rows: Any = slice(start, start + bs) if order is None else order[start:start + bs]
            if comm is None:
                xb, tb = X[rows], target[rows]
                out = model.forward(xb)
                if weights is None:
                    value, grad = loss.value_and_grad(out, tb)
                else:
                    value, grad = self._weighted(out, tb, weights[rows])
                if not isfinite(value):
                    return {"diverged": f"the loss is {value} at batch {start // bs + 1}"}
                total += value * xb.shape[0] if mean else value
                for metric in metrics:
                    metric.update(out, tb)
                model.backward(grad, input_grad=False)
            else:
                size = min(bs, n - start)
                total_w = None if batch_weights is None else batch_weights[start // bs]
                total += self._shard_gradient(rows, size, total_w)
                comm.allreduce(grads)
                if not isfinite(grads[0]):  # a rank's loss or gradient is not finite
                    return {"diverged": f"the loss or its gradient is not finite at batch "
                                        f"{start // bs + 1}"}
            if clip is not None:
                clip_grad_norm(grads, clip)
            optimizer.step(params, grads)
            if batch_hooks:
                batch_logs = {"n_batches": -(-n // bs)}
                for cb in batch_hooks:
                    cb.on_batch_end(start // bs + 1, batch_logs)
        if comm is not None:
            total = _sum_over_ranks(comm, [total], metrics, model.out_features)[0]
        record: dict[str, Any] = {"loss": total / n if mean else total}
        record.update({metric.name: metric.result() for metric in metrics})
        return record

    def _shard_gradient(self, rows: Any, size: int, total_w: float | None) -> float:
        """This rank's part of one batch's gradient (into ``model.grads``) and loss.

        ``rows``: the batch's global row numbers (or their slice); ``size``: how many
        there are; ``total_w``: the batch's weight sum over all ranks (weighted runs).
        Returns this rank's share of the batch loss times ``size`` (mean reduction) or its
        share of the sum: what the epoch total adds. A non-finite loss poisons the gradient,
        so every rank sees it after the Allreduce.
        """
        model, loss = self.model, self.loss
        lo, n_local = self.row_offset, self.X.shape[0]
        if isinstance(rows, slice):
            local: Any = slice(max(rows.start - lo, 0), max(min(rows.stop - lo, n_local), 0))
        else:
            local = rows[(rows >= lo) & (rows < lo + n_local)] - lo
        xb, tb = self.X[local], self.target[local]
        if xb.shape[0] == 0:
            model.grads[...] = 0.0
            return 0.0
        out = model.forward(xb)
        mean = loss.reduction == "mean"
        if self.weights is None:
            value, grad = loss.value_and_grad(out, tb)
            share = xb.shape[0] / size if mean else 1.0
            if share != 1.0:
                grad *= share
            value *= share
        else:
            value, grad = self._weighted(out, tb, self.weights[local], total_w)
        if not math.isfinite(value):
            model.grads[...] = np.nan
            return 0.0
        for metric in self.metrics:
            metric.update(out, tb)
        model.backward(grad, input_grad=False)
        return value * size if mean else value

    def _batch_weights(self, order: np.ndarray | None) -> np.ndarray:
        """Each batch's weight sum over all ranks this epoch (one Allreduce)."""
        assert self.weights is not None and self.comm is not None
        n, bs = self.n_rows, self.batch_size
        position = np.arange(self.row_offset, self.row_offset + self.X.shape[0])
        if order is not None:
            inverse = np.empty(n, dtype=np.int64)
            inverse[order] = np.arange(n)
            position = inverse[position]
        sums = np.bincount(position // bs, weights=self.weights.astype(np.float64),
                           minlength=-(-n // bs))
        return self.comm.allreduce(sums)

    def _weighted(self, out: np.ndarray, tb: np.ndarray, wb: np.ndarray,
                  total_w: float | None = None) -> tuple[float, np.ndarray]:
        """Batch loss Σ wᵢ ℓᵢ / Σ wᵢ and its gradient, from per-sample losses.

        ``total_w``: Σ wᵢ over the whole batch when ``wb`` is one rank's part of it.
        """
        _, grad = self.loss.value_and_grad(out, tb)
        n = out.shape[0]
        per_row = self.loss.per_sample(out.astype(np.float64), tb)
        if total_w is None:
            total_w = float(wb.sum())
        if total_w <= 0.0:
            grad[...] = 0.0
            return 0.0, grad
        # value_and_grad's rows are ∂ℓᵢ/∂zᵢ × scale; rescale each to wᵢ/Σw.
        scale = 1.0 / n if self.loss.reduction == "mean" else 1.0
        grad *= (wb * (1.0 / (total_w * scale)))[:, None]
        return float(np.dot(per_row, wb.astype(np.float64))) / total_w, grad

    def _full_batch_epoch(self, state: TrainingState) -> dict[str, Any]:
        """One ``optimizer.epoch`` on all the training rows (weighted when weights were
        given: only then is ``sample_weight=`` passed, so an optimizer without weights
        needs no such parameter), and the training metrics at the new parameters."""
        optimizer = self.optimizer
        weighted = {} if self.weights is None else {"sample_weight": self.weights}
        if hasattr(optimizer, "iterate"):
            # The forward pass the accepted step ended with, handed to the next epoch
            # (the same data every epoch; see SolverState).
            self.solver_state, info = optimizer.iterate(self.model, self.loss, self.X,
                                                        self.target, self.solver_state,
                                                        **weighted)
        else:
            info = optimizer.epoch(self.model, self.loss, self.X, self.target, **weighted)
        record: dict[str, Any] = {k: float(v) for k, v in dict(info).items()}
        value = record.get("loss", float("nan"))
        if not math.isfinite(value):
            return {"diverged": f"the loss is {value}"}
        if self.metrics:
            self.model.eval()
            train = _evaluate(self.model, self.loss, self.metrics, self.X, self.target,
                              max(self.batch_size, 4096), self.comm)
            record["loss"] = value
            record.update({k: v for k, v in train.items() if k != "loss"})
        return record

    def _resume(self, state: TrainingState, callbacks: list[Callback], path: Any) -> None:
        saved = load_checkpoint(path)
        model = self.model
        if saved.model.get_config() != model.get_config() or saved.model.dtype != model.dtype:
            raise ValueError(
                f"the checkpoint {path} holds a different network ({saved.model.n_params} "
                f"parameters, {saved.model.dtype}) from the model passed to fit "
                f"({model.n_params}, {model.dtype}); build the same architecture to resume."
            )
        s = saved.state
        if int(s.get("seed", self.seed)) != self.seed:
            raise ValueError(
                f"the checkpoint {path} was trained with seed={s['seed']}; resume with the "
                "same seed (it fixes the validation split and the shuffling)."
            )
        saved_settings = s.get("settings") or {}
        changed = sorted(k for k, v in self.settings.items()
                         if k in saved_settings and saved_settings[k] != v
                         and not (k == "lr" and v is None))  # lr=None: keep the saved one
        if changed:
            were = ", ".join(f"{k}={saved_settings[k]!r} (now {self.settings[k]!r})"
                             for k in changed)
            raise ValueError(
                f"the checkpoint {path} was trained with {were}; a resumed run continues "
                "that run, so pass the same settings (or leave lr out), or start a new run."
            )
        model.params[...] = saved.model.params
        opt = s.get("optimizer") or {}
        name = getattr(self.optimizer, "name", type(self.optimizer).__name__)
        if opt.get("name") != name:
            raise ValueError(
                f"the checkpoint {path} was trained with optimizer {opt.get('name')!r}; "
                f"resume it with the same optimizer, not {name!r}."
            )
        if opt.get("state") is not None and hasattr(self.optimizer, "load_state_dict"):
            self.optimizer.load_state_dict(opt["state"])
        if s.get("schedule") is not None and self.schedule is not None:
            self.schedule.load_state_dict(s["schedule"])
        self.rng.bit_generator.state = s["rng"]
        for layer, rng_state in zip(model.layers, s.get("layer_rngs", [])):
            if rng_state is not None and hasattr(layer, "_rng"):
                layer._rng.bit_generator.state = rng_state
        history = History.from_dict(s["history"])
        state.history.records = history.records
        state.epoch = int(s["epoch"])
        saved_cbs = s.get("callbacks", {})
        for i, cb in enumerate(callbacks):
            key = f"{i}:{type(cb).__name__}"
            if key in saved_cbs:
                cb.load_state_dict(saved_cbs[key])
        if history.stop_reason is not None and history.stop_reason.startswith("diverged"):
            raise ValueError(
                f"the checkpoint {path} ends a run that {history.stop_reason.split(';')[0]}; "
                "resuming it would repeat the same steps. Start a new run with a lower "
                "learning rate (or clip_norm=), optionally from these parameters."
            )
        if history.stop_reason is not None:
            state.stop(history.stop_reason)
