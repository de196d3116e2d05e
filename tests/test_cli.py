"""The jacnet command: help, exit codes, run folders, evaluate, predict, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jacnet
from jacnet.cli import main
from jacnet.io import load_model

TINY = ["--data", "xor", "--hidden", "4", "--epochs", "3", "--no-progress"]


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["explain"],
                                     ["inspect"]])
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jacnet")
    if command == ["train"]:
        assert "--checkpoint-every" in out and "--resume" in out


def test_explain_and_inspect_from_the_command(tmp_path, capsys):
    """`jacnet explain` runs the seed's network with every check passing; inspect reads a run."""
    assert main(["explain", "--format", "text", "--markdown", str(tmp_path / "e.md")]) == 0
    out = capsys.readouterr().out
    assert "∂E/∂W = δ yᵀ" in out and "all passed" in out
    assert "I₂ ⊗ yᵀ" in (tmp_path / "e.md").read_text()
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "run" / "model.npz"), "--data", "xor",
                 "--format", "text"]) == 0
    assert "parameters" in capsys.readouterr().out


def test_python_dash_m_jacnet_is_the_same_command():
    env_path = str(Path(jacnet.__file__).parents[1])
    result = subprocess.run([sys.executable, "-m", "jacnet", "train", "--help"], capture_output=True,
                            text=True, env={"PYTHONPATH": env_path}, check=False)
    assert result.returncode == 0 and "--hidden" in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--no-such-option"],
        ["train", "--epochs", "many"],
        ["train", "--epochs", "0"],
        ["train", "--hidden", "a,b"],
        ["train", "--test-size", "2"],
        ["evaluate", "only-one-argument"],
        [],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()


def test_runtime_errors_exit_1_with_one_line_on_stderr(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("jacnet train: error: Data file") and "not found" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", "--data", str(tmp_path / "missing.csv")])
    with pytest.raises(FileNotFoundError):
        main(["train", "--debug", "--data", str(tmp_path / "missing.csv")])


def test_unknown_data_name_suggests_the_closest(capsys):
    assert main(["train", "--data", "digitz"]) == 1
    assert "Did you mean 'digits'?" in capsys.readouterr().err


def test_train_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("test accuracy ")
    assert {p.name for p in out.iterdir()} == {"model.npz", "history.csv", "history.json", "curves.png"}
    history = json.loads((out / "history.json").read_text())
    assert len(history["records"]) == 3
    assert (out / "history.csv").read_text().startswith("epoch,loss,accuracy,lr,time")
    saved = load_model(out / "model.npz")
    assert saved.metadata["task"] == "classification" and saved.model.in_features == 2
    assert set(saved.preprocessing) == {"X", "y"}


def test_train_without_matplotlib_notes_that_plots_were_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["train", *TINY, "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "curves.png").exists()
    assert "matplotlib is not installed, so curves.png was skipped" in capsys.readouterr().err


def test_train_regression_on_a_csv_then_evaluate_and_predict(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (80, 2))
    y = 3 * X[:, 0] - X[:, 1] + 10
    csv_path = tmp_path / "data.csv"
    rows = "\n".join(f"{a},{b},{t}" for (a, b), t in zip(X, y))
    csv_path.write_text("a,b,price\n" + rows + "\n")
    out = tmp_path / "run"
    argv = ["train", "--data", str(csv_path), "--target", "price", "--hidden", "8", "--epochs",
            "40", "--lr", "0.01", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("test r2 ")

    assert main(["evaluate", str(out / "model.npz"), str(csv_path), "--json", "--all-rows"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_samples"] == 80 and scores["r2"] > 0.9

    features = tmp_path / "features.csv"
    features.write_text("a,b\n0.5,0.5\n-0.5,0.0\n")
    assert main(["predict", str(out / "model.npz"), str(features)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "prediction" and len(lines) == 3
    assert abs(float(lines[1]) - 11.0) < 1.0  # 3*0.5 - 0.5 + 10, in target units

    # the file a user predicts for: the target column present but empty, in any position
    blank = tmp_path / "blank.csv"
    blank.write_text("price,a,b\n,0.5,0.5\n,-0.5,0.0\n")
    assert main(["predict", str(out / "model.npz"), str(blank)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == lines[1:]
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    assert main(["predict", str(out / "model.npz"), str(header_only)]) == 1
    assert "has a header but no data rows" in capsys.readouterr().err


def test_evaluate_and_predict_classification_to_csv_and_npz(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.npz"), "xor", "--all-rows"]) == 0
    assert capsys.readouterr().out.startswith("200 samples (all 200 rows of xor): loss ")
    assert main(["predict", str(out / "model.npz"), "xor", "--out", str(tmp_path / "p.csv")]) == 0
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header.startswith("prediction,p_")
    assert main(["predict", str(out / "model.npz"), "xor", "-o", str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz", allow_pickle=False) as archive:
        assert archive["prediction"].shape == (200,)
        np.testing.assert_allclose(sum(archive[k] for k in archive.files if k.startswith("p_")), 1.0)


def test_evaluate_rejects_a_foreign_file_and_mismatched_data(tmp_path, capsys):
    foreign = tmp_path / "x.npz"
    np.savez(foreign, X=np.eye(2))
    assert main(["evaluate", str(foreign), "xor"]) == 1
    assert "not a jacnet model file" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["predict", str(out / "model.npz"), "iris"]) == 1
    assert "missing ['x1', 'x2']; unknown ['sepal length (cm)'" in capsys.readouterr().err
    assert main(["predict", str(out / "model.npz"), "xor", "--out", str(tmp_path / "p.txt")]) == 2


def test_checkpoint_and_resume_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY[:4], "--epochs", "2", "--checkpoint-every", "1", "--out", str(out),
                 "--no-progress"]) == 0
    assert (out / "checkpoint.npz").exists()
    assert main(["train", "--resume", str(out), "--epochs", "5", "--no-progress"]) == 0
    assert len(json.loads((out / "history.json").read_text())["records"]) == 5
    # One uninterrupted run of 5 epochs ends at the same parameters.
    straight = tmp_path / "straight"
    assert main(["train", *TINY[:4], "--epochs", "5", "--out", str(straight), "--no-progress"]) == 0
    np.testing.assert_array_equal(load_model(out / "model.npz").model.params,
                                  load_model(straight / "model.npz").model.params)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--hidden", "9"]) == 2
    assert "only --epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_default_train_reaches_97_percent_on_digits(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--no-progress"]) == 0
    first = capsys.readouterr().out.split()
    assert first[:2] == ["test", "accuracy"]
    assert float(first[2]) >= 0.97


@pytest.mark.parametrize("optimizer", ["lm", "gn", "br"])
def test_full_batch_optimizers_from_the_command(optimizer, tmp_path, capsys):
    """lm/gn/br train from the CLI (no default weight decay forced on them), μ in the history."""
    out = tmp_path / optimizer
    assert main(["train", "--data", "sinc", "--optimizer", optimizer, "--hidden", "8",
                 "--activation", "tanh", "--epochs", "5", "--no-progress", "--out", str(out)]) == 0
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert "mu" in header
    if optimizer == "br":
        assert "gamma" in header


@pytest.mark.parametrize("script", sorted(Path(__file__).parents[1].glob("examples/*.py")),
                         ids=lambda p: p.name)
def test_examples_run(script):
    """The README points at examples/: each must run as written."""
    env = {**os.environ, "PYTHONPATH": str(Path(jacnet.__file__).parents[1])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_help_and_the_module_docstring_name_every_subcommand():
    import argparse

    import jacnet.cli

    parser = jacnet.cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(sub.choices)
    assert len(commands) == 6
    first_paragraph = (jacnet.cli.__doc__ or "").split("\n\n")[0]
    for name in commands:
        assert name in (parser.description or ""), name
        assert f"``{name}``" in first_paragraph, name


# --------------------------------------------------------------------------- columns by name
@pytest.fixture(scope="module")
def price_model(tmp_path_factory):
    """A regression model trained on a CSV with columns a, b, price."""
    folder = tmp_path_factory.mktemp("price")
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(60, 2))
    rows = "\n".join(f"{a:.6f},{b:.6f},{3 * a - b + 10:.6f}" for a, b in X)
    (folder / "train.csv").write_text("a,b,price\n" + rows + "\n")
    assert main(["train", "--data", str(folder / "train.csv"), "--hidden", "4", "--epochs", "5",
                 "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder


def _predict_lines(capsys, model, data, *extra):
    code = main(["predict", str(model), str(data), *extra])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_predict_matches_columns_by_name_in_any_order(price_model, tmp_path, capsys):
    model = price_model / "run" / "model.npz"
    assert load_model(model).metadata["target_column"] == "price"
    (tmp_path / "ab.csv").write_text("a,b\n0.5,-0.25\n-0.5,0.75\n")
    (tmp_path / "ba.csv").write_text("b,price,a\n-0.25,,0.5\n0.75,,-0.5\n")
    code, ab, _ = _predict_lines(capsys, model, tmp_path / "ab.csv")
    assert code == 0 and len(ab) == 3
    code, ba, _ = _predict_lines(capsys, model, tmp_path / "ba.csv")
    assert code == 0 and ba == ab
    # by position, the swapped file would give other numbers: the order really matters
    (tmp_path / "swapped.csv").write_text("a,b\n-0.25,0.5\n0.75,-0.5\n")
    assert _predict_lines(capsys, model, tmp_path / "swapped.csv")[1] != ab


@pytest.mark.parametrize("header, problem", [
    ("id,a,b,price", "unknown ['id']"),
    ("id,a,b", "unknown ['id']"),
    ("a,c", "missing ['b']; unknown ['c']"),
    ("u,v", "missing ['a', 'b']; unknown ['u', 'v']"),
    ("a,a,b", "appear more than once"),
])
def test_predict_refuses_unknown_or_missing_columns(price_model, tmp_path, capsys, header, problem):
    width = len(header.split(","))
    (tmp_path / "x.csv").write_text(header + "\n" + ",".join(["1"] * width) + "\n")
    code, out, err = _predict_lines(capsys, price_model / "run" / "model.npz", tmp_path / "x.csv")
    assert code == 1 and out == []
    assert problem in err and err.count("\n") == 1
    if "appear" not in problem:
        assert "expects the columns ['a', 'b'] (and optionally the target 'price')" in err


def test_a_file_without_header_is_refused_then_read_whole_with_no_header(price_model, tmp_path,
                                                                          capsys):
    model = price_model / "run" / "model.npz"
    (tmp_path / "bare.csv").write_text("0.5,-0.25\n-0.5,0.75\n0.1,0.2\n")
    code, out, err = _predict_lines(capsys, model, tmp_path / "bare.csv")
    assert code == 1 and "looks like data" in err and "--no-header" in err
    code, out, _ = _predict_lines(capsys, model, tmp_path / "bare.csv", "--no-header")
    assert code == 0 and len(out) == 4  # the prediction header and all three rows
    (tmp_path / "ab.csv").write_text("a,b\n0.5,-0.25\n-0.5,0.75\n0.1,0.2\n")
    assert _predict_lines(capsys, model, tmp_path / "ab.csv")[1] == out


def test_train_refuses_numbers_as_names_and_no_header_trains_by_position(tmp_path, capsys):
    rows = "\n".join(f"{i % 7},{i % 3},{i % 5 + 0.5}" for i in range(40))
    (tmp_path / "bare.csv").write_text(rows + "\n")
    argv = ["train", "--data", str(tmp_path / "bare.csv"), "--hidden", "3", "--epochs", "2",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    assert "--no-header" in capsys.readouterr().err
    assert main([*argv, "--no-header"]) == 0
    meta = load_model(tmp_path / "run" / "model.npz").metadata
    assert meta["named_features"] is False and meta["feature_names"] == ["x1", "x2"]
    capsys.readouterr()
    code, out, _ = _predict_lines(capsys, tmp_path / "run" / "model.npz", tmp_path / "bare.csv",
                                  "--no-header")
    assert code == 0 and len(out) == 41  # 40 rows, none dropped, target column ignored
    assert main(["evaluate", str(tmp_path / "run" / "model.npz"), str(tmp_path / "bare.csv"),
                 "--no-header", "--json", "--all-rows"]) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == 40


def test_predict_streams_blocks_with_the_same_answer(price_model, tmp_path, capsys, monkeypatch):
    model = price_model / "run" / "model.npz"
    rows = "\n".join(f"{i / 10},{-i / 20}" for i in range(11))
    (tmp_path / "many.csv").write_text("b,a\n" + rows + "\n")
    whole = _predict_lines(capsys, model, tmp_path / "many.csv")[1]
    import jacnet._readers as readers

    monkeypatch.setattr(readers, "CHUNK_ROWS", 3)
    blocks = _predict_lines(capsys, model, tmp_path / "many.csv")[1]
    assert blocks == whole and len(whole) == 12
    main(["predict", str(model), str(tmp_path / "many.csv"), "-o", str(tmp_path / "p.npz")])
    with np.load(tmp_path / "p.npz") as archive:
        np.testing.assert_allclose(archive["prediction"], [float(v) for v in whole[1:]])


def test_train_reports_a_typo_in_a_numeric_target_instead_of_classifying(tmp_path, capsys):
    rows = [f"{i},{i * 0.5 + 1}" for i in range(30)]
    rows[12] = "12,?"
    (tmp_path / "typo.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
    assert main(["train", "--data", str(tmp_path / "typo.csv"), "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "1 of its 30 cells are not finite numbers: line 14 '?'" in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- which rows are scored
def test_evaluate_on_the_training_data_scores_the_held_out_test_rows(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    meta = load_model(out / "model.npz").metadata
    assert meta["split"] == {"n_train": 160, "n_test": 40, "test_size": 0.2, "seed": 0}
    assert main(["evaluate", str(out / "model.npz"), "xor", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores.pop("n_samples") == 40 and scores.pop("rows") == "test"
    assert scores == meta["test_scores"]  # exactly what train reported on its test rows
    assert main(["evaluate", str(out / "model.npz"), "xor"]) == 0
    assert capsys.readouterr().out.startswith(
        "40 samples (the 40 test rows train held out (test_size 0.2, seed 0) of xor): ")
    assert main(["evaluate", str(out / "model.npz"), "xor", "--all-rows", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == 200


def test_evaluate_on_the_training_csv_scores_its_held_out_rows(price_model, capsys):
    model = price_model / "run" / "model.npz"
    assert main(["evaluate", str(model), str(price_model / "train.csv"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_samples"] == 12 and scores["rows"] == "test"
    assert main(["evaluate", str(model), str(price_model / "train.csv"), "--all-rows",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == 60


@pytest.mark.parametrize("epochs", ["2", "1"])
def test_resume_with_no_epochs_left_says_so(tmp_path, capsys, epochs):
    out = tmp_path / "run"
    assert main(["train", *TINY[:4], "--epochs", "2", "--checkpoint-every", "1", "--out", str(out),
                 "--no-progress"]) == 0
    before = (out / "history.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", epochs, "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch 2/" not in captured.err
    assert (f"has already trained 2 epochs, so --epochs {epochs} leaves nothing to do; pass "
            "--epochs greater than 2") in captured.err
    assert (out / "history.json").read_text() == before


# --------------------------------------------------------------------------- hostile inputs
# One row per entry of docs/hostile-inputs.md: the command, its exit code and the one line
# it must print. {d} is a folder holding the files built by the `hostile` fixture.
HOSTILE = [
    ("negative seed", ["train", *TINY, "--seed", "-1"], 2,
     "--seed must be an integer from 0 to 2**63 - 1; got -1."),
    ("solver for adam", ["train", *TINY, "--solver", "cg"], 2,
     "--solver applies to the full-batch optimizers lm, gn and br; --optimizer is 'adam'. "
     "Drop --solver, or pass --optimizer lm."),
    ("infinite lr", ["train", *TINY, "--lr", "inf"], 2, "--lr must be a finite number > 0; got inf."),
    ("nan lr", ["train", *TINY, "--lr", "nan"], 2, "--lr must be a finite number > 0; got nan."),
    ("negative lr", ["train", *TINY, "--lr", "-0.1"], 2, "--lr must be a finite number > 0; got -0.1."),
    ("negative weight decay", ["train", *TINY, "--weight-decay", "-1"], 2,
     "--weight-decay must be a finite number >= 0; got -1.0."),
    ("no hidden size", ["train", *TINY[:2], "--hidden", ""], 2,
     "hidden sizes must be one or more integers >= 1; got ''"),
    ("an int where a list is saved", ["train", "--resume", "{d}/badopt.npz", "--no-progress"], 2,
     "--hidden must be one or more integers >= 1, e.g. 64 or 128,64; got 5 (saved in"),
    ("checkpoint without rng", ["train", "--resume", "{d}/norng.npz", "--epochs", "9"], 1,
     "is damaged: its training state lacks valid ['rng']; it cannot be resumed"),
    ("nothing left to resume", ["train", "--resume", "{d}/run", "--epochs", "1"], 2,
     "has already trained 2 epochs, so --epochs 1 leaves nothing to do"),
    ("first-epoch divergence", ["train", "--data", "sine", "--optimizer", "sgd", "--lr", "1e30",
                                "--epochs", "2", "--no-progress", "--out", "{d}/diverged"], 1,
     "diverged at epoch 1: the loss is"),
    ("inspect with negative rows", ["inspect", "{d}/run/model.npz", "--n-samples", "-1"], 2,
     "--n-samples must be an integer >= 1; got -1."),
    ("data folder", ["train", "--data", "{d}/folder.csv"], 1, "folder.csv is a folder, not a file"),
    ("data FIFO", ["train", "--data", "{d}/pipe.csv"], 1, "pipe.csv is a FIFO (named pipe)"),
    ("data .npy", ["train", "--data", "{d}/one.npy"], 1, "one.npy is a .npy file (one array)"),
    ("model .npy", ["evaluate", "{d}/one.npy", "xor"], 1,
     "one.npy is a .npy file (one array), not a .npz archive"),
    ("model folder", ["predict", "{d}/folder.csv", "xor"], 1, "folder.csv is a folder, not a file"),
    ("truncated data npz", ["train", "--data", "{d}/truncated.npz"], 1,
     "is a damaged .npz archive (its zip structure is broken: truncated or not a zip file)"),
    ("model with a NaN weight", ["predict", "{d}/nan-model.npz", "xor"], 1,
     "1 of its 22 parameters are NaN or infinite"),
    ("no feature columns", ["train", "--data", "{d}/nofeatures.npz", "--out", "{d}/nf"], 1,
     "has 0 feature columns and 1 target columns"),
    ("1-D X to predict", ["predict", "{d}/run/model.npz", "{d}/flat.npz"], 1,
     "X must be a 2-D array of shape (n_samples, n_features); got shape (4,)"),
    ("a run folder that is a file", ["train", *TINY, "--out", "{d}/run/model.npz"], 2,
     "is a file; the run folder must be a folder"),
    ("a typo in a numeric target", ["train", "--data", "{d}/typo.csv", "--out", "{d}/typo"], 1,
     "1 of its 20 cells are not finite numbers: line 8 '?'"),
    ("CSV without a header", ["train", "--data", "{d}/bare.csv", "--out", "{d}/bare"], 1,
     "looks like data (1,2,3), not a header naming the columns; add a header"),
    ("an unknown column", ["predict", "{d}/run/model.npz", "{d}/extra.csv"], 1,
     "its columns do not match the model's features: unknown ['id']. The model expects "
     "the columns ['x1', 'x2']"),
    ("values near the float maximum", ["train", "--data", "{d}/huge.npz", "--hidden", "2",
                                       "--epochs", "1", "--no-progress", "--out", "{d}/huge"], 0,
     ""),
    # A zero in a header's shape makes the other dimensions cost no stored bytes: the
    # columns x1 ... x1099511627776 were being named (a hang), or NumPy said "iterator is
    # too large".
    ("0 rows of 2**40 columns to predict", ["predict", "{d}/run/model.npz", "{d}/wide0.npy"], 1,
     "wide0.npy: X has 1099511627776 columns but the model takes 2 features; save X with "
     "the model's 2 feature columns"),
    ("0 rows of 2**40 columns to train", ["train", "--data", "{d}/wide0.npz"], 1,
     "wide0.npz: X has no rows (shape (0, 1099511627776)); a data set needs at least one"),
    # A CSV with a header and no rows is an error; an array with no rows was predicted as an
    # empty file with exit 0.
    ("no rows to predict (.npy)", ["predict", "{d}/run/model.npz", "{d}/empty.npy"], 1,
     "empty.npy: X has no rows (shape (0, 2)); predict needs at least one row of features."),
    ("no rows to predict (.npz)", ["predict", "{d}/run/model.npz", "{d}/empty.npz"], 1,
     "empty.npz: X has no rows (shape (0, 2)); predict needs at least one row of features."),
    ("a shape beyond any array", ["predict", "{d}/run/model.npz", "{d}/overflow.npy"], 1,
     "its header claims shape (4611686018427387904, 4611686018427387904, 0), more than any "
     "array can hold"),
    # Predict streams a member block by block; its CRC is checked at the end, so damage
    # that reads as NaN used to be reported as NaN in the data.
    ("a stored member damaged mid-stream", ["predict", "{d}/run/model.npz", "{d}/crc.npz"], 1,
     "crc.npz is a damaged .npz archive (its zip structure is broken: Bad CRC-32 for file "
     "'X.npy')"),
    ("a compressed member damaged mid-stream", ["predict", "{d}/run/model.npz",
                                                "{d}/crcz.npz"], 1,
     "crcz.npz is a damaged .npz archive (its zip structure is broken: Bad CRC-32 for file "
     "'X.npy')"),
    # A float64 value beyond float32's range: NumPy's "overflow encountered in cast"
    # warning, then "NaN or infinity ... before training" at the row's place in its block.
    ("a value beyond the float32 model's range", ["predict", "{d}/run/model.npz",
                                                  "{d}/beyond32.npy"], 1,
     "beyond32.npy: the value 1e+39 at index [66000, 1] is 9.87e+38 after the model's "
     "scaling, beyond the float32 range of this model (about ±3.4e+38); check the value, "
     "or train with --dtype float64 to take such values."),
    ("a .npy with a column too many", ["predict", "{d}/run/model.npz", "{d}/three.npy"], 1,
     "three.npy: X has 3 columns but the model takes 2 features; save X with the model's 2 "
     "feature columns, in the order it was trained on."),
]


def _write_header_only(path, shape, member=None):
    """A .npy file (or an .npz member) that is just a header claiming ``shape``."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": shape})
    if member is None:
        path.write_bytes(header.getvalue())
        return
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(member, header.getvalue())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    import os

    from jacnet.io import load_checkpoint, save_checkpoint, save_model

    d = tmp_path_factory.mktemp("hostile")
    assert main(["train", *TINY[:4], "--epochs", "2", "--checkpoint-every", "1",
                 "--out", str(d / "run"), "--no-progress"]) == 0
    checkpoint = load_checkpoint(d / "run" / "checkpoint.npz")
    state = dict(checkpoint.state)
    save_checkpoint(d / "badopt.npz", checkpoint.model,
                    {**state, "cli_options": {**state["cli_options"], "hidden": 5}})
    save_checkpoint(d / "norng.npz", checkpoint.model,
                    {k: v for k, v in state.items() if k != "rng"})
    saved = load_model(d / "run" / "model.npz")
    saved.model.params[3] = np.nan
    save_model(d / "nan-model.npz", saved.model, preprocessing=saved.preprocessing,
               metadata=saved.metadata)
    (d / "folder.csv").mkdir()
    os.mkfifo(d / "pipe.csv")
    np.save(d / "one.npy", np.zeros(3))
    np.savez(d / "truncated.npz", X=np.zeros((9, 2)), y=np.zeros(9))
    (d / "truncated.npz").write_bytes((d / "truncated.npz").read_bytes()[:200])
    np.savez(d / "nofeatures.npz", X=np.zeros((9, 0)), y=np.arange(9.0))
    np.savez(d / "flat.npz", X=np.zeros(4))
    np.savez(d / "huge.npz", X=np.full((20, 2), 1.7e308) * np.linspace(-1, 1, 20)[:, None],
             y=np.linspace(-1, 1, 20) * 1e307)
    rows = [f"{i},{i / 3}" for i in range(20)]
    rows[6] = "6,?"
    (d / "typo.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
    (d / "bare.csv").write_text("1,2,3\n4,5,6\n")
    (d / "extra.csv").write_text("id,x1,x2\n1,0.5,0.5\n")
    _write_header_only(d / "wide0.npy", (0, 2**40))
    _write_header_only(d / "overflow.npy", (2**62, 2**62, 0))
    _write_header_only(d / "wide0.npz", (0, 2**40), "X.npy")
    _write_header_only(d / "wide0.npz", (0,), "y.npy")
    np.save(d / "three.npy", np.zeros((4, 3)))
    np.save(d / "empty.npy", np.zeros((0, 2)))
    np.savez(d / "empty.npz", X=np.zeros((0, 2)))
    beyond = np.zeros((70_000, 2))  # 65,536 rows to a block of 1 MB: the row is in block 2
    beyond[66_000, 1] = 1e39
    np.save(d / "beyond32.npy", beyond)
    rng = np.random.default_rng(0)
    for name, save in (("crc.npz", np.savez), ("crcz.npz", np.savez_compressed)):
        save(d / name, X=rng.normal(size=(100_000, 2)))  # about 2 blocks of 1 MB
        raw = bytearray((d / name).read_bytes())
        middle = len(raw) // 2 - len(raw) // 2 % 8
        raw[middle:middle + 64] = b"\xff" * 64 if save is np.savez else b"\x00" * 64
        (d / name).write_bytes(bytes(raw))
    return d


@pytest.mark.parametrize("argv, code, message", [row[1:] for row in HOSTILE],
                         ids=[row[0] for row in HOSTILE])
def test_hostile_input_gets_one_clear_line(hostile, capsys, argv, code, message):
    import warnings

    argv = [arg.replace("{d}", str(hostile)) for arg in argv]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            got = exc.code
    err = capsys.readouterr().err
    assert not caught, [str(w.message) for w in caught]
    assert got == code, err
    assert "Traceback" not in err and "Warning" not in err
    if code:
        last = err.strip().splitlines()[-1]
        assert message in last, err
        assert last.count("\n") == 0 and (code == 2 or len(err.strip().splitlines()) == 1)
    for folder in (hostile / "diverged", hostile / "typo", hostile / "nf"):
        assert not folder.exists(), "a failed train left a run folder"


def test_scores_in_blocks_equal_scores_at_once(price_model):
    """_score works block by block (memory); the result is that of one pass, to rounding."""
    from jacnet.cli import _score

    saved = load_model(price_model / "run" / "model.npz")
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(50, 2)), rng.normal(size=50) + 10
    x_scaler, y_scaler = saved.preprocessing["X"], saved.preprocessing["y"]
    once = _score(saved.model, "mse", x_scaler, y_scaler, X, y)
    blocks = _score(saved.model, "mse", x_scaler, y_scaler, X, y, block=7)
    assert once.keys() == blocks.keys() == {"loss", "mse", "mae", "r2"}
    for key in once:
        assert blocks[key] == pytest.approx(once[key], rel=1e-6)
    model = jacnet.mlp([2, 3], seed=0)
    labels = rng.integers(0, 3, size=50)
    once = _score(model, "cross_entropy", x_scaler, None, X, labels)
    blocks = _score(model, "cross_entropy", x_scaler, None, X, labels, block=9)
    assert blocks["accuracy"] == pytest.approx(once["accuracy"]) and blocks["loss"] == pytest.approx(
        once["loss"], rel=1e-6)


def test_train_records_the_noise_and_predict_std(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (400, 1))
    y = 5.0 * np.sin(3 * X[:, 0]) + 20.0 + 0.5 * rng.standard_normal(400)  # noise σ = 0.5
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("x,y\n" + "\n".join(f"{a},{t}" for a, t in zip(X[:, 0], y)) + "\n")
    out = tmp_path / "run"
    common = ["--data", str(csv_path), "--hidden", "10", "--activation", "tanh", "--optimizer",
              "lm", "--epochs", "60", "--dtype", "float64", "--no-progress"]
    assert main(["train", *common, "--out", str(out), "--laplace", "full"]) == 0
    printed = capsys.readouterr().out
    meta = load_model(out / "model.npz").metadata
    assert meta["laplace"]["structure"] == "full" and len(meta["noise_std"]) == 1
    assert 0.45 < meta["noise_std"][0] < 0.55  # in target units, not the scaled ones
    assert f"noise std (Laplace evidence, target units): {meta['noise_std'][0]:.4g}" in printed
    features = tmp_path / "features.csv"
    features.write_text("x\n0.0\n0.5\n3.0\n")
    assert main(["predict", str(out / "model.npz"), str(features), "--std"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "prediction,std"
    std = [float(line.split(",")[1]) for line in lines[1:]]
    assert meta["noise_std"][0] <= std[0] < 0.6 and std[2] > 2 * std[0]
    assert main(["predict", str(out / "model.npz"), str(features)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "prediction"

    none = tmp_path / "none"
    assert main(["train", *common, "--out", str(none), "--laplace", "none"]) == 0
    assert "noise_std" not in load_model(none / "model.npz").metadata
    capsys.readouterr()
    assert main(["predict", str(none / "model.npz"), str(features), "--std"]) == 1
    assert "has no Laplace approximation" in capsys.readouterr().err
    classifier = tmp_path / "cls"
    assert main(["train", *TINY, "--out", str(classifier)]) == 0
    assert "laplace" not in load_model(classifier / "model.npz").metadata
    capsys.readouterr()
    assert main(["predict", str(classifier / "model.npz"), "xor", "--std"]) == 2
    assert "--std is for regression models" in capsys.readouterr().err


# --------------------------------------------------------------------------- NPZ/NPY predict
@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A regression model on 32 unnamed features, trained from an NPZ file."""
    folder = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 32))
    np.savez(folder / "train.npz", X=X, y=X @ rng.normal(size=32))
    assert main(["train", "--data", str(folder / "train.npz"), "--hidden", "4", "--epochs", "1",
                 "--laplace", "none", "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run" / "model.npz"


def _write_features(path, X):
    if path.suffix == ".npy":
        np.save(path, X)
    elif path.stem.endswith("z"):
        np.savez_compressed(path, X=X)
    else:
        np.savez(path, X=X)


@pytest.mark.parametrize("name", ["x.npz", "xz.npz", "x.npy"])
def test_predict_streams_npz_and_npy_with_memory_flat_in_rows(wide_model, tmp_path, capsys,
                                                              name):
    """Predict reads X block by block: on 10x the rows its peak traced memory stays within
    2x (reading X whole, the peak grows with X: 5 MB, then 51 MB)."""
    import tracemalloc

    rng = np.random.default_rng(6)
    peaks = []
    for n_rows in (20_000, 200_000):
        X = rng.normal(size=(n_rows, 32))
        path = tmp_path / name
        _write_features(path, X)
        out = tmp_path / "p.csv"
        tracemalloc.start()
        assert main(["predict", str(wide_model), str(path), "-o", str(out)]) == 0
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        del X
    assert peaks[1] < 2 * peaks[0], peaks
    assert peaks[1] < 200_000 * 32 * 8 / 4, peaks


def test_npz_and_npy_predict_give_the_predictions_of_the_whole_array(wide_model, tmp_path,
                                                                     capsys):
    from jacnet.cli import _load_saved, _prediction_columns

    X = np.random.default_rng(7).normal(size=(70_000, 32))  # several 1 MB blocks
    expected = _prediction_columns(_load_saved(str(wide_model)), X)["prediction"]
    for name in ("x.npz", "xz.npz", "x.npy"):
        _write_features(tmp_path / name, X)
        out = tmp_path / f"{name}.out.npz"
        assert main(["predict", str(wide_model), str(tmp_path / name), "-o", str(out)]) == 0
        with np.load(out) as archive:
            np.testing.assert_allclose(archive["prediction"], expected, rtol=1e-12, atol=1e-12)
    X[45_000, 3] = np.nan
    np.save(tmp_path / "nan.npy", X)
    assert main(["predict", str(wide_model), str(tmp_path / "nan.npy")]) == 1
    err = capsys.readouterr().err
    assert "X contains NaN or infinity (first at index [45000, 3]: nan)" in err
    assert err.count("\n") == 1


def test_an_error_line_is_written_in_one_piece(tmp_path, monkeypatch):
    """Under mpiexec every rank's stderr goes down one stream: print's two writes (the text,
    then the newline) let two ranks' lines run together as one ("...training.jacnet train:
    error: rank(s) 1 of 2 failed ..."). Each error line must be one write, newline included."""
    import io

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.pieces = []

        def write(self, text):
            self.pieces.append(text)
            return super().write(text)

    np.savez(tmp_path / "noy.npz", X=np.zeros((4, 2)))
    for argv, code in ((["train", "--data", str(tmp_path / "noy.npz")], 1),
                       (["train", "--data", "xor", "--lr", "-1"], 2)):
        stream = Writes()
        monkeypatch.setattr("sys.stderr", stream)
        assert main(argv) == code
        errors = [piece for piece in stream.pieces if "error:" in piece]
        assert len(errors) == 1 and errors[0].endswith("\n"), stream.pieces


def test_solver_chooses_the_inner_solver_of_lm(tmp_path, capsys):
    """--solver picks LM's inner solver, visible in the history; the default, auto, solves
    digits' default network (P = 9610, N·m = 14,370) matrix-free, where the dense system
    costs 34 s an epoch."""
    matrix_free = {}
    for solver in ("dense", "cg"):
        out = tmp_path / solver
        assert main(["train", "--data", "sinc", "--optimizer", "lm", "--hidden", "8",
                     "--activation", "tanh", "--epochs", "3", "--solver", solver,
                     "--no-progress", "--out", str(out)]) == 0
        records = json.loads((out / "history.json").read_text())["records"]
        matrix_free[solver] = [r["matrix_free"] for r in records]
    assert matrix_free == {"dense": [0.0] * 3, "cg": [1.0] * 3}
    out = tmp_path / "auto"
    assert main(["train", "--optimizer", "lm", "--epochs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    assert json.loads((out / "history.json").read_text())["records"][0]["matrix_free"] == 1.0
    capsys.readouterr()
    assert main(["train", *TINY, "--solver", "cg", "--out", str(tmp_path / "adam")]) == 2
    assert ("--solver applies to the full-batch optimizers lm, gn and br; --optimizer is "
            "'adam'") in capsys.readouterr().err


def test_resume_of_a_run_saved_before_solver_existed_keeps_the_dense_solves(tmp_path):
    from jacnet.io import load_checkpoint, save_checkpoint

    # P = 1021 > 800 rows: "auto" would solve this network by CG.
    common = ["train", "--data", "sinc", "--optimizer", "lm", "--hidden", "30,30",
              "--activation", "tanh", "--no-progress"]
    out = tmp_path / "run"
    assert main([*common, "--solver", "dense", "--epochs", "2", "--checkpoint-every", "1",
                 "--out", str(out)]) == 0
    saved = load_checkpoint(out / "checkpoint.npz")
    del saved.state["cli_options"]["solver"]  # as written before --solver
    save_checkpoint(out / "checkpoint.npz", saved.model, saved.state)
    assert main(["train", "--resume", str(out), "--epochs", "4", "--no-progress"]) == 0
    records = json.loads((out / "history.json").read_text())["records"]
    assert [r["matrix_free"] for r in records] == [0.0] * 4
    straight = tmp_path / "straight"
    assert main([*common, "--solver", "dense", "--epochs", "4", "--out", str(straight)]) == 0
    np.testing.assert_array_equal(load_model(out / "model.npz").model.params,
                                  load_model(straight / "model.npz").model.params)
