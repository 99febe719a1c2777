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
