"""Saving and loading: round trips, atomic writes, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest

import jacnet
from jacnet import io as jio
from jacnet.data import StandardScaler
from jacnet.io import (
    load_checkpoint,
    load_model,
    read_archive,
    save_checkpoint,
    save_model,
    write_archive,
)


@pytest.fixture
def model():
    return jacnet.mlp([3, 5, 2], activation="relu", seed=0, dtype="float64")


def test_model_round_trip_keeps_architecture_params_preprocessing_and_metadata(tmp_path, model):
    scaler = StandardScaler().fit(np.arange(12.0).reshape(4, 3))
    path = tmp_path / "model.npz"
    meta = {"task": "classification", "target_names": ["a", "b"], "scores": {"acc": 0.5},
            "weights": np.arange(3)}
    save_model(path, model, preprocessing={"X": scaler, "y": None}, metadata=meta)
    loaded, prep, loaded_meta = load_model(path)
    assert loaded.get_config() == model.get_config() and loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded.params, model.params)
    X = np.ones((2, 3))
    np.testing.assert_array_equal(loaded(X), model(X))
    assert prep["y"] is None
    np.testing.assert_array_equal(prep["X"].transform(X), scaler.transform(X))
    assert loaded_meta["target_names"] == ["a", "b"] and loaded_meta["scores"] == {"acc": 0.5}
    np.testing.assert_array_equal(loaded_meta["weights"], np.arange(3))


def test_float32_model_loads_as_float32(tmp_path):
    path = tmp_path / "m.npz"
    save_model(path, jacnet.mlp([2, 2], seed=0))
    assert load_model(path).model.params.dtype == np.float32


def test_the_file_is_an_npz_that_loads_without_pickle(tmp_path, model):
    path = tmp_path / "m.npz"
    save_model(path, model)
    with np.load(path, allow_pickle=False) as archive:
        assert {"__jacnet__", "__format_version__", "__json__", "params"} <= set(archive.files)
        assert all(archive[key].dtype != object for key in archive.files)


def test_an_interrupted_save_keeps_the_previous_file(tmp_path, model, monkeypatch):
    path = tmp_path / "m.npz"
    save_model(path, model, metadata={"version": 1})
    before = path.read_bytes()

    def crash_midway(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(jio.np, "savez", crash_midway)
    other = jacnet.mlp([3, 5, 2], seed=9, dtype="float64")
    with pytest.raises(OSError, match="disk full"):
        save_model(path, other, metadata={"version": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_model(path).metadata == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary left behind


def test_an_interrupted_checkpoint_keeps_the_previous_checkpoint(tmp_path, model, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, {"epoch": 3})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jio.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, {"epoch": 4})
    monkeypatch.undo()
    assert load_checkpoint(path).state == {"epoch": 3}
    assert len(list(tmp_path.iterdir())) == 1


def test_checkpoint_round_trip_with_nested_state(tmp_path, model):
    rng = np.random.default_rng(7)
    state = {"epoch": 2, "optimizer": {"lr": 0.1, "exp_avg": np.ones(3, dtype=np.float32)},
             "rng": rng.bit_generator.state, "history": [{"loss": float("nan")}]}
    save_checkpoint(tmp_path / "c.npz", model, state)
    loaded = load_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded.model.params, model.params)
    assert loaded.state["optimizer"]["exp_avg"].dtype == np.float32
    assert loaded.state["rng"] == rng.bit_generator.state
    assert np.isnan(loaded.state["history"][0]["loss"])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"jacnet model file .* is not a \.npz archive \(it does not start like a zip"),
        (b"this is not an archive at all", r"is not a \.npz archive .*save_model or `jacnet train`"),
    ],
)
def test_garbage_files_give_a_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_truncated_file_gives_a_clear_error(tmp_path, model):
    path = tmp_path / "m.npz"
    save_model(path, model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is a damaged \.npz archive \(its zip structure is broken: "
                                         r"truncated or not a zip file\); give a file written"):
        load_model(path)


def test_corrupted_bytes_give_a_clear_error(tmp_path, model):
    path = tmp_path / "m.npz"
    save_model(path, model)
    data = bytearray(path.read_bytes())
    start = data.find(b"params.npy") + 200
    data[start:start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_model(path)


def test_foreign_npz_is_named_as_such(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.eye(2), y=np.arange(2))
    with pytest.raises(ValueError, match=r"not a jacnet model file \(it holds arrays: X, y\)"):
        load_model(path)


def test_a_checkpoint_is_not_a_model(tmp_path, model):
    save_checkpoint(tmp_path / "c.npz", model, {})
    with pytest.raises(ValueError, match="is a jacnet checkpoint file, not a model file; load it "
                                         "with load_checkpoint"):
        load_model(tmp_path / "c.npz")


def test_missing_entries_and_newer_versions_are_reported(tmp_path, monkeypatch):
    write_archive(tmp_path / "m.npz", "model", {"architecture": []})
    with pytest.raises(ValueError, match=r"missing \['dtype', 'params'\]"):
        load_model(tmp_path / "m.npz")
    monkeypatch.setattr(jio, "FORMAT_VERSION", 99)
    write_archive(tmp_path / "new.npz", "model", {})
    monkeypatch.undo()
    with pytest.raises(ValueError, match="format version 99, newer"):
        read_archive(tmp_path / "new.npz", "model")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nothing.npz")


def test_params_that_do_not_fit_the_architecture(tmp_path, model):
    write_archive(tmp_path / "m.npz", "model", {"architecture": model.get_config(),
                                                 "dtype": "float64", "params": np.zeros(3)})
    with pytest.raises(ValueError, match=r"architecture needs more than 3 parameters but it stores 3"):
        load_model(tmp_path / "m.npz")


def test_unsaveable_values_are_refused_before_writing(tmp_path, model):
    with pytest.raises(TypeError, match="would need pickle"):
        save_model(tmp_path / "m.npz", model, metadata={"bad": np.array([object()])})
    with pytest.raises(TypeError, match="only arrays, numbers, strings"):
        save_model(tmp_path / "m.npz", model, metadata={"bad": {1, 2}})
    assert not list(tmp_path.iterdir())


def test_saved_files_get_ordinary_permissions(tmp_path):
    """Atomic writes go through mkstemp (0600); the result must be as readable as open() makes it."""
    import os

    from jacnet.io import atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- complete validation
def _model_content(model, **changes):
    content = {"architecture": model.get_config(), "dtype": "float64",
               "params": model.params.copy(),
               "preprocessing": {"X": StandardScaler().fit(np.ones((2, 3))), "y": None},
               "metadata": {"task": "classification", "loss": "cross_entropy",
                            "feature_names": ["a", "b", "c"], "target_names": ["no", "yes"]}}
    for key, value in changes.items():
        if key in content["metadata"] or key in ("feature_names", "target_names", "task", "loss"):
            content["metadata"][key] = value
        else:
            content[key] = value
    return content


@pytest.mark.parametrize(("changes", "match"), [
    ({"params": "nan"}, r"1 of its 32 parameters are NaN or infinite"),
    ({"params": "inf"}, r"1 of its 32 parameters are NaN or infinite"),
    ({"task": "banana"}, r"inconsistent: its task is 'banana'"),
    ({"loss": "hinge"}, r"its loss is 'hinge'"),
    ({"task": "regression"}, r"a regressor saved with the cross_entropy loss"),
    ({"feature_names": ["a", "b"]}, r"it names 2 features but the network takes 3 inputs"),
    ({"feature_names": "abc"}, r"names str features"),
    ({"target_names": ["a", "b", "c"]}, r"it names 3 classes but the network has 2 outputs"),
    ({"target_names": [1, 2]}, r"target_names must be a list of strings"),
    ({"preprocessing": {"X": StandardScaler().fit(np.ones((2, 4)))}},
     r"its X scaler has 4 columns but the network has 3 inputs"),
    ({"preprocessing": {"y": StandardScaler().fit(np.ones((2, 3)))}},
     r"its y scaler has 3 columns but the network has 2 outputs"),
    ({"dtype": "complex64"}, r"its dtype is 'complex64'"),
    ({"architecture": 5}, r"architecture must be a non-empty list .* got int"),
    ({"architecture": [{"type": "Linear", "in_features": 10**9, "out_features": 10**9}]},
     r"architecture needs more than 32 parameters but it stores 32"),
    ({"architecture": [{"type": "Linear", "in_features": -3, "out_features": 5}]},
     r"layer 0 \(Linear\) has sizes \[-3, 5\]"),
    ({"architecture": [{"type": "Linear", "in_features": 3, "out_features": 5},
                       {"type": "Linear", "in_features": 4, "out_features": 2}]},
     r"layer 1 takes 4 inputs but the layer before it gives 5"),
    ({"params": np.zeros((4, 8))}, r"parameters must be a 1-D float array; got \(4, 8\)"),
    ({"metadata": [1, 2]}, r"its metadata must be a dict"),
])
def test_an_inconsistent_model_file_is_refused_on_load(tmp_path, model, changes, match):
    if isinstance(changes.get("params"), str):
        params = model.params.copy()
        params[4] = float(changes["params"])
        changes = {"params": params}
    write_archive(tmp_path / "m.npz", "model", _model_content(model, **changes))
    with pytest.raises(ValueError, match=match):
        load_model(tmp_path / "m.npz")


def test_the_reference_content_loads(tmp_path, model):
    """The table above changes one thing at a time from content that is valid."""
    write_archive(tmp_path / "m.npz", "model", _model_content(model))
    assert load_model(tmp_path / "m.npz").metadata["task"] == "classification"


def test_deeply_nested_metadata_is_refused_without_recursion_error(tmp_path, model):
    import json as _json
    import zipfile

    save_model(tmp_path / "m.npz", model)
    for depth in (100, 100_000):
        nested = "[" * depth + "]" * depth
        document = _json.dumps({"architecture": model.get_config(), "dtype": "float64",
                                "params": {"__array__": "params"}, "metadata": {"x": 0}})
        document = document.replace('{"x": 0}', '{"x": ' + nested + "}")
        with zipfile.ZipFile(tmp_path / "deep.npz", "w") as archive:
            for name, value in (("__jacnet__", np.array("model")),
                                ("__format_version__", np.array(1)),
                                ("__json__", np.array(document)), ("params", model.params)):
                with archive.open(name + ".npy", "w") as member:
                    np.lib.format.write_array(member, value)
        with pytest.raises(ValueError, match="nests deeper than 64 levels"):
            load_model(tmp_path / "deep.npz")
