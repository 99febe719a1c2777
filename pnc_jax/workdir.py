"""A run's work directory: config.json, metrics.jsonl, results.json (atomic), figures, checkpoints.

    workdir/
      config.json      every setting + package versions + git commit
      metrics.jsonl    one line per logged epoch: {"epoch": e, "loss": [loss of every model]}
      results.json     the list of runs with their layerwise metrics and fits
      summary.md       human-readable tables
      *.png            figures (drawn from results.json only)
      checkpoints/     orbax: ``state`` (latest, for --resume) and ``final`` (final parameters)
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "matplotlib")


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
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


class Workdir:
    """Checks the folder before any compute; refuses to clobber a finished run."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False):
        self.path = Path(path).absolute()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"work directory {self.path} is not writable: {e}") from None
        if self.file("results.json").exists() and not overwrite and not resume:
            raise ValueError(
                f"{self.path} holds a finished run (results.json); pass --overwrite to replace it"
            )
        if overwrite and not resume:
            for name in ("metrics.jsonl", "results.json"):
                self.file(name).unlink(missing_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.file(name), json.dumps(obj, indent=1) + "\n")

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.file(name), text)

    def read_json(self, name: str):
        return json.loads(self.file(name).read_text())

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
        """Drop the metrics.jsonl lines of ``group`` from ``before_epoch`` on (when resuming)."""
        path = self.file("metrics.jsonl")
        if not path.exists():
            return
        rows = [(ln, json.loads(ln)) for ln in path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln, r in rows if r.get("group", 0) != group or r["epoch"] < before_epoch]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))
