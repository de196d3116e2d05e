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
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import numpy as np

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
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an archive")
            keys = list(archive.files)
            if _KIND_KEY not in keys or _JSON_KEY not in keys or _VERSION_KEY not in keys:
                shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
                raise _Foreign(shown)
            arrays = {key: archive[key] for key in keys}
    except _Foreign as exc:
        raise ValueError(
            f"{path} is a .npz archive but not a jacnet {kind} file (it holds arrays: {exc}). "
            f"Use a file written by jacnet's save_{kind}."
        ) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(
            f"{path} is not a readable jacnet {kind} file: it is corrupt, truncated or of "
            f"another format ({type(exc).__name__}: {exc})."
        ) from exc
    found_kind = str(arrays.pop(_KIND_KEY))
    version = int(arrays.pop(_VERSION_KEY))
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
        document = json.loads(str(arrays.pop(_JSON_KEY)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is damaged: its JSON header does not parse ({exc}).") from exc
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
    try:
        return Sequential.from_config(content["architecture"], dtype=content["dtype"],
                                      params=content["params"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: the saved network cannot be rebuilt: {exc}") from exc


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
    return SavedModel(model.eval(), content.get("preprocessing"), content.get("metadata") or {})


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
