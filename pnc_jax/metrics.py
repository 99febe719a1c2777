"""Layerwise collapse metrics (science.md, section 1): exact in float64, jit/vmap/grad-able.

Conventions: features ``h_NxM`` (rows are samples), integer ``labels_N`` in [0, K), ``num_classes``
K a static Python int. Every metric takes ``(h_NxM, labels_N, num_classes, *, ...)``, so
``layerwise(metric, features, labels_N, K)`` takes any of them. Symbols: class means mu_k
(``mu_KxM``), counts n_k, N = sum_k n_k, residuals z_i = h_i - mu_{y_i} (``Z``, N x m).

Precision. Every public function computes in float64 inside a scoped ``jax.enable_x64(True)``
(``float64_scope``), whatever the caller's ``jax_enable_x64``: float32 features are converted
inside the metric (the caller's arrays and global config are untouched), results come back as
float64 arrays (``float(x)`` keeps every digit; JAX arithmetic with them under x64 off rounds to
float32, with JAX's warning), and gradients come back in the input's dtype. This works inside the
caller's ``jit``, ``vmap``, ``grad`` and ``lax.scan`` (``run_in_float64``). Chosen by
measurement (benchmarks/bench_metrics.py): the same formulas in float32 cannot meet the contract
(C ~ 1e-12 needs float64; in float32 the structurally zero eigenvalue of the K x K Gram comes out
~1e-7 of the largest and gets inverted, so NC1 is off by orders of magnitude even on ordinary
features), while float64 is slower only by a small factor on CPU. A backend without float64
raises (``float64_scope``).

Centring (``center``). mu_G = (1/N) sum_i h_i, the mean over all samples (Wang et al.;
``center="sample"``, the default) or the mean of the class means (``center="class"``); they differ
only for imbalanced classes. Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T, unweighted, is
used by C, NC1, NC2 and NC3. He & Su's fuzziness has its own n_k-weighted SS_b about the sample
mean and ignores ``center``. Rank: with the sample mean, Sigma_B = (1/K) Mc^T Mc + d d^T with
Mc the class-centred means and d = mean of class means - sample mean: the "rank-one spike"
d = sum_k (1/K - n_k/N)(mu_k - mean of class means) lies in the span of the centred means, so
Sigma_B keeps rank <= K-1 and its pinv acts on the same subspace; NC1 = Tr(Sigma_W Sigma_B^+)/K
is computed with exactly this Sigma_B (the K x K Gram of the rows mu_k - mu_G has null vector
(n_k)_k instead of 1). In float64 that null eigenvalue is ~1e-16 of the largest, far below
``PINV_RTOL``; no spike is inverted.

Numerics: traces are two-pass (squared norms of residuals about the class means, never
E||h||^2 - ||mu||^2); NC1 and the fuzziness go through K x K Grams,
Tr(S_W (M^T M)^+) = Tr(G^+ A G^+)/N, G = M M^T, A = (Z M^T)^T (Z M^T), with ``jnp.linalg.pinv``
(singular values of G below ``PINV_RTOL`` times the largest count as zero; its custom JVP keeps
gradients finite at degenerate spectra). Pass 2 accumulates A_c about the class-centred means
once; every centring is A = T A_c T^T for a K x K matrix T. Every pass is O(N m K + K^2 m + K^3).

Masks and absent classes. ``mask`` (N,) bool or non-negative float weights: every statistic is
weighted (a weight-0 sample is absent). A class of total weight 0 is left out of every
between-class quantity (K becomes the number of present classes K'), so a minibatch that misses a
class gives the metrics of the classes it holds, never NaN; with K' < 2 the between-class
metrics are undefined and return NaN. Eagerly (concrete labels, no mask) an empty class is a
ValueError; labels outside [0, K) are a ValueError eagerly and count as masked when traced.

Streaming (N beyond memory): pass 1 accumulates ``ClassSums`` over batches, pass 2, given the means,
``ResidualStats``; ``metrics_from_stats`` turns them into the metrics. The in-memory metrics are
built from the same helpers, so a formula lives in one function.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

F64 = jnp.float64
HI = jax.lax.Precision.HIGHEST
# Singular values of a K x K Gram below PINV_RTOL * largest count as zero (singular values of the
# centred means below 1e-5 of the largest). The Gram's rounding floor is ~ m * eps ~ 1e-14.
PINV_RTOL = 1e-10
CENTERS = ("sample", "class")

__all__ = [
    "CENTERS",
    "PINV_RTOL",
    "ClassSums",
    "ResidualStats",
    "check_inputs",
    "class_sums_init",
    "class_sums_update",
    "compression",
    "discrimination",
    "float64_scope",
    "layerwise",
    "metrics_from_stats",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "numerical_rank",
    "rank_from_gram",
    "rank_from_singular_values",
    "residual_stats_init",
    "residual_stats_update",
    "run_in_float64",
    "separation_fuzziness",
    "streaming_metrics",
]


# ----------------------------------------------------------------------------- float64 scope

_FLOAT64_OK: dict[str, bool] = {}


def _backend_has_float64() -> bool:
    """Does the default backend compute float64? Probed once per platform (a tiny computation)."""
    platform = jax.default_backend()
    if platform not in _FLOAT64_OK:
        with jax.ensure_compile_time_eval(), jax.enable_x64(True):
            try:
                x = jax.device_put(np.array([1.0, 2.0**-40]))
                got = (x[0] + x[1]) - x[0]
                ok = got.dtype == np.float64 and float(got) == 2.0**-40
            except Exception:  # noqa: BLE001  (a backend that refuses float64 raises anything)
                ok = False
        _FLOAT64_OK[platform] = ok
    return _FLOAT64_OK[platform]


@contextlib.contextmanager
def float64_scope() -> Iterator[None]:
    """``jax.enable_x64(True)`` for the enclosed code only (thread-local; the global flag and the
    caller's arrays are untouched). Raises RuntimeError on a backend without float64."""
    if not _backend_has_float64():
        raise RuntimeError(
            f"pnc_jax metrics need float64, which the {jax.default_backend()!r} backend does not "
            "compute; run them on CPU (e.g. jax.device_put(h, jax.devices('cpu')[0]))"
        )
    with jax.enable_x64(True):
        yield


def run_in_float64(fn: Callable[..., Any], *args: Any, **static: Any) -> Any:
    """``fn(*args, **static)`` in ``float64_scope``; ``args`` are pytrees of arrays (or None).

    With the caller's x64 off and traced arguments, JAX may transform the call after the scope
    has closed: a caller's ``grad`` transposes it and a caller's ``vmap`` (of a ``jit``) batches
    it later, in float32. So the call then becomes a ``jax.custom_vjp`` of a
    ``jax.custom_batching.custom_vmap`` whose primal, batching rule and backward pass
    (``jax.vjp`` of ``fn``, recomputing the forward) all run in the scope. Gradients come back
    in the inputs' dtypes; forward-mode (``jax.jvp``) then needs x64 on.
    """
    call = functools.partial(fn, **static)
    caller_x64 = bool(jax.enable_x64.value)
    with float64_scope():  # numpy float64 inputs become float64 jax arrays, not float32 ones
        args = jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jnp.asarray(a), args)
        traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args))
        if caller_x64 or not traced:
            return call(*args)
    return _guarded(call)(*args)


def _scoped(fn: Callable[..., Any]) -> Callable[..., Any]:
    def scoped(*args):
        with float64_scope():
            return fn(*args)

    return scoped


def _scoped_vmap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (which enters the scope itself) with a vmap rule that batches it in the scope."""
    batched_fn = jax.custom_batching.custom_vmap(fn)

    @batched_fn.def_vmap
    def rule(axis_size, in_batched, *args):
        in_axes = tuple(jax.tree.map(lambda b: 0 if b else None, in_batched))
        with float64_scope():
            out = jax.vmap(fn, in_axes=in_axes, axis_size=axis_size)(*args)
        return out, jax.tree.map(lambda _: True, out)

    return batched_fn


def _guarded(call: Callable[..., Any]) -> Callable[..., Any]:
    primal = _scoped_vmap(_scoped(call))

    def backward(args, ct):
        leaves, tree = jax.tree.flatten(args)
        floats = [jnp.issubdtype(jnp.result_type(a), jnp.floating) for a in leaves]

        def of_floats(*float_leaves):
            it = iter(float_leaves)
            return call(*tree.unflatten([next(it) if f else a for a, f in zip(leaves, floats,
                                                                                strict=True)]))

        _, vjp_fn = jax.vjp(of_floats, *[a for a, f in zip(leaves, floats, strict=True) if f])
        grads = iter(vjp_fn(jax.tree.map(lambda c: jnp.asarray(c, F64), ct)))
        return tree.unflatten([next(grads) if f else None for f in floats])

    backward_vmap = _scoped_vmap(_scoped(backward))
    guarded = jax.custom_vjp(primal)
    guarded.defvjp(lambda *args: (primal(*args), args), backward_vmap)
    return guarded


def _in_float64(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with float64_scope():
            return fn(*args, **kwargs)

    return wrapped


# ----------------------------------------------------------------------------- input checks


def _num_classes(num_classes: Any) -> int:
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


def _check_center(center: Any) -> str:
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    return center


def _dtype(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)
    return np.asarray(x).dtype if dtype is None else dtype


def _check_mask(mask: Any, n: int) -> None:
    if mask is None:
        return
    if np.shape(mask) != (n,):
        raise ValueError(f"mask must have shape (N,) = ({n},), got {np.shape(mask)}")
    dtype = _dtype(mask)
    if not (jnp.issubdtype(dtype, jnp.bool_) or jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(f"mask must be bool or float weights, got dtype {dtype}")
    if not isinstance(mask, jax.core.Tracer):
        w = np.asarray(mask, np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"mask weights must be finite and >= 0, got min {np.min(w)}")


def _check_labels(labels: Any, num_classes: int, n: int | None = None,
                  require_all: bool = True) -> np.ndarray | None:
    """Shape/dtype checks always; range and empty-class checks when ``labels`` is concrete."""
    dtype = _dtype(labels)
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


def check_inputs(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int,
                 mask: ArrayLike | None = None) -> int:
    """Validate (h_NxM, labels_N, num_classes[, mask]); return K as an int. Raises ValueError.

    Always: h 2-D, labels 1-D integer, same N, K an int >= 2, mask (N,) bool/float. When concrete
    (not jax Tracers): labels in [0, K), mask weights >= 0, and, without a mask, every class
    non-empty.
    """
    k = _num_classes(num_classes)
    if np.ndim(h_NxM) != 2:
        raise ValueError(f"h must be 2-D (N x m), got shape {np.shape(h_NxM)}")
    n = np.shape(h_NxM)[0]
    _check_labels(labels_N, k, n=n, require_all=mask is None)
    _check_mask(mask, n)
    return k


# ----------------------------------------------------------------------------- accumulators


class ClassSums(NamedTuple):
    """Pass-1 accumulator: n_k = sum_{i in k} w_i (float64) and sum_{i in k} w_i h_i."""

    count_K: jax.Array
    sum_KxM: jax.Array


class ResidualStats(NamedTuple):
    """Pass-2 accumulator, given the class means.

    sqres_K: sum_{i in k} w_i ||h_i - mu_k||^2. zm_gram_KxK: A_c = (Z Mc^T)^T W (Z Mc^T), Mc the
    K x m matrix of mu_k - (mean of the present class means), zero rows for absent classes.
    """

    sqres_K: jax.Array
    zm_gram_KxK: jax.Array


def _zeros_sums(k: int, m: int) -> ClassSums:
    return ClassSums(jnp.zeros((k,), F64), jnp.zeros((k, m), F64))


def _zeros_res(k: int) -> ResidualStats:
    return ResidualStats(jnp.zeros((k,), F64), jnp.zeros((k, k), F64))


@_in_float64
def class_sums_init(num_classes: int, m: int) -> ClassSums:
    """Empty pass-1 accumulator for K classes of m-dimensional features."""
    return _zeros_sums(_num_classes(num_classes), int(m))


@_in_float64
def residual_stats_init(num_classes: int) -> ResidualStats:
    """Empty pass-2 accumulator for K classes."""
    return _zeros_res(_num_classes(num_classes))


def _weighted_one_hot(labels_N: jax.Array, k: int, mask: jax.Array | None) -> jax.Array:
    """N x K one-hot times the sample weights (labels outside [0, K) get an all-zero row)."""
    y_NxK = jax.nn.one_hot(labels_N, k, dtype=F64)
    if mask is None:
        return y_NxK
    return y_NxK * jnp.asarray(mask, F64)[:, None]


def _as_f64(h_NxM: jax.Array, mask: jax.Array | None) -> jax.Array:
    """float64 features; rows of weight 0 zeroed (a masked row may hold anything, even NaN)."""
    h_NxM = jnp.asarray(h_NxM, F64)
    return h_NxM if mask is None else jnp.where((jnp.asarray(mask) > 0)[:, None], h_NxM, 0.0)


def _sums_update(acc: ClassSums, h_NxM: jax.Array, labels_N: jax.Array,
                 mask: jax.Array | None) -> ClassSums:
    y_NxK = _weighted_one_hot(labels_N, acc.count_K.shape[0], mask)
    h_NxM = _as_f64(h_NxM, mask)
    return ClassSums(acc.count_K + y_NxK.sum(0),
                     acc.sum_KxM + jnp.matmul(y_NxK.T, h_NxM, precision=HI))


def _present(count_K: jax.Array) -> jax.Array:
    return count_K > 0


def _means(sums: ClassSums) -> jax.Array:
    """mu_KxM; zero rows for absent classes."""
    present_K = _present(sums.count_K)
    safe_K = jnp.where(present_K, sums.count_K, 1.0)
    return jnp.where(present_K[:, None], sums.sum_KxM / safe_K[:, None], 0.0)


def _class_centred(mu_KxM: jax.Array, present_K: jax.Array) -> jax.Array:
    """Mc: mu_k - (mean of the present class means); zero rows for absent classes."""
    mean_1xM = jnp.sum(mu_KxM, 0, keepdims=True) / jnp.maximum(jnp.sum(present_K), 1)
    return jnp.where(present_K[:, None], mu_KxM - mean_1xM, 0.0)


class _Residuals(NamedTuple):
    """Per-sample pass-2 quantities: the weighted one-hot y_NxK, w_N, ||z_i||^2 and z_i . Mc_k."""

    y_NxK: jax.Array
    w_N: jax.Array
    sq_N: jax.Array
    zm_NxK: jax.Array
    mc_KxM: jax.Array


def _residuals(h_NxM: jax.Array, labels_N: jax.Array, sums: ClassSums,
               mask: jax.Array | None) -> _Residuals:
    k = sums.count_K.shape[0]
    h_NxM = _as_f64(h_NxM, mask)
    mu_KxM = _means(sums)
    z_NxM = h_NxM - mu_KxM[labels_N]  # two-pass residuals
    y_NxK = _weighted_one_hot(labels_N, k, mask)
    mc_KxM = _class_centred(mu_KxM, _present(sums.count_K))
    return _Residuals(y_NxK, y_NxK.sum(1),  # w_N: 0 for a label outside [0, K)
                      jnp.sum(z_NxM * z_NxM, axis=1),
                      jnp.matmul(z_NxM, mc_KxM.T, precision=HI), mc_KxM)


def _res_add(acc: ResidualStats, r: _Residuals) -> ResidualStats:
    return ResidualStats(
        acc.sqres_K + jnp.matmul(r.sq_N, r.y_NxK, precision=HI),
        acc.zm_gram_KxK + jnp.matmul(r.zm_NxK.T, r.zm_NxK * r.w_N[:, None], precision=HI),
    )


def _res_update(acc: ResidualStats, h_NxM: jax.Array, labels_N: jax.Array, sums: ClassSums,
                mask: jax.Array | None) -> ResidualStats:
    return _res_add(acc, _residuals(h_NxM, labels_N, sums, mask))


_sums_update_jit = jax.jit(_sums_update)
_res_update_jit = jax.jit(_res_update)


def _check_batch(h: ArrayLike, labels: ArrayLike, k: int, m: int, mask: ArrayLike | None) -> None:
    if np.ndim(h) != 2 or np.shape(h)[1] != m:
        raise ValueError(f"h must be 2-D (B x {m}), got shape {np.shape(h)}")
    _check_labels(labels, k, n=np.shape(h)[0], require_all=False)
    _check_mask(mask, np.shape(h)[0])


@_in_float64
def class_sums_update(acc: ClassSums, h_BxM: ArrayLike, labels_B: ArrayLike,
                      mask: ArrayLike | None = None) -> ClassSums:
    """Add a batch (h_BxM, labels_B[, mask]) to the per-class counts and sums."""
    _check_batch(h_BxM, labels_B, acc.count_K.shape[0], acc.sum_KxM.shape[1], mask)
    return _sums_update_jit(acc, h_BxM, labels_B, mask)


@_in_float64
def residual_stats_update(acc: ResidualStats, h_BxM: ArrayLike, labels_B: ArrayLike,
                          sums: ClassSums, mask: ArrayLike | None = None) -> ResidualStats:
    """Add a batch to the residual statistics about the final class means of ``sums``."""
    _check_batch(h_BxM, labels_B, acc.sqres_K.shape[0], sums.sum_KxM.shape[1], mask)
    return _res_update_jit(acc, h_BxM, labels_B, sums, mask)


def _stats(h_NxM: jax.Array, labels_N: jax.Array, k: int,
           mask: jax.Array | None) -> tuple[ClassSums, ResidualStats]:
    """Both passes over in-memory data (no checks; traced-safe; inside float64_scope)."""
    sums = _sums_update(_zeros_sums(k, h_NxM.shape[1]), h_NxM, labels_N, mask)
    return sums, _res_update(_zeros_res(k), h_NxM, labels_N, sums, mask)


# ----------------------------------------------------------------------------- formulas


class Geometry(NamedTuple):
    """Class geometry from ``ClassSums``: present_K, K' = #present (float), N, mu_KxM, Mc_KxM
    (class-centred), t_KxK with M = T Mc the means centred on mu_G (zero rows if absent)."""

    present_K: jax.Array
    k_eff: jax.Array
    n: jax.Array
    mu_KxM: jax.Array
    mc_KxM: jax.Array
    t_KxK: jax.Array


def _geometry(sums: ClassSums, center: str) -> Geometry:
    present_K = _present(sums.count_K)
    mu_KxM = _means(sums)
    k = present_K.shape[0]
    n = jnp.sum(sums.count_K)
    if center == "sample":
        # mu_k - mu = Mc_k - sum_j p_j Mc_j (sum_j p_j = 1): T = diag(present) (I - 1 p^T)
        p_K = sums.count_K / n
        t_KxK = present_K[:, None] * (jnp.eye(k, dtype=F64) - jnp.ones((k, 1), F64) * p_K[None, :])
    else:
        t_KxK = jnp.eye(k, dtype=F64)
    return Geometry(present_K, jnp.sum(present_K).astype(F64), n, mu_KxM,
                    _class_centred(mu_KxM, present_K), t_KxK)


def _centred(g: Geometry) -> jax.Array:
    """mu_k - mu_G as K x m rows (zero rows for absent classes)."""
    return jnp.matmul(g.t_KxK, g.mc_KxM, precision=HI)


def _defined(g: Geometry, value: jax.Array) -> jax.Array:
    """NaN where fewer than two classes are present (between-class quantities undefined)."""
    return jnp.where(g.k_eff >= 2, value, jnp.nan)


def _pinv_sandwich_trace(t_KxK: jax.Array, g: Geometry, stats: ResidualStats) -> jax.Array:
    """Tr(G^+ A G^+) with M = T Mc, G = M M^T, A = T A_c T^T (= (Z M^T)^T W (Z M^T))."""
    m_KxM = jnp.matmul(t_KxK, g.mc_KxM, precision=HI)
    g_KxK = jnp.matmul(m_KxM, m_KxM.T, precision=HI)
    a_KxK = jnp.matmul(jnp.matmul(t_KxK, stats.zm_gram_KxK, precision=HI), t_KxK.T, precision=HI)
    p_KxK = jnp.linalg.pinv(g_KxK, rtol=PINV_RTOL, hermitian=True)
    return jnp.sum(jnp.matmul(p_KxK, a_KxK, precision=HI) * p_KxK)  # P symmetric


def _compression_from(g: Geometry, stats: ResidualStats) -> jax.Array:
    """C = Tr(Sigma_W)/Tr(Sigma_B), Sigma_W = (1/N) sum_i w_i z_i z_i^T, Sigma_B = (1/K') M^T M."""
    tr_w = jnp.sum(stats.sqres_K) / g.n
    tr_b = jnp.sum(_centred(g) ** 2) / g.k_eff
    return _defined(g, tr_w / tr_b)


def _row_norms(x_KxM: jax.Array, present_K: jax.Array) -> jax.Array:
    """||x_k|| for present classes, 1 for absent ones (finite, also in gradients)."""
    return jnp.sqrt(jnp.where(present_K, jnp.sum(x_KxM * x_KxM, axis=1), 1.0))


def _cos_KxK(x_KxM: jax.Array, present_K: jax.Array) -> jax.Array:
    """Cosines of the rows (rows of absent classes: 0, never NaN, also in gradients)."""
    nrm_K = _row_norms(x_KxM, present_K)
    return jnp.matmul(x_KxM, x_KxM.T, precision=HI) / (nrm_K[:, None] * nrm_K[None, :])


def _pairs(present_K: jax.Array) -> jax.Array:
    """K x K mask of pairs k < k' of present classes."""
    k = present_K.shape[0]
    return jnp.asarray(np.triu(np.ones((k, k), bool), 1)) & present_K[:, None] & present_K[None, :]


def _discrimination_from(g: Geometry) -> jax.Array:
    """D = 1 - max_{k != k'} cos(mu_k, mu_k') of the uncentred means (present classes)."""
    cos_KxK = _cos_KxK(g.mu_KxM, g.present_K)
    return _defined(g, 1.0 - jnp.max(jnp.where(_pairs(g.present_K), cos_KxK, -jnp.inf)))


def _nc1_from(g: Geometry, stats: ResidualStats) -> jax.Array:
    """NC1 = Tr(Sigma_W Sigma_B^+)/K' = (1/N) Tr(G^+ A G^+), M = T Mc (rows mu_k - mu_G)."""
    return _defined(g, _pinv_sandwich_trace(g.t_KxK, g, stats) / g.n)


def _fuzziness_from(g: Geometry, sums: ClassSums, stats: ResidualStats) -> jax.Array:
    """He & Su: Tr(SS_w SS_b^+) = (1/N) Tr(G^+ A G^+), M rows sqrt(n_k/N)(mu_k - mu), mu the
    sample mean: M = diag(sqrt p)(I - 1 p^T) Mc (p = n_k/N), whatever ``center``."""
    k = sums.count_K.shape[0]
    p_K = sums.count_K / g.n
    t_KxK = jnp.sqrt(p_K)[:, None] * (jnp.eye(k, dtype=F64) - jnp.ones((k, 1), F64) * p_K[None, :])
    return _defined(g, _pinv_sandwich_trace(t_KxK, g, stats) / g.n)


def _mean_std(x: jax.Array, keep: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = jnp.sum(jnp.where(keep, x, 0.0)) / count
    var = jnp.sum(jnp.where(keep, (x - mean) ** 2, 0.0)) / count
    return mean, jnp.sqrt(var)


def _nc2_from(g: Geometry) -> dict[str, jax.Array]:
    m_KxM = _centred(g)
    mean, std = _mean_std(_row_norms(m_KxM, g.present_K), g.present_K, g.k_eff)
    pairs = _pairs(g.present_K)
    num_pairs = g.k_eff * (g.k_eff - 1) / 2
    cos_KxK = _cos_KxK(m_KxM, g.present_K)
    _, cos_std = _mean_std(cos_KxK, pairs, num_pairs)
    gap = jnp.abs(cos_KxK + 1.0 / (g.k_eff - 1))
    return {
        "nc2_equinorm": _defined(g, std / mean),
        "nc2_equiangularity": _defined(g, cos_std),
        "nc2_max_angle_gap": _defined(g, jnp.sum(jnp.where(pairs, gap, 0.0)) / num_pairs),
    }


def _nc3_from(g: Geometry, w_KxM: jax.Array) -> dict[str, jax.Array]:
    w_KxM = jnp.where(g.present_K[:, None], jnp.asarray(w_KxM, F64), 0.0)
    w_KxM = w_KxM / jnp.sqrt(jnp.sum(w_KxM**2))

    def dist(m_KxM: jax.Array) -> jax.Array:
        return _defined(g, jnp.sum((w_KxM - m_KxM / jnp.sqrt(jnp.sum(m_KxM**2))) ** 2))

    return {"nc3": dist(_centred(g)), "nc3_uncentred": dist(g.mu_KxM)}


def _first_index(x_NxK: jax.Array, extreme: Callable[..., jax.Array]) -> jax.Array:
    """argmin (``jnp.min``) / argmax (``jnp.max``) along axis 1 as int32, the first on ties.

    Not ``jnp.argmin``: its float64 reduction gets a float32 initial value when a caller with x64
    off ``vmap``s the traced metric (batching runs after ``float64_scope`` has closed)."""
    hit_NxK = (x_NxK == extreme(x_NxK, axis=1, keepdims=True)).astype(jnp.int32)
    return jax.lax.argmax(hit_NxK, 1, jnp.int32)


def _nc4_mismatch(r: _Residuals, labels_N: jax.Array, present_K: jax.Array,
                  logits_NxK: jax.Array) -> jax.Array:
    """sum_i w_i [nearest present class mean (Euclidean) != argmax logits].

    ||h_i - mu_k||^2 = ||z_i + Mc_{y_i} - Mc_k||^2, whose k-dependent part is
    ||Mc_k||^2 - 2 Mc_{y_i} . Mc_k - 2 z_i . Mc_k: pass 2's z_i . Mc_k, no further N x m pass."""
    g_KxK = jnp.matmul(r.mc_KxM, r.mc_KxM.T, precision=HI)
    d_NxK = jnp.diagonal(g_KxK)[None, :] - 2.0 * (g_KxK[labels_N] + r.zm_NxK)
    d_NxK = jnp.where(present_K[None, :], d_NxK, jnp.inf)  # absent classes are never nearest
    differ_N = _first_index(d_NxK, jnp.min) != _first_index(jnp.asarray(logits_NxK), jnp.max)
    return jnp.sum(jnp.where(differ_N, r.w_N, 0.0))


def _finish_four(sums: ClassSums, stats: ResidualStats, center: str) -> dict[str, jax.Array]:
    g = _geometry(sums, center)
    return {
        "compression": _compression_from(g, stats),
        "discrimination": _discrimination_from(g),
        "nc1": _nc1_from(g, stats),
        "fuzziness": _fuzziness_from(g, sums, stats),
    }


@functools.partial(jax.jit, static_argnames="center")
def _metrics_from_stats(sums: ClassSums, stats: ResidualStats, center: str) -> dict:
    return _finish_four(sums, stats, center)


@_in_float64
def metrics_from_stats(sums: ClassSums, stats: ResidualStats, *,
                       center: str = "sample") -> dict[str, jax.Array]:
    """compression, discrimination, nc1, fuzziness from the two accumulators (float64 scalars)."""
    return _metrics_from_stats(sums, stats, _check_center(center))


# ----------------------------------------------------------------------------- in-memory metrics

_STATIC = ("num_classes", "center")


def _scalar(h_NxM, labels_N, mask, num_classes, center, *, which):
    sums, stats = _stats(h_NxM, labels_N, num_classes, mask)
    g = _geometry(sums, center)
    if which == "compression":
        return _compression_from(g, stats)
    if which == "nc1":
        return _nc1_from(g, stats)
    return _fuzziness_from(g, sums, stats)


def _geometry_of(h_NxM, labels_N, mask, k: int, center: str) -> Geometry:
    sums = _sums_update(_zeros_sums(k, h_NxM.shape[1]), h_NxM, labels_N, mask)
    return _geometry(sums, center)


_compression = jax.jit(functools.partial(_scalar, which="compression"), static_argnames=_STATIC)
_nc1 = jax.jit(functools.partial(_scalar, which="nc1"), static_argnames=_STATIC)
_fuzziness = jax.jit(functools.partial(_scalar, which="fuzziness"), static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames="num_classes")
def _discrimination(h_NxM, labels_N, mask, num_classes):
    return _discrimination_from(_geometry_of(h_NxM, labels_N, mask, num_classes, "class"))


def compression(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int, *,
                center: str = "sample", mask: ArrayLike | None = None) -> jax.Array:
    """C = Tr(Sigma_W)/Tr(Sigma_B) (smaller = more compressed), Sigma_B about mu_G = the sample
    mean (``center="sample"``) or the mean of the class means (``"class"``). float64 scalar."""
    k = check_inputs(h_NxM, labels_N, num_classes, mask)
    return run_in_float64(_compression, h_NxM, labels_N, mask, num_classes=k,
                          center=_check_center(center))


def discrimination(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int, *,
                   mask: ArrayLike | None = None) -> jax.Array:
    """D = 1 - max_{k != k'} <mu_k, mu_k'>/(||mu_k|| ||mu_k'||), uncentred means. float64."""
    k = check_inputs(h_NxM, labels_N, num_classes, mask)
    return run_in_float64(_discrimination, h_NxM, labels_N, mask, num_classes=k)


def nc1(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int, *,
        center: str = "sample", mask: ArrayLike | None = None) -> jax.Array:
    """NC1 = Tr(Sigma_W Sigma_B^+)/K, Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T with
    mu_G the sample mean (default) or the mean of the class means (``center="class"``); via the
    K x K Gram of the centred means (module docstring). float64 scalar."""
    k = check_inputs(h_NxM, labels_N, num_classes, mask)
    return run_in_float64(_nc1, h_NxM, labels_N, mask, num_classes=k,
                          center=_check_center(center))


def separation_fuzziness(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int, *,
                         mask: ArrayLike | None = None) -> jax.Array:
    """He & Su's D = Tr(SS_w SS_b^+), SS_b n_k-weighted about the sample mean. Key "fuzziness"."""
    k = check_inputs(h_NxM, labels_N, num_classes, mask)
    return run_in_float64(_fuzziness, h_NxM, labels_N, mask, num_classes=k, center="sample")


def rank_from_singular_values(s: ArrayLike, energy: ArrayLike = 0.95) -> jax.Array:
    """Smallest r with sum_{i<=r} s_i >= energy * sum_i s_i (s in any order), int32."""
    s = jnp.sort(jnp.asarray(s))[::-1]
    cum = jnp.cumsum(s)
    r = jnp.sum(cum < energy * cum[-1]) + 1
    return jnp.minimum(r, s.shape[0]).astype(jnp.int32)


def rank_from_gram(gram_MxM: ArrayLike, energy: ArrayLike = 0.95) -> jax.Array:
    """Numerical rank of H from its Gram H^T H (or H H^T): singular values sqrt(max(eig, 0)).

    A Gram eigenvalue is exact to ~eps s_max^2, so a singular value to ~1e-8 s_max in float64;
    the 95%-energy rank (a sum of singular values) does not notice. Call in float64."""
    lam = jnp.linalg.eigvalsh(gram_MxM)
    return rank_from_singular_values(jnp.sqrt(jnp.maximum(lam, 0.0)), energy)


@jax.jit
def _numerical_rank(h_NxM, energy, mask):
    h_NxM = _as_f64(h_NxM, mask)
    if mask is not None:
        h_NxM = h_NxM * jnp.sqrt(jnp.asarray(mask, F64))[:, None]
    return rank_from_singular_values(jnp.linalg.svd(h_NxM, compute_uv=False), energy)


@_in_float64
def numerical_rank(h_NxM: ArrayLike, labels_N: ArrayLike | None = None,
                   num_classes: int | None = None, *, energy: float = 0.95,
                   mask: ArrayLike | None = None) -> jax.Array:
    """Smallest r with sum_{i<=r} s_i >= energy * sum_i s_i (s: singular values of h, rows
    scaled by sqrt(mask)), int32. ``labels_N``/``num_classes`` are unused (the common metric
    signature, for ``layerwise``); checked when given."""
    if np.ndim(h_NxM) != 2:
        raise ValueError(f"h must be 2-D (N x m), got shape {np.shape(h_NxM)}")
    if min(np.shape(h_NxM)) == 0:
        raise ValueError(f"h must be non-empty, got shape {np.shape(h_NxM)}")
    if labels_N is not None or num_classes is not None:
        _check_labels(labels_N, _num_classes(num_classes), n=np.shape(h_NxM)[0],
                      require_all=False)
    _check_mask(mask, np.shape(h_NxM)[0])
    if isinstance(energy, int | float) and not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    return _numerical_rank(h_NxM, energy, mask)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _nc2(h_NxM, labels_N, mask, num_classes, center):
    return _nc2_from(_geometry_of(h_NxM, labels_N, mask, num_classes, center))


def nc2(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int, *, center: str = "sample",
        mask: ArrayLike | None = None) -> dict[str, jax.Array]:
    """Papyan's NC2 on the centred means mu_k - mu_G (mu_G per ``center``), float64 scalars:

    nc2_equinorm: std_k/mean_k of ||mu_k - mu_G||. nc2_equiangularity: std over k != k' of
    cos(mu_k - mu_G, mu_k' - mu_G). nc2_max_angle_gap: mean over k != k' of |cos + 1/(K-1)|
    (0 for a simplex ETF). All three are 0 at collapse to a simplex ETF.
    """
    k = check_inputs(h_NxM, labels_N, num_classes, mask)
    return run_in_float64(_nc2, h_NxM, labels_N, mask, num_classes=k,
                          center=_check_center(center))


@functools.partial(jax.jit, static_argnames=_STATIC)
def _nc3(h_NxM, labels_N, mask, classifier, num_classes, center):
    return _nc3_from(_geometry_of(h_NxM, labels_N, mask, num_classes, center), classifier)


def _check_classifier(classifier: Any, k: int, m: int) -> None:
    if np.shape(classifier) != (k, m):
        raise ValueError(
            f"classifier must have shape (K, m) = {(k, m)}, got {np.shape(classifier)}")


def _check_logits(logits: Any, n: int, k: int) -> None:
    if np.shape(logits) != (n, k):
        raise ValueError(f"logits must have shape (N, K) = {(n, k)}, got {np.shape(logits)}")


def nc3(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int, classifier: ArrayLike, *,
        center: str = "sample", mask: ArrayLike | None = None) -> dict[str, jax.Array]:
    """NC3 = ||W/||W||_F - M/||M||_F||_F^2 with W = ``classifier`` (K x m, logits = h W^T) and M
    the K x m means: "nc3" centred on mu_G, "nc3_uncentred" raw. Bias-free nets never reach 0 in
    the centred form (limit 2 - 2 sqrt((K-1)/K)). float64 scalars."""
    k = check_inputs(h_NxM, labels_N, num_classes, mask)
    _check_classifier(classifier, k, np.shape(h_NxM)[1])
    return run_in_float64(_nc3, h_NxM, labels_N, mask, classifier, num_classes=k,
                          center=_check_center(center))


@functools.partial(jax.jit, static_argnames="num_classes")
def _nc4(h_NxM, labels_N, mask, logits, num_classes):
    sums = _sums_update(_zeros_sums(num_classes, h_NxM.shape[1]), h_NxM, labels_N, mask)
    g = _geometry(sums, "class")
    r = _residuals(h_NxM, labels_N, sums, mask)
    return _defined(g, _nc4_mismatch(r, labels_N, g.present_K, logits) / g.n)


def nc4(h_NxM: ArrayLike, labels_N: ArrayLike, num_classes: int, logits: ArrayLike, *,
        mask: ArrayLike | None = None) -> jax.Array:
    """Fraction of samples (weighted) whose nearest class mean (Euclidean) differs from the
    argmax of ``logits`` (N x K). float64 scalar."""
    k = check_inputs(h_NxM, labels_N, num_classes, mask)
    _check_logits(logits, np.shape(h_NxM)[0], k)
    return run_in_float64(_nc4, h_NxM, labels_N, mask, logits, num_classes=k)


# ----------------------------------------------------------------------------- drivers


def equal_shape_runs(shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
    """[(start, end)] of maximal runs of consecutive equal shapes."""
    runs, start = [], 0
    for end in range(1, len(shapes) + 1):
        if end == len(shapes) or shapes[end] != shapes[start]:
            runs.append((start, end))
            start = end
    return runs


def layerwise(metric_fn: Callable[..., Any], features: Sequence[ArrayLike], labels_N: ArrayLike,
              num_classes: int, **kwargs: Any) -> Any:
    """[metric_fn(h_l, labels_N, K, **kwargs) for l = 0..L-1] stacked over layers: an (L,) array,
    or a dict of (L,) arrays when ``metric_fn`` returns a dict of scalars; layer 0 = the input.

    Layers may have different widths. Consecutive layers of one shape are stacked and
    ``jax.vmap``ped, so the compiled size does not grow with depth. Array-valued ``kwargs``
    (``mask``, ``logits``) are shared by all layers.
    """
    features = list(features)
    if not features:
        raise ValueError("features must hold at least one layer, got 0")
    k = _num_classes(num_classes)
    n = np.shape(features[0])[0] if np.ndim(features[0]) else None
    _check_labels(labels_N, k, n, require_all=kwargs.get("mask") is None)
    arrays = {name: v for name, v in kwargs.items() if hasattr(v, "shape")}
    static = tuple(sorted((name, v) for name, v in kwargs.items() if name not in arrays))
    runs = tuple(equal_shape_runs([tuple(np.shape(f)) for f in features]))
    return run_in_float64(_layerwise_jit, features, labels_N, arrays, metric_fn=metric_fn,
                          num_classes=k, static=static, runs=runs)


def _layerwise(features, labels_N, arrays, *, metric_fn, num_classes, static, runs):
    parts = []
    for start, end in runs:
        run_LxNxM = jnp.stack([jnp.asarray(f) for f in features[start:end]])
        parts.append(jax.vmap(
            lambda h: metric_fn(h, labels_N, num_classes, **arrays, **dict(static))
        )(run_LxNxM))
    return jax.tree.map(lambda *v: jnp.concatenate(v), *parts)


# jitted: eager calls compile once per metric and shapes (a vmap alone re-traces every call)
_layerwise_jit = jax.jit(_layerwise, static_argnames=("metric_fn", "num_classes", "static",
                                                      "runs"))


@_in_float64
def streaming_metrics(batches_fn: Callable[[], Iterable[tuple[ArrayLike, ArrayLike]]],
                      num_classes: int, *, center: str = "sample") -> dict[str, jax.Array]:
    """Two passes over ``batches_fn()`` (a fresh iterable of (h_BxM, labels_B) each call).

    Returns compression, discrimination, nc1 and fuzziness, equal to the in-memory metrics on
    the concatenated data up to rounding.
    """
    k = _num_classes(num_classes)
    center = _check_center(center)
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
    return metrics_from_stats(sums, stats, center=center)
