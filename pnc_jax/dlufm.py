"""The deep linear unconstrained feature model (Garrod & Keating; science.md, section 4).

Free features H_1 (d x N, N = Kn, columns are samples, class-major: sample i has class i // n),
weights W_1..W_{L-1} (d x d) and W_L (K x d), no biases, targets Y = I_K (x) 1_n^T:

    loss = (1/2N) ||W_L ... W_1 H_1 - Y||_F^2 + sum_l (lambda_W/2) ||W_l||_F^2
           + (lambda_H/2) ||H_1||_F^2.

Layer features H_l = W_{l-1} ... W_1 H_1 (l = 1..L) are the features entering W_l. The global
minimum (when gamma > (L-1)/L) is deep neural collapse, with closed form ``closed_form``.

Precision: ``train`` and ``closed_form`` compute in float64 whatever the caller's x64 flag (a
scoped ``jax.enable_x64``; the global flag is never changed) and return numpy arrays / floats.
The pure functions (``loss``, ``data_loss``, ``layer_features``, ``measure``) follow the dtype of
their inputs and are jit/vmap-able.

Runs: gradient descent is vmapped over runs; ``measure`` (eigh/svd) is ``lax.map``ped over them.
jaxlib 0.10's CPU LAPACK kernels split a *batched* call into tasks on XLA's intra-op pool and
block on them; with several such calls in flight on a 2-thread pool every worker blocks and the
program hangs for ever (6 of 6 runs of configuration A with 5 vmapped seeds; 0 of 14 with
``lax.map``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from pnc_jax import metrics, spectra

HI = jax.lax.Precision.HIGHEST

__all__ = [
    "DLUFMConfig",
    "DLUFMParams",
    "ClosedForm",
    "DLUFMRun",
    "targets",
    "class_labels",
    "init_params",
    "logits",
    "layer_features",
    "data_loss",
    "loss",
    "measure",
    "gamma_roots",
    "closed_form",
    "track_steps",
    "train",
    "full_hessian_eigvals",
    "num_params",
    "layer_gauss_newton_split",
    "TRACKED",
    "collapse_checks",
    "run_results",
    "CONFIG_B",
    "CONFIG_B_SPECTRUM",
    "full_hessian_results",
    "chain_spectra",
    "trained_sweep",
    "sweep_spectra",
]


def _mm(a, b):
    return jnp.matmul(a, b, precision=HI)


# ----------------------------------------------------------------------------- config


def _int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _nonneg(name: str, value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return x


@dataclasses.dataclass(frozen=True)
class DLUFMConfig:
    """One DLUFM setting; defaults are science.md's configuration A."""

    num_classes: int = 4  # K
    samples_per_class: int = 10  # n
    width: int = 32  # d
    depth: int = 3  # L (number of weight matrices)
    weight_decay: float = 5e-3  # lambda_W
    feature_decay: float = 5e-3  # lambda_H
    lr: float = 0.5
    steps: int = 20_000

    def validate(self) -> DLUFMConfig:
        """Raise ValueError naming the first bad value; return self."""
        k = _int("num_classes", self.num_classes, 2)
        _int("samples_per_class", self.samples_per_class, 1)
        d = _int("width", self.width, 1)
        if k > d:
            raise ValueError(f"num_classes K={k} > width d={d}: collapse needs d >= K")
        _int("depth", self.depth, 1)
        _nonneg("weight_decay", self.weight_decay)
        _nonneg("feature_decay", self.feature_decay)
        if not (_nonneg("lr", self.lr) > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        _int("steps", self.steps, 0)
        return self


class DLUFMParams(NamedTuple):
    """h1_DxN: free features H_1; ws: (W_1 (d x d), ..., W_{L-1} (d x d), W_L (K x d))."""

    h1_DxN: jax.Array
    ws: tuple[jax.Array, ...]


# ----------------------------------------------------------------------------- objective


def targets(num_classes: int, samples_per_class: int, dtype=None) -> jax.Array:
    """Y = I_K (x) 1_n^T (K x N), class-major."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jnp.repeat(jnp.eye(num_classes, dtype=dtype), samples_per_class, axis=1)


def class_labels(num_classes: int, samples_per_class: int) -> np.ndarray:
    """labels_N = i // n (int32), matching ``targets``."""
    return np.repeat(np.arange(num_classes, dtype=np.int32), samples_per_class)


def init_params(key: jax.Array, config: DLUFMConfig, dtype=None) -> DLUFMParams:
    """Every entry of H_1 and of every W_l i.i.d. N(0, 1/d) (science.md, configuration A)."""
    k, n, d, depth = config.num_classes, config.samples_per_class, config.width, config.depth
    dtype = jnp.result_type(float) if dtype is None else dtype
    shapes = [(d, k * n)] + [(d, d)] * (depth - 1) + [(k, d)]
    keys = jax.random.split(key, len(shapes))
    arrays = [jax.random.normal(kk, s, dtype) / np.sqrt(d) for kk, s in zip(keys, shapes,
                                                                          strict=True)]
    return DLUFMParams(arrays[0], tuple(arrays[1:]))


def layer_features(params: DLUFMParams) -> list[jax.Array]:
    """[H_1, W_1 H_1, ..., W_{L-1}...W_1 H_1]: the L feature matrices (d x N) entering W_1..W_L."""
    feats = [params.h1_DxN]
    for w in params.ws[:-1]:
        feats.append(_mm(w, feats[-1]))
    return feats


def logits(params: DLUFMParams) -> jax.Array:
    """W_L ... W_1 H_1 (K x N)."""
    return _mm(params.ws[-1], layer_features(params)[-1])


def data_loss(params: DLUFMParams, y_KxN: jax.Array) -> jax.Array:
    """(1/2N) ||W_L ... W_1 H_1 - Y||_F^2."""
    r = logits(params) - y_KxN
    return 0.5 * jnp.sum(r * r) / y_KxN.shape[1]


def loss(params: DLUFMParams, y_KxN: jax.Array, weight_decay, feature_decay) -> jax.Array:
    """data_loss + sum_l (lambda_W/2) ||W_l||^2 + (lambda_H/2) ||H_1||^2."""
    reg_w = sum(jnp.sum(w * w) for w in params.ws)
    reg_h = jnp.sum(params.h1_DxN * params.h1_DxN)
    return data_loss(params, y_KxN) + 0.5 * weight_decay * reg_w + 0.5 * feature_decay * reg_h


# ----------------------------------------------------------------------------- measurements


def measure(
    params: DLUFMParams,
    num_classes: int,
    weight_decay,
    feature_decay,
    loss_star=jnp.nan,
    outlier_rtol: float = 1e-6,
) -> dict[str, jax.Array]:
    """Everything tracked, jit-able (``num_classes`` static; over many runs ``lax.map`` it, see
    the module docstring). Per layer l = 1..L (axis 0 of length L): features H_l, weight W_l,
    end-to-end map from H_l to the logits W_{L:l}.

    loss, data_loss, loss_gap (loss - ``loss_star``): scalars.
    nc1, nc2_* (``metrics.nc1``, ``metrics.nc2`` of H_l^T); nc3, nc3_uncentred
    (``metrics.nc3`` with the classifier W_{L:l} = W_L...W_l; the uncentred one is 0 at
    collapse: W_{L:l}^T ~ [mu_c^(l)]); nc4 (nearest class mean of H_l vs argmax of the logits).
    singular_values (L, K+1): top K+1 of W_l (NaN beyond min(shape)).
    feature_norms (K,): ||mu_c^(1)||, class-mean norms of H_1.
    hessian_top (L, K^2+1), outliers, gap_ratio, overlap: ``spectra.linear_chain_spectra`` of the
    data-term Hessian w.r.t. W_l (outliers: eigenvalues above ``outlier_rtol`` x the largest).
    """
    k = num_classes
    n_total = params.h1_DxN.shape[1]
    labels = class_labels(k, n_total // k)
    y = targets(k, n_total // k, params.h1_DxN.dtype)
    feats = layer_features(params)
    f_KxN = _mm(params.ws[-1], feats[-1])
    ws = list(params.ws)
    out: dict[str, list] = {}
    for l, h in enumerate(feats):
        h_NxD = h.T
        w_to_logits = ws[-1]
        for w in reversed(ws[l:-1]):
            w_to_logits = _mm(w_to_logits, w)
        s = jnp.linalg.svd(ws[l], compute_uv=False)[: k + 1]
        layer = {
            "nc1": metrics.nc1(h_NxD, labels, k),
            **metrics.nc2(h_NxD, labels, k),
            **metrics.nc3(h_NxD, labels, k, w_to_logits),
            "nc4": metrics.nc4(h_NxD, labels, k, f_KxN.T),
            "singular_values": jnp.concatenate(
                [s, jnp.full((k + 1 - s.shape[0],), jnp.nan, s.dtype)]),
        }
        for name, value in layer.items():
            out.setdefault(name, []).append(value)
    result = {name: jnp.stack(v) for name, v in out.items()}

    def chain_data_loss(ws_):
        return data_loss(DLUFMParams(params.h1_DxN, tuple(ws_)), y)

    result.update(spectra.linear_chain_spectra(
        chain_data_loss, ws, params.h1_DxN, k * k, outlier_rtol=outlier_rtol))
    mu_DxK = params.h1_DxN.reshape(-1, k, n_total // k).mean(axis=2)  # class-major columns
    result["feature_norms"] = jnp.linalg.norm(mu_DxK, axis=0)
    result["data_loss"] = data_loss(params, y)
    result["loss"] = loss(params, y, weight_decay, feature_decay)
    result["loss_gap"] = result["loss"] - loss_star
    return result


# ----------------------------------------------------------------------------- closed form


class ClosedForm(NamedTuple):
    """The deep-collapse global minimum (science.md, section 4)."""

    gamma: float  # end-to-end gain: W_L ... W_1 H_1 = gamma Y
    sigma: float  # each W_l's K equal nonzero singular values
    feature_norm: float  # ||mu_c^(1)||, class-mean norm of H_1
    loss: float  # loss*
    outlier: float  # lambda_W gamma / (1 - gamma): the K^2 outliers of each layer Hessian


def _bisect_increasing(f, lo: float, hi: float) -> float:
    """The root of an increasing f on (lo, hi), f(lo+) < 0 < f(hi-), bisected until the interval
    is two adjacent floats; f is only evaluated strictly inside (it may be singular at lo)."""
    while True:
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            return hi if lo <= 0 else min((lo, hi), key=lambda t: abs(f(t)))
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid


def _log_rhs(num_classes, samples_per_class, depth, weight_decay, feature_decay) -> float:
    k = _int("num_classes", num_classes, 2)
    n = _int("samples_per_class", samples_per_class, 1)
    depth_ = _int("depth", depth, 1)
    for name, value in (("weight_decay", weight_decay), ("feature_decay", feature_decay)):
        if not _nonneg(name, value) > 0:
            raise ValueError(f"{name} must be > 0 for the closed form, got {value!r}")
    return depth_ * math.log(k * weight_decay) + math.log(k * n * feature_decay)


def _roots(depth: int, log_c: float) -> list[tuple[float, float]]:
    """[(gamma, 1 - gamma)] for the roots in (0, 1), ascending; 1 - gamma kept to full relative
    precision (the upper root is bisected in u = 1 - gamma)."""
    gm = (depth - 1) / (2 * depth)  # maximiser of phi(gamma) = (L-1) log g + (L+1) log(1-g)
    phi_max = (depth + 1) * math.log1p(-gm) + ((depth - 1) * math.log(gm) if depth > 1 else 0.0)
    if phi_max < log_c:
        return []
    if phi_max == log_c:
        return [(gm, 1.0 - gm)]

    def upper(u):  # increasing in u = 1 - gamma on (0, 1 - gm)
        return (depth - 1) * math.log1p(-u) + (depth + 1) * math.log(u) - log_c

    u = _bisect_increasing(upper, 0.0, 1.0 - gm)
    roots = [(1.0 - u, u)]
    if depth > 1:
        def lower(g):  # increasing in gamma on (0, gm)
            return (depth - 1) * math.log(g) + (depth + 1) * math.log1p(-g) - log_c

        g = _bisect_increasing(lower, 0.0, gm)
        roots.insert(0, (g, 1.0 - g))
    return roots


def gamma_roots(
    num_classes: int, samples_per_class: int, depth: int, weight_decay: float,
    feature_decay: float,
) -> tuple[float, ...]:
    """All roots in (0, 1) of gamma^{L-1} (1-gamma)^{L+1} = (K lambda_W)^L (K n lambda_H),
    ascending. The left side is unimodal with maximum at gamma = (L-1)/(2L), so there are 0, 1
    (a double root, or L = 1) or 2 roots, each bracketed on its monotone side and bisected on the
    log form (the upper one in u = 1 - gamma, so 1 - gamma keeps full relative precision): the
    relative residual is ~ |log c| eps (1e-14), tested against exact decimal arithmetic. The
    largest is the candidate optimum (the loss decreases in gamma beyond (L-1)/(2L))."""
    log_c = _log_rhs(num_classes, samples_per_class, depth, weight_decay, feature_decay)
    return tuple(g for g, _ in _roots(int(depth), log_c))


def closed_form(
    num_classes: int, samples_per_class: int, depth: int, weight_decay: float,
    feature_decay: float,
) -> ClosedForm:
    """Deep-collapse optimum: gamma = the largest root (``gamma_roots``),
    sigma^2 = gamma(1-gamma)/(K lambda_W), ||mu_c^(1)||^2 = gamma(1-gamma)/(K n lambda_H),
    loss* = (1/2)[(1-gamma)^2 + (L+1) gamma (1-gamma)], outlier = lambda_W gamma/(1-gamma).

    Raises ValueError when the zero solution (loss 1/2) is the global minimum: no root, or a
    largest root gamma <= (L-1)/L (loss* >= 1/2; at equality the two tie and collapse is not the
    unique minimum). Lambdas must be > 0.
    """
    log_c = _log_rhs(num_classes, samples_per_class, depth, weight_decay, feature_decay)
    roots = _roots(int(depth), log_c)
    if not roots:
        raise ValueError(
            f"gamma^(L-1)(1-gamma)^(L+1) = {math.exp(log_c):.6g} has no root in (0, 1) for "
            f"K={num_classes}, n={samples_per_class}, L={depth}, lambda_W={weight_decay}, "
            f"lambda_H={feature_decay}: the only minimum is the zero solution"
        )
    gamma, u = roots[-1]
    if gamma <= (depth - 1) / depth:
        raise ValueError(
            f"the largest root gamma={gamma:.6g} <= (L-1)/L={(depth - 1) / depth:.6g} for "
            f"K={num_classes}, n={samples_per_class}, L={depth}, lambda_W={weight_decay}, "
            f"lambda_H={feature_decay}: the zero solution (loss 1/2) is the global minimum"
        )
    return ClosedForm(
        gamma=gamma,
        sigma=math.sqrt(gamma * u / (num_classes * weight_decay)),
        feature_norm=math.sqrt(gamma * u / (num_classes * samples_per_class * feature_decay)),
        loss=0.5 * (u * u + (depth + 1) * gamma * u),
        outlier=weight_decay * gamma / u,
    )


# ----------------------------------------------------------------------------- training


class DLUFMRun(NamedTuple):
    """``train``'s result (numpy, float64). Run axis R: (lambda pair, seed), seed fastest."""

    seed_R: np.ndarray
    weight_decay_R: np.ndarray
    feature_decay_R: np.ndarray
    loss_star_R: np.ndarray  # NaN where the zero solution is the minimum
    steps_T: np.ndarray  # steps at which ``track`` was taken: 0, k, 2k, ..., steps
    track: dict[str, np.ndarray]  # ``measure`` keys, shapes (R, T, ...)
    final: dict[str, np.ndarray]  # ``measure`` after the last step (track[:, -1]), (R, ...)
    params: DLUFMParams  # final parameters, leading axis R

    def params_of(self, run: int) -> DLUFMParams:
        """The final parameters of run ``run`` (no run axis)."""
        return jax.tree.map(lambda a: a[run], self.params)


def track_steps(steps: int, track_every: int) -> np.ndarray:
    """The steps at which ``train`` measures: 0, k, 2k, ..., and ``steps`` itself."""
    return np.unique(np.append(np.arange(0, steps + 1, track_every), steps))


@functools.partial(jax.jit, static_argnames=("config", "track_every", "outlier_rtol"))
def _train(config: DLUFMConfig, keys, lam_w_R, lam_h_R, loss_star_R, track_every: int,
           outlier_rtol: float):
    y = targets(config.num_classes, config.samples_per_class, jnp.float64)
    # steps run before each measurement (one measure in the program: compile time ~ 1/3)
    todo_T = jnp.asarray(np.diff(track_steps(config.steps, track_every), prepend=0), jnp.int32)

    def gd(p, lam_w, lam_h):
        g = jax.grad(loss)(p, y, lam_w, lam_h)
        return jax.tree.map(lambda x, gx: x - config.lr * gx, p, g)

    def take(run):
        p, lam_w, lam_h, loss_star = run
        return measure(p, config.num_classes, lam_w, lam_h, loss_star, outlier_rtol)

    def chunk(p_R, todo):
        p_R = jax.lax.fori_loop(0, todo, lambda _, p: jax.vmap(gd)(p, lam_w_R, lam_h_R), p_R)
        # lax.map, not vmap: unbatched LAPACK calls (see the module docstring)
        return p_R, jax.lax.map(take, (p_R, lam_w_R, lam_h_R, loss_star_R))

    p0_R = jax.vmap(lambda key: init_params(key, config, jnp.float64))(keys)
    p_R, track_TxR = jax.lax.scan(chunk, p0_R, todo_T)
    return p_R, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), track_TxR)


def train(
    config: DLUFMConfig,
    seeds: Sequence[int] = (0,),
    decays: Sequence[tuple[float, float]] | None = None,
    track_every: int = 100,
    outlier_rtol: float = 1e-6,
) -> DLUFMRun:
    """Full-batch gradient descent (``config.lr``, ``config.steps`` steps) from N(0, 1/d), float64,
    one compiled program: a ``lax.scan`` vmapped over runs = (lambda pair, seed) for ``decays``
    (default: the config's (lambda_W, lambda_H)) x ``seeds``. ``measure`` is taken on device at
    steps 0, k, 2k, ... (k = ``track_every``) and after the last step (``track_steps``).
    """
    config = config.validate()
    seeds = [_int("seed", s, 0) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    pairs = [(config.weight_decay, config.feature_decay)] if decays is None else list(decays)
    if not pairs:
        raise ValueError("decays is empty")
    for lam_w, lam_h in pairs:
        _nonneg("weight_decay", lam_w)
        _nonneg("feature_decay", lam_h)
    track_every = _int("track_every", track_every, 1)
    if not outlier_rtol > 0:
        raise ValueError(f"outlier_rtol must be > 0, got {outlier_rtol!r}")
    runs = [(lw, lh, s) for lw, lh in pairs for s in seeds]
    stars = []
    for lw, lh, _ in runs:
        try:
            stars.append(closed_form(config.num_classes, config.samples_per_class, config.depth,
                                     lw, lh).loss)
        except ValueError:
            stars.append(math.nan)
    with jax.enable_x64(True):
        keys = jnp.stack([jax.random.key(s) for _, _, s in runs])
        p, track = _train(
            config, keys,
            jnp.asarray([r[0] for r in runs], jnp.float64),
            jnp.asarray([r[1] for r in runs], jnp.float64),
            jnp.asarray(stars, jnp.float64), track_every, float(outlier_rtol),
        )
        p, track = jax.device_get((p, track))
    return DLUFMRun(
        seed_R=np.array([r[2] for r in runs]),
        weight_decay_R=np.array([r[0] for r in runs], np.float64),
        feature_decay_R=np.array([r[1] for r in runs], np.float64),
        loss_star_R=np.array(stars, np.float64),
        steps_T=track_steps(config.steps, track_every),
        track=track,
        final={name: v[:, -1] for name, v in track.items()},
        params=p,
    )


# ----------------------------------------------------------------------------- spectra


def _as_f64(params: DLUFMParams) -> DLUFMParams:
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)


def num_params(config: DLUFMConfig) -> int:
    """P = dN + (L-1) d^2 + Kd: the entries of H_1 and of every W_l (468 for configuration B)."""
    k, n, d = config.num_classes, config.samples_per_class, config.width
    return d * k * n + (config.depth - 1) * d * d + k * d


def full_hessian_eigvals(
    params: DLUFMParams, weight_decay: float, feature_decay: float, data_only: bool = False,
    max_params: int = 10_000,
) -> np.ndarray:
    """Eigenvalues (descending, float64 numpy) of the dense Hessian of ``loss`` (or, with
    ``data_only``, of ``data_loss``) w.r.t. all parameters (H_1 and every W_l) at ``params``.
    P = dN + (L-1) d^2 + Kd (468 for configuration B); refuses P > ``max_params``."""
    _nonneg("weight_decay", weight_decay)
    _nonneg("feature_decay", feature_decay)
    with jax.enable_x64(True):
        p = _as_f64(params)
        k, n_total = p.ws[-1].shape[0], p.h1_DxN.shape[1]
        y = targets(k, n_total // k, jnp.float64)

        def fn(q):
            if data_only:
                return data_loss(q, y)
            return loss(q, y, weight_decay, feature_decay)

        h = np.asarray(spectra.dense_hessian(fn, p, max_params))
    return np.linalg.eigvalsh(0.5 * (h + h.T))[::-1]


def layer_gauss_newton_split(
    params: DLUFMParams, layer: int, rtol: float = 1e-9
) -> spectra.GaussNewtonSplit:
    """``spectra.gauss_newton_split`` of the data term w.r.t. W_``layer`` (1 <= layer <= L) alone,
    float64, numpy fields. For this quadratic-in-W_l term G is the layer Hessian itself; at deep
    collapse the class / cross-class / within-class ranks are K / K(K-1) / 0."""
    depth = len(params.ws)
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not (
            1 <= layer <= depth):
        raise ValueError(f"layer must be an int in [1, L={depth}], got {layer!r}")
    with jax.enable_x64(True):
        p = _as_f64(params)
        k, n_total = p.ws[-1].shape[0], p.h1_DxN.shape[1]
        l = int(layer) - 1

        def logits_fn(w):
            return logits(p._replace(ws=(*p.ws[:l], w, *p.ws[l + 1:]))).T

        split = spectra.gauss_newton_split(logits_fn, p.ws[l], class_labels(k, n_total // k), k,
                                           rtol)
        return jax.tree.map(np.asarray, split)


# ----------------------------------------------------------------------------- results

# ``measure`` keys written per step to results.json (besides two columns of hessian_top)
TRACKED = ("loss", "data_loss", "loss_gap", "nc1", "nc2_equinorm", "nc2_equiangularity",
           "nc2_max_angle_gap", "nc3", "nc3_uncentred", "nc4", "outliers", "gap_ratio",
           "overlap")


def _json(values):
    """Nested lists for JSON: integers as they are, floats with NaN/inf as None."""
    from pnc_jax.workdir import json_float

    a = np.asarray(values)
    return a.tolist() if a.dtype.kind in "iub" else json_float(a)


def collapse_checks(final: dict, closed: ClosedForm, num_classes: int) -> dict[str, bool]:
    """The issue's done-when checks of deep collapse on ``measure`` values of R runs (leading
    axis R): loss within 1e-10 of loss*; each W_l's top K singular values = sigma (1e-6 rel.);
    each layer's top K^2 data-term Hessian eigenvalues = lambda_W gamma/(1-gamma) (1e-6 rel.)
    and the rest below 1e-9 of the largest; data-term gradient overlap with them > 0.9999."""
    k, k2 = num_classes, num_classes**2
    sv, top = np.asarray(final["singular_values"]), np.asarray(final["hessian_top"])
    return {
        "loss_within_1e-10": bool(np.all(np.abs(final["loss"] - closed.loss) <= 1e-10)),
        "sigma_within_1e-6": bool(np.all(np.abs(sv[..., :k] / closed.sigma - 1) <= 1e-6)),
        "outliers_within_1e-6": bool(np.all(np.abs(top[..., :k2] / closed.outlier - 1) <= 1e-6)),
        "rest_below_1e-9": bool(np.all(np.abs(top[..., k2]) < 1e-9 * top[..., 0])),
        "overlap_above_0.9999": bool(np.all(np.asarray(final["overlap"]) > 0.9999)),
    }


def run_results(config: DLUFMConfig, run: DLUFMRun, track_every: int,
                outlier_rtol: float = 1e-6) -> dict:
    """results.json of one ``train(config, seeds, track_every=track_every, outlier_rtol=
    outlier_rtol)`` (one lambda pair): ``config`` (the model's fields, seeds, track_every,
    outlier_rtol), ``closed_form``, ``final`` (per seed,
    axis 0: loss, data_loss, singular_values (L, K+1), feature_norms (K,), hessian_top
    (L, K^2+1), gradient_overlap, outliers, gap_ratio, nc1 (L,)), ``checks``
    (``collapse_checks``) and ``track`` (steps, then per seed and step the ``TRACKED`` keys and
    the K^2-th / (K^2+1)-th data-term Hessian eigenvalues per layer: outlier_smallest,
    bulk_largest). JSON-ready; NaN is null."""
    k2 = config.num_classes**2
    if np.any(run.weight_decay_R != config.weight_decay) or np.any(
            run.feature_decay_R != config.feature_decay):
        raise ValueError("run_results takes a run of the config's own (lambda_W, lambda_H)")
    closed = closed_form(config.num_classes, config.samples_per_class, config.depth,
                         config.weight_decay, config.feature_decay)
    f = run.final
    final = {name: f[key] for name, key in (
        ("loss", "loss"), ("data_loss", "data_loss"), ("singular_values", "singular_values"),
        ("feature_norms", "feature_norms"), ("hessian_top", "hessian_top"),
        ("gradient_overlap", "overlap"), ("outliers", "outliers"), ("gap_ratio", "gap_ratio"),
        ("nc1", "nc1"))}
    track = {name: run.track[name] for name in TRACKED}
    track["outlier_smallest"] = run.track["hessian_top"][..., k2 - 1]
    track["bulk_largest"] = run.track["hessian_top"][..., k2]
    return {
        "config": {**dataclasses.asdict(config), "seeds": run.seed_R.tolist(),
                   "track_every": int(track_every), "outlier_rtol": float(outlier_rtol)},
        "closed_form": closed._asdict(),
        "final": {name: _json(v) for name, v in final.items()},
        "checks": collapse_checks(f, closed, config.num_classes),
        "track": {"steps": run.steps_T.tolist(), **{n: _json(v) for n, v in track.items()}},
    }


# science.md, section 4: configuration B (K=3, n=4, d=12, L=3, lambda_W = lambda_H = 5e-3) and
# its full-parameter Hessian spectrum at the optimum, (value, multiplicity; None: not stated),
# published to 5 decimals
CONFIG_B = DLUFMConfig(num_classes=3, samples_per_class=4, width=12, depth=3)
CONFIG_B_SPECTRUM = ((0.93265, 3), (0.90265, 6), (0.23316, 27), (0.01, None), (0.005, None),
                     (0.0, None))


def _model_fields(config: DLUFMConfig) -> tuple:
    return (config.num_classes, config.samples_per_class, config.width, config.depth,
            config.weight_decay, config.feature_decay)


def full_hessian_results(config: DLUFMConfig, run: DLUFMRun, rtol: float = 1e-8,
                         tol: float = 5e-6) -> dict:
    """The full-parameter Hessian of ``loss`` (``full_hessian_eigvals``) of each run of
    ``train(config, ...)``: ``runs`` (per seed: eigenvalues descending, and ``clusters``
    [value, multiplicity] grouped at ``rtol`` x the largest by ``spectra.eigenvalue_clusters``).
    For configuration B (``CONFIG_B``'s K, n, d, L and lambdas) also science.md's
    ``reference`` (``CONFIG_B_SPECTRUM``), per run ``reference_counts`` (eigenvalues within
    ``tol`` of each reference value) and ``matches_reference``: every stated multiplicity
    found and every eigenvalue within ``tol`` of a reference value."""
    reference = CONFIG_B_SPECTRUM if _model_fields(config) == _model_fields(CONFIG_B) else None
    runs, matches = [], True
    for r in range(len(run.seed_R)):
        lam = full_hessian_eigvals(run.params_of(r), float(run.weight_decay_R[r]),
                                   float(run.feature_decay_R[r]))
        clusters = spectra.eigenvalue_clusters(lam, rtol * float(np.max(np.abs(lam))))
        entry = {"seed": int(run.seed_R[r]), "eigenvalues": _json(lam),
                 "clusters": [[float(v), int(c)] for v, c in clusters]}
        if reference is not None:
            near = np.abs(lam[:, None] - np.array([v for v, _ in reference])[None, :]) <= tol
            entry["reference_counts"] = near.sum(axis=0).tolist()
            matches &= bool(near.any(axis=1).all()) and all(
                m is None or c == m for (_, m), c in zip(reference, entry["reference_counts"],
                                                         strict=True))
        runs.append(entry)
    return {"parameters": num_params(config), "tolerance": tol,
            "reference": None if reference is None else [list(x) for x in reference],
            "matches_reference": matches if reference is not None else None, "runs": runs}


# ----------------------------------------------------------------------------- trained networks


def chain_spectra(
    ws: Sequence[ArrayLike],
    x_NxD: ArrayLike,
    labels_N: ArrayLike,
    num_classes: int,
    loss_scale: float,
    outlier_rtol: float = 1e-6,
) -> dict[str, np.ndarray]:
    """Per-layer spectra of R trained deep linear networks f(x) = W_L ... W_1 x of one depth
    (``ws[l]`` stacked R x out x in) under pnc_jax's MSE (1/N) sum_i ||alpha f(x_i) - y_i||^2
    (``losses.mse``, alpha = ``loss_scale``), float64 whatever the x64 flag:

    hessian_top (R, L, K^2+1), outliers, gap_ratio, overlap (R, L): ``spectra.
    linear_chain_spectra`` of the data term (Kronecker scale 2 alpha^2; data-term gradient);
    nc1 (R, L): NC1 of the features h_{l-1} entering W_l (h_0 = x); singular_values (R, L, K+1);
    data_loss (R,). Networks are ``lax.map``ped (unbatched LAPACK, see the module docstring).
    """
    from pnc_jax import losses

    k = _int("num_classes", num_classes, 2)
    labels = np.asarray(labels_N, np.int32)
    if np.ndim(x_NxD) != 2 or labels.shape != np.shape(x_NxD)[:1]:
        raise ValueError(f"x must be N x D and labels (N,), got shapes {np.shape(x_NxD)} and "
                         f"{labels.shape}")
    if not outlier_rtol > 0:
        raise ValueError(f"outlier_rtol must be > 0, got {outlier_rtol!r}")
    with jax.enable_x64(True):
        x = jnp.asarray(x_NxD, jnp.float64)
        ws_R = tuple(jnp.asarray(w, jnp.float64) for w in ws)

        def data_loss_of(ws_):
            f_DxN = x.T
            for w in ws_:
                f_DxN = _mm(w, f_DxN)
            return losses.mse(f_DxN.T, labels, loss_scale)

        def one(ws_):
            ws_ = list(ws_)
            out = spectra.linear_chain_spectra(data_loss_of, ws_, x.T, k * k,
                                               2.0 * loss_scale**2, outlier_rtol)
            h, nc1, svs = x, [], []
            for w in ws_:
                nc1.append(metrics.nc1(h, labels, k))
                s = jnp.linalg.svd(w, compute_uv=False)[: k + 1]
                svs.append(jnp.concatenate([s, jnp.full((k + 1 - s.shape[0],), jnp.nan)]))
                h = _mm(h, w.T)
            return {**out, "nc1": jnp.stack(nc1), "singular_values": jnp.stack(svs),
                    "data_loss": data_loss_of(ws_)}

        result = jax.jit(lambda w: jax.lax.map(one, w))(ws_R)
        return jax.tree.map(np.asarray, jax.device_get(result))


def trained_sweep(workdir) -> tuple:
    """(Config, [(depth, seed)]) of the finished sweep of deep linear networks trained with the
    MSE loss in ``workdir`` (a ``pnc_jax.sweep`` work directory, e.g. experiments.sweep_depth's).
    Reads only; ValueError naming the file when there is none, it is another kind of run, or
    a depth group has no final checkpoint (no trained network)."""
    from pnc_jax import checkpoint
    from pnc_jax.config import Config, from_json
    from pnc_jax.sweep import depth_groups
    from pnc_jax.workdir import Workdir

    try:
        wd = Workdir.read(workdir)
        saved = wd.read_config()
    except FileNotFoundError as e:
        raise ValueError(f"{e}: no trained network there") from None
    try:
        fields = saved["config"]
        if set(fields) == {"train"}:  # an experiment's settings holding one Config
            fields = fields["train"]
        cfg = from_json(Config(), fields).validate()
        strategy = (saved.get("run") or {}).get("depth_strategy") or saved["depth_strategy"]
        groups = depth_groups(cfg, strategy)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{wd.file('config.json')} is not the config.json of a sweep of one "
                         f"network kind ({type(e).__name__}: {e})") from None
    if cfg.model != "linear" or cfg.loss != "mse":
        raise ValueError(f"{wd.path} trained model={cfg.model!r} with loss={cfg.loss!r}: the "
                         "per-layer spectra need deep linear networks (model 'linear', loss 'mse')")
    for gi in range(len(groups)):
        if checkpoint.latest(wd.checkpoints / f"final_group{gi}") is None:
            raise ValueError(f"{wd.checkpoints / f'final_group{gi}'} does not hold a trained "
                             "network: the sweep has not finished")
    return cfg, cfg.runs()


def sweep_spectra(workdir, x_NxD, labels_N, outlier_rtol: float = 1e-6) -> list[dict]:
    """``chain_spectra`` of every trained network (depth, seed) of the sweep in ``workdir``
    (``trained_sweep``) on its training data ``x_NxD``, ``labels_N`` (``pnc_jax.data.
    dataset_for`` of its config): one JSON-ready dict per run, depth-major, with depth, seed,
    status (the sweep's "ok" / "diverged" from its results.json, None without one), data_loss
    and per layer l = 1..L (the matrix W_l) hessian_top, outliers, gap_ratio, overlap, nc1 (of
    the features entering W_l), singular_values."""
    from flax import nnx

    from pnc_jax.models import weight_matrices
    from pnc_jax.sweep import load_run
    from pnc_jax.workdir import Workdir

    cfg, runs = trained_sweep(workdir)
    status: dict = {}
    try:
        records = Workdir.read(workdir).read_json("results.json")
        status = {(r["depth"], r["seed"]): r.get("status") for r in records}
    except (FileNotFoundError, ValueError, TypeError, KeyError, AttributeError):
        pass  # no (or another kind of) results.json: status unknown
    out = []
    for depth in cfg.depths:
        seeds = [s for d, s in runs if d == depth]
        with jax.enable_x64(True):  # a float64 sweep restores only under x64
            ws = [weight_matrices(nnx.state(load_run(workdir, depth, s)), depth) for s in seeds]
        stacked = [np.stack([np.asarray(w[l], np.float64) for w in ws]) for l in range(depth)]
        res = chain_spectra(stacked, x_NxD, labels_N, cfg.num_classes, cfg.loss_scale,
                            outlier_rtol)
        for r, seed in enumerate(seeds):
            out.append({"depth": depth, "seed": seed, "status": status.get((depth, seed)),
                        **{name: _json(v[r]) for name, v in sorted(res.items())}})
    return out
