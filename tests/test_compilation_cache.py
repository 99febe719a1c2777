"""The persistent compilation cache: where it lives, that experiments fill it, that it can be
turned off, and that a warm re-run gives the same results (in a fresh process)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pnc_jax import compilation_cache

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--depths", "3", "--seeds", "2", "--epochs", "30", "--chunk-epochs", "10",
        "--no-progress"]


def test_resolve_flag_environment_default(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.resolve() == tmp_path / "xdg" / "pnc_jax" / "xla"
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "env"))
    assert compilation_cache.resolve() == tmp_path / "env"
    assert compilation_cache.resolve(str(tmp_path / "flag")) == tmp_path / "flag"
    for off in ("off", "OFF", "0", "none"):
        assert compilation_cache.resolve(off) is None
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.resolve() is None


def test_uncreatable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot be created"):
        compilation_cache.enable(str(blocker / "cache"))


def _run(workdir, cache):
    env = dict(os.environ, PNC_COMPILATION_CACHE=str(cache))
    subprocess.run([sys.executable, "-m", "experiments.sweep_depth", "--workdir", str(workdir),
                    *TINY], env=env, check=True, cwd=ROOT, capture_output=True, timeout=300)


@pytest.mark.slow
def test_a_warm_rerun_reads_the_cache_and_gives_the_same_results(tmp_path):
    cache = tmp_path / "cache"
    _run(tmp_path / "cold", cache)
    entries = {p.name for p in cache.iterdir()}
    assert entries  # the programs were stored
    _run(tmp_path / "warm", cache)
    assert {p.name for p in cache.iterdir()} == entries  # nothing compiled anew
    assert ((tmp_path / "warm/results.json").read_bytes()
            == (tmp_path / "cold/results.json").read_bytes())
    _run(tmp_path / "off", "off")
    assert {p.name for p in cache.iterdir()} == entries
