"""experiments.sweep_depth end to end on a tiny grid: files, resume rules, exit status 2."""

import json

import pytest

from experiments import sweep_depth

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
    assert all(r["theory"]["ratio"] > 0 for r in saved)  # linear, orthogonal, MSE: theory applies
    # same config: --resume picks up the checkpoints and reproduces the results
    again = sweep_depth.main(["--workdir", wd, "--resume", *TINY])
    assert [r["compression"] for r in again] == [r["compression"] for r in runs]
    with pytest.raises(SystemExit) as finished:  # a finished run is not overwritten
        sweep_depth.main(["--workdir", wd, *TINY])
    assert finished.value.code == 2
    with pytest.raises(SystemExit) as other:  # --resume with another config is refused
        sweep_depth.main(["--workdir", wd, "--resume", *TINY, "--lr", "0.05"])
    assert other.value.code == 2


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
