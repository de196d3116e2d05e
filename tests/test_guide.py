"""The guide docs/backprop.md runs: every number it shows is printed by its own code."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "backprop.md"
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def run_guide(path: Path) -> doctest.TestResults:
    """Run the ``>>>`` examples of a Markdown file; a code fence ends an expected output."""
    # Blank out the ``` fences (keeping line numbers) so that they are not read as output.
    text = re.sub(r"^```.*$", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    test = doctest.DocTestParser().get_doctest(text, {"np": np}, path.name, str(path), 0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    # The guide sets print options for its readers; restore them for the other tests.
    with np.printoptions():
        runner.run(test)
    return runner.summarize(verbose=False)


def test_guide_examples_all_pass():
    pytest.importorskip("matplotlib")
    result = run_guide(GUIDE)
    assert result.attempted > 40, "the guide should hold its examples as doctests"
    assert result.failed == 0


def test_guide_runner_catches_a_wrong_number(tmp_path):
    # A changed number in the guide must make the test above fail.
    text = GUIDE.read_text(encoding="utf-8").replace("array([[0.2047, 0.644 ]])",
                                                     "array([[0.2047, 0.655 ]])", 1)
    broken = tmp_path / "backprop.md"
    broken.write_text(text, encoding="utf-8")
    assert run_guide(broken).failed == 1


def test_guide_follows_the_seed_sections():
    headings = [line for line in GUIDE.read_text(encoding="utf-8").splitlines()
                if line.startswith("## ")]
    assert headings[:6] == [
        "## 1. Gradient and Jacobian",
        "## 2. Back-propagation through one layer",
        "## 3. The MLP with squared error",
        "## 4. Training the 2nd layer",
        "## 5. The gradient handed down",
        "## 6. Training the 1st layer",
    ]


def test_guide_figures_are_checked_in():
    text = GUIDE.read_text(encoding="utf-8")
    for name in ("jacobian_dy_du", "jacobian_ds_dvecW", "jacobian_dz_dtheta", "gradient_flow",
                 "history", "decision_boundary"):
        assert f"figures/{name}.png" in text
        png = GUIDE.parent / "figures" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
