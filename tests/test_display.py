"""Notebook displays: the HTML is parsed and its content checked; the plain reprs stay short."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np
import pytest

from jacnet.checks import gradcheck
from jacnet.explain import explain, inspect_model
from jacnet.jacobians import Diagonal, Kronecker, Matrix
from jacnet.network import jacobian, mlp
from jacnet.training import Callback, History, ProgressBar, fit


class _Tables(HTMLParser):
    """Collect every table's rows of cell texts, and all text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    parser.close()
    return parser


def test_sequential_html_is_a_layer_table_with_shapes_and_counts() -> None:
    model = mlp([3, 5, 2], activation="tanh", output_activation="softmax", seed=0)
    page = parse(model._repr_html_())
    assert page.rows[0] == ["layer", "input", "output", "parameters"]
    assert page.rows[1] == ["0 Linear(3 → 5)", "(B, 3)", "(B, 5)", "20"]
    assert page.rows[2] == ["1 Tanh", "(B, 5)", "(B, 5)", "0"]
    assert page.rows[3] == ["2 Linear(5 → 2)", "(B, 5)", "(B, 2)", "12"]
    assert page.rows[-1] == ["total", "", "", "32"]
    assert "32 parameters" in "".join(page.text)
    assert len(repr(model)) < 400


def test_small_jacobian_html_writes_out_the_matrix() -> None:
    op = Kronecker(np.array([[1.0, 2.0]]), n_rows=2)
    page = parse(op._repr_html_())
    assert page.rows == [["1", "2", "0", "0"], ["0", "0", "1", "2"]]
    assert "Kronecker" in "".join(page.text) and "1 sample of 2 × 4" in "".join(page.text)
    diag = parse(Diagonal(np.array([[0.5, 0.25], [1.0, 2.0]]))._repr_html_())
    assert diag.rows == [["0.5", "0"], ["0", "0.25"]]  # sample 0 of two
    assert "diagonal" in "".join(diag.text) and "sample 0" in "".join(diag.text)


def test_large_jacobian_html_gives_structure_and_shape_only() -> None:
    model = mlp([20, 30, 4], seed=0)
    op = jacobian(model, np.zeros((3, 20)), wrt="params", structured=True)
    page = parse(op._repr_html_())
    assert page.rows == []
    text = "".join(page.text)
    assert "BlockRow" in text and f"3 samples of 4 × {model.n_params}" in text
    assert "not shown" in text
    assert repr(Matrix(np.eye(2), batch_size=3)) == "Matrix(batch_size=3, shape=(2, 2))"


def test_history_table_pandas_and_iteration() -> None:
    history = History([{"epoch": e, "loss": 1.0 / e, "lr": 0.1} for e in range(1, 26)],
                      stop_reason="early stopping")
    page = parse(history._repr_html_())
    assert page.rows[0] == ["epoch", "loss", "lr"]
    assert page.rows[1] == ["1", "1", "0.1"]
    assert page.rows[11] == ["…"]  # 25 epochs: the first and last ten
    assert page.rows[-1] == ["25", "0.04", "0.1"]
    assert "stopped: early stopping" in "".join(page.text)
    pd = pytest.importorskip("pandas")
    frame = history.to_pandas()
    assert frame.index.name == "epoch" and list(frame.columns) == ["loss", "lr"]
    assert frame.loc[4, "loss"] == 0.25
    plain = pd.DataFrame(history)
    assert plain.shape == (25, 3) and plain["epoch"].iloc[-1] == 25
    assert pd.DataFrame(history.to_dict()["columns"]).shape == (25, 3)


def test_history_from_fit_displays() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    history = fit(mlp([2, 3, 1], seed=0), X, X[:, :1], epochs=3, progress=False)
    page = parse(history._repr_html_())
    assert page.rows[0][:2] == ["epoch", "loss"] and len(page.rows) == 4
    assert repr(history).startswith("History(epochs=3")


def test_check_report_html_and_repr() -> None:
    model = mlp([3, 4, 2], activation="tanh", seed=0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    report = gradcheck(model, X, np.zeros((5, 2)))
    page = parse(report._repr_html_())
    assert page.rows[0] == ["comparison", "max abs error", "max rel error", "at", "bound"]
    assert [row[0] for row in page.rows[1:]] == [c.name for c in report.comparisons]
    assert all(row[4] in ("atol", "atol + rtol·|b|") for row in page.rows[1:])
    assert "derivative check passed" in "".join(page.text)
    assert repr(report).startswith("<CheckReport passed: 4 comparisons")


def test_explanation_repr_is_short_and_markdown_complete() -> None:
    explanation = explain()
    text = repr(explanation)
    assert len(text) < 300 and "all passed" in text and "\n" not in text
    assert "∂E/∂W" in explanation._repr_markdown_()
    step = explanation["∂E/∂W"]
    assert repr(step).startswith("<Step ∂E/∂W") and len(repr(step)) < 200


def test_inspection_repr_is_short() -> None:
    model = mlp([3, 4, 2], seed=0)
    inspection = inspect_model(model, np.zeros((4, 3)))
    assert len(repr(inspection)) < 200 and "| layer" not in repr(inspection)
    assert "| #" in inspection._repr_markdown_()


# --------------------------------------------------------------------------- progress
def _run(bar, epochs: int = 7, batch_size: int = 4) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    fit(mlp([2, 3, 1], seed=0), X, X[:, :1], epochs=epochs, batch_size=batch_size,
        callbacks=[bar], progress=False)


def test_plain_progress_prints_periodic_lines_and_ends_in_the_final_state() -> None:
    out = io.StringIO()
    bar = ProgressBar("plain", interval=0, file=out)
    _run(bar)
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == [f"epoch {e}/7" for e in range(1, 8)]
    assert "loss" in lines[-1] and bar.status.startswith("epoch 7/7") and bar.fraction == 1.0
    quiet = io.StringIO()
    _run(ProgressBar("plain", interval=1e9, file=quiet))
    assert [line.split(" · ")[0] for line in quiet.getvalue().splitlines()] == ["epoch 7/7"]


def test_progress_within_an_epoch_counts_batches_with_a_time_estimate() -> None:
    seen: list[str] = []

    class Recording(ProgressBar):
        def on_batch_end(self, batch, logs):
            super().on_batch_end(batch, logs)
            seen.append(self.status)

    _run(Recording("plain", interval=1e9, file=io.StringIO()), epochs=2)
    assert len(seen) == 10  # 20 rows in batches of 4, two epochs
    assert seen[1].startswith("epoch 1/2 (batch 2/5)") and seen[6].startswith("epoch 2/2 (batch 2/5)")
    assert " left" in seen[6]


def test_on_batch_end_is_called_only_for_callbacks_that_override_it() -> None:
    class Counter(Callback):
        calls = 0

        def on_batch_end(self, batch, logs):
            Counter.calls += 1
            assert logs["n_batches"] == 5

    _run(Counter(), epochs=3)
    assert Counter.calls == 15


def test_widget_progress_is_saved_in_its_final_state() -> None:
    pytest.importorskip("ipywidgets")
    pytest.importorskip("IPython")
    bar = ProgressBar("widget")
    _run(bar)
    assert bar.view.label.value.startswith("epoch 7/7")
    assert bar.view.progress.value == 1.0 and bar.view.progress.bar_style == "success"


def test_html_progress_without_widgets_ends_in_its_final_state(monkeypatch) -> None:
    pytest.importorskip("IPython")
    bar = ProgressBar("html")
    _run(bar)
    page = parse(bar.view.last)
    assert "".join(page.text).strip().startswith("epoch 7/7")
    assert "value='1.0000'" in bar.view.last


def test_rich_progress_in_a_terminal_ends_in_its_final_state() -> None:
    pytest.importorskip("rich")
    out = io.StringIO()
    _run(ProgressBar("rich", file=out))
    assert "epoch 7/7" in out.getvalue()


def test_auto_progress_off_a_terminal_is_plain() -> None:
    bar = ProgressBar(file=io.StringIO())
    _run(bar, epochs=1)
    assert bar.kind == "plain"
    with pytest.raises(ValueError, match="display must be one of"):
        ProgressBar("tqdm")
