"""Every experiment re-runs from its own record: ``--config RUN/config.json`` into a fresh work
directory reproduces RUN's results.json byte for byte (the record holds every setting). Also: the
experiment modules stay thin (no jit under experiments/)."""

import importlib
import json
from pathlib import Path

import pytest

MNIST10K = Path(__file__).resolve().parents[2] / "shared/datasets/mnist10k.npz"
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

TINY = {
    "template": ["--epochs", "40"],
    "sweep_depth": ["--depths", "3,4", "--seeds", "2", "--epochs", "40", "--chunk-epochs", "20"],
    "theory_vs_practice": ["--settings", "0.3:10:100", "--depths", "4", "--seeds", "2"],
    "assumptions": ["--depths", "2", "--width", "60", "--widths", "", "--seeds", "2",
                    "--epochs", "300", "--width-depth", "2"],
    "nonlinear": ["--epochs", "1", "--width", "32", "--samples-per-class", "20",
                  "--probe-steps", "5", "--embed-per-class", "3"],
    "dlufm": ["--steps", "300", "--track-every", "100"],
    "data_separation": ["--dataset", "gaussian", "--input-dim", "8", "--num-classes", "4",
                        "--samples-per-class", "10", "--width", "12", "--depths", "3",
                        "--depth-lrs", "0.01", "--seeds", "2", "--epochs", "10",
                        "--chunk-epochs", "10", "--measure-every", "5", "--measure-batch", "20",
                        "--milestones", "5", "--ablations", "none,random_labels"],
    "transfer": ["--dataset", "gaussian", "--input-dim", "12", "--samples-per-class", "10",
                 "--width", "10", "--backbone-depth", "1", "--head-depths", "0,2", "--seeds",
                 "2", "--epochs", "10", "--batch-size", "0", "--lr", "0.05", "--loss-scale", "1",
                 "--target-per-class", "2", "--target-draws", "2", "--probe-steps", "10"],
}
SLOW = {"nonlinear", "data_separation"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] * (n in SLOW)
                 + [pytest.mark.skipif(n == "nonlinear" and not MNIST10K.is_file(),
                                       reason="shared mnist10k missing")])
    for n in TINY])
def test_rerun_from_its_own_config_json_gives_the_same_results(name, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    first, second = tmp_path / "first", tmp_path / "second"
    module.main(["--workdir", str(first), "--no-progress", *TINY[name]])
    record = json.loads((first / "config.json").read_text())
    assert record["experiment"] == name and record["config"]
    module.main(["--workdir", str(second), "--no-progress", "--config",
                 str(first / "config.json")])
    assert (second / "results.json").read_bytes() == (first / "results.json").read_bytes()
    assert json.loads((second / "config.json").read_text())["config"] == record["config"]


def test_experiment_modules_are_thin():
    """Flags -> data -> sweep -> analysis -> work directory: the compiled code is library code."""
    for path in EXPERIMENTS.glob("*.py"):
        text = path.read_text()
        assert "jax.jit" not in text and "import jax\n" not in text, path.name
        assert len(text.splitlines()) <= 170, (path.name, len(text.splitlines()))


BAD = [  # issue 11, cases 5 and 6: each exits 2 with one line before anything compiles
    ("sweep_depth", ["--epochs", "3000000000"], "int32"),
    ("sweep_depth", ["--tol", "inf"], "tol must be finite"),
    ("sweep_depth", ["--depths", "4,4"], "repeats 4"),
    ("sweep_depth", ["--seed-list", "1,1"], "repeats 1"),
    ("nonlinear", ["--probe-lr", "nan"], "probe.lr must be finite"),
    ("nonlinear", ["--probe-batch-size", "-5"], "batch_size=-5"),
    ("theory_vs_practice", ["--settings", "0.3:10:100,0.3:10:100"], "repeats"),
    ("assumptions", ["--widths", "200,200"], "repeats 200"),
]


@pytest.mark.parametrize("name, argv, match", BAD)
def test_bad_values_exit_2_before_anything_runs(name, argv, match, tmp_path, capsys):
    module = importlib.import_module(f"experiments.{name}")
    with pytest.raises(SystemExit) as e:
        module.main(["--workdir", str(tmp_path / "w"), "--no-progress", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err
    assert not (tmp_path / "w" / "config.json").exists()


@pytest.mark.parametrize("text, match", [
    ('{"train": {"depths": 4}}', "depths must be a list, got 4"),
    ('{"train": {"lr": "0.1"}}', "lr must be a number, got '0.1'"),
    ('{"train": {"epochs": 10.5}}', "epochs must be an integer, got 10.5"),
])
def test_config_values_of_the_wrong_type_exit_2(text, match, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        importlib.import_module("experiments.sweep_depth").main(
            ["--workdir", str(tmp_path / "w"), "--config", str(path)])
    assert e.value.code == 2 and match in capsys.readouterr().err
