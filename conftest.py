import importlib.util

import numpy as np
import pytest


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


# jacnet.onnx's doctests need the optional onnx packages; without them they are not collected.
collect_ignore = [] if _importable("onnx") and _importable("onnxruntime") else ["src/jacnet/onnx.py"]


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
