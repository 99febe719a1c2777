"""Workdir (claim, state checks before compute, begin: resume check / overwrite, children,
read-only access, atomic writes, resumable metrics) and the atomic, fingerprinted orbax
checkpoints. End-to-end faults (kill -9, signals, two processes): test_faults.py."""

import json
import os
import subprocess
import sys
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


def test_new_workdir_is_created_claimed_and_probe_removed(tmp_path):
    wd = Workdir(tmp_path / "a" / "b")
    assert wd.path.is_dir() and wd.path.is_absolute()
    assert [p.name for p in wd.path.iterdir()] == [".lock"]
    assert wd.file(".lock").read_text().startswith(f"pid {os.getpid()} on ")
    assert wd.checkpoints == wd.path / "checkpoints"
    assert wd.state() == "empty"


def _old_run(path: Path) -> dict[str, str]:
    """A finished run's files, sub-run folders and checkpoints included: {relative path: text}."""
    files = {"config.json": '{"config": {"lr": 0.1}}\n', "results.json": "[]\n",
             "metrics.jsonl": '{"epoch": 0, "loss": [1.0]}\n', "summary.md": "# old\n",
             "compression.png": "png", "checkpoints/state_group0/x": "ckpt",
             "checkpoints/final_group0.new/y": "partial", "mlp/metrics.jsonl": "{}\n",
             "sweeps/xi0.3/checkpoints/state_group0/z": "sub ckpt", ".results.json.tmp": "t"}
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return files


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_finished_run_needs_overwrite_or_resume_and_nothing_goes_before_begin(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    old = _old_run(path)
    with pytest.raises(ValueError, match="finished run.*--overwrite"):
        Workdir(path)
    for flags in ({"overwrite": True}, {"resume": True}):
        wd = Workdir(path, **flags)
        assert wd.state() == "finished" and _tree(path) == old  # the constructor deletes nothing
    with pytest.raises(ValueError, match="exclude each other"):
        Workdir(path, overwrite=True, resume=True)


def test_begin_with_overwrite_removes_every_file_of_the_old_run(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    _old_run(path)
    wd = Workdir(path, overwrite=True)
    wd.begin({"lr": 0.05}, data={"n": 3})
    assert sorted(p.name for p in path.iterdir()) == [".lock", "config.json"]
    saved = wd.read_json("config.json")
    assert saved["config"] == {"lr": 0.05} and saved["data"] == {"n": 3}
    with pytest.raises(RuntimeError, match="twice"):
        wd.begin({"lr": 0.05})


def test_overwrite_leaves_a_folder_of_no_run_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    wd = Workdir(tmp_path, overwrite=True)
    wd.begin({"lr": 0.1})
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may delete in read-only folders")
def test_overwrite_refuses_before_touching_an_old_run_it_cannot_remove(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    old = _old_run(path)
    (path / "checkpoints").chmod(0o555)
    try:
        wd = Workdir(path, overwrite=True)
        with pytest.raises(ValueError, match="cannot remove.*checkpoints"):
            wd.begin({"lr": 0.05})
        assert _tree(path) == old
    finally:
        (path / "checkpoints").chmod(0o755)


def test_unfinished_run_needs_resume_or_overwrite(tmp_path):
    for name in ("config.json", "metrics.jsonl", "checkpoints/state_group0/x",
                 "mlp/metrics.jsonl", "sweeps/a/checkpoints/state_group0/x"):
        path = tmp_path / name.replace("/", "_")
        (path / name).parent.mkdir(parents=True)
        (path / name).write_text("{}")
        with pytest.raises(ValueError, match="unfinished run.*--resume.*--overwrite"):
            Workdir(path)
        assert Workdir(path, resume=True).state() == "unfinished"


def test_resume_continues_only_the_same_config_and_facts(tmp_path):
    cfg = Config(depths=(2, 3)).to_json()
    first = Workdir(tmp_path)
    first.begin(cfg, data={"input_dim": 50}, run={"workers": 2})
    first.release()
    # tuples and lists, key order, another `run` (threads...): still the same run
    same = Workdir(tmp_path, resume=True)
    same.begin(dict(reversed(list(cfg.items()))), data={"input_dim": 50}, run={"workers": 1})
    assert same.read_json("config.json")["run"] == {"workers": 1}
    for config, facts, match in (
            (Config(depths=(2, 3), lr=0.05).to_json(), {"data": {"input_dim": 50}},
             r"another config \(lr: 0.1 there, 0.05 now\)"),
            (cfg, {"data": {"input_dim": 40}}, r"another config \(data\)"),
            (cfg, {"data": {"input_dim": 50}, "grid": [1]}, r"another config \(grid\)")):
        with pytest.raises(ValueError, match=match):
            Workdir(tmp_path, resume=True).begin(config, **facts)
    (tmp_path / "config.json").write_text('{"config": [1, 2')  # cut short
    with pytest.raises(ValueError, match=f"{tmp_path / 'config.json'} is not valid JSON"):
        Workdir(tmp_path, resume=True).begin(cfg)


def test_claim_is_shared_in_this_process_and_refused_to_another(tmp_path):
    a = Workdir(tmp_path)
    b = Workdir(tmp_path, resume=True)  # one process: one claim, shared
    script = ("import sys; from pnc_jax.workdir import Workdir\n"
              "try:\n    Workdir(sys.argv[1])\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert f"in use by pid {os.getpid()} on" in out.stdout, out.stderr
    del a, b  # the last Workdir of the folder gone: the claim is free
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_child_shares_the_claim_and_has_no_state_checks(tmp_path):
    wd = Workdir(tmp_path)
    (tmp_path / "sweeps" / "a").mkdir(parents=True)
    (tmp_path / "sweeps" / "a" / "results.json").write_text("[]")  # would stop a Workdir
    sub = wd.child("sweeps/a")
    assert sub.path == tmp_path / "sweeps" / "a" and not sub.file(".lock").exists()
    sub.append_metrics([{"epoch": 0, "loss": [1.0]}])
    sub.write_json("r.json", {"a": 1})
    assert sub.read_json("r.json") == {"a": 1} and sub.checkpoints == sub.path / "checkpoints"
    for bad in ("", "../x", "/tmp/x", "a/../../x"):
        with pytest.raises(ValueError, match="relative path"):
            wd.child(bad)


def test_read_only_access_writes_nothing_and_names_the_file(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        Workdir.read(missing)
    assert not missing.exists()
    run = tmp_path / "run"
    run.mkdir()
    before = os.stat(run).st_mtime_ns
    view = Workdir.read(run)
    with pytest.raises(FileNotFoundError, match=f"{run / 'config.json'} does not exist"):
        view.read_config()
    assert os.stat(run).st_mtime_ns == before and list(run.iterdir()) == []  # nothing made
    for content, match in ((b"\xff\xfe garbage", "cannot be read"), (b"{,}", "not valid JSON"),
                           (b'{"data": 1}', 'no "config" object')):
        (run / "config.json").write_bytes(content)
        with pytest.raises(ValueError, match=match) as info:
            Workdir.read(run).read_config()
        assert str(run / "config.json") in str(info.value)
    assert [p.name for p in run.iterdir()] == ["config.json"]


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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "metrics.jsonl"]


def test_truncate_metrics_drops_a_line_cut_by_a_kill_and_names_a_bad_one(tmp_path):
    wd = Workdir(tmp_path)
    good = '{"epoch": 0, "group": 0, "loss": [1.0]}\n'
    wd.file("metrics.jsonl").write_text(good + '{"epoch": 1, "gr')
    wd.truncate_metrics(5, group=0)
    assert wd.file("metrics.jsonl").read_text() == good
    wd.file("metrics.jsonl").write_text(good + "garbage\n" + good)
    with pytest.raises(ValueError, match="metrics.jsonl, line 2: not a metrics row"):
        wd.truncate_metrics(5, group=0)


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
    net = Network(input_dim=5, width=6, num_classes=3, depth=3, num_blocks=1,
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
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.restore(tmp_path / "nothing", {"a": np.zeros(3)})
    assert not checkpoint.exists(tmp_path / "nothing")


def test_checkpoint_of_another_run_or_damaged_is_refused_by_name(tmp_path):
    path = tmp_path / "state_group0"
    checkpoint.save(path, {"a": np.arange(3.0)}, fingerprint="abc")
    like = {"a": np.zeros(3)}
    np.testing.assert_array_equal(checkpoint.restore(path, like, fingerprint="abc")["a"],
                                  np.arange(3.0))
    with pytest.raises(checkpoint.CheckpointMismatch,
                       match=f"checkpoint {path} belongs to another run"):
        checkpoint.restore(path, like, fingerprint="abd")
    for data in path.rglob("*"):  # damage orbax's files, keep ours
        if data.is_file() and data.name != checkpoint.META:
            data.write_bytes(b"\0garbage")
    with pytest.raises(ValueError, match=f"checkpoint {path} cannot be read"):
        checkpoint.restore(path, like)
    (path / checkpoint.META).unlink()  # as written before fingerprints
    assert checkpoint.exists(path)
    with pytest.raises(checkpoint.CheckpointMismatch,
                       match=f"checkpoint {path} has no {checkpoint.META}"):
        checkpoint.restore(path, like)


class _Crash(BaseException):
    pass


@pytest.mark.parametrize("crash_at", range(6))
def test_checkpoint_save_killed_at_any_step_leaves_a_readable_checkpoint(
        tmp_path, monkeypatch, crash_at):
    """Die at the k-th file operation of a save that replaces an older checkpoint: restore
    gives the old or the new tree, never an error; the next save cleans up."""
    path = tmp_path / "state_group0"
    old, new, like = {"a": np.zeros(3)}, {"a": np.ones(3)}, {"a": np.zeros(3)}
    checkpoint.save(path, old, fingerprint="f")
    calls = []

    def dying(fn):
        def wrapped(*args, **kwargs):
            calls.append(fn.__name__)
            if len(calls) == crash_at + 1:
                raise _Crash
            return fn(*args, **kwargs)
        return wrapped

    # the save's steps: remove leftovers, orbax writes path.new, meta, old -> .old, .new -> path,
    # remove .old
    monkeypatch.setattr(checkpoint, "_remove", dying(checkpoint._remove))
    monkeypatch.setattr(checkpoint, "atomic_write_text", dying(checkpoint.atomic_write_text))
    monkeypatch.setattr(Path, "rename", dying(Path.rename))
    try:
        checkpoint.save(path, new, fingerprint="f")
        finished = True
    except _Crash:
        finished = False
    monkeypatch.undo()
    assert finished == (crash_at >= len(calls))
    got = checkpoint.restore(path, like, fingerprint="f")["a"]
    assert np.array_equal(got, old["a"]) or np.array_equal(got, new["a"]), got
    checkpoint.save(path, {"a": np.full(3, 2.0)}, fingerprint="f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state_group0"]
    np.testing.assert_array_equal(checkpoint.restore(path, like)["a"], [2.0, 2.0, 2.0])


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    """mkstemp creates 0600 files; a results.json must be readable like any other file."""
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
