import importlib.util

import numpy as np
import pytest

# jacnet.onnx's doctests need the optional onnx packages; without them they are not collected.
collect_ignore = [] if all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")) \
    else ["src/jacnet/onnx.py"]


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
