"""The README's "Use in your own JAX project" example runs (x64 off, tiny settings) and the
README shows its code verbatim."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "own_project.py"


def _readme_parts(source: str) -> list[str]:
    parts = re.findall(r"# --- README: begin\n(.*?)\s*# --- README: end", source, re.S)
    return [textwrap.dedent(p).strip() for p in parts]


def test_readme_shows_the_example_verbatim():
    parts = _readme_parts(EXAMPLE.read_text())
    assert len(parts) == 2
    readme = (REPO / "README.md").read_text()
    for part in parts:
        assert part in readme, part[:200]


def test_example_runs_without_x64(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "XLA_FLAGS")}
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path / "fig.png"), "--epochs", "3",
         "--steps", "5"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln.strip()}
    c = np.array(lines["compression"].split("[", 1)[1].rstrip("]").split(), float)
    assert c.shape == (6,) and np.all(np.isfinite(c)) and np.all(c > 0)
    ratio = float(lines["ratio"].split()[1])
    assert 0 < ratio < 10
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
