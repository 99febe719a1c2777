"""He & Su's law of data separation: pnc_jax.separation against dense float64 numpy, the
in-training (emergence) measurements against a separate evaluation of the parameters at the
same epochs and across a resume, and experiments.data_separation end to end and on bad input."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import pnc_jax.sweep as sweep_module
from pnc_jax import features, separation
from pnc_jax.config import Config
from pnc_jax.data import dataset_for, gaussian_mixture
from pnc_jax.progress import Progress
from pnc_jax.sweep import run_sweep
from pnc_jax.train import layer_fuzziness, make_trainer
from pnc_jax.workdir import Workdir

# ----------------------------------------------------------------------------- numpy reference


def _dense_fuzziness(h, labels, k):
    """Tr(SS_w pinv(SS_b)) from the m x m scatter matrices, float64 (He & Su's definition)."""
    h = np.asarray(h, np.float64)
    n = len(labels)
    mu = h.mean(0)
    ss_w = np.zeros((h.shape[1],) * 2)
    ss_b = np.zeros_like(ss_w)
    for c in range(k):
        hc = h[labels == c]
        mc = hc.mean(0)
        ss_w += (hc - mc).T @ (hc - mc) / n
        ss_b += len(hc) * np.outer(mc - mu, mc - mu) / n
    return np.trace(ss_w @ np.linalg.pinv(ss_b, rcond=1e-10, hermitian=True))


def _layers(counts, widths, seed=0):
    """Features with class structure: class means of shrinking spread plus noise, per layer."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    hs = []
    for l, m in enumerate(widths):
        means = rng.normal(size=(len(counts), m)) * (1.0 + l)
        hs.append(means[labels] + rng.normal(size=(len(labels), m)))
    return hs, labels


@pytest.mark.parametrize("counts", [(30, 30, 30, 30), (50, 12, 31, 7)],
                         ids=["balanced", "imbalanced"])
def test_fuzziness_matches_the_dense_float64_formula(counts):
    hs, labels = _layers(counts, widths=(2, 3, 20, 64))  # m < K-1, = K-1, > K
    got = separation.fuzziness_profile(hs, labels, len(counts))
    want = [_dense_fuzziness(h, labels, len(counts)) for h in hs]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    if counts[0] == counts[1]:  # float32 features (a network's) are measured in float64 too
        f32 = [h.astype(np.float32) for h in hs]
        np.testing.assert_allclose(separation.fuzziness_profile(f32, labels),
                                   [_dense_fuzziness(h, labels, len(counts)) for h in f32],
                                   rtol=1e-10)


def test_fuzziness_is_invariant_under_affine_maps():
    """h -> A h + b. With SS_b invertible (m = K - 1) any invertible A; wider features (SS_b of
    rank K - 1 < m, a pseudo-inverse) only c Q (Q orthogonal): a generic A changes D there."""
    rng = np.random.default_rng(4)
    (narrow, wide), labels = _layers((40, 25, 33, 19), widths=(3, 12), seed=3)
    for h, maps in ((narrow, [rng.normal(size=(3, 3)) + 3 * np.eye(3)]),
                    (wide, [-7.5 * np.linalg.qr(rng.normal(size=(12, 12)))[0]])):
        m = h.shape[1]
        for a in maps:
            b = rng.normal(size=m) * 100
            d0, d1 = separation.fuzziness_profile([h, h @ a.T + b[None, :]], labels)
            np.testing.assert_allclose(d1, d0, rtol=1e-9)
    generic = rng.normal(size=(12, 12)) + 4 * np.eye(12)
    d0, d1 = separation.fuzziness_profile([wide, wide @ generic.T], labels)
    assert not np.isclose(d0, d1, rtol=1e-3)
    np.testing.assert_allclose(d1, _dense_fuzziness(wide @ generic.T, labels, 4), rtol=1e-10)


def test_separation_law_fits_like_numpy_and_takes_any_feature_shape():
    hs, labels = _layers((20, 20, 20), widths=(24,) * 5, seed=5)
    images = [h.reshape(60, 2, 3, 4) for h in hs]  # conv-shaped features are flattened
    law = separation.separation_law(lambda: images, labels)
    d = np.array([_dense_fuzziness(h, labels, 3) for h in hs])
    np.testing.assert_allclose(law["fuzziness"], d, rtol=1e-10)
    slope, intercept = np.polyfit(np.arange(5), np.log(d), 1)
    r = np.corrcoef(np.arange(5), np.log(d))[0, 1]
    np.testing.assert_allclose([law["rho"], law["log_d0"], law["pearson_r"], law["r2"]],
                               [np.exp(slope), intercept, r, r * r], rtol=1e-10)
    assert law["start"] == 0
    later = separation.separation_law(hs, labels, 3, start=2)
    np.testing.assert_allclose(later["rho"], np.exp(np.polyfit(np.arange(2, 5),
                                                               np.log(d[2:]), 1)[0]), rtol=1e-10)
    assert separation.fit_law([1.0, None, 0.5])["rho"] is None
    assert separation.fit_law([1.0, 0.0, 0.5])["pearson_r"] is None
    assert separation.fit_law([1.0])["r2"] is None
    curve = separation.emergence_curve([0, 10], [d, d[::-1]])
    assert [p["epoch"] for p in curve] == [0, 10]
    np.testing.assert_allclose(curve[1]["pearson_r"], -r, rtol=1e-10)


def test_ablations_and_random_labels():
    cfg = Config(model="mlp")
    assert separation.ablation_config(cfg, "none") == cfg
    assert separation.ablation_config(cfg, "random_labels") == cfg
    assert not separation.ablation_config(cfg, "no_batchnorm").batch_norm
    assert separation.ablation_config(cfg, "no_relu").activation == "identity"
    with pytest.raises(ValueError, match="'bogus'"):
        separation.ablation_config(cfg, "bogus")
    labels = np.repeat(np.arange(10), 100)
    a, b = separation.random_labels(labels, 0), separation.random_labels(labels, 0)
    np.testing.assert_array_equal(a, b)  # fixed
    np.testing.assert_array_equal(np.bincount(a), np.bincount(labels))  # balanced
    assert np.mean(a == labels) < 0.2  # unrelated to the true labels


# ----------------------------------------------------------------------------- emergence

SMALL = Config(
    dataset="gaussian", input_dim=8, num_classes=4, samples_per_class=10, model="mlp",
    depths=(3, 4), width=12, init="default", loss="ce", loss_scale=1.0, optimizer="adam",
    lr=1e-2, weight_decay=5e-4, schedule="step", milestones=(10,), epochs=20, batch_size=16,
    tol=0.0, seeds=(0, 1), chunk_epochs=10, measure_every=5, measure_batch=15,
    dtype="float64")  # 40 points: batches of 15, 15 and 10 for the BatchNorm-mode features


def _small_data(cfg=SMALL):
    x, y = gaussian_mixture(1, cfg.num_classes, cfg.samples_per_class, cfg.input_dim)
    order = np.random.default_rng(0).permutation(len(y))  # class-mixed BatchNorm batches
    return x[order], y[order]


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    """Depths 3 and 4 padded into one program (the emergence rows are cut at each depth)."""
    wd = Workdir(tmp_path_factory.mktemp("separation") / "run")
    x, y = _small_data()
    records, states = run_sweep(SMALL, x, y, wd, progress=False, depth_strategy="pad")
    return records, states, wd


def test_emergence_equals_a_separate_evaluation_at_the_same_epochs(measured_run):
    """Replay the sweep from its initial parameters in 5-epoch blocks; after each block the
    streamed features.layer_metrics (BatchNorm in training mode over batches of 15, 15, 10)
    gives the fuzziness the compiled training loop returned for that epoch."""
    records, states, _ = measured_run
    x, y = _small_data()
    ((group, state),) = states.items()
    assert group == (3, 4)
    trainer = make_trainer(SMALL, x.shape[1], len(y), max_depth=4)
    replay = separation.initial_states(trainer, SMALL.runs())
    run = jax.jit(jax.vmap(trainer.run, in_axes=(0, None, None, None)), static_argnums=3)
    for j in range(4):  # epochs 5, 10, 15, 20
        replay, _ = run(replay, x, y, 5)
        want = features.layer_metrics(trainer, replay, x, y, 4, batch_size=15,
                                      bn_train=True)["fuzziness"]
        for i, (depth, _) in enumerate(SMALL.runs()):
            assert records[i]["emergence"]["epochs"] == [5, 10, 15, 20]
            np.testing.assert_allclose(records[i]["emergence"]["fuzziness"][j],
                                       want[i][:depth], rtol=1e-8)
    # the replay is the sweep's own trajectory: the same final parameters
    for a, b in zip(jax.tree.leaves(replay.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
    # the law's API gives the same numbers as the stream, from in-memory features
    one = jax.tree.map(lambda a: a[0], replay)
    feats = [np.asarray(h) for h in jax.jit(trainer.apply, static_argnums=(4,))(
        one.params, one.stats, x, one.depth, False)[1]]
    np.testing.assert_allclose(separation.fuzziness_profile(feats, y),
                               features.layer_metrics(trainer, one, x, y, 4, bn_train=False)
                               ["fuzziness"], rtol=1e-9)


def test_layer_fuzziness_modes_match_layer_metrics(measured_run):
    _, states, _ = measured_run
    x, y = _small_data()
    state = jax.tree.map(lambda a: a[3], states[(3, 4)])  # depth 4, seed 1
    trainer = make_trainer(SMALL, x.shape[1], len(y), max_depth=4)
    for batch, bn_train in ((15, True), (0, False)):
        cfg = dataclasses.replace(SMALL, measure_batch=batch)
        got = jax.jit(lambda s, c=cfg: layer_fuzziness(trainer, c, s, x, y))(state)
        want = features.layer_metrics(trainer, state, x, y, 4, batch_size=batch,
                                      bn_train=bn_train)["fuzziness"]
        np.testing.assert_allclose(got, want, rtol=1e-9)


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_resume_continues_the_emergence_arrays(measured_run, tmp_path, monkeypatch):
    """Die after the first 10-epoch chunk (checkpointed), resume: the same emergence records
    (the first two measurements come back from metrics.jsonl) and fuzziness rows."""
    records, _, wd_full = measured_run

    class DyingProgress(Progress):
        def update(self, epoch, *args, **kwargs):
            if epoch == 20:
                raise _Interrupt

    monkeypatch.setattr(sweep_module, "CHECKPOINT_CHUNKS", 1)
    monkeypatch.setattr(sweep_module, "Progress", DyingProgress)
    x, y = _small_data()
    wd = Workdir(tmp_path / "run")
    with pytest.raises(_Interrupt):
        run_sweep(SMALL, x, y, wd, progress=False, depth_strategy="pad")
    monkeypatch.setattr(sweep_module, "Progress", Progress)
    resumed, _ = run_sweep(SMALL, x, y, Workdir(tmp_path / "run", resume=True), resume=True,
                           progress=False, depth_strategy="pad")
    for a, b in zip(records, resumed, strict=True):
        assert a["emergence"]["epochs"] == b["emergence"]["epochs"] == [5, 10, 15, 20]
        np.testing.assert_allclose(a["emergence"]["fuzziness"], b["emergence"]["fuzziness"],
                                   rtol=1e-10)

    def rows(w):
        lines = w.file("metrics.jsonl").read_text().splitlines()
        return sorted(((r["group"], r["epoch"], r["fuzziness"]) for r in map(json.loads, lines)
                       if "fuzziness" in r), key=lambda t: t[:2])

    assert [r[:2] for r in rows(wd)] == [(0, e) for e in (4, 9, 14, 19)]
    for a, b in zip(rows(wd), rows(wd_full), strict=True):
        for u, v in zip(a[2], b[2], strict=True):
            assert (u is None) == (v is None)
            if u is not None:
                np.testing.assert_allclose(u, v, rtol=1e-10)


def test_measure_settings_are_checked():
    with pytest.raises(ValueError, match="measure_every=4 must divide chunk_epochs=10"):
        dataclasses.replace(SMALL, measure_every=4).validate()
    with pytest.raises(ValueError, match="measure_batch must be >= 0"):
        dataclasses.replace(SMALL, measure_batch=-1).validate()
    x, y = _small_data()
    with pytest.raises(ValueError, match="measure_batch=41 exceeds the 40 training points"):
        run_sweep(dataclasses.replace(SMALL, measure_batch=41), x, y, progress=False)


# ----------------------------------------------------------------------------- the experiment

TINY = ["--dataset", "gaussian", "--input-dim", "8", "--num-classes", "4",
        "--samples-per-class", "10", "--width", "12", "--depths", "3", "--depth-lrs", "0.01",
        "--seeds", "1", "--epochs", "10", "--chunk-epochs", "10", "--measure-every", "5",
        "--measure-batch", "20", "--milestones", "5"]


@pytest.mark.slow
def test_experiment_end_to_end_on_synthetic_data(tmp_path):
    from experiments import data_separation

    wd = tmp_path / "run"
    runs = data_separation.main(["--workdir", str(wd), "--no-progress", *TINY])
    assert [r["ablation"] for r in runs] == list(separation.ABLATIONS)
    saved = json.loads((wd / "results.json").read_text())
    assert saved == json.loads(json.dumps(runs))
    for r in saved:
        assert r["depth"] == 3 and r["optimizer"] == "adam" and r["lr"] == 0.01
        for key in ("fuzziness", "fuzziness_eval_bn", "fuzziness_at_init"):
            assert len(r[key]) == 3 and all(v > 0 for v in r[key])
        fit = separation.fit_law(r["fuzziness"])
        assert r["rho"] == fit["rho"] and r["pearson_r"] == fit["pearson_r"]
        assert [p["epoch"] for p in r["emergence"]] == [0, 5, 10]
        assert r["emergence"][0]["pearson_r"] == r["pearson_r_at_init"]
        # the last in-training measurement is of the final network
        np.testing.assert_allclose(r["emergence"][-1]["pearson_r"], r["pearson_r"], rtol=1e-9)
        assert r["test_accuracy"] is None  # synthetic data: no test split
    by = {r["ablation"]: r for r in saved}  # without BatchNorm both modes are one network
    np.testing.assert_allclose(by["no_batchnorm"]["fuzziness"],
                               by["no_batchnorm"]["fuzziness_eval_bn"], rtol=1e-9)
    np.testing.assert_allclose(by["none"]["fuzziness"][0], by["no_relu"]["fuzziness"][0],
                               rtol=1e-12)  # the input, same labels
    assert not np.isclose(by["none"]["fuzziness"][0], by["random_labels"]["fuzziness"][0])
    for name in ("summary.md", "separation.png", "emergence.png", "ablations.png",
                 "timings.json", "none/metrics.jsonl", "random_labels/metrics.jsonl"):
        assert (wd / name).is_file(), name
    assert "| random_labels | 3 |" in (wd / "summary.md").read_text()


@pytest.mark.parametrize("flags, named", [
    (["--milestones", "5,12"], "milestone 12"),
    (["--measure-batch", "41"], "measure_batch=41"),
    (["--depths", "0", "--depth-lrs", "0.01"], "depths=(0,)"),
    (["--ablations", "none,bogus"], "'bogus'"),
    (["--fit-start", "2"], "fit_start=2"),
], ids=["milestone", "batch", "depth", "ablation", "fit_start"])
def test_bad_input_exits_2_with_one_line_before_compiling(flags, named, tmp_path, capsys,
                                                         monkeypatch):
    from experiments import data_separation

    def no_training(*args, **kwargs):
        raise AssertionError("trained despite bad input")

    monkeypatch.setattr(sweep_module, "run_sweep", no_training)
    wd = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        data_separation.main(["--workdir", str(wd), "--no-progress", *TINY, *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not (wd / "config.json").exists()


# ----------------------------------------------------------------------------- data

MNIST10K = Path(__file__).resolve().parents[2] / "shared/datasets/mnist10k.npz"


@pytest.mark.skipif(not MNIST10K.is_file(), reason="shared mnist10k missing")
def test_dataset_for_resizes_and_standardises_with_the_training_images():
    """Config.resize / normalize="train": the published-constant pixels mapped back, then one
    mean and std over all training pixels (numpy float64) give the same arrays; both splits use
    the training statistics; the default settings stay as they were."""
    base = Config(dataset="mnist10k", num_classes=10, samples_per_class=100, data_seed=3)
    plain = dataset_for(base)
    assert plain.x_train.shape == (1000, 784) and plain.input_shape == (28, 28, 1)
    published = dataset_for(dataclasses.replace(base, resize=10))
    ours = dataset_for(dataclasses.replace(base, resize=10, normalize="train"))
    assert ours.x_train.shape == (1000, 100) and ours.input_shape == (10, 10, 1)
    np.testing.assert_array_equal(ours.y_train, published.y_train)
    pixels = [np.asarray(x, np.float64) * 0.3081 + 0.1307
              for x in (published.x_train, published.x_test)]
    mean, std = pixels[0].mean(), pixels[0].std()
    for got, px in zip((ours.x_train, ours.x_test), pixels, strict=True):
        np.testing.assert_allclose(got, (px - mean) / std, atol=2e-5)
    np.testing.assert_allclose([ours.x_train.mean(), ours.x_train.std()], [0, 1], atol=1e-5)
    assert abs(ours.x_test.mean()) > 1e-4  # test set: the training set's statistics
    assert len(ours.y_test) == 2000 and np.bincount(ours.y_train).tolist() == [100] * 10


def test_per_depth_learning_rates_train_one_program_per_depth():
    from pnc_jax.sweep import depth_groups

    assert depth_groups(SMALL, "pad") == [(3, 4)]
    assert depth_groups(dataclasses.replace(SMALL, depth_lrs=(0.01, 0.02)), "pad") == [(3,), (4,)]
