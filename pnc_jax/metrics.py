"""Layerwise collapse metrics (science.md, section 1), float64, jit-able and vmappable.

Conventions: features ``h_NxM`` (rows are samples), integer ``labels_N`` in [0, K), ``num_classes``
K a static Python int. Symbols: class means mu_k (``mu_KxM``), counts n_k, residuals
z_i = h_i - mu_{y_i} (``Z``, N x m).

Centring. The unweighted between-class quantities (C, NC1, NC2, NC3) centre on
mu_G = (1/K) sum_k mu_k, the mean of the class means; He & Su's n_k-weighted SS_b centres on the
sample mean mu = (1/N) sum_k n_k mu_k. With balanced classes (the setting of science.md) the two
coincide. Off balance, each choice makes its own weighted sum of centred means vanish, so both
between-class matrices keep rank <= K-1 and their pinv has no spurious tiny eigenvalue (centring the
unweighted Sigma_B on the sample mean adds a rank-one spike of size ~ ||mu_G - mu||^2 that the pinv
in NC1 would invert).

Numerics: traces are two-pass (squared norms of residuals about the class means, never
E||h||^2 - ||mu||^2); NC1 and the fuzziness go through K x K Grams, with
Tr(S_W (M M^T)^+) = Tr(G^+ A G^+), G = M^T M, A = (Z M)^T (Z M), and the pinv drops eigenvalues of
G below ``PINV_RTOL`` times the largest. Every pass is O(N m K + K^2 m + K^3).

Streaming (N beyond memory): pass 1 accumulates ``ClassSums`` over batches, pass 2, given the means,
accumulates ``ResidualStats``; ``metrics_from_stats`` turns them into the metrics. The in-memory
metrics are built from the same helpers, so a formula lives in one function.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pnc_jax.fits import geometric_fit, linear_fit  # re-exported

F64 = jnp.float64
HI = jax.lax.Precision.HIGHEST
# Eigenvalues of a K x K Gram below PINV_RTOL * largest count as zero (singular values of the
# centred means below 1e-5 of the largest). The Gram's rounding floor is ~ m * eps ~ 1e-14.
PINV_RTOL = 1e-10

__all__ = [
    "PINV_RTOL",
    "ClassSums",
    "ResidualStats",
    "check_inputs",
    "class_sums_init",
    "class_sums_update",
    "residual_stats_init",
    "residual_stats_update",
    "metrics_from_stats",
    "streaming_metrics",
    "compression",
    "discrimination",
    "nc1",
    "separation_fuzziness",
    "numerical_rank",
    "nc2",
    "nc3",
    "nc4",
    "layerwise",
    "geometric_fit",
    "linear_fit",
]


# ----------------------------------------------------------------------------- input checks


def _num_classes(num_classes) -> int:
    if isinstance(num_classes, bool):
        raise ValueError(f"num_classes must be a Python int >= 2, got {num_classes!r}")
    try:
        k = operator.index(num_classes)
    except TypeError:
        raise ValueError(
            f"num_classes must be a static Python int >= 2, got {num_classes!r}"
        ) from None
    if k < 2:
        raise ValueError(f"num_classes must be >= 2, got {k}")
    return k


def _check_labels(labels, num_classes: int, n: int | None = None, require_all: bool = True):
    """Shape/dtype checks always; range and empty-class checks when ``labels`` is concrete."""
    dtype = getattr(labels, "dtype", None)
    if dtype is None:
        labels = np.asarray(labels)
        dtype = labels.dtype
    if np.ndim(labels) != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {np.shape(labels)}")
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"labels must have an integer dtype, got {dtype}")
    if n is not None and np.shape(labels)[0] != n:
        raise ValueError(f"labels has N={np.shape(labels)[0]} entries but h has N={n} rows")
    if isinstance(labels, jax.core.Tracer):
        return None
    lab = np.asarray(labels)
    if lab.size:
        bad = lab[(lab < 0) | (lab >= num_classes)]
        if bad.size:
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got label {bad[0]} "
                f"(min {lab.min()}, max {lab.max()})"
            )
    counts = np.bincount(lab, minlength=num_classes)
    if require_all and (counts == 0).any():
        raise ValueError(
            f"class {int(np.flatnonzero(counts == 0)[0])} has no samples "
            f"(counts per class {counts.tolist()})"
        )
    return counts


def check_inputs(h, labels, num_classes) -> int:
    """Validate (h_NxM, labels_N, num_classes); return K as an int. Raises ValueError.

    Always: h 2-D, labels 1-D integer, same N, K an int >= 2. When ``labels`` is concrete (not a
    jax Tracer): every label in [0, K) and every class non-empty.
    """
    k = _num_classes(num_classes)
    if np.ndim(h) != 2:
        raise ValueError(f"h must be 2-D (N x m), got shape {np.shape(h)}")
    _check_labels(labels, k, n=np.shape(h)[0])
    return k


# ----------------------------------------------------------------------------- accumulators


class ClassSums(NamedTuple):
    """Pass-1 accumulator: n_k (float64, exact to 2^53) and sum_{i in k} h_i."""

    count_K: jax.Array
    sum_KxM: jax.Array


class ResidualStats(NamedTuple):
    """Pass-2 accumulator, given the class means.

    sqres_K: sum_{i in k} ||h_i - mu_k||^2. zm_gram_KxK: A = (Z Mc)^T (Z Mc) with Mc the m x K
    matrix of mu_k - mu_G (mu_G the mean of the class means), i.e. A = Mc^T (N Sigma_W) Mc.
    """

    sqres_K: jax.Array
    zm_gram_KxK: jax.Array


def class_sums_init(num_classes: int, m: int) -> ClassSums:
    k = _num_classes(num_classes)
    return ClassSums(jnp.zeros((k,), F64), jnp.zeros((k, int(m)), F64))


def _one_hot(labels, k: int):
    return jax.nn.one_hot(labels, k, dtype=F64)  # N x K


@jax.jit
def _class_sums_update(acc: ClassSums, h, labels) -> ClassSums:
    y_NxK = _one_hot(labels, acc.count_K.shape[0])
    h = jnp.asarray(h, F64)
    return ClassSums(
        acc.count_K + y_NxK.sum(0),
        acc.sum_KxM + jnp.matmul(y_NxK.T, h, precision=HI),
    )


def class_sums_update(acc: ClassSums, h, labels) -> ClassSums:
    """Add a batch (h_BxM, labels_B) to the per-class counts and sums."""
    k = acc.count_K.shape[0]
    if np.ndim(h) != 2 or np.shape(h)[1] != acc.sum_KxM.shape[1]:
        raise ValueError(f"h must be 2-D (B x {acc.sum_KxM.shape[1]}), got shape {np.shape(h)}")
    _check_labels(labels, k, n=np.shape(h)[0], require_all=False)
    return _class_sums_update(acc, h, labels)


def _means(sums: ClassSums):
    """mu_KxM (NaN rows for empty classes: the concrete checks forbid them)."""
    return sums.sum_KxM / sums.count_K[:, None]


def _centred(mu_KxM):
    """Mc (as K x m rows): mu_k - mu_G, mu_G the mean of the class means."""
    return mu_KxM - mu_KxM.mean(0, keepdims=True)


def residual_stats_init(num_classes: int) -> ResidualStats:
    k = _num_classes(num_classes)
    return ResidualStats(jnp.zeros((k,), F64), jnp.zeros((k, k), F64))


@jax.jit
def _residual_stats_update(acc: ResidualStats, h, labels, sums: ClassSums) -> ResidualStats:
    h = jnp.asarray(h, F64)
    mu_KxM = _means(sums)
    z_NxM = h - mu_KxM[labels]  # two-pass residuals
    y_NxK = _one_hot(labels, mu_KxM.shape[0])
    sq_N = jnp.sum(z_NxM * z_NxM, axis=1)
    zm_NxK = jnp.matmul(z_NxM, _centred(mu_KxM).T, precision=HI)
    return ResidualStats(
        acc.sqres_K + jnp.matmul(sq_N, y_NxK, precision=HI),
        acc.zm_gram_KxK + jnp.matmul(zm_NxK.T, zm_NxK, precision=HI),
    )


def residual_stats_update(acc: ResidualStats, h, labels, sums: ClassSums) -> ResidualStats:
    """Add a batch to the residual statistics about the final class means of ``sums``."""
    k = acc.sqres_K.shape[0]
    if np.ndim(h) != 2 or np.shape(h)[1] != sums.sum_KxM.shape[1]:
        raise ValueError(f"h must be 2-D (B x {sums.sum_KxM.shape[1]}), got shape {np.shape(h)}")
    _check_labels(labels, k, n=np.shape(h)[0], require_all=False)
    return _residual_stats_update(acc, h, labels, sums)


def _stats(h, labels, k: int) -> tuple[ClassSums, ResidualStats]:
    """Both passes over in-memory data (no checks; traced-safe)."""
    m = h.shape[1]
    sums = _class_sums_update(ClassSums(jnp.zeros((k,), F64), jnp.zeros((k, m), F64)), h, labels)
    stats = _residual_stats_update(
        ResidualStats(jnp.zeros((k,), F64), jnp.zeros((k, k), F64)), h, labels, sums
    )
    return sums, stats


# ----------------------------------------------------------------------------- formulas


def _pinv_sandwich_trace(a_KxK, g_KxK):
    """Tr(G^+ A G^+) for symmetric PSD G; eigenvalues of G <= PINV_RTOL * max are dropped."""
    lam_K, v_KxK = jnp.linalg.eigh(g_KxK)
    keep = lam_K > PINV_RTOL * jnp.max(lam_K)
    inv_K = jnp.where(keep, 1.0 / jnp.where(keep, lam_K, 1.0), 0.0)
    b_diag = jnp.einsum("ik,ij,jk->k", v_KxK, a_KxK, v_KxK, precision=HI)  # diag(V^T A V)
    return jnp.sum(b_diag * inv_K**2)


def _compression_from(sums: ClassSums, stats: ResidualStats):
    """C = Tr(Sigma_W)/Tr(Sigma_B), Sigma_W = (1/N) sum_i z_i z_i^T, Sigma_B = (1/K) Mc Mc^T."""
    tr_w = jnp.sum(stats.sqres_K) / jnp.sum(sums.count_K)
    tr_b = jnp.mean(jnp.sum(_centred(_means(sums)) ** 2, axis=1))
    return tr_w / tr_b


def _discrimination_from(mu_KxM):
    """D = 1 - max_{k != k'} cos(mu_k, mu_k') of the uncentred means."""
    nrm_K = jnp.linalg.norm(mu_KxM, axis=1)
    cos_KxK = jnp.matmul(mu_KxM, mu_KxM.T, precision=HI) / (nrm_K[:, None] * nrm_K[None, :])
    k = mu_KxM.shape[0]
    return 1.0 - jnp.max(jnp.where(np.eye(k, dtype=bool), -jnp.inf, cos_KxK))


def _nc1_from(sums: ClassSums, stats: ResidualStats):
    """NC1 = Tr(Sigma_W Sigma_B^+)/K = (1/N) Tr(G^+ A G^+), G = Mc^T Mc."""
    mc_KxM = _centred(_means(sums))
    g_KxK = jnp.matmul(mc_KxM, mc_KxM.T, precision=HI)
    return _pinv_sandwich_trace(stats.zm_gram_KxK, g_KxK) / jnp.sum(sums.count_K)


def _fuzziness_from(sums: ClassSums, stats: ResidualStats):
    """He & Su: Tr(SS_w SS_b^+) = (1/N) Tr(G^+ A G^+) with M = [sqrt(n_k/N)(mu_k - mu)]_k.

    mu is the sample mean; M = Mc Q D with Q = I - (n/N) 1^T and D = diag(sqrt(n/N)), so
    (Z M)^T (Z M) = D Q^T A Q D reuses the pass-2 Gram A of Mc.
    """
    n = jnp.sum(sums.count_K)
    p_K = sums.count_K / n
    k = p_K.shape[0]
    r_KxK = (jnp.eye(k, dtype=F64) - p_K[:, None] * jnp.ones((1, k), F64)) * jnp.sqrt(p_K)[None, :]
    mc_KxM = _centred(_means(sums))
    m_KxM = jnp.matmul(r_KxK.T, mc_KxM, precision=HI)  # rows sqrt(n_k/N)(mu_k - mu)
    g_KxK = jnp.matmul(m_KxM, m_KxM.T, precision=HI)
    a_KxK = jnp.matmul(jnp.matmul(r_KxK.T, stats.zm_gram_KxK, precision=HI), r_KxK, precision=HI)
    return _pinv_sandwich_trace(a_KxK, g_KxK) / n


@jax.jit
def metrics_from_stats(sums: ClassSums, stats: ResidualStats) -> dict:
    """compression, discrimination, nc1, separation_fuzziness from the two accumulators."""
    return {
        "compression": _compression_from(sums, stats),
        "discrimination": _discrimination_from(_means(sums)),
        "nc1": _nc1_from(sums, stats),
        "separation_fuzziness": _fuzziness_from(sums, stats),
    }


# ----------------------------------------------------------------------------- in-memory metrics


@functools.partial(jax.jit, static_argnames="num_classes")
def _compression(h, labels, num_classes):
    return _compression_from(*_stats(jnp.asarray(h, F64), labels, num_classes))


@functools.partial(jax.jit, static_argnames="num_classes")
def _nc1(h, labels, num_classes):
    return _nc1_from(*_stats(jnp.asarray(h, F64), labels, num_classes))


@functools.partial(jax.jit, static_argnames="num_classes")
def _fuzziness(h, labels, num_classes):
    return _fuzziness_from(*_stats(jnp.asarray(h, F64), labels, num_classes))


def _mu(h, labels, k: int):
    h = jnp.asarray(h, F64)
    return _means(_class_sums_update(class_sums_init(k, h.shape[1]), h, labels))


@functools.partial(jax.jit, static_argnames="num_classes")
def _discrimination(h, labels, num_classes):
    return _discrimination_from(_mu(h, labels, num_classes))


def compression(h_NxM, labels_N, num_classes: int):
    """C = Tr(Sigma_W)/Tr(Sigma_B) (smaller = more compressed); mu_G = mean of class means."""
    k = check_inputs(h_NxM, labels_N, num_classes)
    return _compression(h_NxM, labels_N, k)


def discrimination(h_NxM, labels_N, num_classes: int):
    """D = 1 - max_{k != k'} <mu_k, mu_k'>/(||mu_k|| ||mu_k'||), uncentred means."""
    k = check_inputs(h_NxM, labels_N, num_classes)
    return _discrimination(h_NxM, labels_N, k)


def nc1(h_NxM, labels_N, num_classes: int):
    """NC1 = Tr(Sigma_W Sigma_B^+)/K, computed via the K x K Gram of centred means."""
    k = check_inputs(h_NxM, labels_N, num_classes)
    return _nc1(h_NxM, labels_N, k)


def separation_fuzziness(h_NxM, labels_N, num_classes: int):
    """He & Su's D = Tr(SS_w SS_b^+), SS_b n_k-weighted about the sample mean."""
    k = check_inputs(h_NxM, labels_N, num_classes)
    return _fuzziness(h_NxM, labels_N, k)


@jax.jit
def _numerical_rank(h, energy):
    s = jnp.linalg.svd(jnp.asarray(h, F64), compute_uv=False)
    cum = jnp.cumsum(s)
    r = jnp.sum(cum < energy * cum[-1]) + 1
    return jnp.minimum(r, s.shape[0]).astype(jnp.int32)


def numerical_rank(h_NxM, energy: float = 0.95):
    """Smallest r with sum_{i<=r} s_i >= energy * sum_i s_i (s: singular values of h), int32."""
    if np.ndim(h_NxM) != 2:
        raise ValueError(f"h must be 2-D (N x m), got shape {np.shape(h_NxM)}")
    if min(np.shape(h_NxM)) == 0:
        raise ValueError(f"h must be non-empty, got shape {np.shape(h_NxM)}")
    if isinstance(energy, int | float) and not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    return _numerical_rank(h_NxM, energy)


def _cos_matrix(x_KxM):
    nrm_K = jnp.linalg.norm(x_KxM, axis=1)
    return jnp.matmul(x_KxM, x_KxM.T, precision=HI) / (nrm_K[:, None] * nrm_K[None, :])


@functools.partial(jax.jit, static_argnames="num_classes")
def _nc2(h, labels, num_classes):
    k = num_classes
    mc = _centred(_mu(h, labels, k))
    nrm = jnp.linalg.norm(mc, axis=1)
    cos = _cos_matrix(mc)[np.triu_indices(k, 1)]  # each pair once: same stats as over k != k'
    return {
        "equinorm": jnp.std(nrm) / jnp.mean(nrm),
        "equiangularity": jnp.std(cos),
        "max_angle_gap": jnp.mean(jnp.abs(cos + 1.0 / (k - 1))),
    }


def nc2(h_NxM, labels_N, num_classes: int) -> dict:
    """Papyan's NC2 on centred means mu_k - mu_G (mu_G = mean of class means).

    equinorm: std_k/mean_k of ||mu_k - mu_G||. equiangularity: std over k != k' of
    cos(mu_k - mu_G, mu_k' - mu_G). max_angle_gap: mean over k != k' of |cos + 1/(K-1)|
    (0 for a simplex ETF). All three are 0 at collapse.
    """
    k = check_inputs(h_NxM, labels_N, num_classes)
    return _nc2(h_NxM, labels_N, k)


@functools.partial(jax.jit, static_argnames="num_classes")
def _nc3(w, h, labels, num_classes):
    w = jnp.asarray(w, F64)
    w = w / jnp.linalg.norm(w)
    mu = _mu(h, labels, num_classes)

    def dist(m_KxM):
        return jnp.sum((w - m_KxM / jnp.linalg.norm(m_KxM)) ** 2)

    return {"centred": dist(_centred(mu)), "uncentred": dist(mu)}


def nc3(w_KxM, h_NxM, labels_N, num_classes: int) -> dict:
    """NC3 = ||W^T/||W||_F - M/||M||_F||_F^2, M (m x K) the centred resp. uncentred means.

    ``w_KxM`` is the classifier (logits = h W^T). Bias-free nets never reach 0 in the centred form
    (limit 2 - 2 sqrt((K-1)/K)).
    """
    k = check_inputs(h_NxM, labels_N, num_classes)
    if np.shape(w_KxM) != (k, np.shape(h_NxM)[1]):
        raise ValueError(
            f"w must have shape (K, m) = {(k, np.shape(h_NxM)[1])}, got {np.shape(w_KxM)}"
        )
    return _nc3(w_KxM, h_NxM, labels_N, k)


@functools.partial(jax.jit, static_argnames="num_classes")
def _nc4(h, labels, num_classes, logits):
    h = jnp.asarray(h, F64)
    mu = _mu(h, labels, num_classes)
    shift = mu.mean(0, keepdims=True)  # distances are translation invariant; less cancellation
    hc, mc = h - shift, mu - shift
    # ||h_i - mu_k||^2 up to the k-independent ||h_i||^2
    d_NxK = jnp.sum(mc * mc, axis=1)[None, :] - 2.0 * jnp.matmul(hc, mc.T, precision=HI)
    return jnp.mean((jnp.argmin(d_NxK, axis=1) != jnp.argmax(logits, axis=1)).astype(F64))


def nc4(h_NxM, labels_N, num_classes: int, logits_NxK):
    """Fraction of samples whose nearest class mean (Euclidean) differs from argmax of logits."""
    k = check_inputs(h_NxM, labels_N, num_classes)
    if np.shape(logits_NxK) != (np.shape(h_NxM)[0], k):
        raise ValueError(
            f"logits must have shape (N, K) = {(np.shape(h_NxM)[0], k)}, got {np.shape(logits_NxK)}"
        )
    return _nc4(h_NxM, labels_N, k, logits_NxK)


# ----------------------------------------------------------------------------- drivers


def layerwise(metric_fn: Callable, features: Sequence, labels_N, num_classes: int) -> jax.Array:
    """[metric_fn(h_l, labels, K) for l = 0..L-1] as a float64 array (L,); layer 0 = input.

    Layers may have different widths. ``metric_fn`` must return a scalar. Consecutive layers of
    one shape are stacked and ``jax.vmap``ped, so the compiled size does not grow with depth.
    """
    features = list(features)
    if not features:
        raise ValueError("features must hold at least one layer, got 0")
    out, start = [], 0
    for end in range(1, len(features) + 1):
        if end == len(features) or jnp.shape(features[end]) != jnp.shape(features[start]):
            run_LxNxM = jnp.stack(features[start:end])
            values = jax.vmap(metric_fn, in_axes=(0, None, None))(run_LxNxM, labels_N,
                                                                   num_classes)
            out.append(jnp.asarray(values, F64))
            start = end
    return jnp.concatenate(out)


def streaming_metrics(batches_fn: Callable[[], Iterable], num_classes: int) -> dict:
    """Two passes over ``batches_fn()`` (a fresh iterable of (h_BxM, labels_B) each call).

    Returns compression, discrimination, nc1 and separation_fuzziness, equal to the in-memory
    metrics on the concatenated data up to rounding.
    """
    k = _num_classes(num_classes)
    sums = None
    for h, labels in batches_fn():
        if sums is None:
            if np.ndim(h) != 2:
                raise ValueError(f"h must be 2-D (B x m), got shape {np.shape(h)}")
            sums = class_sums_init(k, np.shape(h)[1])
        sums = class_sums_update(sums, h, labels)
    if sums is None:
        raise ValueError("batches_fn() yielded no batches")
    counts = np.asarray(sums.count_K)
    if (counts == 0).any():
        raise ValueError(
            f"class {int(np.flatnonzero(counts == 0)[0])} has no samples "
            f"(counts per class {counts.astype(int).tolist()})"
        )
    stats = residual_stats_init(k)
    seen = 0.0
    for h, labels in batches_fn():
        stats = residual_stats_update(stats, h, labels, sums)
        seen += np.shape(h)[0]
    if seen != counts.sum():
        raise ValueError(
            f"batches_fn() gave {int(counts.sum())} samples in pass 1 but {int(seen)} in pass 2"
        )
    return metrics_from_stats(sums, stats)
