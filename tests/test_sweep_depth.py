"""experiments.sweep_depth end to end on a tiny grid: files, resume rules, exit status 2."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sweep_depth
from pnc_jax import metrics
from pnc_jax.data import nearly_orthonormal
from pnc_jax.sweep import load_run

TINY = ["--depths", "3,4", "--seeds", "2", "--epochs", "60", "--chunk-epochs", "20",
        "--no-progress"]


def test_writes_its_files_and_resumes_only_the_same_config(tmp_path):
    wd = str(tmp_path / "run")
    runs = sweep_depth.main(["--workdir", wd, *TINY])
    for name in ("config.json", "metrics.jsonl", "results.json", "summary.md",
                 "compression.png", "discrimination.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [(r["depth"], r["seed"]) for r in saved] == [(3, 0), (3, 1), (4, 0), (4, 1)]
    assert all(len(r["compression"]) == r["depth"] for r in saved)
    assert all(r["theory"]["rho"] > 0 for r in saved)  # linear, orthogonal, MSE: theory applies
    # same config: --resume picks up the checkpoints and reproduces the results
    again = sweep_depth.main(["--workdir", wd, "--resume", *TINY])
    assert [r["compression"] for r in again] == [r["compression"] for r in runs]
    with pytest.raises(SystemExit) as finished:  # a finished run is not overwritten
        sweep_depth.main(["--workdir", wd, *TINY])
    assert finished.value.code == 2
    with pytest.raises(SystemExit) as other:  # --resume with another config is refused
        sweep_depth.main(["--workdir", wd, "--resume", *TINY, "--lr", "0.05"])
    assert other.value.code == 2


def test_load_run_gives_back_the_trained_network(tmp_path):
    """The network load_run restores has the layer profile results.json reports, and a float64
    run refuses to load without x64 (it would silently come back in float32)."""
    wd = tmp_path / "run"
    runs = sweep_depth.main(["--workdir", str(wd), *TINY, "--dtype", "float64"])
    cfg = sweep_depth.DEFAULTS
    x, labels = nearly_orthonormal(0, cfg.num_classes, cfg.samples_per_class, cfg.input_dim)
    for rec in runs:
        model = load_run(wd, rec["depth"], rec["seed"])
        logits, features = model(jnp.asarray(x))
        assert len(features) == rec["depth"] and logits.dtype == jnp.float64
        np.testing.assert_allclose(
            [float(metrics.compression(h, labels, cfg.num_classes)) for h in features],
            rec["compression"], rtol=1e-10)
    with pytest.raises(ValueError, match="run .depth=5, seed=0. is not in"):
        load_run(wd, 5, 0)
    with jax.enable_x64(False), pytest.raises(ValueError, match="trained in float64"):
        load_run(wd, 3, 0)


@pytest.mark.parametrize("flags", [["--depths", "0,3"], ["--width", "2"], ["--lr", "-1"],
                                   ["--init-scale", "0"], ["--loss-scale", "-2"],
                                   ["--workers", "-1"]])
def test_bad_flags_exit_2_before_compiling(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as e:
        sweep_depth.main(["--workdir", str(tmp_path / "w"), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w" / "config.json").exists()


def test_unwritable_workdir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        sweep_depth.main(["--workdir", str(blocker / "sub")])
    assert e.value.code == 2
