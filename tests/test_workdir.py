"""Workdir (checks before compute, no clobbering, atomic writes, resumable metrics) and the orbax
checkpoint round trip."""

import json
import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pnc_jax import checkpoint
from pnc_jax.config import Config
from pnc_jax.models import Network
from pnc_jax.workdir import Workdir, atomic_write_text, git_commit, versions

REPO = Path(__file__).resolve().parents[1]


def test_unwritable_workdir_is_a_value_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="not writable"):
        Workdir(blocker / "run")
    with pytest.raises(ValueError, match="not writable"):
        Workdir(blocker)


def test_new_workdir_is_created_and_probe_removed(tmp_path):
    wd = Workdir(tmp_path / "a" / "b")
    assert wd.path.is_dir() and wd.path.is_absolute()
    assert list(wd.path.iterdir()) == []
    assert wd.checkpoints == wd.path / "checkpoints"


def test_finished_run_is_refused_without_overwrite(tmp_path):
    wd = Workdir(tmp_path / "run")
    wd.write_json("results.json", {"runs": []})
    wd.append_metrics([{"epoch": 0, "loss": [1.0]}])
    with pytest.raises(ValueError, match="finished run.*--overwrite"):
        Workdir(tmp_path / "run")
    # resume keeps everything; overwrite drops the results and the metrics log
    Workdir(tmp_path / "run", resume=True)
    assert wd.file("results.json").exists() and wd.file("metrics.jsonl").exists()
    Workdir(tmp_path / "run", overwrite=True)
    assert not wd.file("results.json").exists() and not wd.file("metrics.jsonl").exists()


def test_atomic_write_text_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]

    class Boom:
        def __str__(self):
            raise RuntimeError

    with pytest.raises(TypeError):
        atomic_write_text(path, Boom())  # write() fails half-way: old file intact, temp gone
    assert path.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_json_round_trip(tmp_path):
    wd = Workdir(tmp_path)
    obj = {"runs": [{"depth": 3, "compression": [1.0, 0.5], "fit": None}]}
    wd.write_json("results.json", obj)
    assert wd.read_json("results.json") == obj
    assert wd.file("results.json").read_text().endswith("\n")


def test_truncate_metrics_keeps_earlier_epochs_and_other_groups(tmp_path):
    wd = Workdir(tmp_path)
    wd.truncate_metrics(3, group=0)  # no file yet: nothing to do
    assert not wd.file("metrics.jsonl").exists()
    rows = ([{"epoch": e, "group": 0, "loss": [e]} for e in range(6)]
            + [{"epoch": e, "group": 1, "loss": [10 + e]} for e in range(6)]
            + [{"epoch": 5, "loss": [99]}])  # an old row without a group is group 0
    wd.append_metrics(rows)
    wd.truncate_metrics(3, group=0)
    kept = [json.loads(ln) for ln in wd.file("metrics.jsonl").read_text().splitlines()]
    assert kept == rows[:3] + rows[6:12]
    wd.truncate_metrics(4, group=1)
    kept = [json.loads(ln) for ln in wd.file("metrics.jsonl").read_text().splitlines()]
    assert kept == rows[:3] + rows[6:10]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_config_json_has_versions_and_git_commit(tmp_path):
    wd = Workdir(tmp_path)
    cfg = Config(depths=(2, 3))
    wd.write_config(cfg.to_json(), data={"input_dim": 50, "num_samples": 30})
    saved = wd.read_json("config.json")
    assert {"config", "versions", "git_commit", "command"} <= set(saved)
    assert saved["data"] == {"input_dim": 50, "num_samples": 30}
    assert saved["config"]["depths"] == [2, 3]
    for name in ("python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        assert saved["versions"][name], name
    assert saved["versions"]["jax"] == jax.__version__
    assert versions()["numpy"] == np.__version__


def test_git_commit_is_head_of_this_checkout():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    commit = git_commit()
    assert commit is not None
    assert commit.removesuffix("-dirty") == head.stdout.strip()


# ----------------------------------------------------------------------------- checkpoints


def _network_state(seed):
    net = Network(input_dim=5, width=6, num_classes=3, depth=3, kind="hybrid", num_nonlinear=1,
                  dtype=jnp.float32, rngs=nnx.Rngs(params=jax.random.PRNGKey(seed)))
    return nnx.split(net, nnx.Param, ...)


def test_checkpoint_round_trip_with_an_nnx_state(tmp_path):
    _, params, stats = _network_state(0)
    tree = {"params": params, "stats": stats, "epoch": 17,
            "loss": np.array([0.5, np.inf], np.float64), "key": jax.random.PRNGKey(3)}
    path = tmp_path / "ckpt"
    checkpoint.save(path, tree)
    _, params_like, stats_like = _network_state(1)  # another seed: only shapes/dtypes matter
    like = {"params": params_like, "stats": stats_like, "epoch": 0,
            "loss": np.zeros(2, np.float64), "key": jax.random.PRNGKey(0)}
    got = checkpoint.restore(path, like)
    assert isinstance(got["params"], nnx.State)
    assert jax.tree.structure(got["params"]) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(got["stats"]), jax.tree.leaves(stats), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(got["epoch"]) == 17
    np.testing.assert_array_equal(got["loss"], [0.5, np.inf])
    np.testing.assert_array_equal(got["key"], jax.random.PRNGKey(3))
    # the restored params drive a network exactly like the saved ones
    graphdef, _, _ = _network_state(2)
    x = jnp.ones((4, 5), jnp.float32)
    out = nnx.merge(graphdef, got["params"], got["stats"])(x)[0]
    ref = nnx.merge(graphdef, params, stats)(x)[0]
    np.testing.assert_array_equal(out, ref)


def test_checkpoint_save_overwrites_and_missing_path_raises(tmp_path):
    path = tmp_path / "ckpt"
    checkpoint.save(path, {"a": np.arange(3.0)})
    checkpoint.save(path, {"a": np.arange(3.0) + 1})
    got = checkpoint.restore(path, {"a": np.zeros(3)})
    np.testing.assert_array_equal(got["a"], [1.0, 2.0, 3.0])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.restore(tmp_path / "nothing", {"a": np.zeros(3)})


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    """mkstemp creates 0600 files; a results.json must be readable like any other file."""
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
