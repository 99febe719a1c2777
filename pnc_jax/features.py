"""Per-layer features of trained networks for large N, streamed in batches.

Never holds the N x width x depth feature array: batches of inputs go through ``trainer.apply``
(jitted and vmapped over the model axis of a sweep's stacked ``TrainState``), and per layer only
the O(K m + m^2) float64 accumulators of ``pnc_jax.report`` are kept:

- pass 1: ``report.LayerSums`` (class counts and sums, the uncentred Gram H_l^T H_l);
- pass 2, given the class means: ``report.LayerResiduals`` (two-pass residuals, NC4 mismatches
  against the network's own logits).

``layer_metrics`` turns them into the report's per-layer values (``report.layer_values``: the same
formulas, keys and float64 precision as ``pnc_jax.metrics`` and ``pnc_jax.report``), the numerical
rank from the Gram's eigenvalues. The forward pass runs in the caller's precision mode, the
statistics in ``metrics.float64_scope``.

BatchNorm: ``bn_train=False`` (default) uses the running statistics (``model.eval()``);
``bn_train=True`` normalises every batch with its own statistics (He & Su's protocol), so the
features then depend on ``batch_size`` and on the order of x: both are recorded in the output.

``collect_features`` returns features in memory (zero-padded to a common width, for the probes of
``pnc_jax.probe``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pnc_jax import metrics
from pnc_jax.metrics import rank_from_gram, rank_from_singular_values
from pnc_jax.report import layer_init, layer_residuals_update, layer_sums_update, layer_values

DEFAULT_BATCH = 1000

__all__ = [
    "DEFAULT_BATCH",
    "collect_features",
    "layer_metrics",
    "rank_from_gram",
    "rank_from_singular_values",
]


def _stacked(state):
    """(params, stats, depth_P, squeeze): a single model's state gets a model axis of 1."""
    depth = np.asarray(state.depth)
    if depth.ndim == 0:
        add = lambda a: jnp.asarray(a)[None]  # noqa: E731
        return jax.tree.map(add, state.params), jax.tree.map(add, state.stats), depth[None], True
    return state.params, state.stats, depth, False


def _batches(n: int, batch_size: int):
    batch_size = n if batch_size <= 0 else batch_size
    return [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]


def _features(trainer, bn_train, params, stats, depth, x):
    """(logits (P, B, K), [h_l of shape (P, B, m_l)]) of every model (a model axis P)."""

    def one(params, stats, depth):
        logits, feats, _ = trainer.apply(params, stats, x, depth, bn_train)
        return logits, feats

    return jax.vmap(one)(params, stats, depth)


_STATIC = ("trainer", "bn_train")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _features_jit(params, stats, depth, x, *, trainer, bn_train):
    return _features(trainer, bn_train, params, stats, depth, x)[1]


def _forward(x64, trainer, bn_train, params, stats, depth, x):
    """The forward pass in the caller's precision mode (we are traced inside float64_scope)."""
    with jax.enable_x64(x64):
        return _features(trainer, bn_train, params, stats, depth, x)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "x64"))
def _pass1(acc, params, stats, depth, x, labels, *, trainer, bn_train, x64):
    """Add a batch to every layer's ``LayerSums`` of every model."""
    _, hs = _forward(x64, trainer, bn_train, params, stats, depth, x)
    update = jax.vmap(layer_sums_update, in_axes=(0, 0, None, None))
    return [update(a, h, labels, None) for a, h in zip(acc, hs, strict=True)]


@functools.partial(jax.jit, static_argnames=(*_STATIC, "x64"))
def _pass2(acc, sums_all, params, stats, depth, x, labels, *, trainer, bn_train, x64):
    """Add a batch to every layer's ``LayerResiduals`` (about the final class means)."""
    logits, hs = _forward(x64, trainer, bn_train, params, stats, depth, x)
    update = jax.vmap(layer_residuals_update, in_axes=(0, 0, None, 0, None, 0))
    return [update(a, h, labels, s, None, logits)
            for a, s, h in zip(acc, sums_all, hs, strict=True)]


@functools.partial(jax.jit, static_argnames="center")
def _finish(p1, p2, energy, *, center):
    values = functools.partial(layer_values, center=center, energy=energy, logits=True)
    return [jax.vmap(lambda a, b: values(a.sums, a.gram, b))(a, b)
            for a, b in zip(p1, p2, strict=True)]


def _check(x_NxD, labels_N, num_classes, batch_size):
    x_NxD = np.asarray(x_NxD)
    if x_NxD.ndim != 2:
        raise ValueError(f"x must be 2-D (N, d), got shape {x_NxD.shape}")
    k = metrics.check_inputs(x_NxD, np.asarray(labels_N), num_classes)
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0 (0 = all at once), got {batch_size}")
    return k


def layer_metrics(trainer: Any, state: Any, x_NxD: ArrayLike, labels_N: ArrayLike,
                  num_classes: int, *,
                  batch_size: int = DEFAULT_BATCH, bn_train: bool = False,
                  energy: float = 0.95, center: str = "sample") -> dict[str, Any]:
    """Per-layer metrics of every model of ``state`` (a ``TrainState``, stacked or single).

    Returns numpy arrays of shape (P, L) (or (L,) for a single model), L = the trainer's padded
    depth; entries at layers l >= a model's depth repeat its last layer (pad-and-mask): cut them
    with ``[:depth]``. Keys (as ``pnc_jax.report``): compression, discrimination, nc1, fuzziness,
    nc2_equinorm, nc2_equiangularity, nc2_max_angle_gap, nc4 (against the network's logits),
    numerical_rank (int), plus ``bn_train`` and ``batch_size`` (as used). mu_G per ``center``.
    Feature dtype: the model's; statistics float64.
    """
    k = _check(x_NxD, labels_N, num_classes, batch_size)
    center = metrics._check_center(center)
    x64 = bool(jax.enable_x64.value)  # the caller's mode (thread-local), for the forward pass
    params, stats, depth, squeeze = _stacked(state)
    x = jnp.asarray(x_NxD)
    labels = jnp.asarray(labels_N, jnp.int32)
    spans = _batches(x.shape[0], batch_size)
    static = {"trainer": trainer, "bn_train": bool(bn_train), "x64": x64}
    models = (params, stats, depth)

    num_models = len(depth)
    _, shapes = jax.eval_shape(functools.partial(_features, trainer, bn_train), *models, x[:1])
    widths = [h.shape[-1] for h in shapes]
    with metrics.float64_scope():
        rep = lambda a: jnp.broadcast_to(a, (num_models, *a.shape))  # noqa: E731
        p1 = [jax.tree.map(rep, layer_init(k, m, rank=True)[0]) for m in widths]
        for a, b in spans:
            p1 = _pass1(p1, *models, x[a:b], labels[a:b], **static)
        sums_all = [s.sums for s in p1]
        p2 = [jax.tree.map(rep, layer_init(k, m, rank=False)[1]) for m in widths]
        for a, b in spans:
            p2 = _pass2(p2, sums_all, *models, x[a:b], labels[a:b], **static)
        out = jax.device_get(_finish(p1, p2, float(energy), center=center))

    result: dict[str, Any] = {
        name: np.stack([np.asarray(o[name]) for o in out], axis=1) for name in out[0]}
    if squeeze:
        result = {name: v[0] for name, v in result.items()}
    result["bn_train"] = bool(bn_train)
    result["batch_size"] = int(batch_size if 0 < batch_size < x.shape[0] else x.shape[0])
    return result


def collect_features(trainer: Any, state: Any, x_NxD: ArrayLike, *,
                     batch_size: int = DEFAULT_BATCH, bn_train: bool = False,
                     layers: Sequence[int] | None = None,
                     width: int | None = None) -> np.ndarray:
    """Features of one model in memory: float32 numpy array (len(layers), N, width).

    ``layers`` (default: 0..depth-1) picks the layers; each is zero-padded on the right to
    ``width`` (default: the widest picked layer), so layers of different widths stack.
    """
    if np.asarray(state.depth).ndim != 0:
        raise ValueError("collect_features takes one model's state (no model axis)")
    depth = int(state.depth)
    layers = list(range(depth)) if layers is None else [int(l) for l in layers]
    if any(not 0 <= l < depth for l in layers):
        raise ValueError(f"layers must lie in [0, {depth}), got {layers}")
    params, stats, depth_p, _ = _stacked(state)
    feats = functools.partial(_features_jit, trainer=trainer, bn_train=bool(bn_train))
    x = jnp.asarray(x_NxD)
    widths = [h.shape[-1] for h in jax.eval_shape(feats, params, stats, depth_p, x[:1])]
    width = width or max(widths[l] for l in layers)
    if any(widths[l] > width for l in layers):
        raise ValueError(f"width={width} is below a picked layer's width {max(widths)}")
    out = np.zeros((len(layers), x.shape[0], width), np.float32)
    for a, b in _batches(x.shape[0], batch_size):
        hs = jax.device_get(feats(params, stats, depth_p, x[a:b]))
        for i, l in enumerate(layers):
            out[i, a:b, : widths[l]] = hs[l][0]
    return out
