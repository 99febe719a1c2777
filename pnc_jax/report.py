"""Every layerwise metric of a network's features in one jittable call (science.md, section 1).

``report(features, labels_N, K)`` takes the features of layers l = 0..L-1 (``features[l]`` of
shape N x m_l, layer 0 = the input, ``features[-1]`` = the classifier's input) and returns, from
one pass of class statistics per layer (``metrics.ClassSums`` plus the Gram H^T H for the rank,
then ``metrics.ResidualStats``):

- per-layer (L,) float64 arrays: compression, discrimination, nc1, fuzziness, nc2_equinorm,
  nc2_equiangularity, nc2_max_angle_gap, nc4 (with ``logits``), and numerical_rank (int32);
- nc3, nc3_uncentred: scalars of the last layer against ``classifier`` (K x m_{L-1});
- compression_fit (``fits.geometric_fit`` of C over l >= fit_start) and discrimination_fit
  (``fits.linear_fit`` of D); NaN entries when fewer than two layers are fitted;
- class_counts: (K,) float64, the (weighted) samples per class.

Same definitions, keys and precision as ``pnc_jax.metrics`` (float64 whatever the caller's
``jax_enable_x64``; mu_G per ``center``; ``mask`` weights; absent classes left out, NaN for
between-class metrics when fewer than two classes are present, so a minibatch inside a training
scan stays finite). The numerical rank comes from the eigenvalues of the Gram H^T diag(w) H
(H H^T when N < m): singular values exact to ~1e-8 s_max, the rank equal to the SVD's
(``metrics.numerical_rank``) except at a 95% threshold tie. ``rank=False`` skips the Gram, the
report's only O(N m^2) part.

``streaming_report(batches_fn, K)`` gives the same numbers from two passes over batches that need
not fit in memory. Layers of one shape are computed by one ``lax.map`` (compiled once, memory of
one layer).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pnc_jax import fits, metrics
from pnc_jax.metrics import F64, HI, ClassSums, ResidualStats

__all__ = [
    "LayerResiduals",
    "LayerSums",
    "layer_init",
    "layer_residuals_update",
    "layer_sums_update",
    "layer_values",
    "report",
    "streaming_report",
]

GEOMETRIC_KEYS = ("ratio", "slope", "intercept", "r2", "pearson_r")
LINEAR_KEYS = ("slope", "intercept", "r2", "pearson_r")


class LayerSums(NamedTuple):
    """Pass 1 of one layer: class counts and sums, and the Gram H^T diag(w) H (m x m; (0, 0)
    without the rank)."""

    sums: ClassSums
    gram: jax.Array


class LayerResiduals(NamedTuple):
    """Pass 2 of one layer: residual statistics and sum_i w_i [nearest mean != argmax logits]."""

    res: ResidualStats
    mismatch: jax.Array


# ----------------------------------------------------------------------------- one layer
# Building blocks (also of ``features.layer_metrics``): pure, jit/vmap-able, no checks; call them
# inside ``metrics.float64_scope()`` (or a function traced inside it).


def layer_init(k: int, m: int, rank: bool) -> tuple[LayerSums, LayerResiduals]:
    """Empty accumulators of one layer (K classes, width m; the Gram only with ``rank``)."""
    sums = ClassSums(jnp.zeros((k,), F64), jnp.zeros((k, m), F64))
    res = ResidualStats(jnp.zeros((k,), F64), jnp.zeros((k, k), F64))
    g = m if rank else 0
    return LayerSums(sums, jnp.zeros((g, g), F64)), LayerResiduals(res, jnp.zeros((), F64))


def _gram(h_NxM: jax.Array, mask: jax.Array | None, rows: bool) -> jax.Array:
    """H^T diag(w) H, or H diag(w) H^T with ``rows`` (same non-zero eigenvalues)."""
    h_NxM = metrics._as_f64(h_NxM, mask)
    if mask is not None:
        h_NxM = h_NxM * jnp.sqrt(jnp.asarray(mask, F64))[:, None]
    if rows:
        return jnp.matmul(h_NxM, h_NxM.T, precision=HI)
    return jnp.matmul(h_NxM.T, h_NxM, precision=HI)


def layer_sums_update(acc: LayerSums, h_NxM: jax.Array, labels_N: jax.Array,
                      mask: jax.Array | None) -> LayerSums:
    """Pass 1: add a batch to the class sums (and the Gram)."""
    gram = acc.gram
    if gram.shape[0]:
        gram = gram + _gram(h_NxM, mask, rows=False)
    return LayerSums(metrics._sums_update(acc.sums, h_NxM, labels_N, mask), gram)


def layer_residuals_update(acc: LayerResiduals, h_NxM: jax.Array, labels_N: jax.Array,
                           sums: ClassSums, mask: jax.Array | None,
                           logits: jax.Array | None) -> LayerResiduals:
    """Pass 2, given the final ``sums``: residual statistics and the NC4 mismatch count."""
    r = metrics._residuals(h_NxM, labels_N, sums, mask)
    res = metrics._res_add(acc.res, r)
    if logits is None:
        return LayerResiduals(res, acc.mismatch)
    present_K = sums.count_K > 0
    return LayerResiduals(res, acc.mismatch + metrics._nc4_mismatch(r, labels_N, present_K,
                                                                     logits))


def layer_values(sums: ClassSums, gram: jax.Array, res: LayerResiduals, *, center: str,
                 energy: ArrayLike, logits: bool) -> dict[str, jax.Array]:
    """The layer's scalars (report keys) from both passes; nc4 with ``logits``, numerical_rank
    when ``gram`` is not empty."""
    g = metrics._geometry(sums, center)
    out = {
        "compression": metrics._compression_from(g, res.res),
        "discrimination": metrics._discrimination_from(g),
        "nc1": metrics._nc1_from(g, res.res),
        "fuzziness": metrics._fuzziness_from(g, sums, res.res),
        **metrics._nc2_from(g),
    }
    if logits:
        out["nc4"] = metrics._defined(g, res.mismatch / g.n)
    if gram.shape[0]:
        out["numerical_rank"] = metrics.rank_from_gram(gram, energy)
    return out


def _finish(per_layer: dict[str, jax.Array], sums_last: ClassSums, classifier, *, center: str,
            fit_start: int) -> dict[str, Any]:
    out: dict[str, Any] = dict(per_layer)
    if classifier is not None:
        out.update(metrics._nc3_from(metrics._geometry(sums_last, center), classifier))
    num_layers = per_layer["compression"].shape[0]
    if num_layers - fit_start >= 2:
        out["compression_fit"] = fits._geometric(per_layer["compression"], fit_start)
        out["discrimination_fit"] = fits._linear(per_layer["discrimination"], fit_start)
    else:
        out["compression_fit"] = {key: jnp.full((), jnp.nan, F64) for key in GEOMETRIC_KEYS}
        out["discrimination_fit"] = {key: jnp.full((), jnp.nan, F64) for key in LINEAR_KEYS}
    out["class_counts"] = sums_last.count_K
    return out


# ----------------------------------------------------------------------------- in memory


def _report(features, labels_N, mask, logits, classifier, energy, *, num_classes: int,
            center: str, fit_start: int, rank: bool, runs: tuple[tuple[int, int], ...]):
    def layer(h_NxM):
        n, m = h_NxM.shape
        acc1, acc2 = layer_init(num_classes, m, rank=False)
        p1 = layer_sums_update(acc1, h_NxM, labels_N, mask)
        p2 = layer_residuals_update(acc2, h_NxM, labels_N, p1.sums, mask, logits)
        gram = _gram(h_NxM, mask, rows=n < m) if rank else p1.gram
        return layer_values(p1.sums, gram, p2, center=center, energy=energy,
                       logits=logits is not None), p1.sums

    parts: list[dict[str, jax.Array]] = []
    sums: ClassSums | None = None  # the last layer's
    for start, end in runs:
        if end - start == 1:
            values, sums = layer(jnp.asarray(features[start]))
            values = jax.tree.map(lambda v: v[None], values)
        else:
            run_LxNxM = jnp.stack([jnp.asarray(f) for f in features[start:end]])
            values, sums = jax.lax.map(layer, run_LxNxM)
            sums = jax.tree.map(lambda s: s[-1], sums)
        parts.append(values)
    per_layer = jax.tree.map(lambda *v: jnp.concatenate(v), *parts)
    assert sums is not None  # features is not empty
    return _finish(per_layer, sums, classifier, center=center, fit_start=fit_start)


def _check_options(center: Any, energy: Any, fit_start: Any) -> str:
    center = metrics._check_center(center)
    if isinstance(energy, int | float) and not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    if isinstance(fit_start, bool) or not isinstance(fit_start, int) or fit_start < 0:
        raise ValueError(f"fit_start must be an int >= 0, got {fit_start!r}")
    return center


def report(features: Sequence[ArrayLike], labels_N: ArrayLike, num_classes: int, *,
           logits: ArrayLike | None = None, classifier: ArrayLike | None = None,
           mask: ArrayLike | None = None, center: str = "sample", energy: float = 0.95,
           fit_start: int = 1, rank: bool = True) -> dict[str, Any]:
    """Every metric of every layer in one call (module docstring); jit/vmap/grad-able.

    features: [h_l of shape N x m_l for l = 0..L-1]; labels_N: ints in [0, K); logits (N x K):
    the network's outputs, for NC4; classifier (K x m_{L-1}, logits = h_{L-1} W^T): for NC3;
    mask (N,): bool or float weights; center: mu_G = "sample" mean or "class" mean of means;
    energy: the numerical rank's singular-value energy; fit_start: first layer of the fits;
    rank: compute the numerical rank. Returns a dict of float64 arrays (rank: int32).
    """
    features = list(features)
    if not features:
        raise ValueError("features must hold at least one layer, got 0")
    k = metrics.check_inputs(features[0], labels_N, num_classes, mask)
    n = np.shape(features[0])[0]
    for l, h in enumerate(features):
        if np.ndim(h) != 2 or np.shape(h)[0] != n:
            raise ValueError(f"features[{l}] must be 2-D with N={n} rows, got shape {np.shape(h)}")
    if logits is not None:
        metrics._check_logits(logits, n, k)
    if classifier is not None:
        metrics._check_classifier(classifier, k, np.shape(features[-1])[1])
    center = _check_options(center, energy, fit_start)
    runs = tuple(metrics.equal_shape_runs([tuple(np.shape(h)) for h in features]))
    return metrics.run_in_float64(
        _report_jit, features, labels_N, mask, logits, classifier, energy, num_classes=k,
        center=center, fit_start=fit_start, rank=bool(rank), runs=runs)


_report_jit = jax.jit(_report, static_argnames=("num_classes", "center", "fit_start", "rank",
                                                "runs"))


# ----------------------------------------------------------------------------- streaming


@jax.jit
def _stream_pass1(acc: list[LayerSums], features, labels_B, mask) -> list[LayerSums]:
    return [layer_sums_update(a, h, labels_B, mask) for a, h in zip(acc, features, strict=True)]


@jax.jit
def _stream_pass2(acc: list[LayerResiduals], features, labels_B, sums: list[ClassSums], mask,
                  logits) -> list[LayerResiduals]:
    return [layer_residuals_update(a, h, labels_B, s, mask, logits)
            for a, h, s in zip(acc, features, sums, strict=True)]


@functools.partial(jax.jit, static_argnames=("center", "fit_start", "logits"))
def _stream_finish(p1: list[LayerSums], p2: list[LayerResiduals], classifier, energy, *,
                   center: str, fit_start: int, logits: bool) -> dict[str, Any]:
    values = [layer_values(a.sums, a.gram, b, center=center, energy=energy, logits=logits)
              for a, b in zip(p1, p2, strict=True)]
    per_layer = jax.tree.map(lambda *v: jnp.stack(v), *values)
    return _finish(per_layer, p1[-1].sums, classifier, center=center, fit_start=fit_start)


def _unpack(batch: Sequence[Any]) -> tuple[list, Any, Any, Any]:
    if not 2 <= len(batch) <= 4:
        raise ValueError("each batch must be (features, labels[, logits[, mask]]), "
                         f"got {len(batch)} items")
    features, labels, logits, mask = (*batch, None, None)[:4]
    return list(features), labels, logits, mask


@metrics._in_float64
def streaming_report(batches_fn: Callable[[], Iterable[Sequence[Any]]], num_classes: int, *,
                     classifier: ArrayLike | None = None, center: str = "sample",
                     energy: float = 0.95, fit_start: int = 1,
                     rank: bool = True) -> dict[str, Any]:
    """``report`` from two passes over ``batches_fn()``, a fresh iterable each call of batches
    ``(features, labels_B[, logits_BxK[, mask_B]])`` (``features`` = [h_l of shape B x m_l]).
    Same numbers as ``report`` on the concatenated data, up to rounding. Without masks, every
    class must have samples (as ``report`` eagerly)."""
    k = metrics._num_classes(num_classes)
    center = _check_options(center, energy, fit_start)
    p1: list[LayerSums] | None = None
    widths: list[int] = []
    has_logits = has_mask = False
    rows = 0
    for batch in batches_fn():
        features, labels, logits, mask = _unpack(batch)
        if p1 is None:
            widths = [np.shape(h)[-1] for h in features]
            p1 = [layer_init(k, m, rank)[0] for m in widths]
            has_logits, has_mask = logits is not None, mask is not None
        if [np.shape(h)[-1] for h in features] != widths:
            raise ValueError(f"every batch must have layer widths {widths}, got "
                             f"{[np.shape(h)[-1] for h in features]}")
        if (logits is not None, mask is not None) != (has_logits, has_mask):
            raise ValueError("every batch must carry logits / mask alike")
        for h in features:
            metrics._check_batch(h, labels, k, np.shape(h)[-1], mask)
        if logits is not None:
            metrics._check_logits(logits, np.shape(labels)[0], k)
        p1 = _stream_pass1(p1, features, labels, mask)
        rows += np.shape(labels)[0]
    if p1 is None:
        raise ValueError("batches_fn() yielded no batches")
    counts = np.asarray(p1[0].sums.count_K)
    if not has_mask and (counts == 0).any():
        raise ValueError(f"class {int(np.flatnonzero(counts == 0)[0])} has no samples "
                         f"(counts per class {counts.astype(int).tolist()})")
    if classifier is not None:
        metrics._check_classifier(classifier, k, widths[-1])
    sums = [a.sums for a in p1]
    p2 = [layer_init(k, m, False)[1] for m in widths]
    seen = 0
    for batch in batches_fn():
        features, labels, logits, mask = _unpack(batch)
        p2 = _stream_pass2(p2, features, labels, sums, mask, logits)
        seen += np.shape(labels)[0]
    if seen != rows:
        raise ValueError(f"batches_fn() gave {rows} samples in pass 1 but {seen} in pass 2")
    return _stream_finish(p1, p2, classifier, energy, center=center, fit_start=fit_start,
                          logits=has_logits)
