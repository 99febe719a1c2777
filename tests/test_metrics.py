"""Metrics vs brute-force numpy float64 (explicit per-sample outer products, np.linalg.pinv),
with the caller's x64 both on and off; gradients vs finite differences; invariances, published
closed forms, jit/vmap, masks, streaming, input validation and import side effects."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnc_jax import metrics as M

K = 4
N = 200
D = 16
UNBALANCED = (10, 30, 60, 100)
IMBALANCED = (50, 150, 300, 500)  # the class sizes 50..500
RCOND = 1e-10  # relative eigenvalue cut for np.linalg.pinv, as in the module (different code)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=[True, False], ids=["x64", "x32"])
def x64(request):
    """The caller's precision mode: x64 on (as conftest sets it) or off (most JAX projects)."""
    with jax.enable_x64(request.param):
        yield request.param
    assert jax.config.jax_enable_x64  # the global flag (conftest: on) is untouched


def _arg(h, x64):
    """What a caller passes: float64 numpy with x64 on, a float32 jax array with x64 off."""
    return np.asarray(h, np.float64) if x64 else jnp.asarray(h, jnp.float32)


# ----------------------------------------------------------------------------- data


def _labels(counts, rng):
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


def _make(seed, counts, noise, offset=0.5, m=D):
    """h = mu_y + noise * e; rounded to float32 so that x64 on and off see the same values."""
    rng = np.random.default_rng(seed)
    y = _labels(counts, rng)
    mu = rng.standard_normal((len(counts), m)) + offset
    return (mu[y] + noise * rng.standard_normal((len(y), m))).astype(np.float32), y


CASES = {
    "random": lambda: _make(0, (50,) * K, 1.0),
    "random_unbalanced": lambda: _make(1, UNBALANCED, 1.0),
    "imbalanced": lambda: _make(2, IMBALANCED, 1.0),
    "collapsed": lambda: _make(3, (50,) * K, 1e-6),  # C ~ 1e-12
    "collapsed_unbalanced": lambda: _make(4, UNBALANCED, 1e-6),
    "offset_collapsed": lambda: _make(5, IMBALANCED, 1e-6, offset=10.0),  # means offset by +10
}
COLLAPSED = ("collapsed", "collapsed_unbalanced", "offset_collapsed")


@functools.cache
def case(name):
    h, y = CASES[name]()
    h.setflags(write=False)
    return h, y


# ----------------------------------------------------------------------------- brute force


def _bf_means(h, y, k):
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    n = np.array([(y == c).sum() for c in range(k)], dtype=float)
    return mu, n


def _bf_sigma_w(h, y, k):
    mu, _ = _bf_means(h, y, k)
    s = np.zeros((h.shape[1], h.shape[1]))
    for i in range(h.shape[0]):
        z = h[i] - mu[y[i]]
        s += np.outer(z, z)
    return s / h.shape[0]


def _bf_mu_g(h, y, k, center):
    mu, _ = _bf_means(h, y, k)
    return h.mean(0) if center == "sample" else mu.mean(0)


def _bf_sigma_b(h, y, k, center):
    """(1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T; mu_G the sample mean or the mean of means."""
    mu, _ = _bf_means(h, y, k)
    mu_g = _bf_mu_g(h, y, k, center)
    return sum(np.outer(mu[c] - mu_g, mu[c] - mu_g) for c in range(k)) / k


def bf_compression(h, y, k, center="sample"):
    return np.trace(_bf_sigma_w(h, y, k)) / np.trace(_bf_sigma_b(h, y, k, center))


def bf_nc1(h, y, k, center="sample"):
    sb_pinv = np.linalg.pinv(_bf_sigma_b(h, y, k, center), rcond=RCOND, hermitian=True)
    return np.trace(_bf_sigma_w(h, y, k) @ sb_pinv) / k


def bf_fuzziness(h, y, k):
    mu, n = _bf_means(h, y, k)
    mu_s = h.mean(0)  # He & Su: sample mean, n_k-weighted
    ss_b = sum(n[c] * np.outer(mu[c] - mu_s, mu[c] - mu_s) for c in range(k)) / h.shape[0]
    return np.trace(_bf_sigma_w(h, y, k) @ np.linalg.pinv(ss_b, rcond=RCOND, hermitian=True))


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def bf_discrimination(h, y, k):
    mu, _ = _bf_means(h, y, k)
    return 1 - max(_cos(mu[a], mu[b]) for a in range(k) for b in range(k) if a != b)


def bf_nc2(h, y, k, center="sample"):
    mu, _ = _bf_means(h, y, k)
    mc = mu - _bf_mu_g(h, y, k, center)
    nrm = np.linalg.norm(mc, axis=1)
    cos = np.array([_cos(mc[a], mc[b]) for a in range(k) for b in range(k) if a != b])
    return {
        "nc2_equinorm": nrm.std() / nrm.mean(),
        "nc2_equiangularity": cos.std(),
        "nc2_max_angle_gap": np.abs(cos + 1 / (k - 1)).mean(),
    }


def bf_nc3(w, h, y, k, center="sample"):
    mu, _ = _bf_means(h, y, k)
    out = {}
    for name, m_mxk in (("nc3", (mu - _bf_mu_g(h, y, k, center)).T), ("nc3_uncentred", mu.T)):
        out[name] = np.linalg.norm(w.T / np.linalg.norm(w) - m_mxk / np.linalg.norm(m_mxk)) ** 2
    return out


def bf_nc4(h, y, k, logits):
    mu, _ = _bf_means(h, y, k)
    near = [np.argmin([np.linalg.norm(h[i] - mu[c]) for c in range(k)]) for i in range(len(h))]
    return np.mean(np.array(near) != logits.argmax(1))


def bf_rank(h, energy):
    s = np.linalg.svd(h, compute_uv=False)
    return next(r for r in range(1, len(s) + 1) if s[:r].sum() >= energy * s.sum())


def _rel(a, b, tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=0)


SCALARS = {
    "compression": (M.compression, bf_compression),
    "nc1": (M.nc1, bf_nc1),
    "fuzziness": (M.separation_fuzziness, bf_fuzziness),
    "discrimination": (M.discrimination, bf_discrimination),
}


@functools.cache
def reference(name):
    """numpy float64 values of every metric on the float32 data of case ``name``."""
    h32, y = case(name)
    h = h32.astype(np.float64)
    rng = np.random.default_rng(7)
    w = rng.standard_normal((K, D))
    mu, _ = _bf_means(h, y, K)
    logits = h @ mu.T + 3.0 * rng.standard_normal((len(y), K))  # mostly but not always agreeing
    out = {key: bf(h, y, K) for key, (_, bf) in SCALARS.items()}
    out.update(bf_nc2(h, y, K))
    out.update(bf_nc3(w, h, y, K))
    out["nc4"] = bf_nc4(h, y, K, logits)
    out["class"] = {"compression": bf_compression(h, y, K, "class"),
                    "nc1": bf_nc1(h, y, K, "class"), **bf_nc2(h, y, K, "class")}
    out["rank"] = {e: bf_rank(h, e) for e in (0.5, 0.95)}
    return out, w, logits


# ----------------------------------------------------------------------------- vs brute force


def _tol(name, key):
    """1e-9; 1e-7 for NC1/fuzziness at 1e-6 collapse (the issue's contract)."""
    return 1e-7 if name in COLLAPSED and key in ("nc1", "fuzziness") else 1e-9


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_metric_matches_brute_force(name, x64):
    h32, y = case(name)
    ref, w, logits = reference(name)
    h = _arg(h32, x64)
    for key, (fn, _) in SCALARS.items():
        got = fn(h, y, K)
        assert got.dtype == np.float64, key
        _rel(got, ref[key], _tol(name, key))
    for key, val in M.nc2(h, y, K).items():
        _rel(val, ref[key], 1e-9)
    for key, val in M.nc3(h, y, K, w).items():
        _rel(val, ref[key], 1e-9)
    assert float(M.nc4(h, y, K, logits)) == ref["nc4"]
    assert 0 < ref["nc4"] < 1 or name in COLLAPSED
    for energy, want in ref["rank"].items():
        assert int(M.numerical_rank(h, energy=energy)) == want
    for key in ("compression", "nc1"):
        _rel(getattr(M, key)(h, y, K, center="class"), ref["class"][key], _tol(name, key))
    for key, val in M.nc2(h, y, K, center="class").items():
        _rel(val, ref["class"][key], 1e-9)
    if name in COLLAPSED:
        assert 1e-14 < float(M.compression(h, y, K)) < 1e-10
    if not x64:  # the caller's array and mode are untouched
        assert h.dtype == jnp.float32 and not jax.config.jax_enable_x64


def test_sample_mean_is_the_default_and_matters_off_balance():
    """Imbalanced classes: compression/nc1 match the sample-mean definition to 1e-12 and differ
    from the mean-of-class-means variant by percents; balanced: the two agree to rounding."""
    h, y = _make(8, IMBALANCED, 1.0)
    h = h.astype(np.float64)
    for key, bf in (("compression", bf_compression), ("nc1", bf_nc1)):
        fn = getattr(M, key)
        _rel(fn(h, y, K), bf(h, y, K, "sample"), 1e-12)
        _rel(fn(h, y, K, center="class"), bf(h, y, K, "class"), 1e-12)
        assert abs(float(fn(h, y, K)) / float(fn(h, y, K, center="class")) - 1) > 1e-3
    hb, yb = case("random")
    for key in ("compression", "nc1"):
        fn = getattr(M, key)
        _rel(fn(hb, yb, K), fn(hb, yb, K, center="class"), 1e-13)


def test_sample_centred_sigma_b_has_rank_k_minus_1():
    """The unweighted Sigma_B about the sample mean keeps rank K-1 (the 'rank-one spike' lies in
    the span of the centred means), so NC1's pinv is over the same subspace for both centres."""
    h, y = _make(9, IMBALANCED, 1.0)
    h = h.astype(np.float64)
    for center in ("sample", "class"):
        assert np.linalg.matrix_rank(_bf_sigma_b(h, y, K, center), tol=1e-10) == K - 1


def test_float32_input_is_computed_in_float64(x64):
    h32, y = case("collapsed")
    h = jnp.asarray(h32)  # float32 either way
    ref, *_ = reference("collapsed")
    for key, (fn, _) in SCALARS.items():
        _rel(fn(h, y, K), ref[key], _tol("collapsed", key))
    assert h.dtype == jnp.float32


def test_float64_numpy_input_keeps_float64_without_x64():
    h, y = _make(10, UNBALANCED, 1e-6)
    h = h.astype(np.float64) + 1e-9 * np.arange(D)  # not representable in float32
    with jax.enable_x64(False):
        got = float(M.compression(h, y, K))
    _rel(got, bf_compression(h, y, K), 1e-9)


def test_numerical_rank_known_spectrum():
    rng = np.random.default_rng(5)
    u, _ = np.linalg.qr(rng.standard_normal((50, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((8, 4)))
    h = u @ np.diag([4.0, 3.0, 2.0, 1.0]) @ v.T  # cumulative 4, 7, 9, 10 of 10
    assert M.numerical_rank(h).dtype == jnp.int32
    assert [int(M.numerical_rank(h, energy=e)) for e in (0.3, 0.5, 0.85, 0.95)] == [1, 2, 3, 4]
    s = np.linalg.svd(h, compute_uv=False)
    assert int(M.rank_from_gram(h.T @ h)) == int(M.rank_from_singular_values(s[::-1])) == 4


# ----------------------------------------------------------------------------- gradients


def _fd(f, h, v, eps):
    return (f(h + eps * v) - f(h - eps * v)) / (2 * eps)


GRADS = {
    "compression": (M.compression, bf_compression),
    "nc1": (M.nc1, bf_nc1),
    "fuzziness": (M.separation_fuzziness, bf_fuzziness),
    "nc2_equinorm": (lambda h, y, k: M.nc2(h, y, k)["nc2_equinorm"],
                     lambda h, y, k: bf_nc2(h, y, k)["nc2_equinorm"]),
}


@pytest.mark.parametrize("name", ["imbalanced", "offset"])
def test_gradients_match_finite_differences(name, x64):
    """<grad f(h), v> vs central differences of the numpy float64 reference, in and out of jit;
    with x64 off the gradient is float32 (the input's dtype) but computed in float64."""
    if name == "imbalanced":
        h32, y = _make(11, (5, 15, 30, 50), 1.0, m=6)
    else:
        h32, y = _make(12, (5, 15, 30, 50), 0.1, offset=10.0, m=6)
    h64 = h32.astype(np.float64)
    v = np.random.default_rng(13).standard_normal(h64.shape)
    for key, (fn, bf) in GRADS.items():
        g = jax.grad(lambda h, fn=fn: fn(h, y, K))(_arg(h32, x64))
        assert g.dtype == (np.float64 if x64 else np.float32), key
        want = _fd(lambda h, bf=bf: bf(h, y, K), h64, v, 1e-5 * np.abs(h64).max())
        _rel(np.sum(np.asarray(g, np.float64) * v), want, 1e-6 if x64 else 1e-5)
        if key == "nc1":
            _rel(jax.jit(jax.grad(lambda h, fn=fn: fn(h, y, K)))(_arg(h32, x64)), g, 1e-6)


# ----------------------------------------------------------------------------- invariances


def test_invariances():
    h, y = _make(6, UNBALANCED, 1.0)
    h = h.astype(np.float64)
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    shift = 10.0 * rng.standard_normal(D)
    base = {name: float(fn(h, y, K)) for name, (fn, _) in SCALARS.items()}
    for name in ("compression", "nc1", "fuzziness"):
        fn = SCALARS[name][0]
        for h2 in (3.7 * h, 1e-3 * h, h @ q, h + shift, -2.0 * (h @ q) + shift):
            _rel(fn(h2, y, K), base[name], 1e-9)
    for h2 in (3.7 * h, 1e-3 * h, h @ q):
        _rel(M.discrimination(h2, y, K), base["discrimination"], 1e-9)
    # translation is not an invariance of D (uncentred means): the test can fail
    assert abs(float(M.discrimination(h + shift, y, K)) - base["discrimination"]) > 1e-3


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("n,k", [(10, 3), (5, 4)])
def test_orthonormal_data_compression(n, k):
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.standard_normal((50, n * k)))
    h, y = q.T, np.repeat(np.arange(k), n)
    _rel(M.compression(h, y, k), (n - 1) * k / (k - 1), 1e-12)
    if (n, k) == (10, 3):
        _rel(M.compression(h, y, k), 13.5, 1e-12)


def _per_class_zero_mean_noise(y, k, m, rng, scale=0.3):
    e = scale * rng.standard_normal((len(y), m))
    for c in range(k):
        e[y == c] -= e[y == c].mean(0)
    return e


@pytest.mark.parametrize("k", [3, 5])
def test_simplex_and_orthogonal_means(k):
    rng = np.random.default_rng(9)
    m = 12
    y = _labels([7] * k, rng)
    basis, _ = np.linalg.qr(rng.standard_normal((m, k)))
    ortho = 2.0 * basis.T  # K x m, orthogonal rows
    simplex = ortho - ortho.mean(0)  # centred orthogonal frame = simplex ETF
    noise = _per_class_zero_mean_noise(y, k, m, rng)
    _rel(M.discrimination(ortho[y] + noise, y, k), 1.0, 1e-12)
    _rel(M.discrimination(simplex[y] + noise, y, k), 1 + 1 / (k - 1), 1e-12)
    ncs = M.nc2(simplex[y] + noise, y, k)
    for key in ("nc2_equinorm", "nc2_equiangularity", "nc2_max_angle_gap"):
        assert abs(float(ncs[key])) < 1e-12, key
    # NC3: classifier rows proportional to the centred means
    nc3 = M.nc3(simplex[y] + noise, y, k, 5.0 * simplex)
    assert float(nc3["nc3"]) < 1e-24
    # bias-free limit for the uncentred frame against a simplex W
    _rel(M.nc3(ortho[y], y, k, simplex)["nc3_uncentred"], 2 - 2 * np.sqrt((k - 1) / k), 1e-12)


# ----------------------------------------------------------------------------- jit and vmap


def test_jit_vmap_over_models_equals_per_model(x64):
    y = _make(11, UNBALANCED, 1.0)[1]
    hs = np.stack([_make(s, UNBALANCED, 1.0)[0] for s in (11, 12, 13)])  # all share labels y
    rng = np.random.default_rng(14)
    ws = rng.standard_normal((3, K, D)).astype(np.float32)  # what a jit with x64 off sees
    logits = rng.standard_normal((3, N, K)).astype(np.float32)

    def all_metrics(h, w, lg):
        out = {name: fn(h, y, K) for name, (fn, _) in SCALARS.items()}
        out["rank"] = M.numerical_rank(h)
        return {**out, **M.nc2(h, y, K), **M.nc3(h, y, K, w), "nc4": M.nc4(h, y, K, lg)}

    batched = jax.jit(jax.vmap(all_metrics))(_arg(hs, x64), ws, logits)
    for i in range(3):
        single = all_metrics(hs[i].astype(np.float64), ws[i], logits[i])
        jax.tree.map(lambda a, b, i=i: _rel(a[i], b, 1e-12), batched, single)

    # labels batched too (traced labels: value checks are skipped, shapes still checked)
    ys = np.stack([_make(s, UNBALANCED, 1.0)[1] for s in (11, 12, 13)])
    c = jax.vmap(lambda h, lab: M.nc1(h, lab, K))(_arg(hs, x64), ys)
    for i in range(3):
        _rel(c[i], M.nc1(hs[i], ys[i], K), 1e-12)


def test_layerwise_takes_every_metric(x64):
    """Runs of equal shapes (vmapped together) and single layers give each layer's own value;
    scalar-, int- and dict-valued metrics, with extra keyword arrays."""
    h, y = case("random")
    h2, _ = _make(16, (50,) * K, 1.0)
    feats = [h, h2, h[:, :5], np.tanh(h[:, 5:10]), np.tanh(h @ np.ones((D, 9))), h2]
    feats = [_arg(f, x64) for f in feats]
    f64 = [np.asarray(f, np.float64) for f in feats]
    out = M.layerwise(M.compression, feats, y, K)
    assert out.shape == (6,) and out.dtype == np.float64
    for l, f in enumerate(f64):
        _rel(out[l], bf_compression(f, y, K), 1e-9)
    ranks = M.layerwise(M.numerical_rank, feats, y, K)
    assert ranks.dtype == np.int32
    assert ranks.tolist() == [bf_rank(f, 0.95) for f in f64]
    nc2s = M.layerwise(M.nc2, feats, y, K, center="class")
    for l, f in enumerate(f64):
        for key, want in bf_nc2(f, y, K, "class").items():
            _rel(nc2s[key][l], want, 1e-9)
    logits = np.random.default_rng(17).standard_normal((N, K))
    nc4s = M.layerwise(M.nc4, feats, y, K, logits=logits)
    assert nc4s.tolist() == [bf_nc4(f, y, K, logits) for f in f64]


# ----------------------------------------------------------------------------- masks


def test_mask_weights_equal_duplicated_and_dropped_samples(x64):
    """Weight 2 = the sample twice, weight 0 = the sample absent (even if its row is NaN)."""
    h, y = _make(18, UNBALANCED, 1.0)
    rng = np.random.default_rng(18)
    w = rng.integers(0, 3, len(y)).astype(np.float64)
    w[np.flatnonzero(y == 0)[:2]] = 1.0  # every class keeps samples
    h_nan = h.copy()
    h_nan[w == 0] = np.nan
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    hd, yd = h[rep].astype(np.float64), y[rep]
    for fn, bf in SCALARS.values():
        _rel(fn(_arg(h_nan, x64), y, K, mask=w), bf(hd, yd, K), 1e-9)
    for key, want in bf_nc2(hd, yd, K).items():
        _rel(M.nc2(_arg(h_nan, x64), y, K, mask=w)[key], want, 1e-9)
    assert int(M.numerical_rank(h_nan, mask=w)) == bf_rank(hd, 0.95)


def test_absent_class_is_left_out_and_never_nan(x64):
    """A batch without class 2 (mask or traced labels): the metrics of the classes it holds;
    with one class left the between-class metrics are NaN (undefined)."""
    h, y = case("random_unbalanced")
    keep = y != 2
    y3 = np.where(y[keep] == 3, 2, y[keep])  # the same data as a 3-class problem
    h3 = h[keep].astype(np.float64)
    for fn, bf in SCALARS.values():
        _rel(fn(_arg(h, x64), y, K, mask=keep), bf(h3, y3, 3), 1e-9)
        traced = jax.jit(lambda h, lab, fn=fn: fn(h, lab, K))(_arg(h[keep], x64), y[keep])
        _rel(traced, bf(h3, y3, 3), 1e-9)
    for key, want in bf_nc2(h3, y3, 3).items():
        _rel(M.nc2(h, y, K, mask=keep)[key], want, 1e-9)
    lone = M.compression(h, y, K, mask=y == 1)
    assert np.isnan(float(lone)) and np.isnan(float(M.nc1(h, y, K, mask=y == 1)))
    g = jax.grad(lambda h: M.nc1(h, y, K, mask=keep))(_arg(h, x64))
    assert np.all(np.isfinite(g)) and not np.any(np.asarray(g)[~keep])


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("name", ["random_unbalanced", "collapsed"])
def test_streaming_equals_in_memory(name, x64):
    h, y = case(name)
    cuts = [0, 7, 100, 101, 163, N]  # uneven, including a batch of one

    def batches():
        return ((_arg(h[a:b], x64), y[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True))

    for center in M.CENTERS:
        got = M.streaming_metrics(batches, K, center=center)
        assert set(got) == {"compression", "discrimination", "nc1", "fuzziness"}
        _rel(got["compression"], M.compression(h, y, K, center=center), 1e-12)
        _rel(got["nc1"], M.nc1(h, y, K, center=center), 1e-12)
        _rel(got["fuzziness"], M.separation_fuzziness(h, y, K), 1e-12)
        _rel(got["discrimination"], M.discrimination(h, y, K), 1e-12)


def test_streaming_rejects_bad_batches():
    h, y = case("random")
    with pytest.raises(ValueError, match="class 3 has no samples"):
        M.streaming_metrics(lambda: [(h[y != 3], y[y != 3])], K)
    with pytest.raises(ValueError, match="label 9"):
        M.streaming_metrics(lambda: [(h, np.where(y == 0, 9, y))], K)
    with pytest.raises(ValueError, match="no batches"):
        M.streaming_metrics(lambda: [], K)
    with pytest.raises(ValueError, match="center"):
        M.streaming_metrics(lambda: [(h, y)], K, center="mean")


# ----------------------------------------------------------------------------- bad input


ALL_FNS = {
    **{name: fn for name, (fn, _) in SCALARS.items()},
    "nc2": M.nc2,
    # check_inputs runs before the classifier / logits shape checks
    "nc3": lambda h, y, k, **kw: M.nc3(h, y, k, np.ones((K, D)), **kw),
    "nc4": lambda h, y, k, **kw: M.nc4(h, y, k, np.ones((N, K)), **kw),
}


@pytest.mark.parametrize("name", sorted(ALL_FNS))
def test_bad_input_raises(name):
    fn = ALL_FNS[name]
    h, y = case("random")
    with pytest.raises(ValueError, match=r"h must be 2-D.*\(200,\)"):
        fn(h[:, 0], y, K)
    with pytest.raises(ValueError, match=r"labels must be 1-D.*\(200, 1\)"):
        fn(h, y[:, None], K)
    with pytest.raises(ValueError, match="integer dtype, got float64"):
        fn(h, y.astype(float), K)
    with pytest.raises(ValueError, match="N=199"):
        fn(h, y[:199], K)
    with pytest.raises(ValueError, match="got 1"):
        fn(h, np.zeros(N, int), 1)
    with pytest.raises(ValueError, match="2.5"):
        fn(h, y, 2.5)
    with pytest.raises(ValueError, match="label 7"):
        fn(h, np.where(y == 1, 7, y), K)
    with pytest.raises(ValueError, match="label -1"):
        fn(h, np.where(y == 1, -1, y), K)
    with pytest.raises(ValueError, match=r"class 2 has no samples.*\[\d+, \d+, 0, \d+\]"):
        fn(h, np.where(y == 2, 0, y), K)
    with pytest.raises(ValueError, match=r"mask must have shape \(N,\) = \(200,\)"):
        fn(h, y, K, mask=np.ones(199, bool))
    with pytest.raises(ValueError, match="mask weights must be finite and >= 0"):
        fn(h, y, K, mask=-np.ones(N))
    with pytest.raises(ValueError, match="mask must be bool or float"):
        fn(h, y, K, mask=np.ones(N, int))


def test_bad_input_specific():
    h, y = case("random")
    with pytest.raises(ValueError, match=r"classifier must have shape.*\(4, 16\).*\(4, 15\)"):
        M.nc3(h, y, K, np.ones((K, D - 1)))
    with pytest.raises(ValueError, match=r"logits must have shape.*\(200, 3\)"):
        M.nc4(h, y, K, np.ones((N, 3)))
    with pytest.raises(ValueError, match="energy.*1.5"):
        M.numerical_rank(h, energy=1.5)
    with pytest.raises(ValueError, match=r"h must be 2-D.*\(200,\)"):
        M.numerical_rank(h[:, 0])
    with pytest.raises(ValueError, match="at least one layer"):
        M.layerwise(M.compression, [], y, K)
    for fn in (M.compression, M.nc1, M.nc2):
        with pytest.raises(ValueError, match="center must be one of.*'mean'"):
            fn(h, y, K, center="mean")


def test_checks_skip_values_under_jit():
    h, y = case("random")
    jitted = jax.jit(M.separation_fuzziness, static_argnums=2)
    _rel(jitted(h, y, K), bf_fuzziness(h.astype(np.float64), y, K), 1e-9)
    with pytest.raises(ValueError, match="h must be 2-D"):  # shape checks still run when traced
        jitted(h[:, 0], y, K)


def test_backend_without_float64_raises(monkeypatch):
    h, y = case("random")
    monkeypatch.setitem(M._FLOAT64_OK, jax.default_backend(), False)
    with pytest.raises(RuntimeError, match="need float64"):
        M.compression(h, y, K)


# ----------------------------------------------------------------------------- import


def test_import_has_no_side_effects():
    """import pnc_jax (and its metrics) leaves XLA_FLAGS alone and loads no training stack."""
    script = (
        "import os, sys; before = os.environ.get('XLA_FLAGS');"
        "import pnc_jax as pj, pnc_jax.metrics, pnc_jax.fits;"
        "from pnc_jax.report import streaming_report;"
        "assert os.environ.get('XLA_FLAGS') == before, os.environ.get('XLA_FLAGS');"
        "heavy = [m for m in ('flax', 'optax', 'orbax', 'matplotlib', 'pnc_jax.train',"
        " 'pnc_jax.sweep') if m in sys.modules]; assert not heavy, heavy;"
        "assert callable(pj.report) and pj.metrics.nc1 is pj.nc1 and pj.fits.geometric_fit;"
        "assert not [n for n in pj.__all__ if not hasattr(pj, n)]"
    )
    for flags in (None, "--xla_force_host_platform_device_count=2"):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        if flags:
            env["XLA_FLAGS"] = flags
        out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
