"""Multi-host runs (issue 15): two processes on 127.0.0.1 joined by ``--distributed`` (one CPU
device each, collectives over gloo) against one process with two devices.

Each run is ``python -m experiments.<name> ... --distributed`` started twice (process ids 0 and
1) on a free port, both bounded by a timeout and both killed if either fails. Checked: both exit
0; process 0 alone writes the work directory (no metrics.jsonl row twice; run with a work
directory per process, as on hosts without a shared file system, process 1's stays absent);
results.json equals the one-process run's to 1e-6 (relative); a run interrupted by SIGTERM on
process 0 stops both processes at one chunk boundary (exit 143) and resumes to those results;
another experiment (theory_vs_practice: sub-runs, a figure) runs the same way. The flags and
environment variables that join the processes fail with one line and exit 2 when incomplete.
"""

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from pnc_jax import cli, sharding

REPO = Path(__file__).resolve().parents[1]
# 2 depth groups of 2 models: one model per device (the jaxlib 0.10 CPU hang needs <= 2)
GRID = ["--depths", "3,4", "--seeds", "2", "--epochs", "60", "--chunk-epochs", "10", "--tol", "0",
        "--no-progress"]
TIMEOUT = 240  # seconds for both processes of one run
GRACE = 30  # seconds for one process to follow the other's failure

# process 0 of an interrupted run: SIGTERM to itself when a group reports this epoch
_SIGTERM_AT = r"""
import os, runpy, signal, sys
epoch, sys.argv = int(sys.argv[1]), ["experiments.sweep_depth", *sys.argv[2:]]
import pnc_jax.sweep as sweep

class Progress(sweep.Progress):
    def update(self, at, *args, **kwargs):
        if at == epoch:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().update(at, *args, **kwargs)

sweep.Progress = Progress
runpy.run_module("experiments.sweep_depth", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.pop("XLA_FLAGS", None)  # set by conftest's avoid_cpu_deadlock; each run sets its own
    return dict(env, JAX_PLATFORMS="cpu", **extra)


def _two_processes(commands: list[list[str]], env_of=None) -> list[subprocess.CompletedProcess]:
    """Run ``commands[i]`` as process i of 2 (``env_of(i, port)`` adds its environment) and
    wait for both, at most TIMEOUT; once one has failed, the other gets GRACE seconds to
    follow. Whatever is left running then is killed (and the test fails)."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as logs:
        files = [(open(Path(logs) / f"{i}.out", "w+"), open(Path(logs) / f"{i}.err", "w+"))
                 for i in range(len(commands))]
        procs = [subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err, text=True,
                                  env=_env(**(env_of(i, port) if env_of else {})))
                 for i, (cmd, (out, err)) in enumerate(zip(commands, files, strict=True))]
        deadline = time.monotonic() + TIMEOUT
        try:
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if any(p.poll() not in (None, 0) for p in procs):
                    deadline = min(deadline, time.monotonic() + GRACE)
                time.sleep(0.1)
        finally:
            late = [i for i, p in enumerate(procs) if p.poll() is None]
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        outs = []
        for cmd, p, (out, err) in zip(commands, procs, files, strict=True):
            out.seek(0), err.seek(0)
            outs.append(subprocess.CompletedProcess(cmd, p.returncode, out.read(), err.read()))
            out.close(), err.close()
    if late:
        pytest.fail(f"process(es) {late} killed, still running: "
                    f"{[(o.returncode, o.stderr[-1500:]) for o in outs]}")
    return outs


def _by_env(i: int, port: int) -> dict:
    """The documented environment variables (jax 0.10 itself reads only the first)."""
    return {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i)}


def _sweep_cmd(workdir: Path, *flags: str, interrupt_at: int | None = None) -> list[str]:
    head = ([sys.executable, "-c", _SIGTERM_AT, str(interrupt_at)] if interrupt_at is not None
            else [sys.executable, "-m", "experiments.sweep_depth"])
    return [*head, "--workdir", str(workdir), *GRID, "--distributed", *flags]


def _ok(outs) -> None:
    for i, out in enumerate(outs):
        assert out.returncode == 0, (i, out.returncode, out.stderr[-3000:])


def _max_rel_diff(a, b, where="results") -> float:
    """The largest |a - b| / max(|a|, |b|) over the numbers of two JSON trees of one shape
    (every other value equal)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        return max([_max_rel_diff(a[k], b[k], f"{where}.{k}") for k in a], default=0.0)
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        return max([_max_rel_diff(u, v, f"{where}[{i}]")
                    for i, (u, v) in enumerate(zip(a, b, strict=True))], default=0.0)
    if isinstance(a, float) and isinstance(b, float):
        scale = max(abs(a), abs(b))
        return 0.0 if scale == 0 else abs(a - b) / scale
    assert a == b, (where, a, b)
    return 0.0


def _metrics_rows(workdir: Path) -> list[tuple[int, int]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["group"], r["epoch"]) for r in rows]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The grid in one process with two (forced) CPU devices: the numbers to reproduce."""
    path = tmp_path_factory.mktemp("one") / "run"
    cmd = [sys.executable, "-m", "experiments.sweep_depth", "--workdir", str(path), *GRID]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                         env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert out.returncode == 0, out.stderr[-3000:]
    return path


def test_two_processes_give_the_results_of_one_process_with_two_devices(one_process, tmp_path):
    """One work directory for both (a shared file system): written by process 0 alone."""
    run = tmp_path / "run"
    outs = _two_processes([_sweep_cmd(run), _sweep_cmd(run)], _by_env)
    _ok(outs)
    assert "wrote" in outs[0].stdout and outs[1].stdout == ""  # process 1 prints nothing
    want = json.loads((one_process / "results.json").read_text())
    got = json.loads((run / "results.json").read_text())
    assert _max_rel_diff(got, want) <= 1e-6
    rows = _metrics_rows(run)
    assert sorted(rows) == [(g, e) for g in (0, 1) for e in range(60)]  # each row once
    record = json.loads((run / "config.json").read_text())
    assert record["run"]["processes"] == 2 and record["run"]["devices"] == 2
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one_process.iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "final_group0", "final_group1", "state_group0", "state_group1"]
    # process 0's verdict on the work directory stops both, with the same line
    outs = _two_processes([_sweep_cmd(run), _sweep_cmd(run)], _by_env)
    for out in outs:
        assert out.returncode == 2, out.stderr[-3000:]
        assert out.stderr.endswith("holds a finished run (results.json); pass --overwrite to "
                                   "replace it\n"), out.stderr[-3000:]


def test_sigterm_to_one_process_stops_both_and_they_resume_to_the_same_results(
        one_process, tmp_path):
    """A work directory per process (hosts without a shared file system): process 1's is never
    made; the resume reads process 0's checkpoints and sends them on."""
    runs = [tmp_path / "host0", tmp_path / "host1"]
    outs = _two_processes([_sweep_cmd(runs[0], interrupt_at=30), _sweep_cmd(runs[1])], _by_env)
    for i, out in enumerate(outs):
        assert out.returncode == 143, (i, out.returncode, out.stderr[-3000:])
        assert "interrupted by SIGTERM: checkpoints saved" in out.stderr, out.stderr[-3000:]
    assert not (runs[0] / "results.json").exists()
    assert max(e for _, e in _metrics_rows(runs[0])) == 29  # stopped at the chunk boundary

    outs = _two_processes([_sweep_cmd(run, "--resume") for run in runs], _by_env)
    _ok(outs)
    assert not runs[1].exists()
    want = json.loads((one_process / "results.json").read_text())
    got = json.loads((runs[0] / "results.json").read_text())
    assert _max_rel_diff(got, want) <= 1e-6
    assert sorted(_metrics_rows(runs[0])) == [(g, e) for g in (0, 1) for e in range(60)]


def test_theory_vs_practice_runs_on_two_processes(tmp_path):
    """Another experiment (a sweep in a sub-run, a figure), joined by the flags instead of the
    environment: the numbers of one process (one device) to 1e-6."""
    import experiments.theory_vs_practice as tvp

    flags = ["--settings", "0.3:10:100", "--depths", "4", "--seeds", "2", "--no-progress"]
    runs = [tmp_path / "host0", tmp_path / "host1"]
    port = _free_port()
    outs = _two_processes([
        [sys.executable, "-m", "experiments.theory_vs_practice", "--workdir", str(run), *flags,
         "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", str(i)] for i, run in enumerate(runs)])
    _ok(outs)
    assert not runs[1].exists()
    assert (runs[0] / "theory_vs_practice.png").is_file()
    assert (runs[0] / "sweeps" / "xi0.3_n10_alpha100" / "metrics.jsonl").is_file()
    tvp.main(["--workdir", str(tmp_path / "one"), *flags])
    want = json.loads((tmp_path / "one" / "results.json").read_text())
    got = json.loads((runs[0] / "results.json").read_text())
    assert _max_rel_diff(got, want) <= 1e-6


# ----------------------------------------------------------------------------- joining


def test_without_processes_to_join_the_cli_says_what_is_missing(tmp_path):
    """Bug 1 of issue 15: ``--distributed`` with no coordinator, count or id anywhere (and no
    cluster for JAX to detect) is one line and exit 2, the work directory untouched."""
    cmd = [sys.executable, "-m", "experiments.template", "--workdir", str(tmp_path / "w"),
           "--distributed"]
    env = {k: v for k, v in _env().items()
           if not k.startswith(("SLURM_", "OMPI_", "KUBERNETES_"))}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: --distributed: no "
                                                                 "--coordinator"), out.stderr
    for word in ("JAX_COORDINATOR_ADDRESS", "--num-processes", "JAX_PROCESS_ID", "SLURM"):
        assert word in out.stderr, word
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("env, flags, words", [
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAX_PROCESS_ID": "0"}, {},
     ["no --num-processes (or JAX_NUM_PROCESSES) given"]),
    ({"JAX_NUM_PROCESSES": "two"}, {}, ["JAX_NUM_PROCESSES='two' is not an integer"]),
    ({"JAX_NUM_PROCESSES": "2"}, {"process_id": 2}, ["process id must be in 0..1, got 2"]),
    ({}, {"num_processes": 0}, ["number of processes must be >= 1, got 0"]),
    ({}, {"coordinator": "localhost"}, ["HOST:PORT, got 'localhost'"]),
])
def test_incomplete_or_bad_process_settings_are_one_line_errors(env, flags, words,
                                                                monkeypatch):
    """Bad values are refused before JAX is asked; what JAX cannot fill in either (its own
    error, from a stand-in here: this process's JAX has started) is named."""
    calls = []

    def initialize(address, n, i):
        calls.append((address, n, i))
        if None in (address, n, i):
            raise ValueError("Number of processes must be defined.")

    monkeypatch.setattr(cli.jax.distributed, "initialize", initialize)
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(cli.UsageError) as error:
        cli.init_distributed(**flags)
    for word in words:
        assert word in str(error.value), (word, str(error.value))
    assert calls == ([("127.0.0.1:1234", None, 0)] if "JAX_PROCESS_ID" in env else [])


def test_flags_win_over_the_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.jax.distributed, "initialize", lambda *a: calls.append(a))
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:99")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "8")
    monkeypatch.setenv("JAX_PROCESS_ID", "5")
    cli.init_distributed(num_processes=4, process_id=3)
    assert calls == [("10.0.0.1:99", 4, 3)]


def test_process_flags_need_distributed(tmp_path, capsys):
    import experiments.template as template

    with pytest.raises(SystemExit) as stop:
        template.main(["--workdir", str(tmp_path / "w"), "--num-processes", "2"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --num-processes is for multi-host runs: add --distributed")
    assert not (tmp_path / "w").exists()


def test_one_process_helpers_are_local_calls():
    """With one process: ``from_writer`` runs and raises as a plain call; ``to_host`` copies;
    ``agree_max`` and ``check_same`` need no other process."""
    def fail():
        raise ValueError("bad value 3")

    with pytest.raises(ValueError, match="bad value 3"):
        sharding.from_writer(fail)
    assert sharding.from_writer(lambda a, b=0: a + b, 2, b=3) == 5
    tree = {"a": np.arange(3.0), "b": [np.int32(4)]}
    host = sharding.to_host(tree)
    assert isinstance(host["a"], np.ndarray) and np.array_equal(host["a"], tree["a"])
    assert sharding.broadcast({"x": 1}) == {"x": 1}
    assert sharding.agree_max(7) == 7 and sharding.is_writer()
    sharding.check_same("anything", "the data")
    assert math.isclose(_max_rel_diff({"a": [1.0, None]}, {"a": [1.0 + 1e-9, None]}), 1e-9,
                        rel_tol=1e-3)
