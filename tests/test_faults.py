"""Fault injection (issue 11): runs of ``python -m experiments.sweep_depth`` on a tiny grid, in
subprocesses, interrupted (SIGINT, SIGTERM, kill -9 during training or between the writes of
one checkpoint), overwritten, run twice at once, fed bad data; each resume must reproduce the
uninterrupted run's results.json byte for byte, and nothing may lose, mix or fake results.

Faults are injected by a wrapper that patches the library in the child process and then runs the
experiment's ``__main__``: it can kill or signal itself at an epoch or at the k-th file
operation of a checkpoint save, or wait at an epoch for the test to signal it from outside.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# tol 0: every model trains all 200 epochs (10 chunks), none stops early
GRID = ["--depths", "3,4", "--seeds", "2", "--epochs", "200", "--chunk-epochs", "20", "--tol", "0",
        "--no-progress"]

_WRAPPER = r"""
import json, os, signal, sys, time, runpy
from pathlib import Path
spec = json.loads(sys.argv[1])
sys.argv = ["experiments.sweep_depth", *sys.argv[2:]]
import pnc_jax.sweep as sweep
from pnc_jax import checkpoint
try:
    from pnc_jax import signals
except ImportError:  # a version without it: the test is to fail on what the run does
    signals = None
META = getattr(checkpoint, "META", "pnc_meta.json")

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if "chunks" in spec:  # checkpoint after every `chunks` chunks
    sweep.CHECKPOINT_CHUNKS = spec["chunks"]

class Progress(sweep.Progress):
    def update(self, epoch, *args, group=0, **kwargs):
        if epoch == spec.get("at_epoch") and group == spec.get("group", group):
            if spec["fault"] == "kill":
                die()
            if spec["fault"] == "wait":  # for the test to send a signal from outside
                Path(spec["marker"]).write_text(str(os.getpid()))
                for _ in range(1200 if signals else 60):
                    if signals and signals.requested() is not None:
                        break
                    time.sleep(0.05)
            if spec["fault"] == "first":  # die at the first progress report
                die()
        if spec.get("fault") == "first":
            die()
        return super().update(epoch, *args, group=group, **kwargs)

sweep.Progress = Progress
calls = {"rename": 0, "meta": 0}
if spec.get("fault") == "kill_between_renames":  # after old -> .old, before .new -> old
    rename = Path.rename
    def dying_rename(self, target):
        out = rename(self, target)
        if str(target).endswith(".old"):
            calls["rename"] += 1
            if calls["rename"] == spec["count"]:
                die()
        return out
    Path.rename = dying_rename
if spec.get("fault") == "kill_before_meta":  # orbax wrote .new, its pnc_meta.json not yet
    write = checkpoint.atomic_write_text
    def dying_write(path, text):
        if Path(path).name == META:
            calls["meta"] += 1
            if calls["meta"] == spec["count"]:
                die()
        return write(path, text)
    checkpoint.atomic_write_text = dying_write
runpy.run_module("experiments.sweep_depth", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the module's runs (not the user's): a run takes ~4 s
    instead of ~12 s (the cached programs are the same programs: results are identical)."""
    _CACHE["dir"] = str(tmp_path_factory.mktemp("xla_cache"))
    yield
    _CACHE.clear()


_CACHE: dict[str, str] = {}


def _sweep(workdir, *flags, fault: dict | None = None, env=None, wait=True,
           grid=GRID) -> subprocess.CompletedProcess | subprocess.Popen:
    """``python -m experiments.sweep_depth --workdir workdir *flags`` (through the fault
    wrapper when ``fault`` is given); waits for it unless ``wait`` is False."""
    cmd = ([sys.executable, "-c", _WRAPPER, json.dumps(fault)] if fault is not None
           else [sys.executable, "-m", "experiments.sweep_depth"])
    cmd += ["--workdir", str(workdir), *grid, *flags]
    cache = {"PNC_COMPILATION_CACHE": _CACHE["dir"]} if _CACHE else {}
    full_env = dict(os.environ, JAX_PLATFORMS="cpu", **cache, **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=300)


def _ok(out):
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _refused(out, *words):
    """Exit 2 with an error on stderr that holds every one of ``words``."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    err = out.stderr.strip()
    assert err.startswith("error: "), err
    for word in words:
        assert str(word) in err, (word, err)
    return err


def _metrics(path: Path) -> list[str]:
    return sorted((path / "metrics.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """The uninterrupted run every resume must reproduce."""
    path = tmp_path_factory.mktemp("baseline") / "run"
    _ok(_sweep(path))
    return path


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock"))
    return to


# ----------------------------------------------------------------------------- case 1


@pytest.mark.slow
def test_1_overwrite_then_kill_then_resume_never_gives_the_old_models(baseline, tmp_path):
    """Finished run with lr 0.05; --overwrite with the baseline settings, killed before its
    first checkpoint; --resume. Used to exit 0 with the OLD run's models under the new config
    (the old state_group* checkpoints stayed)."""
    run = tmp_path / "run"
    _ok(_sweep(run, "--lr", "0.05"))
    old_results = (run / "results.json").read_bytes()
    killed = _sweep(run, "--overwrite", fault={"fault": "first"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run / "results.json").exists()  # begin() removed every file of the old run
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    _ok(_sweep(run, "--resume"))
    results = (run / "results.json").read_bytes()
    assert results != old_results
    assert results == (baseline / "results.json").read_bytes()
    assert _metrics(run) == _metrics(baseline)


# ----------------------------------------------------------------------------- case 2


def test_2_overwrite_that_fails_validation_keeps_the_finished_run(baseline, tmp_path):
    run = _copy(baseline, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    out = _sweep(run, "--overwrite", "--dataset", "mnist", "--data-dir", tmp_path / "none")
    _refused(out, tmp_path / "none")
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # results.json, metrics.jsonl, config.json... all still there


# ----------------------------------------------------------------------------- case 3


def test_3_one_run_per_work_directory(tmp_path, baseline):
    """A second process is refused (naming the holder); a killed holder leaves no stuck lock;
    a plain re-run into an interrupted run is refused with a hint instead of appending."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pnc_jax.workdir import Workdir; "
         "w = Workdir(sys.argv[1]); print('claimed', flush=True); time.sleep(600)", str(run)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "claimed\n"
        _refused(_sweep(run), "in use by", f"pid {holder.pid} on")
        assert list(run.iterdir()) == [run / ".lock"]
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.communicate()
    from pnc_jax.workdir import Workdir

    Workdir(run).release()  # free again

    interrupted = _copy(baseline, tmp_path / "interrupted")
    (interrupted / "results.json").unlink()
    metrics = (interrupted / "metrics.jsonl").read_bytes()
    _refused(_sweep(interrupted), "unfinished run", "--resume", "--overwrite")
    assert (interrupted / "metrics.jsonl").read_bytes() == metrics


# ----------------------------------------------------------------------------- case 4


def test_4_wrong_data_dir_or_bad_labels_are_errors_naming_them(tmp_path, monkeypatch):
    """mnist10k with a --data-dir or PNC_DATA that does not hold it used to train on the shared
    copy (recording the bogus path); labels outside [0, 10) used to be dropped silently."""
    tiny = ["--dataset", "mnist10k", "--num-classes", "10", "--samples-per-class", "3",
            "--depths", "3", "--seeds", "1", "--epochs", "20", "--width", "16", "--no-progress"]
    wrong = tmp_path / "nonexistent" / "x"
    out = _sweep(tmp_path / "a", "--data-dir", wrong, grid=tiny)
    _refused(out, wrong / "mnist10k.npz")
    out = _sweep(tmp_path / "b", grid=tiny, env={"PNC_DATA": str(wrong)})
    _refused(out, wrong / "mnist10k.npz")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 10)
    labels[[3, 50, 77]] = [10, -1, 12]
    np.savez(tmp_path / "mnist10k.npz", labels=labels,
             images=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8))
    out = _sweep(tmp_path / "c", "--data-dir", tmp_path, grid=tiny)
    _refused(out, tmp_path / "mnist10k.npz", "3 of 100 labels outside [0, 10)")
    for name in "abc":
        assert not (tmp_path / name / "config.json").exists()


# ----------------------------------------------------------------------------- case 7


def test_7_load_run_only_reads_and_names_the_file(baseline, tmp_path):
    import jax

    from pnc_jax.sweep import load_run

    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_run(missing, 3, 0)
    assert not missing.exists()

    run = _copy(baseline, tmp_path / "run")
    files = sorted(run.rglob("*"))
    for p in [run, *files]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = {p: os.stat(p).st_mtime_ns for p in [run, *files]}
    try:
        model = load_run(run, 4, 1)  # a read-only work directory is fine
        assert len(jax.tree.leaves(model)) > 0
        assert sorted(run.rglob("*")) == files
        assert {p: os.stat(p).st_mtime_ns for p in [run, *files]} == before
    finally:
        for p in [run, *files]:
            p.chmod(0o755 if p.is_dir() else 0o644)

    config = run / "config.json"
    good = config.read_bytes()
    saved = json.loads(good)
    for content in (b"\xff\xfe\x00", b'{"config": ', b"[]",
                    json.dumps({**saved, "data": None}).encode(),
                    json.dumps({k: v for k, v in saved.items() if k != "data"}).encode()):
        config.write_bytes(content)
        with pytest.raises(ValueError, match=str(config)):
            load_run(run, 3, 0)
    config.write_bytes(good)
    ckpt = run / "checkpoints" / "final_group0"
    for p in ckpt.rglob("*"):
        if p.is_file() and p.name != "pnc_meta.json":
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # truncated
    with pytest.raises(ValueError, match=f"checkpoint {ckpt}"):
        load_run(run, 3, 0)


# ----------------------------------------------------------------------------- case 8


def _interrupt_from_outside(run: Path, sig: int, epoch: int, *flags) -> str:
    """Run until depth group 0 reports ``epoch``, send ``sig`` from here, return stderr."""
    marker = run.parent / f"{run.name}.at_epoch"
    marker.unlink(missing_ok=True)
    proc = _sweep(run, *flags, fault={"fault": "wait", "at_epoch": epoch, "group": 0,
                                      "marker": str(marker), "chunks": 2}, wait=False)
    try:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the run never reached the epoch"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 128 + sig, err[-3000:]
    return err


def test_8_sigint_and_sigterm_checkpoint_exit_130_143_and_resume_identically(
        baseline, tmp_path):
    """SIGINT, then SIGTERM (what schedulers send before killing a job) on the resumed run:
    each saves a checkpoint, prints one line saying how to resume, exits 130 / 143; the last
    resume gives the uninterrupted run's results.json byte for byte."""
    run = tmp_path / "run"
    err = _interrupt_from_outside(run, signal.SIGINT, 60)
    assert err.strip() == "interrupted by SIGINT: checkpoints saved; continue with --resume"
    assert (run / "checkpoints" / "state_group0" / "pnc_meta.json").exists()
    assert not (run / "results.json").exists()
    err = _interrupt_from_outside(run, signal.SIGTERM, 140, "--resume")
    assert err.strip() == "interrupted by SIGTERM: checkpoints saved; continue with --resume"
    _ok(_sweep(run, "--resume"))
    assert (run / "results.json").read_bytes() == (baseline / "results.json").read_bytes()
    assert _metrics(run) == _metrics(baseline)


# ----------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill_9_between_the_writes_of_a_checkpoint_and_in_training_then_resume(
        baseline, tmp_path):
    """kill -9 (1) after a checkpoint's old copy was renamed aside and before the new one took
    its name, (2) after orbax wrote the new copy and before it was marked complete, (3) in
    training between checkpoints; each resume continues from what is readable and the last
    one reproduces the uninterrupted results.json byte for byte."""
    run = tmp_path / "run"
    out = _sweep(run, fault={"fault": "kill_between_renames", "count": 3, "chunks": 1})
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    names = {p.name for p in (run / "checkpoints").iterdir()}
    cut = [n for n in names if n.endswith(".old") and n[:-4] + ".new" in names]
    assert cut and cut[0][:-4] not in names, names  # died between the two renames

    out = _sweep(run, "--resume", fault={"fault": "kill_before_meta", "count": 4, "chunks": 1})
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    incomplete = [p for p in (run / "checkpoints").iterdir()
                  if p.name.endswith(".new") and not (p / "pnc_meta.json").exists()]
    assert incomplete, sorted(p.name for p in (run / "checkpoints").iterdir())

    out = _sweep(run, "--resume", fault={"fault": "kill", "at_epoch": 180, "chunks": 4})
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["epoch"] for r in rows) == 179  # logged past the last checkpoint (epoch 160)

    _ok(_sweep(run, "--resume"))
    assert (run / "results.json").read_bytes() == (baseline / "results.json").read_bytes()
    assert _metrics(run) == _metrics(baseline)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "final_group0", "final_group1", "state_group0", "state_group1"]


def test_resume_refuses_a_checkpoint_of_another_run(baseline, tmp_path):
    """The same config.json but a checkpoint of other settings or data (a copied checkpoints
    folder, a changed data file...): its fingerprint refuses it, naming it, before training."""
    run = _copy(baseline, tmp_path / "run")
    (run / "results.json").unlink()
    meta = run / "checkpoints" / "state_group1" / "pnc_meta.json"
    meta.write_text(json.dumps({"fingerprint": "0" * 64}))
    out = _sweep(run, "--resume")
    assert out.returncode != 0
    assert f"checkpoint {meta.parent} belongs to another run" in out.stderr
    assert not (run / "results.json").exists()
