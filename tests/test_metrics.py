"""Metrics vs brute-force numpy float64 (explicit per-sample outer products, np.linalg.pinv),
invariances, published closed forms, jit/vmap, streaming, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnc_jax import metrics as M

K = 4
N = 200
D = 16
UNBALANCED = (10, 30, 60, 100)
RCOND = 1e-10  # relative eigenvalue cut for np.linalg.pinv, as in the module (different code)


# ----------------------------------------------------------------------------- data


def _labels(counts, rng):
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


def _random(seed, counts=(50, 50, 50, 50), m=D):
    rng = np.random.default_rng(seed)
    y = _labels(counts, rng)
    mu = rng.standard_normal((len(counts), m)) + 0.5  # offset: uncentred != centred
    return mu[y] + rng.standard_normal((len(y), m)), y


def _collapsed(seed, counts=(50, 50, 50, 50), m=D):
    """h = mu_y + 1e-6 noise: C ~ 1e-12."""
    rng = np.random.default_rng(seed)
    y = _labels(counts, rng)
    mu = rng.standard_normal((len(counts), m)) + 0.5
    return mu[y] + 1e-6 * rng.standard_normal((len(y), m)), y


CASES = {
    "random": lambda: _random(0),
    "random_unbalanced": lambda: _random(1, UNBALANCED),
    "collapsed": lambda: _collapsed(2),
    "collapsed_unbalanced": lambda: _collapsed(3, UNBALANCED),
}


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


def _bf_sigma_b(h, y, k):
    """(1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T, mu_G = mean of class means (module's choice)."""
    mu, _ = _bf_means(h, y, k)
    mu_g = mu.mean(0)
    return sum(np.outer(mu[c] - mu_g, mu[c] - mu_g) for c in range(k)) / k


def bf_compression(h, y, k):
    return np.trace(_bf_sigma_w(h, y, k)) / np.trace(_bf_sigma_b(h, y, k))


def bf_nc1(h, y, k):
    sb_pinv = np.linalg.pinv(_bf_sigma_b(h, y, k), rcond=RCOND, hermitian=True)
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


def bf_nc2(h, y, k):
    mu, _ = _bf_means(h, y, k)
    mc = mu - mu.mean(0)
    nrm = np.linalg.norm(mc, axis=1)
    cos = np.array([_cos(mc[a], mc[b]) for a in range(k) for b in range(k) if a != b])
    return {
        "equinorm": nrm.std() / nrm.mean(),
        "equiangularity": cos.std(),
        "max_angle_gap": np.abs(cos + 1 / (k - 1)).mean(),
    }


def bf_nc3(w, h, y, k):
    mu, _ = _bf_means(h, y, k)
    out = {}
    for name, m_mxk in (("centred", (mu - mu.mean(0)).T), ("uncentred", mu.T)):
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
    "separation_fuzziness": (M.separation_fuzziness, bf_fuzziness),
    "discrimination": (M.discrimination, bf_discrimination),
}


# ----------------------------------------------------------------------------- vs brute force


@pytest.mark.parametrize("case", sorted(CASES))
def test_scalar_metrics_match_brute_force(case):
    h, y = CASES[case]()
    for name, (fn, bf) in SCALARS.items():
        got, want = fn(h, y, K), bf(h, y, K)
        assert got.dtype == jnp.float64, name
        _rel(got, want, 1e-9)
    if case.startswith("collapsed"):
        assert 1e-14 < float(M.compression(h, y, K)) < 1e-10


@pytest.mark.parametrize("case", sorted(CASES))
def test_nc2_nc3_nc4_rank_match_brute_force(case):
    h, y = CASES[case]()
    rng = np.random.default_rng(7)
    for key, want in bf_nc2(h, y, K).items():
        _rel(M.nc2(h, y, K)[key], want, 1e-9)
    w = rng.standard_normal((K, D))
    for key, want in bf_nc3(w, h, y, K).items():
        _rel(M.nc3(w, h, y, K)[key], want, 1e-9)
    mu, _ = _bf_means(h, y, K)
    logits = h @ mu.T + 3.0 * rng.standard_normal((len(y), K))  # mostly but not always agreeing
    want4 = bf_nc4(h, y, K, logits)
    assert 0 < want4 < 1 or case.startswith("collapsed")
    assert float(M.nc4(h, y, K, logits)) == want4
    for energy in (0.5, 0.95):
        assert int(M.numerical_rank(h, energy)) == bf_rank(h, energy)


def test_float32_input_is_computed_in_float64():
    h, y = _collapsed(4)
    h32 = h.astype(np.float32)
    h64 = h32.astype(np.float64)  # same values; a float32 computation would be far off at C ~ 1e-8
    for fn, bf in SCALARS.values():
        _rel(fn(h32, y, K), bf(h64, y, K), 1e-9)


def test_numerical_rank_known_spectrum():
    rng = np.random.default_rng(5)
    u, _ = np.linalg.qr(rng.standard_normal((50, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((8, 4)))
    h = u @ np.diag([4.0, 3.0, 2.0, 1.0]) @ v.T  # cumulative 4, 7, 9, 10 of 10
    assert M.numerical_rank(h).dtype == jnp.int32
    assert [int(M.numerical_rank(h, e)) for e in (0.3, 0.5, 0.85, 0.95)] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- invariances


def test_invariances():
    h, y = _random(6, UNBALANCED)
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    shift = 10.0 * rng.standard_normal(D)
    base = {name: float(fn(h, y, K)) for name, (fn, _) in SCALARS.items()}
    for name in ("compression", "nc1", "separation_fuzziness"):
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
    for key in ("equinorm", "equiangularity", "max_angle_gap"):
        assert abs(float(ncs[key])) < 1e-12, key
    # NC3: classifier rows proportional to the centred means
    nc3 = M.nc3(5.0 * simplex, simplex[y] + noise, y, k)
    assert float(nc3["centred"]) < 1e-24
    # bias-free limit for the uncentred frame against a simplex W
    _rel(M.nc3(simplex, ortho[y], y, k)["uncentred"], 2 - 2 * np.sqrt((k - 1) / k), 1e-12)


# ----------------------------------------------------------------------------- jit and vmap


def test_jit_vmap_over_models_equals_per_model():
    models = [_random(s, UNBALANCED) for s in (11, 12, 13)]
    y = models[0][1]
    hs = np.stack([_random(s, UNBALANCED)[0] for s in (11, 12, 13)])  # all share labels y
    rng = np.random.default_rng(14)
    ws = rng.standard_normal((3, K, D))
    logits = rng.standard_normal((3, N, K))

    def all_metrics(h, w, lg):
        out = {name: fn(h, y, K) for name, (fn, _) in SCALARS.items()}
        out["rank"] = M.numerical_rank(h)
        out["nc2"] = M.nc2(h, y, K)
        out["nc3"] = M.nc3(w, h, y, K)
        out["nc4"] = M.nc4(h, y, K, lg)
        return out

    batched = jax.jit(jax.vmap(all_metrics))(hs, ws, logits)
    for i in range(3):
        single = all_metrics(hs[i], ws[i], logits[i])
        jax.tree.map(lambda a, b, i=i: _rel(a[i], b, 1e-12), batched, single)

    # labels batched too (traced labels: value checks are skipped, shapes still checked)
    ys = np.stack([_random(s, UNBALANCED)[1] for s in (11, 12, 13)])
    c = jax.vmap(lambda h, lab: M.nc1(h, lab, K))(hs, ys)
    for i in range(3):
        _rel(c[i], M.nc1(hs[i], ys[i], K), 1e-12)


def test_layerwise_different_widths():
    """Runs of equal shapes (vmapped together) and single layers give each layer's own value."""
    h, y = _random(15)
    h2, _ = _random(16)
    feats = [h, h2, h[:, :5], np.tanh(h[:, 5:10]), np.tanh(h @ np.ones((D, 9))), h2]
    out = M.layerwise(M.compression, feats, y, K)
    assert out.shape == (6,) and out.dtype == np.float64
    for l, f in enumerate(feats):
        _rel(out[l], bf_compression(f, y, K), 1e-9)


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("case", ["random_unbalanced", "collapsed"])
def test_streaming_equals_in_memory(case):
    h, y = CASES[case]()
    cuts = [0, 7, 100, 101, 163, N]  # uneven, including a batch of one

    def batches():
        return ((h[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True))

    got = M.streaming_metrics(batches, K)
    for name, (fn, _) in SCALARS.items():
        _rel(got[name], fn(h, y, K), 1e-12)


def test_streaming_rejects_bad_batches():
    h, y = _random(16)
    with pytest.raises(ValueError, match="class 3 has no samples"):
        M.streaming_metrics(lambda: [(h[y != 3], y[y != 3])], K)
    with pytest.raises(ValueError, match="label 9"):
        M.streaming_metrics(lambda: [(h, np.where(y == 0, 9, y))], K)
    with pytest.raises(ValueError, match="no batches"):
        M.streaming_metrics(lambda: [], K)


# ----------------------------------------------------------------------------- bad input


ALL_FNS = {
    **{name: fn for name, (fn, _) in SCALARS.items()},
    "nc2": M.nc2,
    # check_inputs runs before the w / logits shape checks
    "nc3": lambda h, y, k: M.nc3(np.ones((K, D)), h, y, k),
    "nc4": lambda h, y, k: M.nc4(h, y, k, np.ones((N, K))),
}


@pytest.mark.parametrize("name", sorted(ALL_FNS))
def test_bad_input_raises(name):
    fn = ALL_FNS[name]
    h, y = _random(17)
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


def test_bad_input_specific():
    h, y = _random(18)
    with pytest.raises(ValueError, match=r"w must have shape.*\(4, 16\).*\(4, 15\)"):
        M.nc3(np.ones((K, D - 1)), h, y, K)
    with pytest.raises(ValueError, match=r"logits must have shape.*\(200, 3\)"):
        M.nc4(h, y, K, np.ones((N, 3)))
    with pytest.raises(ValueError, match="energy.*1.5"):
        M.numerical_rank(h, 1.5)
    with pytest.raises(ValueError, match=r"h must be 2-D.*\(200,\)"):
        M.numerical_rank(h[:, 0])
    with pytest.raises(ValueError, match="at least one layer"):
        M.layerwise(M.compression, [], y, K)


def test_checks_skip_values_under_jit():
    h, y = _random(19)
    jitted = jax.jit(M.separation_fuzziness, static_argnums=2)
    _rel(jitted(h, y, K), bf_fuzziness(h, y, K), 1e-9)
    with pytest.raises(ValueError, match="h must be 2-D"):  # shape checks still run when traced
        jitted(h[:, 0], y, K)
