"""A run's work directory: config.json, metrics.jsonl, results.json (atomic), figures, checkpoints.

    workdir/
      .lock            held (flock) by the one process that runs in it; names that process
      config.json      every setting + package versions + git commit + command line
      metrics.jsonl    one line per logged epoch: {"epoch": e, "loss": [loss of every model]}
      results.json     the list of runs with their layerwise metrics and fits; written last
      summary.md       human-readable tables
      *.png            figures (drawn from results.json only)
      checkpoints/     orbax: ``state_group*`` (latest, for --resume), ``final_group*``
      <sub-runs>/      ``Workdir.child``: the same files, per model kind or setting

Guarantees: one run per directory at a time (``Workdir`` claims it; the claim dies with the
process); a finished run (results.json) is never replaced without ``overwrite``, an unfinished one
never continued or appended to without ``resume``; ``overwrite`` deletes nothing until ``begin``
(the new run has validated its settings and loaded its data), which then removes every file of
the old run; ``resume`` continues only the same config and facts; results, config and summaries
are written atomically (a reader sees the old file or the new one, never half of one).

Multi-process runs (``--distributed``): every process constructs the ``Workdir`` (a collective),
and exactly one, process 0, works in the folder: it claims it, checks its state, clears or
resumes it, and every file of the run is written by it alone. The checks' outcome goes to every
process, so all of them run or all refuse with the same one-line error. Every other process gets
a private scratch folder as its ``path`` (deleted when it exits) where its copies of the
experiment's writes land (results, summaries, figures: whatever an experiment writes through
``path`` or ``file``), so no experiment needs code of its own for a multi-host run. The other
processes never touch the work directory, which therefore need not be on a shared file system.
"""

import atexit
import fcntl
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from importlib import metadata
from pathlib import Path

import numpy as np

from pnc_jax import sharding

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "matplotlib")
LOCK_NAME = ".lock"
# config.json keys that describe the process, not the run: not compared on resume
PROCESS_KEYS = ("run", "versions", "git_commit", "command")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0],
                                  "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """HEAD of the checkout holding this package, with "-dirty" if it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty.strip() else "")


def json_float(value):
    """A float for JSON: None for None, NaN or inf; sequences element by element."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim:
        return [json_float(v) for v in arr]
    return float(arr) if np.isfinite(arr) else None


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_file(path: Path):
    """The JSON in ``path``; a missing file is a ``FileNotFoundError`` and anything unreadable
    (not UTF-8, not JSON, truncated) a ``ValueError``, both naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None


def _canonical(obj) -> str:
    """JSON text that two equal configs share (tuples = lists, key order ignored, NaN = NaN)."""
    return json.dumps(obj, sort_keys=True)


# --------------------------------------------------------------------------------------------
# The claim: one process per work directory


class _Claim:
    """An exclusive ``flock`` on ``<dir>/.lock`` for this process. The kernel drops it when the
    process ends, however it ends, so a crashed or killed run never leaves it stuck. Every
    ``Workdir`` of one directory in one process shares one claim; it is released when the last
    of them is gone (or at ``release``)."""

    _held: "weakref.WeakValueDictionary[str, _Claim]" = weakref.WeakValueDictionary()
    _guard = threading.Lock()

    def __init__(self, path: Path):
        self.path = path / LOCK_NAME
        self.file = open(self.path, "a+")  # noqa: SIM115 (held open for the claim's life)
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise ValueError(f"work directory {path} is in use by {holder} "
                             f"(see {self.path}); wait for it to end or choose another "
                             "--workdir") from None
        except OSError as e:  # a file system without locks: run, but say so
            sys.stderr.write(f"warning: cannot lock {self.path} ({e}); nothing stops a second "
                             "run from writing into this work directory\n")
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.file.flush()

    @classmethod
    def get(cls, path: Path) -> "_Claim":
        key = os.path.realpath(path)
        with cls._guard:
            claim = cls._held.get(key)
            if claim is None or claim.file.closed:
                claim = cls(path)
                cls._held[key] = claim
            return claim

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing the descriptor drops the flock

    def __del__(self):
        self.release()


# --------------------------------------------------------------------------------------------


class WorkdirView:
    """Read-only access to a run's files (``Workdir.read``): no folder made, no claim, no write
    test; every error names the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path).absolute()

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def read_json(self, name: str):
        """The JSON file ``name``: ``FileNotFoundError`` / ``ValueError`` naming it."""
        return read_json_file(self.file(name))

    def read_config(self) -> dict:
        """config.json as written by ``Workdir.begin`` (a dict with a "config" entry)."""
        saved = self.read_json("config.json")
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise ValueError(f"{self.file('config.json')} has no \"config\" object: not a "
                             "pnc_jax config.json")
        return saved


class Workdir(WorkdirView):
    """The work directory of the run in this process: claimed, checked before any compute.

    ``Workdir(path)`` makes the folder if needed, checks it is writable, claims it (a second run
    gets a ``ValueError`` naming the holder) and checks its state: a finished run (results.json)
    needs ``overwrite`` or ``resume``; an unfinished one (config.json, metrics or checkpoints but
    no results.json) needs ``resume`` (or ``overwrite`` to start over). It deletes nothing: the
    run calls ``begin`` once its settings are validated and its data loaded.

    In a multi-process run only process 0 (``writer``) does all this; the same error, if any, is
    raised in every process; the others' ``path`` is a private scratch folder (module docstring)
    and ``target`` the work directory of the run in every process.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False):
        super().__init__(path)
        if overwrite and resume:
            raise ValueError("--overwrite (start over) and --resume (continue) exclude each other")
        self.overwrite, self.resume = overwrite, resume
        self._begun = False
        self._claim: _Claim | None = None
        self.target = self.path
        self.writer = sharding.is_writer()
        sharding.from_writer(self._open)
        if not self.writer:
            self.path = _scratch()

    def _open(self) -> None:
        """Make, test, claim and check the folder (process 0 of a multi-process run)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"work directory {self.path} is not writable: {e}") from None
        self._claim = _Claim.get(self.path)
        state = self.state()
        overwrite, resume = self.overwrite, self.resume
        if state == "finished" and not (overwrite or resume):
            raise ValueError(f"{self.path} holds a finished run (results.json); pass --overwrite "
                             "to replace it")
        if state == "unfinished" and not (overwrite or resume):
            raise ValueError(f"{self.path} holds an unfinished run (config.json, metrics or "
                             "checkpoints, no results.json); pass --resume to continue it or "
                             "--overwrite to start over")

    @classmethod
    def read(cls, path: str | Path) -> WorkdirView:
        """Read-only access for tools that only look at a finished or running run."""
        view = WorkdirView(path)
        if not view.path.is_dir():
            raise FileNotFoundError(f"work directory {view.path} does not exist"
                                    if not view.path.exists() else
                                    f"{view.path} is not a directory")
        return view

    def state(self) -> str:
        """"finished" (results.json), "unfinished" (config.json, or metrics.jsonl or checkpoints
        here or in a sub-run folder up to two levels down) or "empty" (nothing of a run)."""
        if self.file("results.json").exists():
            return "finished"
        if self.file("config.json").exists() or any(
                any(self.path.glob(f"{level}{name}"))
                for level in ("", "*/", "*/*/") for name in ("metrics.jsonl", "checkpoints/*")):
            return "unfinished"
        return "empty"

    def child(self, name: str) -> "Workdir":
        """The sub-folder ``name`` (e.g. "mlp" or "sweeps/xi0.3"), covered by this directory's
        claim: no state checks of its own (``begin`` of the parent has cleared or checked it)."""
        rel = Path(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"child work directory {name!r} must be a relative path inside "
                             f"{self.path}")
        sub = Workdir.__new__(Workdir)
        WorkdirView.__init__(sub, self.path / rel)
        sub.overwrite, sub.resume, sub._begun, sub._claim = False, self.resume, True, self._claim
        sub.writer, sub.target = self.writer, self.target / rel
        sub.path.mkdir(parents=True, exist_ok=True)
        return sub

    def release(self) -> None:
        """Give up the claim now (it also goes when every ``Workdir`` of the folder is gone)."""
        if self._claim is not None:
            self._claim.release()

    # ---------------------------------------------------------------------------- begin

    def begin(self, config: dict, *, run: dict | None = None, **facts) -> None:
        """The run has started cleanly (settings validated, data loaded): with ``resume``,
        refuse (``ValueError``) a directory that ran another ``config`` or other ``facts`` (data
        shapes, grid...; anything JSON); with ``overwrite``, remove every file of the old run;
        then write config.json (``write_config``). ``run`` (how this process runs it: threads,
        depth strategy...) is recorded but not compared: checkpoints do not depend on it, and
        their fingerprints catch what does."""
        if self._begun:
            raise RuntimeError(f"Workdir.begin called twice for {self.path}")
        sharding.from_writer(self._begin, config, run, facts)
        self._begun = True

    def _begin(self, config: dict, run: dict | None, facts: dict) -> None:
        if self.resume and self.file("config.json").exists():
            self._check_same_run(config, facts)
        if self.overwrite and self.state() != "empty":  # files of no run are left alone
            self._clear()
        self.write_config(config, **facts, **({} if run is None else {"run": run}))

    def _check_same_run(self, config: dict, facts: dict) -> None:
        saved = self.read_config()
        now = json.loads(_canonical({"config": config, **facts}))
        keys = sorted((set(saved) | set(now)) - set(PROCESS_KEYS))
        differ = [k for k in keys if _canonical(saved.get(k)) != _canonical(now.get(k))]
        if not differ:
            return
        if differ == ["config"]:
            old, new = saved["config"], now["config"]
            fields = sorted(k for k in set(old) | set(new)
                            if _canonical(old.get(k)) != _canonical(new.get(k)))
            what = ", ".join(f"{k}: {_canonical(old.get(k))} there, {_canonical(new.get(k))} now"
                             for k in fields[:4]) + (" ..." if len(fields) > 4 else "")
        else:
            what = ", ".join(differ)
        raise ValueError(f"--resume: {self.path} was run with another config ({what}); see "
                         f"{self.file('config.json')}, or pass --overwrite to start over")

    def _clear(self) -> None:
        """Remove everything but the lock: first check that all of it can be removed (nothing
        is touched otherwise), then move it into one hidden folder and delete that."""
        entries = sorted(p for p in self.path.iterdir() if p.name != LOCK_NAME)
        if not entries:
            return
        for entry in entries:
            _check_removable(entry, self.path)
        trash = Path(tempfile.mkdtemp(prefix=".replaced-", dir=self.path))
        # results.json first: from the first rename on, the directory no longer claims to hold
        # a finished run
        entries.sort(key=lambda p: p.name != "results.json")
        moved: list[Path] = []
        try:
            for entry in entries:
                os.replace(entry, trash / entry.name)
                moved.append(entry)
        except OSError as e:
            for entry in reversed(moved):
                os.replace(trash / entry.name, entry)
            trash.rmdir()
            raise ValueError(f"--overwrite: cannot remove {entry} ({e}); the old run in "
                             f"{self.path} is left as it was") from None
        shutil.rmtree(trash)

    # ---------------------------------------------------------------------------- writes

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.file(name), json.dumps(obj, indent=1) + "\n")

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.file(name), text)

    def write_config(self, config: dict, **extra) -> None:
        """config.json: the settings, ``extra`` facts (data shapes...), versions, git commit."""
        self.write_json("config.json", {
            "config": config, **extra, "versions": versions(), "git_commit": git_commit(),
            "command": " ".join(sys.argv),
        })

    def append_metrics(self, rows: list[dict]) -> None:
        with self.file("metrics.jsonl").open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def truncate_metrics(self, before_epoch: int, group: int = 0) -> None:
        """Drop the metrics.jsonl lines of ``group`` from ``before_epoch`` on (when resuming),
        and a last line cut short by a killed write."""
        path = self.file("metrics.jsonl")
        if not path.exists():
            return
        text = path.read_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()  # half a line: the process died while appending it
        keep = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row.get("group", 0) != group or row["epoch"] < before_epoch:
                    keep.append(line)
            except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
                raise ValueError(f"{path}, line {number}: not a metrics row: {line[:80]!r}"
                                 ) from None
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _scratch() -> Path:
    """A private folder for a process that is not the writer, removed when the process ends."""
    path = Path(tempfile.mkdtemp(prefix=f"pnc_jax-process{sharding.process_index()}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _check_removable(entry: Path, top: Path) -> None:
    """``ValueError`` naming the first folder under ``entry`` whose contents cannot be deleted
    (or ``entry`` itself, a folder that cannot be moved), before anything is removed."""
    if entry.is_symlink() or not entry.is_dir():
        return
    for folder, _, _ in os.walk(entry, onerror=_raise):
        if not os.access(folder, os.W_OK | os.X_OK | os.R_OK):
            raise ValueError(f"--overwrite: cannot remove the old run's files in {folder} "
                             f"(permission denied); the old run in {top} is left as it was")


def _raise(error: OSError) -> None:
    raise ValueError(f"--overwrite: cannot read {error.filename} ({error.strerror}); the old "
                     "run is left as it was")
