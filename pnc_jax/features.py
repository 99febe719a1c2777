"""Per-layer features of trained networks for large N, streamed in batches.

Never holds the N x width x depth feature array: batches of inputs go through ``trainer.apply``
(jitted and vmapped over the model axis of a sweep's stacked ``TrainState``), and per layer only
O(K m + m^2) float64 statistics are kept:

- pass 1: ``metrics.ClassSums`` (class counts and sums) and the uncentred Gram H_l^T H_l (m x m);
- pass 2, given the class means: ``metrics.ResidualStats`` (two-pass residuals).

``layer_metrics`` turns them into compression C_l, discrimination D_l, NC1, separation fuzziness
(``metrics.metrics_from_stats``, the same formulas as the in-memory metrics) and the numerical rank.
The rank needs the singular values of H_l (N x m): they are the square roots of the eigenvalues of
the Gram (clipped at 0). A Gram eigenvalue is exact to ~eps * s_max^2, so a singular value is exact
to ~1e-8 s_max; the 95%-energy rank is a sum of singular values and does not notice.

BatchNorm: ``bn_train=False`` (default) uses the running statistics (``model.eval()``);
``bn_train=True`` normalises every batch with its own statistics (He & Su's protocol), so the
features then depend on ``batch_size`` and on the order of x: both are recorded in the output.

``collect_features`` returns features in memory (zero-padded to a common width, for the probes of
``pnc_jax.probe``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pnc_jax import metrics

F64 = jnp.float64
HI = jax.lax.Precision.HIGHEST
DEFAULT_BATCH = 1000

__all__ = [
    "DEFAULT_BATCH",
    "collect_features",
    "layer_metrics",
    "rank_from_gram",
    "rank_from_singular_values",
]


def rank_from_singular_values(s, energy: float = 0.95):
    """Smallest r with sum_{i<=r} s_i >= energy * sum_i s_i (s in any order), int32."""
    s = jnp.sort(jnp.asarray(s, F64))[::-1]
    cum = jnp.cumsum(s)
    r = jnp.sum(cum < energy * cum[-1]) + 1
    return jnp.minimum(r, s.shape[0]).astype(jnp.int32)


def rank_from_gram(gram_MxM, energy: float = 0.95):
    """Numerical rank of H from its Gram H^T H: singular values sqrt(max(eig, 0))."""
    lam = jnp.linalg.eigvalsh(jnp.asarray(gram_MxM, F64))
    return rank_from_singular_values(jnp.sqrt(jnp.maximum(lam, 0.0)), energy)


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
    """[h_l of shape (P, B, m_l)] of every model (params/stats/depth with a model axis P)."""

    def one(params, stats, depth):
        _, feats, _ = trainer.apply(params, stats, x, depth, bn_train)
        return feats

    return jax.vmap(one)(params, stats, depth)


_STATIC = ("trainer", "bn_train")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _features_jit(params, stats, depth, x, *, trainer, bn_train):
    return _features(trainer, bn_train, params, stats, depth, x)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _pass1(acc, params, stats, depth, x, labels, *, trainer, bn_train):
    """Add a batch to every layer's (ClassSums, Gram) of every model."""
    update = jax.vmap(metrics.class_sums_update, in_axes=(0, 0, None))
    out = []
    hs = _features(trainer, bn_train, params, stats, depth, x)
    for (sums, gram), h in zip(acc, hs, strict=True):
        h = h.astype(F64)
        out.append((update(sums, h, labels),
                    gram + jnp.einsum("pbm,pbn->pmn", h, h, precision=HI)))
    return out


@functools.partial(jax.jit, static_argnames=_STATIC)
def _pass2(acc, sums_all, params, stats, depth, x, labels, *, trainer, bn_train):
    """Add a batch to every layer's ResidualStats (about the final class means)."""
    update = jax.vmap(metrics.residual_stats_update, in_axes=(0, 0, None, 0))
    hs = _features(trainer, bn_train, params, stats, depth, x)
    return [update(r, h.astype(F64), labels, s) for r, s, h in zip(acc, sums_all, hs, strict=True)]


@functools.partial(jax.jit, static_argnames="energy")
def _finish(sums_all, res_all, grams, *, energy):
    per_model = jax.vmap(metrics.metrics_from_stats)
    out = [per_model(s, r) for s, r in zip(sums_all, res_all, strict=True)]
    ranks = [jax.vmap(lambda g: rank_from_gram(g, energy))(g) for g in grams]
    return out, ranks


def _check(x_NxD, labels_N, num_classes, batch_size):
    x_NxD = np.asarray(x_NxD)
    if x_NxD.ndim != 2:
        raise ValueError(f"x must be 2-D (N, d), got shape {x_NxD.shape}")
    k = metrics.check_inputs(x_NxD, np.asarray(labels_N), num_classes)
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0 (0 = all at once), got {batch_size}")
    return k


def layer_metrics(trainer, state, x_NxD, labels_N, num_classes: int, *,
                  batch_size: int = DEFAULT_BATCH, bn_train: bool = False,
                  energy: float = 0.95) -> dict:
    """Per-layer metrics of every model of ``state`` (a ``TrainState``, stacked or single).

    Returns numpy arrays of shape (P, L) (or (L,) for a single model), L = the trainer's padded
    depth; entries at layers l >= a model's depth repeat its last layer (pad-and-mask): cut them
    with ``[:depth]``. Keys: compression, discrimination, nc1, fuzziness, numerical_rank (int),
    plus ``bn_train`` and ``batch_size`` (as used). Feature dtype: the model's; statistics float64.
    """
    k = _check(x_NxD, labels_N, num_classes, batch_size)
    params, stats, depth, squeeze = _stacked(state)
    x = jnp.asarray(x_NxD)
    labels = jnp.asarray(labels_N, jnp.int32)
    spans = _batches(x.shape[0], batch_size)
    static = {"trainer": trainer, "bn_train": bool(bn_train)}
    models = (params, stats, depth)

    num_models = len(depth)
    widths = [h.shape[-1] for h in jax.eval_shape(
        functools.partial(_features, trainer, bn_train), *models, x[:1])]
    rep = lambda a: jnp.broadcast_to(a, (num_models, *a.shape))  # noqa: E731
    acc = [(jax.tree.map(rep, metrics.class_sums_init(k, m)), jnp.zeros((num_models, m, m), F64))
           for m in widths]
    for a, b in spans:
        acc = _pass1(acc, *models, x[a:b], labels[a:b], **static)
    sums_all = [s for s, _ in acc]
    res = [jax.tree.map(rep, metrics.residual_stats_init(k)) for _ in widths]
    for a, b in spans:
        res = _pass2(res, sums_all, *models, x[a:b], labels[a:b], **static)
    out, ranks = jax.device_get(_finish(sums_all, res, [g for _, g in acc], energy=float(energy)))

    names = {"compression": "compression", "discrimination": "discrimination", "nc1": "nc1",
             "separation_fuzziness": "fuzziness"}
    result = {new: np.stack([np.asarray(o[old], np.float64) for o in out], axis=1)
              for old, new in names.items()}
    result["numerical_rank"] = np.stack([np.asarray(r) for r in ranks], axis=1)
    if squeeze:
        result = {name: v[0] for name, v in result.items()}
    result["bn_train"] = bool(bn_train)
    result["batch_size"] = int(batch_size if 0 < batch_size < x.shape[0] else x.shape[0])
    return result


def collect_features(trainer, state, x_NxD, *, batch_size: int = DEFAULT_BATCH,
                     bn_train: bool = False, layers=None, width: int | None = None) -> np.ndarray:
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
