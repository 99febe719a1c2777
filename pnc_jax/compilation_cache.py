"""JAX's persistent compilation cache for pnc_jax's own runs: re-running a command, or resuming
one, loads its compiled programs from disk instead of compiling them again.

Where: ``--compilation-cache DIR`` (every experiment), else ``$PNC_COMPILATION_CACHE``, else
``$XDG_CACHE_HOME/pnc_jax/xla`` (default ``~/.cache/pnc_jax/xla``); ``off`` (flag or variable)
disables it. Entries are keyed by JAX on the program, the backend and the compiler flags, so a
changed setting compiles anew and results never depend on the cache (tested: a warm re-run of
``experiments.sweep_depth`` writes the same results.json; measured warm vs cold in
``benchmarks/bench_compile.py``). Library calls from a user's own code never enable it: that is
their process's choice (``jax.config.update("jax_compilation_cache_dir", ...)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "PNC_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false")


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pnc_jax" / "xla"


def resolve(choice: str | None = None) -> Path | None:
    """The cache folder for ``choice`` (a flag value; None: the environment, then the
    default), or None when disabled."""
    choice = choice if choice is not None else os.environ.get(ENV)
    if choice is not None and choice.strip().lower() in OFF:
        return None
    return Path(choice).expanduser().absolute() if choice else default_dir()


def enable(choice: str | None = None) -> Path | None:
    """Use the persistent cache at ``resolve(choice)`` for every program compiled from now on
    (all of them: even sub-second compilations, which are most of a CPU sweep's). Returns the
    folder, or None when disabled. A folder that cannot be created disables the cache with a
    ValueError naming it."""
    from jax.experimental.compilation_cache import compilation_cache

    path = resolve(choice)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"compilation cache folder {path} cannot be created: {e}; pass "
                         f"--compilation-cache off or set {ENV}=off") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()  # take effect even if something compiled already
    return path
