"""experiments.dlufm end to end: the issue's done-when numbers read from results.json against
science.md's published values and the closed form (configuration A shortened to 6,000 steps,
which reach loss* to ~1e-14; two more depths given as flags), configuration B's full-parameter
spectrum via --full-hessian, --from-workdir on a finished sweep_depth run against a numpy float64
brute force (dense Kronecker Hessians, gradients, NC1), and bad input exiting 2 with one line
before anything is trained."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import dlufm as experiment
from experiments import sweep_depth
from pnc_jax import dlufm, spectra
from pnc_jax.config import Config, from_json
from pnc_jax.data import dataset_for
from pnc_jax.models import weight_matrices
from pnc_jax.sweep import load_run

QUICK = ["--no-progress", "--steps", "6000", "--track-every", "500"]
CONFIG_A = {"gamma": 0.963772, "loss": 0.07048705, "sigma": 1.32128, "feature_norm": 0.41782,
            "outlier": 0.133015}  # science.md section 4, to the published digits


def _run(tmp_path, name: str, *flags: str) -> dict:
    wd = tmp_path / name
    experiment.main(["--workdir", str(wd), *flags])
    return json.loads((wd / "results.json").read_text())


def _check_collapse(res: dict) -> None:
    """The issue's done-when numbers, from results.json alone, every seed and layer."""
    c, cf, f = res["config"], res["closed_form"], res["final"]
    k, k2 = c["num_classes"], c["num_classes"] ** 2
    assert cf["gamma"] > (c["depth"] - 1) / c["depth"]
    seeds = len(c["seeds"])
    loss = np.array(f["loss"])
    assert loss.shape == (seeds,) and np.all(np.abs(loss - cf["loss"]) < 1e-10)
    sv = np.array(f["singular_values"], dtype=float)  # (R, L, K+1), null -> NaN
    assert sv.shape == (seeds, c["depth"], k + 1)
    np.testing.assert_allclose(sv[..., :k], cf["sigma"], rtol=1e-6)
    assert np.all(sv[:, :-1, k] < 1e-4 * cf["sigma"]) and np.all(np.isnan(sv[:, -1, k]))
    np.testing.assert_allclose(f["feature_norms"], cf["feature_norm"], rtol=1e-6)
    top = np.array(f["hessian_top"])  # (R, L, K^2+1)
    np.testing.assert_allclose(top[..., :k2], cf["outlier"], rtol=1e-6)
    assert np.all(np.abs(top[..., k2]) < 1e-9 * top[..., 0])
    assert np.all(np.array(f["outliers"]) == k2)
    assert np.all(np.array(f["gradient_overlap"]) > 0.9999)
    assert all(res["checks"].values()) and len(res["checks"]) == 5
    # closed form from its own formulas (science.md) given gamma
    g, u = cf["gamma"], 1 - cf["gamma"]
    lam_w, lam_h, n = c["weight_decay"], c["feature_decay"], c["samples_per_class"]
    assert g ** (c["depth"] - 1) * u ** (c["depth"] + 1) == pytest.approx(
        (k * lam_w) ** c["depth"] * (k * n * lam_h), rel=1e-10)
    assert cf["sigma"] ** 2 == pytest.approx(g * u / (k * lam_w), rel=1e-12)
    assert cf["outlier"] == pytest.approx(lam_w * g / u, rel=1e-12)


@pytest.fixture(scope="module")
def config_a(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("a")
    return tmp / "a", _run(tmp, "a", *QUICK, "--seeds", "2")


def test_configuration_a_reaches_deep_collapse(config_a):
    _, res = config_a
    for key, published in CONFIG_A.items():
        digits = len(str(published).split(".")[1])
        assert res["closed_form"][key] == pytest.approx(published, abs=0.5 * 10.0**-digits)
    assert res["config"] == {"num_classes": 4, "samples_per_class": 10, "width": 32, "depth": 3,
                             "weight_decay": 5e-3, "feature_decay": 5e-3, "lr": 0.5,
                             "steps": 6000, "seeds": [0, 1], "track_every": 500,
                             "outlier_rtol": 1e-6}
    _check_collapse(res)


def test_tracked_series_and_outputs(config_a):
    wd, res = config_a
    track = res["track"]
    assert track["steps"] == list(range(0, 6001, 500))
    for key in dlufm.TRACKED + ("outlier_smallest", "bulk_largest"):
        shape = np.shape(track[key])
        assert shape[:2] == (2, 13) and shape[2:] in ((), (3,)), (key, shape)
    np.testing.assert_allclose(np.array(track["loss"])[:, -1], res["final"]["loss"], rtol=0)
    gap = np.array(track["loss_gap"])
    np.testing.assert_allclose(gap, np.array(track["loss"]) - res["closed_form"]["loss"],
                               atol=1e-15)
    assert np.all(gap[:, 0] > 0.1) and np.all(np.abs(gap[:, -1]) < 1e-10)
    nc1 = np.array(track["nc1"])
    assert np.all(nc1[:, 0] > 1e-2) and np.all(nc1[:, -1] < 1e-12)
    assert np.all(np.array(track["outliers"])[:, 0] > 16)  # the bulk is not yet zero at init
    np.testing.assert_allclose(np.array(track["outlier_smallest"])[:, -1],
                               res["closed_form"]["outlier"], rtol=1e-6)
    summary = (wd / "summary.md").read_text()
    assert "| loss* | 0.07048705429 |" in summary and "NO" not in summary
    for name in ("dlufm_collapse.png", "dlufm_spectrum.png", "dlufm_alignment.png",
                 "timings.json", "config.json"):
        assert (wd / name).stat().st_size > 0, name


@pytest.mark.slow  # ~15 s each on 2 loaded cores (the library test covers them too)
@pytest.mark.parametrize("flags", [
    ["--num-classes", "3", "--samples-per-class", "5", "--width", "16", "--depth", "2",
     "--weight-decay", "5e-3", "--feature-decay", "1e-2"],
    ["--num-classes", "3", "--samples-per-class", "6", "--width", "12", "--depth", "4",
     "--weight-decay", "4e-3", "--feature-decay", "8e-3"],
], ids=["L2", "L4"])
def test_other_configurations_from_the_command_line(flags, tmp_path):
    res = _run(tmp_path, "run", *QUICK, *flags)
    assert res["config"]["depth"] == int(flags[7])
    assert res["config"]["weight_decay"] != res["config"]["feature_decay"]
    _check_collapse(res)


def test_full_hessian_is_configuration_b_and_matches_science_md(tmp_path):
    res = _run(tmp_path, "b", "--no-progress", "--full-hessian", "--steps", "6000",
               "--track-every", "3000")
    record = json.loads((tmp_path / "b" / "config.json").read_text())
    assert record["preset"] == "full_hessian" and record["config"]["full_hessian"] is True
    assert (res["config"]["num_classes"], res["config"]["samples_per_class"],
            res["config"]["width"], res["config"]["depth"]) == (3, 4, 12, 3)
    _check_collapse(res)
    full = res["full_hessian"]
    assert full["parameters"] == 12 * 12 + 2 * 12 * 12 + 3 * 12 and full["matches_reference"]
    lam = np.array(full["runs"][0]["eigenvalues"])
    assert lam.size == 468 and np.all(np.diff(lam) <= 0)
    # science.md: top 9 = 0.93265 (x3), 0.90265 (x6); then 27 at 0.23316; bulk 0.01, 0.005, 0
    np.testing.assert_allclose(lam[:3], 0.93265, atol=5e-6)
    np.testing.assert_allclose(lam[3:9], 0.90265, atol=5e-6)
    np.testing.assert_allclose(lam[9:36], 0.23316, atol=5e-6)
    assert lam[8] - lam[9] > 0.5 and lam[35] - lam[36] > 0.2
    bulk = lam[36:]
    assert np.min(np.abs(bulk[:, None] - np.array([[0.01, 0.005, 0.0]])), axis=1).max() < 1e-8
    counts = [c for _, c in full["runs"][0]["clusters"]]
    assert counts[:3] == [3, 6, 27] and sum(counts) == 468
    assert "| 0.23316132 | 27 | 0.23316 | 27 |" in (tmp_path / "b" / "summary.md").read_text()


def test_full_hessian_flag_keeps_an_explicit_preset():
    """--full-hessian selects configuration B only when no --preset / --config is given."""
    s, _, preset = experiment.EXPERIMENT.settings(["--preset", "default", "--full-hessian"])
    assert preset == "default" and s.full_hessian and s.width == 32


# ----------------------------------------------------------------------------- --from-workdir

SWEEP = ["--input-dim", "10", "--width", "8", "--samples-per-class", "3", "--depths", "3,4",
         "--seeds", "2", "--epochs", "40", "--chunk-epochs", "20", "--lr", "0.02"]


def _nc1(h_NxM, labels, k):
    """Tr(Sigma_W Sigma_B^+)/K, sample-mean centred (science.md section 1), brute force."""
    mu = np.stack([h_NxM[labels == c].mean(0) for c in range(k)])
    mu_g = h_NxM.mean(0)
    sw = sum(np.outer(h - mu[y], h - mu[y]) for h, y in zip(h_NxM, labels, strict=True))
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / k
    return np.trace(sw / len(labels) @ np.linalg.pinv(sb, rcond=1e-12, hermitian=True)) / k


@pytest.mark.slow  # a sweep, then two compiled depths: ~30 s on 2 loaded cores
def test_from_workdir_equals_a_numpy_brute_force(tmp_path):
    sweep_dir, wd = tmp_path / "sweep", tmp_path / "spectra"
    runs = sweep_depth.main(["--workdir", str(sweep_dir), "--no-progress", *SWEEP])
    experiment.main(["--workdir", str(wd), "--no-progress", "--from-workdir", str(sweep_dir)])
    res = json.loads((wd / "results.json").read_text())
    assert (res["source"], res["num_classes"], res["loss_scale"]) == (str(sweep_dir), 3, 100.0)
    assert [(r["depth"], r["seed"]) for r in res["runs"]] == [(3, 0), (3, 1), (4, 0), (4, 1)]
    record = json.loads((sweep_dir / "config.json").read_text())
    cfg = from_json(Config(), record["config"]["train"])
    data = dataset_for(cfg)
    x, labels, k, alpha = np.asarray(data.x_train, np.float64), data.y_train, 3, 100.0
    y_NxK = np.eye(k)[labels]
    n = len(labels)
    for got, sweep_run in zip(res["runs"], runs, strict=True):
        depth = got["depth"]
        assert got["status"] == sweep_run["status"] == "ok"
        model = load_run(sweep_dir, depth, got["seed"])
        ws = [np.asarray(w, np.float64) for w in weight_matrices(nnx.state(model), depth)]
        f_NxK = x
        for w in ws:
            f_NxK = f_NxK @ w.T
        data_loss = np.sum((alpha * f_NxK - y_NxK) ** 2) / n
        assert got["data_loss"] == pytest.approx(data_loss, rel=1e-10)
        assert got["data_loss"] == pytest.approx(sweep_run["final_loss"], rel=1e-3, abs=1e-9)
        h = x
        for l, w in enumerate(ws):
            a = np.eye(k)
            for above in ws[l + 1:][::-1]:
                a = a @ above
            hess = np.kron(2 * alpha**2 * a.T @ a, h.T @ h / n)  # row-major vec(W_l)
            lam, vec = np.linalg.eigh(hess)
            lam, vec = lam[::-1], vec[:, ::-1]
            top = np.array(got["hessian_top"][l], dtype=float)
            m = min(k * k + 1, lam.size)
            np.testing.assert_allclose(top[:m], lam[:m], rtol=1e-9, atol=1e-12 * lam[0])
            assert got["outliers"][l] == np.sum(lam > 1e-6 * lam[0])
            grad = (2 * alpha / n) * a.T @ (alpha * f_NxK - y_NxK).T @ h  # d data / d W_l
            c = vec[:, : k * k].T @ grad.reshape(-1)
            assert got["overlap"][l] == pytest.approx(c @ c / np.sum(grad**2), abs=1e-9)
            assert got["nc1"][l] == pytest.approx(_nc1(h, labels, k), rel=1e-8)
            s = np.linalg.svd(w, compute_uv=False)
            np.testing.assert_allclose(np.array(got["singular_values"][l][: s.size][:k + 1],
                                                dtype=float), s[:k + 1], rtol=1e-10)
            h = h @ w.T
    assert (wd / "layer_spectra.png").stat().st_size > 0
    assert "| 4 | 4 | 2/2 |" in (wd / "summary.md").read_text()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("flags, named", [
    (["--num-classes", "5", "--width", "4"], "K=5 > width d=4"),
    (["--weight-decay", "-0.001"], "weight_decay must be finite and >= 0, got -0.001"),
    (["--feature-decay", "0"], "feature_decay must be > 0"),
    (["--weight-decay", "0.2"], "lambda_W=0.2"),  # no nontrivial root
    (["--depth", "6", "--weight-decay", "0.03", "--feature-decay", "0.03"],
     "(L-1)/L"),  # a root, but collapse loses to the zero solution
    (["--full-hessian", "--preset", "default", "--width", "200"], "P=88800"),
    (["--seed-list", "-1"], "seeds must be >= 0"),
], ids=["K>d", "negative", "zero", "no-root", "zero-wins", "too-big", "seed"])
def test_bad_input_exits_2_with_one_line_before_training(flags, named, tmp_path, capsys,
                                                        monkeypatch):
    _no_compute(monkeypatch)
    wd = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        experiment.main(["--workdir", str(wd), "--no-progress", *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not (wd / "config.json").exists()


def _no_compute(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("computed despite bad input")

    for name in ("train", "_train", "sweep_spectra", "chain_spectra", "full_hessian_results"):
        monkeypatch.setattr(dlufm, name, refuse)
    monkeypatch.setattr(jax, "jit", refuse)


def test_a_work_directory_without_a_trained_network_exits_2(tmp_path, capsys, monkeypatch):
    _no_compute(monkeypatch)
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "config.json").write_text(json.dumps({
        "config": {"train": {"depths": [3]}}, "run": {"depth_strategy": "group"}}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({
        "config": {"train": {"depths": [3], "model": "mlp"}}, "run": {"depth_strategy": "group"}}))
    for source, named in [(tmp_path / "missing", "does not exist"),
                          (tmp_path, "config.json does not exist"),
                          (unfinished, "final_group0 does not hold a trained network"),
                          (other, "model='mlp'")]:
        with pytest.raises(SystemExit) as exit_:
            experiment.main(["--workdir", str(tmp_path / "run"), "--no-progress",
                             "--from-workdir", str(source)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and named in err and str(source) in err, err


def test_eigenvalue_clusters_group_within_atol():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.full(3, 2.0), np.full(5, 1.0), np.zeros(4)])
    noisy = rng.permutation(values + rng.uniform(-1e-12, 1e-12, values.size))
    got = spectra.eigenvalue_clusters(noisy, 1e-9)
    assert [c for _, c in got] == [3, 5, 4]
    np.testing.assert_allclose([v for v, _ in got], [2.0, 1.0, 0.0], atol=1e-12)
    assert [c for _, c in spectra.eigenvalue_clusters([3.0, 2.0, 1.0], 0.0)] == [1, 1, 1]
    assert spectra.eigenvalue_clusters([1.0, 1.5, 2.0], 0.6) == [(1.75, 2), (1.0, 1)]
    with pytest.raises(ValueError, match="atol"):
        spectra.eigenvalue_clusters([1.0], -1.0)
