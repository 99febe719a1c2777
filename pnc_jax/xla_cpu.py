"""Opt-in workaround for an XLA CPU hang in jaxlib 0.10.x (applied by pnc_jax's own sweeps and CLI,
never on ``import pnc_jax``)."""

from __future__ import annotations

import os
from importlib import metadata

__all__ = ["avoid_cpu_deadlock"]


def avoid_cpu_deadlock() -> None:
    """jaxlib 0.10.x on CPU: a vmapped scan of the sweep (e.g. depths 2..8 x 5 seeds) hangs for
    ever in about half of the runs, every thread idle, under XLA's concurrency-optimised
    scheduler (seen on 2-core machines); turning that scheduler off cures it. With several
    forced host devices (``--xla_force_host_platform_device_count``, used to test sharding) a
    sweep of 3+ models per device still hangs unless Eigen's intra-op threading is off too.
    Only effective before JAX creates its CPU client (call it before the first computation);
    only for the versions where the flags are known to exist (an unknown flag in XLA_FLAGS aborts
    XLA). Appends to the XLA_FLAGS environment variable; idempotent."""
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if not version.startswith("0.10.") or "concurrency_optimized_scheduler" in flags:
        return
    extra = ["--xla_cpu_enable_concurrency_optimized_scheduler=false"]
    if "xla_force_host_platform_device_count" in flags:
        extra += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
