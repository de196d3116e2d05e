"""The tutorial notebook runs, headless, and shows the guide's numbers (so it cannot rot)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
GUIDE = ROOT / "docs" / "backprop.md"


def _maker():
    spec = importlib.util.spec_from_file_location("make_tutorial", ROOT / "docs" / "make_tutorial.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_stored_without_outputs_and_matches_its_source():
    stored = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in stored["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None
                        for cell in code)
    pytest.importorskip("nbformat")
    built = _maker().build()
    assert ["".join(c["source"]) for c in stored["cells"]] == [c.source for c in built.cells]


def test_notebook_follows_the_seed_sections():
    stored = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    headings = [line for cell in stored["cells"] if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("## ")]
    for words in ("Gradient and Jacobian", "chain rule", "2nd layer", "diag(f′)",
                  "vec(W) and I ⊗ yᵀ", "1st layer", "never forms", "gradcheck", "sliders"):
        assert any(words in h for h in headings), words


@pytest.mark.slow
def test_notebook_executes_and_shows_the_guides_numbers(monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    # The kernel imports this checkout's jacnet (installed in CI; from src/ here).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    nb = _maker().execute(NOTEBOOK, timeout=180)

    def text(cell) -> str:
        parts = []
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
            parts.append(output.get("data", {}).get("text/html", ""))
        return "".join(parts)

    everything = "\n".join(text(cell) for cell in nb.cells if cell.cell_type == "code")
    guide = GUIDE.read_text(encoding="utf-8")
    for number in ("0.4321", "0.5062", "0.098286", "0.3321", "-0.2938", "0.0815", "-0.0734",
                   "0.0049", "-0.0821", "0.0668", "-0.0415", "0.092596", "-1.1468", "0.2454"):
        assert number in everything, number
        assert number in guide, number
    exercise = next(c for c in nb.cells if "Sigmoid._derivative" in c.source)
    out = text(exercise)
    assert out.startswith("True\nFalse\n") and "FAILED" in out
    training = nb.cells[-1]
    assert "epoch 7/7" in text(training)  # the progress display's saved, final state


def test_the_rendered_html_is_of_this_notebook_and_shows_the_guides_numbers():
    # docs/tutorial.html is what a reader opens without Jupyter: it must be rendered from
    # the notebook as stored (every cell's source) and show the guide's numbers.
    import html
    import re

    page = (ROOT / "docs" / "tutorial.html").read_text(encoding="utf-8")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())
    stored = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in stored["cells"]:
        source = " ".join("".join(cell["source"]).split())
        assert source in text, source[:80]
    guide = GUIDE.read_text(encoding="utf-8")
    for number in ("0.4321", "0.5062", "0.098286", "0.3321", "-0.2938", "0.092596", "-1.1468"):
        assert number in text and number in guide, number
    assert "epoch 7/7" in text
