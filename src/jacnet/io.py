"""Saving and loading without pickle: trained models and training checkpoints.

Everything is one NumPy ``.npz`` archive read with ``allow_pickle=False``, so loading a
file never executes code. An archive holds

- ``__jacnet__``: the kind of file (``"model"`` or ``"checkpoint"``),
- ``__format_version__``: an integer, bumped when the layout changes,
- ``__json__``: one JSON document (architecture, metadata, history, RNG states, ...)
  in which every array is replaced by ``{"__array__": key}``,
- the arrays themselves under those keys (``params``, ``preprocessing/X/mean``, ...).

Writes are atomic: the archive goes to a temporary file in the target's folder, is
flushed and fsync'ed, then ``os.replace``'d over the target. A crash or a kill at any
moment leaves either the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import numpy as np

from jacnet._readers import open_npz, read_npz_arrays
from jacnet.network import Sequential

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "SavedModel",
    "atomic_write",
    "load_checkpoint",
    "load_model",
    "read_archive",
    "save_checkpoint",
    "save_model",
    "write_archive",
]

FORMAT_VERSION = 1
_KIND_KEY, _VERSION_KEY, _JSON_KEY = "__jacnet__", "__format_version__", "__json__"
PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync it and move it over ``path``.

    If the block raises (or the process dies), ``path`` keeps its previous content and
    the temporary file is removed (or, after a kill, left as a hidden ``.tmp`` file).

    Parameters
    ----------
    path : str or PathLike
        The file to (re)write; its folder must exist. It gets the permissions a plain
        ``open`` would give it (0666 less the umask).
    mode : {"wb", "w"}
        Binary or text (UTF-8).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_write(target, "w") as f:
    ...     _ = f.write("kept safe")
    >>> target.read_text()
    'kept safe'
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {target}: the folder {folder} does not exist.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates the file private (0600); give it the permissions a plain open()
        # would have, so a saved model or figure is as readable as any other file.
        os.chmod(tmp_name, 0o666 & ~_umask())
        handle: IO[Any] = (open(fd, "wb") if "b" in mode  # noqa: SIM115 (closed below)
                           else open(fd, "w", encoding="utf-8", newline=""))  # noqa: SIM115
        with handle as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- archives
def _to_plain(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace arrays by references and objects with ``to_dict`` by tagged dicts."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufcU":
            raise TypeError(
                f"cannot save {key!r}: arrays of dtype {value.dtype} would need pickle; "
                "convert it to numbers or strings."
            )
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise TypeError(f"cannot save {key!r}: dictionary keys must be strings; got {k!r}.")
        return {k: _to_plain(v, f"{key}/{k}" if key else k, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v, f"{key}/{i}" if key else str(i), arrays) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return {"__object__": type(value).__name__, "state": _to_plain(to_dict(), key, arrays)}
    raise TypeError(
        f"cannot save {key!r} of type {type(value).__name__}: only arrays, numbers, strings, "
        "lists, dicts and objects with to_dict() are stored (no pickle)."
    )


def _object_types() -> dict[str, Callable[[dict[str, Any]], Any]]:
    from jacnet.data import StandardScaler

    return {"StandardScaler": StandardScaler.from_dict}


def _from_plain(value: Any, arrays: dict[str, np.ndarray], path: Path) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            key = value["__array__"]
            if key not in arrays:
                raise ValueError(f"{path} is damaged: the array {key!r} it refers to is missing.")
            return arrays[key]
        if set(value) == {"__object__", "state"}:
            builders = _object_types()
            name = value["__object__"]
            if name not in builders:
                raise ValueError(
                    f"{path} holds an object of type {name!r}, which this version of jacnet "
                    f"cannot rebuild (known: {', '.join(builders)})."
                )
            return builders[name](_from_plain(value["state"], arrays, path))
        return {k: _from_plain(v, arrays, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_plain(v, arrays, path) for v in value]
    return value


def write_archive(path: PathLike, kind: str, content: dict[str, Any]) -> None:
    """Atomically write ``content`` (nested dicts/lists of JSON values and arrays) to ``path``.

    Parameters
    ----------
    path : str or PathLike
        The ``.npz`` file to write (no suffix is added).
    kind : str
        What the file is (``"model"``, ``"checkpoint"``); :func:`read_archive` checks it.
    content : dict
        JSON-able values, NumPy arrays (numbers or strings) and objects with ``to_dict``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.npz"
    >>> write_archive(path, "notes", {"epoch": 3, "weights": np.arange(3.0)})
    >>> read_archive(path, "notes")
    {'epoch': 3, 'weights': array([0., 1., 2.])}
    """
    arrays: dict[str, np.ndarray] = {}
    document = _to_plain(dict(content), "", arrays)
    payload = {
        _KIND_KEY: np.array(kind),
        _VERSION_KEY: np.array(FORMAT_VERSION),
        _JSON_KEY: np.array(json.dumps(document, allow_nan=True)),
        **arrays,
    }
    with atomic_write(path) as f:
        cast(Any, np.savez)(f, **payload)


def read_archive(path: PathLike, kind: str) -> dict[str, Any]:
    """Read what :func:`write_archive` wrote, checking the file kind and format version.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a jacnet file, corrupt or truncated, a different kind of jacnet file, or a
        newer format version.
    """
    path = Path(path)
    what = f"jacnet {kind} file"
    fix = f"give a file written by jacnet's save_{kind}" + (" or `jacnet train`" if kind in (
        "model", "checkpoint") else "")
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with open_npz(path, what, fix) as archive:
            keys = list(archive.files)
            if _KIND_KEY not in keys or _JSON_KEY not in keys or _VERSION_KEY not in keys:
                shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
                raise _Foreign(shown)
            arrays = read_npz_arrays(archive, path, fix)
    except _Foreign as exc:
        raise ValueError(
            f"{path} is a .npz archive but not a jacnet {kind} file (it holds arrays: {exc}). "
            f"Use a file written by jacnet's save_{kind}."
        ) from None
    marks = {key: arrays.pop(key) for key in (_KIND_KEY, _VERSION_KEY, _JSON_KEY)}
    if any(mark.shape != () for mark in marks.values()) or marks[_KIND_KEY].dtype.kind != "U" \
            or marks[_VERSION_KEY].dtype.kind not in "iu" or marks[_JSON_KEY].dtype.kind != "U":
        raise ValueError(f"{path} is damaged: its {_KIND_KEY}, {_VERSION_KEY} and {_JSON_KEY} "
                         "entries must be a string, an integer and a string.")
    found_kind = str(marks[_KIND_KEY])
    version = int(marks[_VERSION_KEY])
    if found_kind != kind:
        raise ValueError(
            f"{path} is a jacnet {found_kind} file, not a {kind} file; "
            + ("load it with load_model." if found_kind == "model" else
               "load it with load_checkpoint." if found_kind == "checkpoint" else "")
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses format version {version}, newer than this jacnet's {FORMAT_VERSION}; "
            "upgrade jacnet to read it."
        )
    try:
        document = json.loads(str(marks[_JSON_KEY]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is damaged: its JSON header does not parse ({exc}).") from None
    except RecursionError:
        document = None
    if document is None or not _depth_ok(document):
        raise ValueError(f"{path} is damaged or hostile: its JSON header nests deeper than "
                         f"{_MAX_DEPTH} levels; jacnet files never do.")
    if not isinstance(document, dict):
        raise ValueError(f"{path} is damaged: its JSON header is not an object.")
    result: dict[str, Any] = _from_plain(document, arrays, path)
    return result


def _require(content: dict[str, Any], keys: tuple[str, ...], path: PathLike) -> None:
    missing = [key for key in keys if key not in content]
    if missing:
        raise ValueError(f"{path} is missing {missing}; it is incomplete or damaged.")


class _Foreign(Exception):
    pass


_MAX_DEPTH = 64


def _depth_ok(value: Any, limit: int = _MAX_DEPTH) -> bool:
    """Whether nested lists/dicts stay within ``limit`` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def _check_architecture(config: Any, params: Any, path: PathLike) -> None:
    """Check the saved architecture against the stored parameters before building anything,
    so that a damaged or hostile file cannot make jacnet allocate a huge network."""
    where = f"{path} is damaged or not a jacnet model:"
    if not isinstance(params, np.ndarray) or params.ndim != 1 or params.dtype.kind != "f":
        shown = getattr(params, "shape", type(params).__name__)
        raise ValueError(f"{where} its parameters must be a 1-D float array; got {shown}.")
    if not isinstance(config, list) or not config or not all(isinstance(c, dict) for c in config):
        raise ValueError(f"{where} its architecture must be a non-empty list of layer "
                         f"descriptions; got {type(config).__name__}.")
    needed, width = 0, None
    for index, layer in enumerate(config):
        if layer.get("type") != "Linear":
            continue
        sizes = [layer.get(key) for key in ("in_features", "out_features")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
            raise ValueError(f"{where} layer {index} (Linear) has sizes {sizes}; they must be "
                             "integers >= 1.")
        if width is not None and sizes[0] != width:
            raise ValueError(f"{where} layer {index} takes {sizes[0]} inputs but the layer "
                             f"before it gives {width}.")
        width = sizes[1]
        needed += sizes[0] * sizes[1] + (sizes[1] if layer.get("bias", True) else 0)
        if needed > params.size:
            break
    if needed != params.size:
        shown = needed if needed <= params.size else f"more than {params.size}"
        raise ValueError(f"{where} its architecture needs {shown} parameters but it stores "
                         f"{params.size}.")
    if not np.isfinite(params).all():
        bad = int(np.count_nonzero(~np.isfinite(params)))
        raise ValueError(f"{where} {bad} of its {params.size} parameters are NaN or infinite; "
                         "the model would predict nan. Retrain, or load an earlier checkpoint.")


def _check_model_content(model: Sequential, preprocessing: Any, metadata: Any,
                         path: PathLike) -> None:
    """Check that what a model file says about itself fits the network (scalers, names,
    task, loss), so that an inconsistent file is refused on load, not at predict time."""
    where = f"{path} is inconsistent:"
    if not isinstance(metadata, dict):
        raise ValueError(f"{where} its metadata must be a dict; got {type(metadata).__name__}.")
    n_in, n_out = model.in_features, model.out_features
    from jacnet.data import StandardScaler

    scalers = preprocessing if isinstance(preprocessing, dict) else {"X": preprocessing}
    for key, n in (("X", n_in), ("y", n_out)):
        scaler = scalers.get(key)
        if scaler is None or not isinstance(scaler, StandardScaler):
            continue
        if scaler.n_features_in_ != n:
            raise ValueError(f"{where} its {key} scaler has {scaler.n_features_in_} columns but "
                             f"the network has {n} {'inputs' if key == 'X' else 'outputs'}.")
    task = metadata.get("task")
    if task is not None and task not in ("classification", "regression"):
        raise ValueError(f"{where} its task is {task!r}; expected 'classification' or 'regression'.")
    loss = metadata.get("loss")
    if loss is not None and loss not in ("mse", "cross_entropy", "bce"):
        raise ValueError(f"{where} its loss is {loss!r}; expected 'mse', 'cross_entropy' or 'bce'.")
    names = metadata.get("feature_names")
    if names is not None and (not isinstance(names, list) or len(names) != n_in
                              or not all(isinstance(n, str) for n in names)):
        shown = len(names) if isinstance(names, list) else type(names).__name__
        raise ValueError(f"{where} it names {shown} features but the network takes {n_in} "
                         "inputs; feature_names must be one string per input.")
    classes = metadata.get("target_names")
    if classes is not None and not (isinstance(classes, list)
                                    and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{where} its target_names must be a list of strings.")
    if task == "classification":
        binary = n_out == 1 and isinstance(classes, list) and len(classes) == 2
        if isinstance(classes, list) and len(classes) != n_out and not binary:
            raise ValueError(f"{where} it names {len(classes)} classes but the network has "
                             f"{n_out} outputs.")
        if loss == "mse":
            raise ValueError(f"{where} a classifier saved with the mse loss.")
    if task == "regression" and loss in ("cross_entropy", "bce"):
        raise ValueError(f"{where} a regressor saved with the {loss} loss.")


# --------------------------------------------------------------------------- models
class SavedModel(NamedTuple):
    """What :func:`load_model` returns; unpacks as ``model, preprocessing, metadata``."""

    model: Sequential
    preprocessing: Any
    metadata: dict[str, Any]


def _model_content(model: Sequential) -> dict[str, Any]:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a jacnet Sequential; got {type(model).__name__}.")
    return {"architecture": model.get_config(), "dtype": str(model.dtype),
            "params": model.params.copy()}


def _model_from(content: dict[str, Any], path: PathLike) -> Sequential:
    _require(content, ("architecture", "dtype", "params"), path)
    if content["dtype"] not in ("float32", "float64"):
        raise ValueError(f"{path} is damaged: its dtype is {content['dtype']!r}; expected "
                         "'float32' or 'float64'.")
    _check_architecture(content["architecture"], content["params"], path)
    try:
        return Sequential.from_config(content["architecture"], dtype=content["dtype"],
                                      params=content["params"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: the saved network cannot be rebuilt: {exc}") from None


def save_model(path: PathLike, model: Sequential, *, preprocessing: Any = None,
               metadata: dict[str, Any] | None = None) -> None:
    """Save a trained network, its preprocessing and metadata to one ``.npz`` file.

    Parameters
    ----------
    path : str or PathLike
        Written atomically; an existing file is replaced only once the new one is complete.
    model : Sequential
    preprocessing : optional
        A fitted ``StandardScaler`` (anything with ``to_dict``), or a dict of them and of
        arrays/JSON values, e.g. ``{"X": scaler_X, "y": None}``.
    metadata : dict, optional
        JSON-able values and arrays: class names, the loss, scores, ...

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from jacnet import mlp
    >>> from jacnet.data import StandardScaler
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.npz"
    >>> model = mlp([2, 3, 1], seed=0)
    >>> scaler = StandardScaler().fit([[0.0, 1.0], [2.0, 3.0]])
    >>> save_model(path, model, preprocessing=scaler, metadata={"task": "regression"})
    >>> loaded, prep, meta = load_model(path)
    >>> bool(np.array_equal(loaded.params, model.params)), prep, meta
    (True, StandardScaler(n_features_in_=2), {'task': 'regression'})
    """
    content = _model_content(model)
    content["preprocessing"] = preprocessing
    content["metadata"] = dict(metadata or {})
    write_archive(path, "model", content)


def load_model(path: PathLike) -> SavedModel:
    """Load a file written by :func:`save_model` (never executes code from the file).

    Returns
    -------
    SavedModel
        ``(model, preprocessing, metadata)``; the model is in evaluation mode.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A foreign, corrupt or truncated file, or missing entries.
    """
    content = read_archive(path, "model")
    model = _model_from(content, path)
    metadata = content.get("metadata")
    metadata = {} if metadata is None else metadata
    _check_model_content(model, content.get("preprocessing"), metadata, path)
    return SavedModel(model.eval(), content.get("preprocessing"), metadata)


# --------------------------------------------------------------------------- checkpoints
class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns: the network and the training state."""

    model: Sequential
    state: dict[str, Any]


def save_checkpoint(path: PathLike, model: Sequential, state: dict[str, Any]) -> None:
    """Atomically save a network with the training state needed to resume it.

    Parameters
    ----------
    path : str or PathLike
    model : Sequential
    state : dict
        Nested JSON values and arrays: the optimizer's ``state_dict()``, the epoch, the
        history, RNG states, ... (the training loop decides; see ``jacnet.training``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from jacnet import mlp
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.npz"
    >>> save_checkpoint(path, mlp([2, 1], seed=0), {"epoch": 5})
    >>> load_checkpoint(path).state
    {'epoch': 5}
    """
    content = _model_content(model)
    content["state"] = state
    write_archive(path, "checkpoint", content)


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Load a file written by :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A foreign, corrupt or truncated file, or missing entries.
    """
    content = read_archive(path, "checkpoint")
    _require(content, ("state",), path)
    return Checkpoint(_model_from(content, path), content["state"])
