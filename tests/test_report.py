"""pnc_jax.report: equal to the separate public metrics and fits, layer by layer, with x64 on and
off; streaming equals in memory; jit/vmap/grad; masked minibatches inside a scan stay finite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pnc_jax as pj
from pnc_jax import fits
from pnc_jax import metrics as M
from pnc_jax.report import streaming_report

K = 3
COUNTS = (20, 45, 70)  # imbalanced: the sample mean differs from the mean of class means
N = sum(COUNTS)
PER_LAYER = ("compression", "discrimination", "nc1", "fuzziness", "nc2_equinorm",
             "nc2_equiangularity", "nc2_max_angle_gap")


@pytest.fixture(params=[True, False], ids=["x64", "x32"])
def x64(request):
    with jax.enable_x64(request.param):
        yield request.param


def _net(seed=0, widths=(6, 9, 9, 9, 4), noise=1.0):
    """Features of a random tanh MLP (float32): widths give runs of equal shapes and singles."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(K), COUNTS))
    x = (3.0 * rng.standard_normal((K, widths[0])))[y] + noise * rng.standard_normal((N, 6))
    feats = [x.astype(np.float32)]
    for m in widths[1:]:
        w = rng.standard_normal((feats[-1].shape[1], m)) / np.sqrt(feats[-1].shape[1])
        feats.append(np.tanh(feats[-1] @ w + 0.3).astype(np.float32))
    classifier = rng.standard_normal((K, widths[-1])).astype(np.float32)
    logits = (feats[-1] @ classifier.T).astype(np.float32)
    return feats, y, logits, classifier


def _rel(a, b, tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=0)


def _arg(a, x64):
    return a if x64 else jnp.asarray(a)


def _public(feats, y, logits, classifier, center="sample", mask=None):
    """Every report entry from the separate public calls."""
    out = {}
    for key, fn in (("compression", M.compression), ("nc1", M.nc1)):
        out[key] = M.layerwise(fn, feats, y, K, center=center, mask=mask)
    for key, fn in (("discrimination", M.discrimination), ("fuzziness", M.separation_fuzziness)):
        out[key] = M.layerwise(fn, feats, y, K, mask=mask)
    out.update(M.layerwise(M.nc2, feats, y, K, center=center, mask=mask))
    out["nc4"] = M.layerwise(M.nc4, feats, y, K, logits=logits, mask=mask)
    out["numerical_rank"] = M.layerwise(M.numerical_rank, feats, y, K, mask=mask)
    out.update(M.nc3(feats[-1], y, K, classifier, center=center, mask=mask))
    out["compression_fit"] = fits.geometric_fit(out["compression"])
    out["discrimination_fit"] = fits.linear_fit(out["discrimination"])
    return out


def _assert_same(got, want, tol):
    assert set(got) == set(want) | {"class_counts"}, set(got) ^ set(want)
    for key, val in want.items():
        if key == "numerical_rank":
            assert got[key].dtype == np.int32
            np.testing.assert_array_equal(got[key], val)
        elif isinstance(val, dict):
            assert set(got[key]) == set(val), key
            for sub, v in val.items():
                _rel(got[key][sub], v, tol)
        else:
            assert got[key].dtype == np.float64, key
            _rel(got[key], val, tol)


@pytest.mark.parametrize("center", ["sample", "class"])
def test_report_equals_the_separate_public_calls(x64, center):
    feats, y, logits, classifier = _net()
    args = [_arg(f, x64) for f in feats]
    got = pj.report(args, y, K, logits=logits, classifier=classifier, center=center)
    assert got["compression"].shape == (len(feats),)
    _rel(got["class_counts"], COUNTS, 0)
    _assert_same(got, _public(feats, y, logits, classifier, center), 1e-10)
    if not x64:
        assert all(a.dtype == jnp.float32 for a in args)


def test_report_without_logits_classifier_or_rank_and_short_profiles():
    feats, y, *_ = _net(1)
    got = pj.report(feats[:2], y, K, rank=False)
    assert not {"nc3", "nc4", "numerical_rank"} & set(got)
    assert np.all(np.isnan(np.asarray(got["compression_fit"]["ratio"])))  # one fitted layer
    _rel(got["nc1"], M.layerwise(M.nc1, feats[:2], y, K), 1e-10)
    fit = pj.report(feats, y, K, fit_start=2)["compression_fit"]
    _rel(fit["ratio"], fits.geometric_fit(M.layerwise(M.compression, feats, y, K), 2)["ratio"],
         1e-10)


def test_rank_through_the_gram_equals_the_svd_also_when_n_is_below_m():
    rng = np.random.default_rng(2)
    y = np.arange(30) % K
    wide = (rng.standard_normal((30, 64)) * 0.8 ** np.arange(64)).astype(np.float32)  # N < m
    tall = (rng.standard_normal((90, 12)) * 0.7 ** np.arange(12)).astype(np.float32)
    for h, lab in ((wide, y), (tall, np.arange(90) % K)):
        for energy in (0.5, 0.95, 0.99):
            got = pj.report([h], lab, K, energy=energy)["numerical_rank"]
            assert int(got[0]) == int(M.numerical_rank(h, energy=energy))


def test_streaming_report_equals_report(x64):
    feats, y, logits, classifier = _net(3)
    cuts = [0, 1, 68, N]  # a batch of one and two of 67 (two compiled batch shapes)
    mask = np.ones(N, bool)
    mask[::7] = False

    def batches(with_mask):
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            extra = (mask[a:b],) if with_mask else ()
            yield ([_arg(f[a:b], x64) for f in feats], y[a:b], logits[a:b], *extra)

    for with_mask in (False, True):
        got = streaming_report(lambda w=with_mask: batches(w), K, classifier=classifier)
        want = pj.report(feats, y, K, logits=logits, classifier=classifier,
                         mask=mask if with_mask else None)
        assert set(got) == set(want)
        jax.tree.map(lambda a, b: _rel(a, b, 1e-12), got, want)


def test_streaming_report_rejects_bad_batches():
    feats, y, *_ = _net(4)
    with pytest.raises(ValueError, match="no batches"):
        streaming_report(lambda: [], K)
    with pytest.raises(ValueError, match="class 2 has no samples"):
        streaming_report(lambda: [([f[y != 2] for f in feats], y[y != 2])], K)
    with pytest.raises(ValueError, match="layer widths"):
        streaming_report(lambda: [(feats, y), (feats[:-1], y)], K)
    with pytest.raises(ValueError, match=r"\(features, labels\[, logits\[, mask\]\]\)"):
        streaming_report(lambda: [(feats,)], K)


def test_jit_vmap_and_grad(x64):
    """jit = eager; vmap over models = per model; grad of a report entry = grad of the metric."""
    nets = [_net(s) for s in (5, 6)]
    y = nets[0][1]
    stacked = [jnp.stack([_arg(n[0][l], x64) for n in nets]) for l in range(len(nets[0][0]))]
    logits = jnp.stack([_arg(n[2], x64) for n in nets])

    def rep(feats, lg):
        return pj.report(feats, y, K, logits=lg)

    batched = jax.jit(jax.vmap(rep))(stacked, logits)
    for i, net in enumerate(nets):
        single = pj.report(net[0], y, K, logits=net[2])
        jax.tree.map(lambda a, b, i=i: _rel(a[i], b, 1e-12), batched, single)

    h = _arg(nets[0][0][2], x64)
    g_report = jax.grad(lambda h: pj.report([h], y, K, rank=False)["nc1"][0])(h)
    g_metric = jax.grad(lambda h: M.nc1(h, y, K))(h)
    assert g_report.dtype == h.dtype
    _rel(g_report, g_metric, 1e-6 if not x64 else 1e-12)


def test_masked_minibatches_in_a_scan_stay_finite(x64):
    """A training scan over minibatches, some missing a class: every value finite and equal to
    the report of the batch's samples alone (classes it lacks left out)."""
    feats, y, logits, _ = _net(7)
    order = np.argsort(y, kind="stable")  # class-sorted: the first batches miss classes
    b = 27
    n_batches = N // b
    idx = order[: n_batches * b].reshape(n_batches, b)
    mask = np.ones((n_batches, b), bool)
    mask[:, -3:] = False  # padding rows, never counted

    def step(carry, batch):
        i, m = batch
        out = pj.report([f[i] for f in feats_dev], jnp.asarray(y)[i], K, mask=m)
        return carry, (out["compression"], out["nc1"], out["nc2_equinorm"], out["class_counts"])

    feats_dev = [jnp.asarray(f) for f in feats]
    _, (c, n1, eq, counts) = jax.jit(lambda: jax.lax.scan(step, 0, (idx, mask)))()
    present = np.asarray(counts) > 0
    assert not present.all(axis=1).all() and (present.sum(axis=1) >= 2).any()
    for t in range(n_batches):
        ok = present[t].sum() >= 2
        assert np.all(np.isfinite(np.asarray(c[t]))) == ok
        if not ok:
            continue
        keep = idx[t][mask[t]]
        classes = np.unique(y[keep])
        y_sub = np.searchsorted(classes, y[keep])
        sub = [f[keep] for f in feats]
        _rel(c[t], M.layerwise(M.compression, sub, y_sub, len(classes)), 1e-10)
        _rel(n1[t], M.layerwise(M.nc1, sub, y_sub, len(classes)), 1e-10)
        _rel(eq[t], M.layerwise(M.nc2, sub, y_sub, len(classes))["nc2_equinorm"], 1e-10)


def test_bad_input():
    feats, y, logits, classifier = _net(8)
    with pytest.raises(ValueError, match="at least one layer"):
        pj.report([], y, K)
    with pytest.raises(ValueError, match=r"features\[2\] must be 2-D with N=135"):
        pj.report([feats[0], feats[1], feats[2][:-1]], y, K)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\) = \(135, 3\)"):
        pj.report(feats, y, K, logits=logits[:, :2])
    with pytest.raises(ValueError, match=r"classifier must have shape \(K, m\) = \(3, 4\)"):
        pj.report(feats, y, K, classifier=classifier.T)
    with pytest.raises(ValueError, match="class 1 has no samples"):
        pj.report(feats, np.where(y == 1, 0, y), K)
    with pytest.raises(ValueError, match="center"):
        pj.report(feats, y, K, center="median")
    with pytest.raises(ValueError, match="energy"):
        pj.report(feats, y, K, energy=0.0)
    with pytest.raises(ValueError, match="fit_start"):
        pj.report(feats, y, K, fit_start=-1)
