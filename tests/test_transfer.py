"""pnc_jax.transfer and experiments.transfer: the data split and labelled draws, the probe reads
the backbone alone (checked against a numpy forward pass of the backbone's weights, and by
changing head, classifier and backbone weights), the statistics and verdict against hand
computations, the whole pipeline on a tiny synthetic pair, and bad input exiting 2 before any
compilation."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import transfer as experiment
from pnc_jax import metrics, probe, transfer
from pnc_jax.config import Config
from pnc_jax.sweep import run_sweep

BASE = Config(dataset="gaussian", input_dim=12, samples_per_class=10, width=10, init_scale=0.5,
              loss_scale=1.0, lr=0.05, momentum=0.9, epochs=30, batch_size=0, tol=0.0,
              schedule="constant", seeds=(0, 1), chunk_epochs=30)
PROBE = probe.Settings(steps=40, lr=0.05)


# ----------------------------------------------------------------------------- data


def test_draws_hold_distinct_samples_of_each_class_in_class_order():
    labels = np.array([2, 0, 1, 0, 2, 1, 0, 2, 1, 0, 1, 2, 0])
    idx = transfer.draw_labelled(labels, 3, 3, draws=4, seed=7)
    assert idx.shape == (4, 9)
    for row in idx:
        assert np.array_equal(labels[row], np.repeat(np.arange(3), 3))
        assert len(set(row.tolist())) == 9
    assert len({tuple(r) for r in idx.tolist()}) > 1  # the draws differ
    assert np.array_equal(idx, transfer.draw_labelled(labels, 3, 3, draws=4, seed=7))


def test_more_labelled_examples_than_a_class_holds_is_refused():
    labels = np.array([0] * 5 + [1] * 3)
    with pytest.raises(ValueError, match="target_per_class=4 .* class 1 has only 3"):
        transfer.draw_labelled(labels, 2, 4, draws=1)


@pytest.mark.parametrize("source, target, same, message", [
    ((0, 1, 2), (2, 3), True, r"overlap in \[2\]"),
    ((), (3, 4), True, r"source_classes=\(\) must hold at least 2"),
    ((0, 1), (5,), True, r"target_classes=\(5,\) must hold at least 2"),
    ((0, 1), (5, 5), True, "repeats"),
    ((0, 10), (5, 6), True, "class 10 is not in 0..9"),
])
def test_bad_class_splits_name_the_value(source, target, same, message):
    with pytest.raises(ValueError, match=message):
        transfer.check_split(source, target, same)


def test_the_same_classes_of_two_data_sets_are_a_valid_split():
    transfer.check_split(range(10), range(10), same_data=False)
    with pytest.raises(ValueError, match="different input sizes"):
        transfer.load_split("cifar10", "mnist", None, (0, 1), (0, 1))


def test_gaussian_split_relabels_each_side_and_holds_out_unseen_points():
    src, tgt = transfer.load_split("gaussian", "gaussian", None, (3, 1), (7, 0, 4),
                                   source_per_class=6, target_test_per_class=2, input_dim=5)
    assert src.classes == (3, 1) and tgt.classes == (7, 0, 4)
    assert np.array_equal(np.bincount(src.y_train), [6, 6])
    assert np.array_equal(np.bincount(src.y_test), [6, 6])
    assert np.array_equal(np.bincount(tgt.y_train), [6, 6, 6])
    assert np.array_equal(np.bincount(tgt.y_test), [2, 2, 2])
    rows = {tuple(r) for r in np.vstack([src.x_train, src.x_test, tgt.x_train, tgt.x_test])}
    assert len(rows) == 12 + 12 + 18 + 6  # no point is used twice
    # held-out points of class 7 lie near its training mean (noise 0.1), far from class 0's
    mu = [tgt.x_train[tgt.y_train == k].mean(0) for k in range(3)]
    own = np.linalg.norm(tgt.x_test[tgt.y_test == 0] - mu[0], axis=1)
    other = np.linalg.norm(tgt.x_test[tgt.y_test == 0] - mu[1], axis=1)
    assert np.all(own < 0.5) and np.all(other > 1.0)


def test_head_config_is_a_depth_sweep_with_the_backbone_at_layer_b():
    cfg = transfer.head_config(BASE, 3, (0, 2, 5), "linear", 4)
    assert (cfg.model, cfg.depths, cfg.num_nonlinear, cfg.num_classes) == ("hybrid", (4, 6, 9),
                                                                           3, 4)
    assert transfer.head_config(BASE, 3, (1,), "nonlinear", 4).model == "mlp"
    with pytest.raises(ValueError, match="head_depths"):
        transfer.head_config(BASE, 3, (0, -1), "linear", 4)


# ----------------------------------------------------------------------------- the backbone


def _backbone_numpy(params, stats, x, b):
    """h_b by hand: b blocks x W^T -> BatchNorm with the running statistics -> ReLU."""
    h = np.asarray(x, np.float64)
    for j in range(b):
        z = h @ np.asarray(params["layers"][j]["kernel"][...], np.float64)
        norm, run = params["norms"][j], stats["norms"][j]
        z = ((z - np.asarray(run["mean"][...])) / np.sqrt(np.asarray(run["var"][...]) + 1e-5)
             * np.asarray(norm["scale"][...]) + np.asarray(norm["bias"][...]))
        h = np.maximum(z, 0.0)
    return h


def _perturb(state, which, seed):
    """``state`` with every parameter and BatchNorm statistic whose path satisfies ``which``
    moved by a random amount."""
    rng = np.random.default_rng(seed)

    def move(path, leaf):
        if not which(jax.tree_util.keystr(path)):
            return leaf
        return leaf + np.abs(rng.standard_normal(np.shape(leaf))).astype(leaf.dtype)

    return state._replace(params=jax.tree_util.tree_map_with_path(move, state.params),
                          stats=jax.tree_util.tree_map_with_path(move, state.stats))


@pytest.fixture(scope="module")
def trained():
    """b = 2, nonlinear head h in {0, 2}, 2 seeds, one padded program."""
    b = 2
    src, tgt = transfer.load_split("gaussian", "gaussian", None, (0, 1, 2), (5, 6, 7),
                                   source_per_class=10, input_dim=12)
    cfg = transfer.head_config(BASE, b, (0, 2), "nonlinear", 3)
    records, states = run_sweep(cfg, src.x_train, src.y_train, progress=False,
                                depth_strategy="pad")
    labelled = transfer.draw_labelled(tgt.y_train, 3, 2, draws=3, seed=1)
    return cfg, b, src, tgt, records, states, labelled


def _records(trained, states):
    cfg, b, src, tgt, records, _, labelled = trained
    return transfer.transfer_records(cfg, b, src, tgt, records, states, labelled,
                                     probe_settings=PROBE, batch=7)


BACKBONE_KEYS = ("transfer_accuracy", "transfer_accuracy_draws", "layer_probe_accuracy",
                 "backbone_compression_source", "backbone_compression_target",
                 "backbone_discrimination_target", "backbone_nc1_source", "backbone_nc1_target")


def test_records_are_the_probe_and_metrics_of_a_numpy_forward_pass_of_the_backbone(trained):
    cfg, b, src, tgt, records, states, labelled = trained
    runs = _records(trained, states)
    assert [(r["head_depth"], r["seed"], r["depth"]) for r in runs] == [
        (0, 0, 3), (0, 1, 3), (2, 0, 5), (2, 1, 5)]
    (group, state), = states.items()
    assert group == (3, 5)
    y_lab = np.repeat(np.arange(3), 2)
    h_lab, h_test = [], []
    for i, rec in enumerate(runs):
        params = jax.tree.map(lambda a: a[i], state.params)  # noqa: B023
        stats = jax.tree.map(lambda a: a[i], state.stats)  # noqa: B023
        h_src = _backbone_numpy(params, stats, src.x_train, b)
        h_tgt = _backbone_numpy(params, stats, tgt.x_test, b)
        assert rec["backbone_compression_source"] == pytest.approx(
            float(metrics.compression(h_src, src.y_train, 3)), rel=1e-5)
        assert rec["backbone_compression_target"] == pytest.approx(
            float(metrics.compression(h_tgt, tgt.y_test, 3)), rel=1e-5)
        assert rec["backbone_discrimination_target"] == pytest.approx(
            float(metrics.discrimination(h_tgt, tgt.y_test, 3)), rel=1e-5, abs=1e-7)
        assert rec["backbone_nc1_target"] == pytest.approx(
            float(metrics.nc1(h_tgt, tgt.y_test, 3)), rel=1e-5)
        h_lab += [_backbone_numpy(params, stats, tgt.x_train[row], b) for row in labelled]
        h_test += [h_tgt] * len(labelled)
        assert len(rec["layer_probe_accuracy"]) == b + 1
        assert rec["layer_probe_accuracy"][b] == rec["transfer_accuracy"]
        assert rec["source_train_accuracy"] == records[i]["train_accuracy"]
    ref = probe.fit_probes(np.stack(h_lab), y_lab, np.stack(h_test), tgt.y_test, 3,
                           steps=PROBE.steps, lr=PROBE.lr)["test_accuracy"].reshape(4, -1)
    for rec, acc in zip(runs, ref, strict=True):
        assert rec["transfer_accuracy_draws"] == pytest.approx(acc, abs=1e-12)
        assert rec["transfer_accuracy"] == pytest.approx(acc.mean())
    # layer 0 is the input: the same probe for every model
    assert len({r["layer_probe_accuracy"][0] for r in runs}) == 1


def test_the_probe_sees_only_the_backbone(trained):
    """Moving head and classifier weights (and the head's BatchNorm) changes nothing measured on
    the backbone; moving a backbone weight does."""
    b, states = trained[1], trained[5]
    before = _records(trained, states)
    head = lambda k: k.startswith("['classifier']") or any(  # noqa: E731
        k.startswith(f"['{part}'][{j}]") for part in ("layers", "norms") for j in range(b, 5))
    moved = {g: _perturb(s, head, 0) for g, s in states.items()}
    after = _records(trained, moved)
    for r0, r1 in zip(before, after, strict=True):
        for key in BACKBONE_KEYS:
            assert r1[key] == r0[key], key
    assert [r["source_test_accuracy"] for r in after] != [r["source_test_accuracy"]
                                                          for r in before]
    backbone = {g: _perturb(s, lambda k: k.startswith("['layers'][1]"), 1)
                for g, s in states.items()}
    changed = _records(trained, backbone)
    for key in ("backbone_compression_source", "backbone_compression_target"):
        assert all(r1[key] != r0[key] for r0, r1 in zip(before, changed, strict=True)), key
    assert [r["layer_probe_accuracy"][1] for r in changed] == [
        r["layer_probe_accuracy"][1] for r in before]  # layer 1 is below the moved W_2


# ----------------------------------------------------------------------------- statistics


def _run(h, seed, acc, c, status="ok"):
    return {"head_depth": h, "seed": seed, "status": status, "transfer_accuracy": acc,
            "layer_probe_accuracy": [0.5, acc], **{k: c for k in transfer.STAT_KEYS
                                                   if k != "transfer_accuracy"}}


def test_statistics_and_verdict_by_hand():
    runs = [_run(0, 0, 0.60, 0.01), _run(0, 1, 0.64, 0.03), _run(1, 0, 0.7, 0.1),
            _run(2, 0, 0.70, 0.2), _run(2, 1, 0.72, 0.4), _run(2, 2, 0.1, 9.0, "diverged"),
            _run(3, 0, 0.66, 0.5), _run(3, 1, 0.66, 0.7)]
    rows = transfer.head_depth_stats(runs)
    assert [(r["head_depth"], r["ok"], r["seeds"]) for r in rows] == [
        (0, 2, 2), (1, 1, 1), (2, 2, 3), (3, 2, 2)]
    assert rows[2]["transfer_accuracy"] == pytest.approx(0.71)
    assert rows[2]["transfer_accuracy_std"] == pytest.approx(np.std([0.70, 0.72], ddof=1))
    assert rows[1]["transfer_accuracy_std"] is None
    assert rows[3]["layer_probe_accuracy"] == pytest.approx([0.5, 0.66])
    v = transfer.verdict(rows)
    assert v["best_h"] == 2 and v["increase"] == pytest.approx(0.71 - 0.62)
    assert v["spread"] == pytest.approx(np.std([0.60, 0.64], ddof=1))
    assert v["exceeds_spread"] is True
    assert v["compression_source_increases"] is True  # 0.02, 0.1, 0.3, 0.6
    assert v["compression_source_spearman"] == pytest.approx(1.0)
    flat = transfer.verdict(transfer.head_depth_stats(
        [_run(0, 0, 0.60, 0.3), _run(0, 1, 0.70, 0.2), _run(2, 0, 0.66, 0.1),
         _run(2, 1, 0.67, 0.4)]))
    assert flat["exceeds_spread"] is False and flat["compression_source_increases"] is False


# ----------------------------------------------------------------------------- the command

# as TINY["transfer"] of tests/test_experiments.py: the persistent compilation cache serves both
TINY = ["--dataset", "gaussian", "--input-dim", "12", "--samples-per-class", "10", "--width",
        "10", "--backbone-depth", "1", "--head-depths", "0,2", "--seeds", "2", "--epochs", "10",
        "--batch-size", "0", "--lr", "0.05", "--loss-scale", "1", "--target-per-class", "2",
        "--target-draws", "2", "--probe-steps", "10", "--no-progress"]


@pytest.mark.slow
def test_tiny_synthetic_run_writes_its_files(tmp_path):
    out = tmp_path / "run"
    results = experiment.main(["--workdir", str(out), *TINY])
    for name in ("config.json", "results.json", "summary.md", "transfer.png", "timings.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert [(r["head_depth"], r["seed"]) for r in saved["runs"]] == [(0, 0), (0, 1), (2, 0),
                                                                      (2, 1)]
    assert saved["source"]["classes"] == [0, 1, 2, 3, 4]
    assert saved["target"] == {"dataset": "gaussian", "classes": [5, 6, 7, 8, 9],
                               "num_pool": 50, "num_test": 50, "labelled_per_class": 2,
                               "draws": 2}
    train = json.loads((out / "config.json").read_text())["config"]["train"]
    assert (train["model"], train["depths"], train["num_nonlinear"]) == ("mlp", [2, 4], 1)
    assert "Transfer: h = 0 gives" in (out / "summary.md").read_text()


def test_settings_record_the_network_they_train_and_reverse_swaps_the_sides():
    s = dataclasses.replace(experiment.Settings(), reverse=True, target_classes=(5, 6, 7),
                            head="linear", backbone_depth=3, head_depths=(1, 4))
    assert s.split() == ("mnist10k", (5, 6, 7), "mnist10k", (0, 1, 2, 3, 4))
    assert (s.train.model, s.train.depths, s.train.num_nonlinear, s.train.num_classes) == (
        "hybrid", (5, 8), 3, 3)
    assert dataclasses.replace(s) == s  # idempotent: a re-run from config.json trains the same
    f = experiment.fashion_to_mnist()
    assert dataclasses.replace(f, reverse=True).split()[::2] == ("mnist", "fashion_mnist")


@pytest.mark.parametrize("flags, message", [
    (["--target-classes", "4,5,6"], "overlap in [4]"),
    (["--source-classes", ""], "source_classes=() must hold at least 2"),
    (["--head-depths=-1,0"], "h must be >= 0, got head_depths=(-1, 0)"),
    (["--target-per-class", "11"], "target_per_class=11"),
    (["--dataset", "cifar10", "--target-dataset", "mnist"], "different input sizes"),
])
def test_bad_input_exits_2_with_one_line_before_compiling(flags, message, tmp_path, capsys):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["--workdir", str(out), *TINY, *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (out / "config.json").exists()  # the run never started
