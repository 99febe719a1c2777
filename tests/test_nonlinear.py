"""experiments.nonlinear end to end on the shared mnist10k file (tiny), and its refusals."""

import json
from pathlib import Path

import pytest

from experiments import nonlinear

MNIST10K = Path(__file__).resolve().parents[2] / "shared/datasets/mnist10k.npz"
FILES = ("config.json", "results.json", "summary.md", "rank_probe.png",
         "compression_discrimination.png", "embedding.png")


@pytest.mark.slow
@pytest.mark.skipif(not MNIST10K.is_file(), reason=f"shared data set missing: {MNIST10K}")
def test_tiny_run_writes_its_files(tmp_path):
    out = tmp_path / "run"
    results = nonlinear.main([
        "--workdir", str(out), "--data-dir", str(MNIST10K.parent), "--epochs", "2",
        "--width", "32", "--samples-per-class", "30", "--probe-steps", "10",
        "--embed-per-class", "5", "--feature-batch", "1000", "--no-progress",
    ])
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert set(saved["models"]) == {"hybrid", "mlp"} and saved["bn_train"] is False
    assert saved["num_train"] == 300 and saved["num_test"] == 2000
    for kind, alpha in (("hybrid", 100.0), ("mlp", 1.0)):
        res = saved["models"][kind]
        assert res["config"]["loss_scale"] == alpha and res["bn_train"] is False
        rec = res["runs"][0]
        for key in ("numerical_rank", "probe_train_accuracy", "probe_test_accuracy",
                    "compression", "discrimination", "nc1", "fuzziness"):
            assert len(rec[key]) == 8, key
        assert rec["numerical_rank"][0] <= 300
        assert all(0 <= a <= 1 for a in rec["probe_test_accuracy"])
        assert set(rec["fits"]) == {"compression_deep", "discrimination_deep",
                                    "compression_all", "discrimination_all"}
        assert rec["fits"]["compression_deep"]["start"] == 4
        assert rec["embedding"]["layers"] == [1, 2, 4, 6]
        assert len(rec["embedding"]["coords"][0]) == 50
    assert "## hybrid, seed 0" in (out / "summary.md").read_text()


def test_paper_preset_without_data_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PNC_DATA", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        nonlinear.main(["--preset", "paper", "--workdir", str(tmp_path / "paper")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "CIFAR-10" in err and "Looked in" in err and "--data-dir" in err
    assert not (tmp_path / "paper" / "results.json").exists()


def test_bad_model_and_depths_exit_2(tmp_path):
    for extra in (["--model", "linear"], ["--depths", "6,8"]):
        with pytest.raises(SystemExit) as exit_info:
            nonlinear.main(["--workdir", str(tmp_path / "bad"), *extra])
        assert exit_info.value.code == 2
