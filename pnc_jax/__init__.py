"""pnc_jax: layerwise feature compression and discrimination in deep networks, in JAX.

Modules (data flows one way): config -> data -> models -> losses/optim -> train -> sweep ->
metrics -> workdir/checkpoint -> plots. Metric code computes in float64: enable it with
``jax.config.update("jax_enable_x64", True)`` (the experiments do) before calling it.
"""

import os
from importlib import metadata

__version__ = "0.1.0"


def _avoid_xla_cpu_deadlock() -> None:
    """jaxlib 0.10.x on CPU: a vmapped scan of the sweep (e.g. depths 2..8 x 5 seeds) hangs for
    ever in about half of the runs, every thread idle, under XLA's concurrency-optimised
    scheduler (seen on 2-core machines); turning that scheduler off cures it. With several
    forced host devices (``--xla_force_host_platform_device_count``, used to test sharding) a
    sweep of 3+ models per device still hangs unless Eigen's intra-op threading is off too.
    Only effective before JAX creates its CPU client, hence here; only for the versions where
    the flags are known to exist (an unknown flag in XLA_FLAGS aborts XLA)."""
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


_avoid_xla_cpu_deadlock()
