"""Fits of layerwise profiles (science.md, section 1 "Fits"), float64, jit/vmap/grad-able.

``values_L`` is a 1-D array over layers l = 0..L-1; the fit uses l = start..L-1 (``start``
static, default 1: the input layer is left out). Under ``jax.vmap`` it is one model's profile.
Computed in float64 whatever the caller's ``jax_enable_x64`` (``metrics.run_in_float64``).
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pnc_jax.metrics import run_in_float64

F64 = jnp.float64

__all__ = ["fit_record", "geometric_fit", "linear_fit"]


def _check(values: ArrayLike, start: int) -> int:
    if isinstance(start, bool):
        raise ValueError(f"start must be a static int >= 0, got {start!r}")
    try:
        start = operator.index(start)
    except TypeError:
        raise ValueError(f"start must be a static int >= 0, got {start!r}") from None
    if np.ndim(values) != 1:
        raise ValueError(f"values must be 1-D (L,), got shape {np.shape(values)}")
    n = np.shape(values)[0] - start
    if start < 0 or n < 2:
        raise ValueError(
            f"need start >= 0 and at least 2 points in values[start:], got start={start} "
            f"with L={np.shape(values)[0]}"
        )
    return start


def _least_squares(y: jax.Array, start: int) -> dict[str, jax.Array]:
    """Least squares y_l ~ slope * l + intercept over l = start..start+len(y)-1 (centred sums)."""
    x = start + jnp.arange(y.shape[0], dtype=F64)
    xc, yc = x - x.mean(), y - y.mean()
    sxx, syy, sxy = jnp.sum(xc * xc), jnp.sum(yc * yc), jnp.sum(xc * yc)
    slope = sxy / sxx
    return {
        "slope": slope,
        "intercept": y.mean() - slope * x.mean(),
        "r2": 1.0 - jnp.sum((yc - slope * xc) ** 2) / syy,
        "pearson_r": sxy / jnp.sqrt(sxx * syy),
    }


@functools.partial(jax.jit, static_argnames="start")
def _linear(values, start):
    return _least_squares(jnp.asarray(values, F64)[start:], start)


@functools.partial(jax.jit, static_argnames="start")
def _geometric(values, start):
    fit = _least_squares(jnp.log(jnp.asarray(values, F64)[start:]), start)
    return {"ratio": jnp.exp(fit["slope"]), **fit}


def linear_fit(values_L: ArrayLike, start: int = 1) -> dict[str, jax.Array]:
    """Least squares of values_l on l (l >= start): slope, intercept (at l = 0), r2, pearson_r."""
    return run_in_float64(_linear, values_L, start=_check(values_L, start))


def geometric_fit(values_L: ArrayLike, start: int = 1) -> dict[str, jax.Array]:
    """Least squares of log(values_l) on l (l >= start): ratio = exp(slope), slope, intercept
    (of the log, at l = 0), r2, pearson_r. Non-positive values give NaN."""
    return run_in_float64(_geometric, values_L, start=_check(values_L, start))


def fit_record(values_L: ArrayLike, kind: str, start: int = 1) -> dict | None:
    """JSON-ready fit of a host profile over l = start..L-1: geometric -> {ratio, r2, pearson_r},
    linear -> {slope, r2, pearson_r}, plus ``start``. None with < 2 points, a non-finite value or
    (geometric) a value <= 0."""
    values = np.asarray(values_L, np.float64)
    tail = values[start:]
    if tail.size < 2 or not np.all(np.isfinite(tail)):
        return None
    if kind == "geometric" and np.any(tail <= 0):
        return None
    fit = geometric_fit(values, start) if kind == "geometric" else linear_fit(values, start)
    first = "ratio" if kind == "geometric" else "slope"
    return {**{k: float(fit[k]) for k in (first, "r2", "pearson_r")}, "start": start}
