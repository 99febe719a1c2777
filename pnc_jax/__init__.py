"""pnc_jax: layerwise feature compression and discrimination in deep networks, in JAX.

For your own JAX project::

    import pnc_jax as pj
    out = pj.report(features, labels_N, num_classes, logits=logits)  # every metric, every layer
    c = pj.metrics.compression(h_NxM, labels_N, num_classes)
    pj.fits.geometric_fit(out["compression"])

Metrics compute in float64 whatever ``jax_enable_x64`` says (``metrics.float64_scope``).
Importing pnc_jax loads jax and the metric modules only (no flax/optax/orbax/matplotlib) and
leaves XLA_FLAGS alone; the training stack (``pnc_jax.train``, ``pnc_jax.sweep``, ...) loads on
first use. Modules (data flows one way): config -> data -> models -> losses/optim -> train ->
sweep -> metrics/report -> workdir/checkpoint -> plots.
"""

from __future__ import annotations

import importlib
from typing import Any

from pnc_jax import fits, metrics
from pnc_jax.fits import fit_record, geometric_fit, linear_fit
from pnc_jax.metrics import (
    ClassSums,
    ResidualStats,
    class_sums_init,
    class_sums_update,
    compression,
    discrimination,
    float64_scope,
    layerwise,
    metrics_from_stats,
    nc1,
    nc2,
    nc3,
    nc4,
    numerical_rank,
    residual_stats_init,
    residual_stats_update,
    separation_fuzziness,
    streaming_metrics,
)

# ``report`` is the function (the module pnc_jax.report stays importable with
# ``from pnc_jax.report import ...``): bound after the submodule import on purpose.
from pnc_jax.report import report, streaming_report  # noqa: I001

__version__ = "0.1.0"

__all__ = [
    "ClassSums",
    "ResidualStats",
    "class_sums_init",
    "class_sums_update",
    "compression",
    "discrimination",
    "fit_record",
    "fits",
    "float64_scope",
    "geometric_fit",
    "layerwise",
    "linear_fit",
    "metrics",
    "metrics_from_stats",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "numerical_rank",
    "report",
    "residual_stats_init",
    "residual_stats_update",
    "separation_fuzziness",
    "streaming_metrics",
    "streaming_report",
]

# Loaded on first attribute access (``pj.features``): they pull in flax, optax, orbax, ...
_LAZY = ("checkpoint", "cli", "config", "data", "features", "losses", "models", "optim", "plots",
         "probe", "progress", "sharding", "sweep", "train", "workdir", "xla_cpu")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"pnc_jax.{name}")
    raise AttributeError(f"module 'pnc_jax' has no attribute {name!r}")
