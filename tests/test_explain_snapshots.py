"""What a learner reads from ``jacnet explain``, kept as reviewed text.

Each case renders an explanation (plain text, Markdown, rich at 120 columns, the figure
index) and compares it with ``tests/snapshots/explain/<case>.txt``. The sizes of the
check errors (``3.4e-10``) are rounding noise that differs between machines, so they are
masked; every number of the pass itself, every formula, structure and note is compared.
A deliberate change is regenerated with ``JACNET_UPDATE_SNAPSHOTS=1 pytest
tests/test_explain_snapshots.py`` and its diff reviewed.
"""

from __future__ import annotations

import argparse
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

from jacnet.cli import add_explain_arguments, explain_command
from jacnet.explain import explain
from jacnet.io import save_model
from jacnet.network import mlp

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots" / "explain"
_ERROR = re.compile(r"\d\.\de[+-]\d\d")


def _mask(text: str) -> str:
    return _ERROR.sub("<error>", text)


def _command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    args = add_explain_arguments(argparse.ArgumentParser()).parse_args(argv)
    args.debug = False
    assert explain_command(args) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def _kink() -> str:
    model = mlp([2, 3, 1], activation="relu", seed=0, dtype="float64")
    model.layers[0].bias[...] = 0.0
    return explain(model, [0.0, 0.0], [1.0]).to_text()


def _rich() -> str:
    pytest.importorskip("rich")
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None, file=io.StringIO())
    console.print(explain().to_rich())
    return console.export_text()


def _figure_index(tmp_path: Path) -> str:
    pytest.importorskip("matplotlib")
    from jacnet.plot import plot_explanation

    paths = plot_explanation(explain(), tmp_path)
    return "\n".join(p.name for p in paths) + "\n\n" + (tmp_path / "index.md").read_text("utf-8")


def _saved_model(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    # A classifier saved with its loss and data, as `jacnet train` writes it.
    path = tmp_path / "model.npz"
    save_model(path, mlp([4, 5, 3], activation="relu", seed=0, dtype="float64"),
               metadata={"loss": "cross_entropy", "options": {"data": "iris"}})
    return _command(["--model", str(path), "--format", "text", *extra], capsys)


CASES = {
    "default": lambda tmp, cap: _command(["--format", "text"], cap),
    "bias": lambda tmp, cap: _command(["--bias", "--format", "text"], cap),
    "softmax_cross_entropy": lambda tmp, cap: _command(
        ["--output-activation", "none", "--loss", "cross_entropy", "--target", "1",
         "--format", "text"], cap),
    "deep_markdown": lambda tmp, cap: _command(
        ["--sizes", "3,5,4,3", "--activation", "tanh", "--x", "0.1,0.2,-0.3",
         "--target", "0.2,0.3,0.5", "--lr", "0.2", "--format", "markdown"], cap),
    "relu_kink": lambda tmp, cap: _kink(),
    "saved_model": _saved_model,
    "saved_model_batch": lambda tmp, cap: _saved_model(tmp, cap, "--batch", "3"),
    "batch": lambda tmp, cap: _command(["--batch", "3", "--bias", "--format", "text"], cap),
    "rich": lambda tmp, cap: _rich(),
    "figure_index": lambda tmp, cap: _figure_index(tmp),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_explanation_renders_as_reviewed(case, tmp_path, capsys):
    with np.printoptions():
        text = _mask(CASES[case](tmp_path, capsys))
    path = SNAPSHOTS / f"{case}.txt"
    if os.environ.get("JACNET_UPDATE_SNAPSHOTS"):
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing; regenerate with JACNET_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(encoding="utf-8")


def test_the_mask_keeps_the_numbers_of_the_pass():
    # Only check errors are masked: a changed value of the pass must still show.
    line = "  [ 0.3321 -0.2938]\n  checks (relative error) — vs backward: 1.2e-17 — passed"
    assert _mask(line) == line.replace("1.2e-17", "<error>")
    assert "0.3321 -0.2938" in _mask(line)
