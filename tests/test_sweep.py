"""run_sweep: records in cfg.runs() order, checked against numpy measurements of the returned
weights; pad == group; divergence; a 4-device sharded run == one device; bad data; checkpoints
and resume."""

import dataclasses
import functools
import json
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import jax
import numpy as np
import pytest

import pnc_jax.sweep as sweep_module
from pnc_jax import checkpoint
from pnc_jax.config import Config
from pnc_jax.data import nearly_orthonormal
from pnc_jax.models import weight_matrices
from pnc_jax.progress import Progress
from pnc_jax.sweep import depth_groups, run_sweep
from pnc_jax.train import make_trainer
from pnc_jax.workdir import Workdir

REPO = Path(__file__).resolve().parents[1]

TINY = Config(
    input_dim=16, width=16, num_classes=3, samples_per_class=4, depths=(3, 4), seeds=(0, 1),
    init_scale=0.6, loss_scale=2.0, lr=0.05, momentum=0.5, dtype="float64", epochs=20,
    chunk_epochs=10,
)
PER_LAYER = ("compression", "discrimination", "nc1", "fuzziness")
KEYS = {"depth", "seed", "status", "final_loss", "train_accuracy", *PER_LAYER,
        "compression_fit", "discrimination_fit"}


def _data(cfg=TINY):
    return nearly_orthonormal(0, cfg.num_classes, cfg.samples_per_class, cfg.input_dim)


@pytest.fixture(scope="module")
def padded_run(tmp_path_factory):
    """The TINY grid, padded (one program for depths 3 and 4), written to a work directory."""
    wd = Workdir(tmp_path_factory.mktemp("sweep") / "run")
    x, labels = _data()
    records, states = run_sweep(TINY, x, labels, wd, progress=False, depth_strategy="pad")
    return records, states, wd


# ----------------------------------------------------------------------------- numpy references


def _class_means(h, labels, k):
    return np.stack([h[labels == c].mean(0) for c in range(k)])


def _np_metrics(h, labels, k):
    mu = _class_means(h, labels, k)
    n = len(labels)
    resid = h - mu[labels]
    sigma_w = resid.T @ resid / n
    centred = mu - mu.mean(0)
    sigma_b = centred.T @ centred / k
    counts = np.bincount(labels, minlength=k)
    mu_all = h.mean(0)
    ss_b = sum(counts[c] * np.outer(mu[c] - mu_all, mu[c] - mu_all) for c in range(k)) / n
    unit = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    cos = unit @ unit.T
    return {
        "compression": np.trace(sigma_w) / np.trace(sigma_b),
        "discrimination": 1 - cos[~np.eye(k, dtype=bool)].max(),
        "nc1": np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / k,
        "fuzziness": np.trace(sigma_w @ np.linalg.pinv(ss_b, rcond=1e-10, hermitian=True)),
    }


def _np_forward(ws, x):
    feats = [x]
    for w in ws[:-1]:
        feats.append(feats[-1] @ w.T)
    return feats[-1] @ ws[-1].T, feats


def _model(states, group, i):
    return jax.tree.map(lambda a: np.asarray(a)[i], states[group].params)


# ----------------------------------------------------------------------------- records


def test_records_follow_cfg_runs_with_the_results_schema(padded_run):
    records, states, _ = padded_run
    assert [(r["depth"], r["seed"]) for r in records] == TINY.runs()
    assert list(states) == [(3, 4)]
    for rec in records:
        assert KEYS <= set(rec), KEYS - set(rec)
        for name in PER_LAYER:
            assert len(rec[name]) == rec["depth"], name
            assert all(isinstance(v, float) for v in rec[name])
        assert rec["status"] == "ok" and rec["converged"] is False
        assert rec["epochs_trained"] == TINY.epochs
        assert {"ratio", "r2"} <= set(rec["compression_fit"])
        assert {"slope", "r2"} <= set(rec["discrimination_fit"])
    json.dumps(records, allow_nan=False)  # results.json material: plain JSON, no NaN


def test_records_match_numpy_measurements_of_the_returned_weights(padded_run):
    records, states, _ = padded_run
    x, labels = _data()
    y = np.eye(3)[labels]
    final = states[(3, 4)]
    for i, rec in enumerate(records):  # the group's model axis is in cfg.runs() order
        depth = rec["depth"]
        # model i was initialised from PRNGKey(seed) (init splits it: params key, shuffle key)
        assert int(final.depth[i]) == depth
        np.testing.assert_array_equal(final.key[i],
                                      jax.random.split(jax.random.PRNGKey(rec["seed"]))[1])
        ws = [np.asarray(w) for w in weight_matrices(_model(states, (3, 4), i), depth)]
        logits, feats = _np_forward(ws, x)
        np.testing.assert_allclose(
            rec["final_loss"], np.sum((TINY.loss_scale * logits - y) ** 2) / len(labels),
            rtol=1e-10)
        np.testing.assert_allclose(rec["train_accuracy"], np.mean(logits.argmax(1) == labels))
        ref = [_np_metrics(h, labels, 3) for h in feats]
        for name in PER_LAYER:
            np.testing.assert_allclose(rec[name], [r[name] for r in ref], rtol=1e-7,
                                       err_msg=name)
        log_c = np.log(rec["compression"][1:])
        slope, _ = np.polyfit(np.arange(1, depth), log_c, 1)
        np.testing.assert_allclose(rec["compression_fit"]["ratio"], np.exp(slope), rtol=1e-10)
        d_slope, _ = np.polyfit(np.arange(1, depth), rec["discrimination"][1:], 1)
        np.testing.assert_allclose(rec["discrimination_fit"]["slope"], d_slope, rtol=1e-8,
                                   atol=1e-14)
    # the seeds and the depths are different models
    assert records[0]["final_loss"] != records[1]["final_loss"]
    assert records[0]["compression"][1] != records[2]["compression"][1]


def test_group_strategy_gives_the_numbers_of_pad(padded_run):
    """One program per depth (with depth 1 added, which always trains apart) == the padded run."""
    records, _, _ = padded_run
    x, labels = _data()
    cfg = dataclasses.replace(TINY, depths=(1, 3, 4))
    grouped, states = run_sweep(cfg, x, labels, progress=False, depth_strategy="group")
    assert list(states) == [(1,), (3,), (4,)]
    assert [(r["depth"], r["seed"]) for r in grouped] == cfg.runs()
    _assert_same_records(grouped[2:], records, rtol_loss=1e-9, rtol_layers=1e-8)
    # depth 1: f(x) = W_1 x with the classifier's input_dim columns; no layer profile to fit
    y = np.eye(3)[labels]
    for i, one in enumerate(grouped[:2]):
        assert one["depth"] == 1 and len(one["compression"]) == 1
        assert one["compression_fit"] is None and one["discrimination_fit"] is None
        w = np.asarray(states[(1,)].params["classifier"]["kernel"][...])[i].T
        assert w.shape == (3, cfg.input_dim)
        np.testing.assert_allclose(one["final_loss"],
                                   np.sum((cfg.loss_scale * x @ w.T - y) ** 2) / len(labels),
                                   rtol=1e-10)


def test_depths_trained_at_once_on_threads_give_the_sequential_numbers(tmp_path):
    """workers=3 (three depth groups on three host threads) == workers=1: the same records,
    the same metrics.jsonl rows (possibly interleaved) and the same final checkpoints."""
    cfg = dataclasses.replace(TINY, depths=(2, 3, 4))
    x, labels = _data(cfg)
    out = {}
    for workers in (1, 3):
        wd = Workdir(tmp_path / f"w{workers}")
        out[workers] = run_sweep(cfg, x, labels, wd, progress=False, depth_strategy="group",
                                 workers=workers), wd
    (seq, seq_states), seq_wd = out[1]
    (par, par_states), par_wd = out[3]
    assert list(par_states) == list(seq_states) == [(2,), (3,), (4,)]
    assert json.dumps(par) == json.dumps(seq)

    def rows(wd):
        lines = wd.file("metrics.jsonl").read_text().splitlines()
        return sorted(lines, key=lambda ln: (json.loads(ln)["group"], json.loads(ln)["epoch"]))

    assert rows(par_wd) == rows(seq_wd)
    assert len(rows(par_wd)) == 3 * cfg.epochs
    for gi in range(3):
        assert (par_wd.checkpoints / f"final_group{gi}").exists()


def test_one_group_split_over_threads_gives_the_numbers_of_one_thread(tmp_path):
    """6 models padded into one program, split in 4 parts of 2 (padded to 8) on 4 threads ==
    one thread; the checkpoints hold the 6 real models, so the run resumes on one thread."""
    cfg = dataclasses.replace(TINY, seeds=(0, 1, 2))
    x, labels = _data(cfg)
    one, _ = run_sweep(cfg, x, labels, progress=False, depth_strategy="pad", workers=1)
    wd = Workdir(tmp_path / "run")
    four, states = run_sweep(cfg, x, labels, wd, progress=False, depth_strategy="pad",
                             workers=4)
    _assert_same_records(four, one)  # vmapped over 2 models, not 6: rounding may differ
    assert np.asarray(states[(3, 4)].depth).tolist() == [3, 3, 3, 4, 4, 4]
    resumed, again = run_sweep(cfg, x, labels, Workdir(tmp_path / "run", resume=True),
                               resume=True, progress=False, depth_strategy="pad", workers=1)
    _assert_same_records(resumed, four)  # finished: restored as saved, measured again
    jax.tree.map(np.testing.assert_array_equal, again, states)


def _assert_same_records(got, want, rtol_loss=1e-12, rtol_layers=1e-12):
    """The same runs, statuses and epochs; losses, accuracies (``rtol_loss``), per-layer metrics
    and fitted ratios (``rtol_layers``) equal to float rounding."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for key in ("depth", "seed", "status", "converged", "epochs_trained"):
            assert a[key] == b[key], key
        for key in ("final_loss", "train_accuracy"):
            np.testing.assert_allclose(a[key], b[key], rtol=rtol_loss, err_msg=key)
        for key in PER_LAYER:
            np.testing.assert_allclose(a[key], b[key], rtol=rtol_layers, err_msg=key)
        if b["compression_fit"] is None:
            assert a["compression_fit"] is None
        else:
            np.testing.assert_allclose(a["compression_fit"]["ratio"],
                                       b["compression_fit"]["ratio"], rtol=rtol_layers)


def test_thread_plan():
    one, four = types.SimpleNamespace(size=1), types.SimpleNamespace(size=4)
    assert sweep_module.thread_plan(2, [5] * 7, one) == (2, [1] * 7)  # the default grid
    assert sweep_module.thread_plan(2, [25], one) == (1, [2])  # one padded program
    assert sweep_module.thread_plan(16, [5, 5, 40], one) == (3, [5, 5, 5])
    assert sweep_module.thread_plan(3, [1, 8], one) == (2, [1, 1])
    assert sweep_module.thread_plan(8, [25], four) == (1, [1])  # devices already split it
    assert sweep_module.thread_plan(1, [25, 25], one) == (1, [1, 1])


def test_run_all_stops_the_other_workers_when_one_fails():
    """The failing item's error reaches the caller; the others see ``stop`` and end early."""
    seen = []

    def work(item, stop):
        if item == "bad":
            raise _Interrupt("bad item")
        for _ in range(500):  # a long job that checks stop between "chunks"
            if stop.wait(0.01):
                seen.append(item)
                return None
        return item

    with pytest.raises(_Interrupt, match="bad item"):
        sweep_module.run_all(work, ["long", "bad"], workers=2)
    assert seen == ["long"]
    assert sweep_module.run_all(lambda i, stop: i * 2, [1, 2, 3], workers=2) == [2, 4, 6]
    assert sweep_module.run_all(lambda i, stop: i * 2, [1, 2, 3], workers=1) == [2, 4, 6]


def test_depth_groups():
    cfg = dataclasses.replace(TINY, depths=(1, 2, 5))
    assert depth_groups(cfg, "pad") == [(1,), (2, 5)]
    assert depth_groups(cfg, "group") == [(1,), (2,), (5,)]
    assert depth_groups(TINY, "pad") == [(3, 4)]
    expected_auto = "group" if jax.default_backend() == "cpu" else "pad"
    assert depth_groups(cfg, "auto") == depth_groups(cfg, expected_auto)
    with pytest.raises(ValueError, match="depth_strategy='nope'"):
        depth_groups(cfg, "nope")


def test_diverging_model_is_reported_and_the_others_are_fine():
    """alpha=100, xi=0.3, lr 0.1 (Figure 4's optimiser): depth 2 blows up, depth 6 converges."""
    cfg = dataclasses.replace(TINY, depths=(2, 6), seeds=(0, 1), init_scale=0.3,
                              loss_scale=100.0, lr=0.1, momentum=0.0, epochs=400,
                              chunk_epochs=100, tol=1e-11)
    x, labels = _data(cfg)
    records, states = run_sweep(cfg, x, labels, progress=False, depth_strategy="pad")
    for rec in records[:2]:
        assert rec["status"] == "diverged" and rec["converged"] is False
        assert rec["final_loss"] is None
        assert rec["compression_fit"] is None and rec["discrimination_fit"] is None
    for rec in records[2:]:
        assert rec["status"] == "ok" and rec["converged"] is True
        assert rec["final_loss"] < 1e-11 and rec["train_accuracy"] == 1.0
        assert rec["epochs_trained"] < 400
        assert rec["compression_fit"]["r2"] > 0.99
    json.dumps(records, allow_nan=False)


# ----------------------------------------------------------------------------- bad data


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x, y: (x, np.where(y == 2, 3, y)), r"labels must lie in \[0, 3\)"),
        (lambda x, y: (x, np.where(y == 2, -1, y)), r"labels must lie in \[0, 3\)"),
        (lambda x, y: (x, np.where(y == 1, 0, y)), "class 1 has no samples"),
        (lambda x, y: (x[:, 0], y), "x must be 2-D"),
        (lambda x, y: (x[None], y), "x must be 2-D"),
        (lambda x, y: (x, y[:-1]), "labels has N=11"),
        (lambda x, y: (x, y.astype(float)), "integer dtype"),
    ],
    ids=["label too big", "negative label", "empty class", "x 1-D", "x 3-D", "N mismatch",
         "float labels"],
)
def test_bad_data_raises_before_compiling(mutate, match, monkeypatch):
    def no_compile(*a, **k):
        raise AssertionError("compiled before checking the data")

    monkeypatch.setattr(sweep_module, "make_trainer", no_compile)
    x, labels = mutate(*_data())
    with pytest.raises(ValueError, match=match):
        run_sweep(TINY, x, labels, progress=False, depth_strategy="pad")


def test_bad_config_raises():
    x, labels = _data()
    with pytest.raises(ValueError, match="width=2 < num_classes=3"):
        run_sweep(dataclasses.replace(TINY, width=2), x, labels, progress=False)


# ----------------------------------------------------------------------------- work directory


def test_metrics_jsonl_has_one_row_per_epoch(padded_run):
    _, _, wd = padded_run
    rows = [json.loads(line) for line in wd.file("metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(TINY.epochs))
    assert all(r["group"] == 0 and len(r["loss"]) == len(TINY.runs()) for r in rows)
    assert all(all(isinstance(v, float) for v in r["loss"]) for r in rows)


def test_checkpoint_restores_the_final_state(padded_run):
    records, states, wd = padded_run
    path = wd.checkpoints / "state_group0"
    assert path.exists()
    trainer = make_trainer(TINY, TINY.input_dim, 12, max_depth=4)
    like = jax.eval_shape(jax.vmap(trainer.init), jax.ShapeDtypeStruct((4, 2), np.uint32),
                          jax.ShapeDtypeStruct((4,), np.int32))
    saved = checkpoint.restore(path, {"state": like, "epoch": 0})
    assert int(saved["epoch"]) == TINY.epochs
    final = states[(3, 4)]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 saved["state"], final)
    assert np.asarray(saved["state"].depth).tolist() == [3, 3, 4, 4]


class _Interrupt(Exception):
    pass


def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(
        padded_run, tmp_path, monkeypatch):
    """Checkpoint after every chunk, die during chunk 2 (epochs 10..19 already logged), resume:
    the restored epoch-10 state trains to the same records and metrics.jsonl."""
    records, _, wd_full = padded_run
    calls = []

    class DyingProgress(Progress):
        def update(self, epoch, *args, **kwargs):
            calls.append(epoch)
            if len(calls) == 2:
                raise _Interrupt

    monkeypatch.setattr(sweep_module, "CHECKPOINT_CHUNKS", 1)
    monkeypatch.setattr(sweep_module, "Progress", DyingProgress)
    x, labels = _data()
    wd = Workdir(tmp_path / "run")
    with pytest.raises(_Interrupt):
        run_sweep(TINY, x, labels, wd, progress=False, depth_strategy="pad")
    assert calls == [10, 20]
    saved = checkpoint.restore(wd.checkpoints / "state_group0",
                               {"state": padded_run[1][(3, 4)], "epoch": 0})
    assert int(saved["epoch"]) == 10
    assert np.asarray(saved["state"].epoch).tolist() == [10] * 4
    assert len(wd.file("metrics.jsonl").read_text().splitlines()) == 20

    monkeypatch.setattr(sweep_module, "Progress", Progress)
    resumed, _ = run_sweep(TINY, x, labels, Workdir(tmp_path / "run", resume=True),
                           resume=True, progress=False, depth_strategy="pad")
    for a, b in zip(records, resumed, strict=True):
        assert a["epochs_trained"] == b["epochs_trained"] == TINY.epochs
        np.testing.assert_allclose(a["final_loss"], b["final_loss"], rtol=1e-12)
        np.testing.assert_allclose(a["compression"], b["compression"], rtol=1e-10)
    full = [json.loads(r) for r in wd_full.file("metrics.jsonl").read_text().splitlines()]
    got = [json.loads(r) for r in wd.file("metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in got] == list(range(TINY.epochs))
    for a, b in zip(full, got, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-12)


def test_resume_after_one_of_two_threaded_groups_fails(tmp_path, monkeypatch):
    """Three depth groups on two threads. Group 2 (depth 4) dies after logging epochs 0..19 (and
    after group 1's first chunk); group 1 (depth 3) is held after its first chunk until the stop
    signal, checkpoints epoch 10 and returns; group 0 (depth 2) starts after the failure and
    returns at once. Resuming gives the uninterrupted run's records and metrics.jsonl rows."""
    cfg = dataclasses.replace(TINY, depths=(2, 3, 4), epochs=40)
    x, labels = _data(cfg)
    full, _ = run_sweep(cfg, x, labels, Workdir(tmp_path / "full"), progress=False,
                        depth_strategy="group", workers=2)
    stop = threading.Event()  # run_sweep's stop signal, seen by the test
    run_all = sweep_module.run_all
    monkeypatch.setattr(sweep_module, "run_all", functools.partial(run_all, stop=stop))

    group1_logged = threading.Event()

    class DyingProgress(Progress):
        def update(self, epoch, *args, group=0, **kwargs):
            if group == 1 and epoch == 10:
                group1_logged.set()
                assert stop.wait(60), "group 2 never failed"
            if group == 2 and epoch == 20:
                assert group1_logged.wait(60), "group 1 never trained"
                raise _Interrupt

    monkeypatch.setattr(sweep_module, "CHECKPOINT_CHUNKS", 10**9)  # saves only on stop and end
    monkeypatch.setattr(sweep_module, "Progress", DyingProgress)
    wd = Workdir(tmp_path / "run")
    with pytest.raises(_Interrupt):
        run_sweep(cfg, x, labels, wd, progress=False, depth_strategy="group", workers=2)

    def epochs_logged(wd, gi):
        rows = [json.loads(r) for r in wd.file("metrics.jsonl").read_text().splitlines()]
        return sorted(r["epoch"] for r in rows if r["group"] == gi)

    assert [epochs_logged(wd, gi) for gi in range(3)] == [[], list(range(10)), list(range(20))]
    assert sorted(p.name for p in wd.checkpoints.iterdir()) == ["state_group1"]
    trainer = make_trainer(cfg, cfg.input_dim, 12, max_depth=3)
    like = jax.eval_shape(jax.vmap(trainer.init), jax.ShapeDtypeStruct((2, 2), np.uint32),
                          jax.ShapeDtypeStruct((2,), np.int32))
    saved = checkpoint.restore(wd.checkpoints / "state_group1", {"state": like, "epoch": 0})
    assert int(saved["epoch"]) == 10 and np.asarray(saved["state"].epoch).tolist() == [10, 10]

    monkeypatch.setattr(sweep_module, "Progress", Progress)
    monkeypatch.setattr(sweep_module, "run_all", run_all)
    resumed, _ = run_sweep(cfg, x, labels, Workdir(tmp_path / "run", resume=True), resume=True,
                           progress=False, depth_strategy="group", workers=2)
    assert json.dumps(resumed) == json.dumps(full)
    for gi in range(3):
        assert epochs_logged(wd, gi) == list(range(cfg.epochs))
    rows = sorted(wd.file("metrics.jsonl").read_text().splitlines())
    assert rows == sorted((tmp_path / "full" / "metrics.jsonl").read_text().splitlines())


# ----------------------------------------------------------------------------- sharding

_SHARDED_SCRIPT = """
import json, sys
from pnc_jax.xla_cpu import avoid_cpu_deadlock
avoid_cpu_deadlock()  # first: appends the XLA deadlock flags to XLA_FLAGS
import jax
jax.config.update("jax_enable_x64", True)
from pnc_jax.config import Config, from_json
from pnc_jax.data import nearly_orthonormal
from pnc_jax.sweep import run_sweep
assert len(jax.devices()) == 4, jax.devices()
cfg = from_json(Config(), json.loads(sys.argv[1]))
x, labels = nearly_orthonormal(0, cfg.num_classes, cfg.samples_per_class, cfg.input_dim)
records, _ = run_sweep(cfg, x, labels, progress=False, depth_strategy="pad")
print("RECORDS" + json.dumps(records))
"""


@pytest.mark.slow
def test_sharded_sweep_over_four_devices_equals_one_device(tmp_path):
    """5 models (depths 2..6) padded to 8 across 4 CPU devices, in a subprocess."""
    cfg = dataclasses.replace(TINY, depths=(2, 3, 4, 5, 6), seeds=(0,))
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_json().items()}
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED_SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(script), json.dumps(fields)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RECORDS"))
    sharded = json.loads(line[len("RECORDS"):])

    x, labels = _data(cfg)
    single, _ = run_sweep(cfg, x, labels, progress=False, depth_strategy="pad")
    assert len(sharded) == len(single) == 5
    _assert_same_records(sharded, single, rtol_loss=1e-9, rtol_layers=1e-8)
