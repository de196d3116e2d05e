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

    assert main(["evaluate", str(out / "model.npz"), str(csv_path), "--json"]) == 0
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
    assert main(["evaluate", str(out / "model.npz"), "xor"]) == 0
    assert capsys.readouterr().out.startswith("200 samples: loss ")
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
    assert "has 4 feature columns but the model takes 2" in capsys.readouterr().err
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
