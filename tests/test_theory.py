"""Closed-form min-norm balanced network and its predicted rates (science.md §2)."""

import numpy as np
import pytest

import theory
from pnc_jax.data import nearly_orthonormal

# Figure 4 setting: n=10, K=3, d=h=50, L=6, xi=0.3, alpha=100.
FIG4 = dict(n=10, k=3, d=50, width=50, depth=6, xi=0.3, alpha=100.0)
# Another: width > d, shuffled labels, moderate alpha.
OTHER = dict(n=4, k=4, d=20, width=24, depth=4, xi=0.5, alpha=3.0)


def _data(cfg, seed=0, perturbation=1.0, shuffle=False):
    x_NxD, labels_N = nearly_orthonormal(seed, cfg["k"], cfg["n"], cfg["d"], perturbation)
    if shuffle:
        perm = np.random.default_rng(seed + 1).permutation(labels_N.size)
        x_NxD, labels_N = x_NxD[perm], labels_N[perm]
    return x_NxD, labels_N


def _network(cfg, x_NxD, labels_N, seed=0):
    return theory.min_norm_balanced(
        x_NxD, labels_N, cfg["k"], cfg["depth"], cfg["width"], cfg["xi"], cfg["alpha"], seed
    )


def _features(weights, x_NxD):
    feats = [x_NxD]
    for w in weights[:-1]:
        feats.append(feats[-1] @ w.T)
    return feats


def _brute_compression(h_NxM, labels_N, k):
    """Tr Sigma_W / Tr Sigma_B, two-pass, float64."""
    mus = [h_NxM[labels_N == c].mean(axis=0) for c in range(k)]
    within = sum(((h_NxM[labels_N == c] - mus[c]) ** 2).sum() for c in range(k)) / len(labels_N)
    mu_g = h_NxM.mean(axis=0)
    between = sum(((mu - mu_g) ** 2).sum() for mu in mus) / k
    return within / between


def _brute_discrimination(h_NxM, labels_N, k):
    """1 - max over k != k' of the cosine of uncentred class means."""
    mus = [h_NxM[labels_N == c].mean(axis=0) for c in range(k)]
    cos = [
        mus[a] @ mus[b] / (np.linalg.norm(mus[a]) * np.linalg.norm(mus[b]))
        for a in range(k)
        for b in range(k)
        if a != b
    ]
    return 1.0 - max(cos)


@pytest.mark.parametrize("cfg,shuffle", [(FIG4, False), (OTHER, True)])
def test_closed_form_is_min_norm_balanced_low_rank(cfg, shuffle):
    x_NxD, labels_N = _data(cfg, shuffle=shuffle)
    ws = _network(cfg, x_NxD, labels_N)
    k, d, h, depth = cfg["k"], cfg["d"], cfg["width"], cfg["depth"]
    assert [w.shape for w in ws] == [(h, d)] + [(h, h)] * (depth - 2) + [(k, h)]

    target_KxD = np.eye(k)[:, labels_N] @ np.linalg.pinv(x_NxD.T) / cfg["alpha"]
    prod_KxD = ws[0]
    for w in ws[1:]:
        prod_KxD = w @ prod_KxD
    np.testing.assert_allclose(prod_KxD, target_KxD, rtol=0, atol=1e-10)

    for l in range(depth - 2):  # hidden pairs l = 1..L-2
        lhs = ws[l + 1].T @ ws[l + 1]
        np.testing.assert_allclose(lhs, ws[l] @ ws[l].T, rtol=0, atol=1e-10)

    s_K = np.linalg.svd(target_KxD, compute_uv=False)
    r = min(h, d) - k
    for w in ws[:-1]:
        zeros = np.zeros(min(w.shape) - k - r)
        expected = np.sort(np.concatenate([s_K ** (1 / depth), np.full(r, cfg["xi"]), zeros]))[::-1]
        np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), expected, atol=1e-10)


@pytest.mark.parametrize("cfg,shuffle", [(FIG4, False), (OTHER, True)])
def test_predicted_rates_match_closed_form_features(cfg, shuffle):
    x_NxD, labels_N = _data(cfg, shuffle=shuffle)
    k = cfg["k"]
    pred = theory.predict_rates(
        cfg["n"], k, cfg["depth"], cfg["xi"], cfg["alpha"], x_NxD=x_NxD, labels_N=labels_N
    )
    assert pred.from_data and pred.compression.shape == pred.discrimination.shape == (cfg["depth"],)
    for seed in (0, 1):  # the prediction does not depend on the random Q_l, P_l
        feats = _features(_network(cfg, x_NxD, labels_N, seed), x_NxD)
        measured_c = [_brute_compression(h, labels_N, k) for h in feats]
        measured_d = [_brute_discrimination(h, labels_N, k) for h in feats]
        np.testing.assert_allclose(pred.compression, measured_c, rtol=1e-8)
        np.testing.assert_allclose(pred.discrimination, measured_d, rtol=1e-8)
    # layer_features is the same forward pass
    ws = _network(cfg, x_NxD, labels_N)
    for a, b in zip(theory.layer_features(ws, x_NxD), _features(ws, x_NxD), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_paper_aliases_x_dxn_and_one_hot_y():
    x_NxD, labels_N = _data(OTHER, shuffle=True)
    a = theory.predict_rates(4, 4, 4, 0.5, 3.0, x_NxD, labels_N)
    b = theory.predict_rates(4, 4, 4, 0.5, 3.0, X=x_NxD.T, Y=theory.one_hot_KxN(labels_N, 4))
    np.testing.assert_array_equal(a.compression, b.compression)
    np.testing.assert_array_equal(a.discrimination, b.discrimination)


def test_orthonormal_limit():
    pred = theory.predict_rates(10, 3, 6, 0.3, 100.0)
    assert not pred.from_data
    assert round(pred.compression_ratio, 4) == 0.2846
    assert pred.compression_ratio == pytest.approx(0.09 * 100 ** (1 / 3) / 10 ** (1 / 6), rel=1e-14)
    assert pred.compression[0] == pytest.approx(13.5, rel=1e-14)
    np.testing.assert_allclose(pred.compression, 13.5 * pred.compression_ratio ** np.arange(6))
    assert pred.fitted_ratio == pytest.approx(pred.compression_ratio, rel=1e-12)
    np.testing.assert_array_equal(pred.discrimination, np.ones(6))
    # Exactly orthonormal data: the finite-data formulas reduce to the limit.
    x_NxD, labels_N = _data(FIG4, perturbation=0.0)
    exact = theory.predict_rates(10, 3, 6, 0.3, 100.0, x_NxD, labels_N)
    np.testing.assert_allclose(exact.compression, pred.compression, rtol=1e-10)
    np.testing.assert_allclose(exact.discrimination, 1.0, rtol=0, atol=1e-12)


def test_figure4_prediction_matches_published_ratios():
    x_NxD, labels_N = _data(FIG4)
    pred = theory.predict_rates(10, 3, 6, 0.3, 100.0, x_NxD, labels_N)
    ratios = pred.compression[1:] / pred.compression[:-1]
    # science.md: trained ratios 0.29, 0.283, 0.281, 0.28, 0.28 (a different data draw).
    np.testing.assert_allclose(ratios, [0.29, 0.283, 0.281, 0.28, 0.28], rtol=0.05)
    # The first ratio sits a few percent above the others, which approach rho from above.
    assert 1.01 < ratios[0] / ratios[-1] < 1.04
    assert pred.compression_ratio < ratios[-1] < 1.02 * pred.compression_ratio
    # D rises (nearly linearly) towards 1; the linear form is close to the exact one.
    assert np.all(np.diff(pred.discrimination) > 0) and pred.discrimination[-1] < 1
    np.testing.assert_allclose(pred.discrimination_linear, pred.discrimination_signal, atol=1e-4)
    np.testing.assert_allclose(pred.discrimination, pred.discrimination_signal, atol=1e-3)


def test_check_assumptions_on_closed_form_and_perturbed():
    cfg = OTHER
    x_NxD, labels_N = _data(cfg, shuffle=True)
    ws = _network(cfg, x_NxD, labels_N)
    rep = theory.check_assumptions(ws, x_NxD, labels_N, cfg["k"], cfg["alpha"])
    assert rep.min_norm_residual < 1e-12 and rep.min_norm_relative < 1e-12
    assert rep.balancedness.shape == (cfg["depth"] - 1,)
    assert rep.balancedness_hidden_max < 1e-12
    assert rep.balancedness_normalized[-1] > 0.1  # classifier pair: xi^2 P P^T remains
    assert rep.middle_singular_variance < 1e-20
    assert all(np.allclose(s, cfg["xi"]) for s in rep.middle_singular_values)
    assert rep.orthonormality > 0.1

    bumped = [w.copy() for w in ws]
    bumped[1][0, 0] += 1e-3
    rep2 = theory.check_assumptions(bumped, x_NxD, labels_N, cfg["k"], cfg["alpha"])
    assert rep2.min_norm_residual > 1e-8 and rep2.balancedness_hidden_max > 1e-6

    x0_NxD, labels0_N = _data(FIG4, perturbation=0.0)
    ws0 = _network(FIG4, x0_NxD, labels0_N)
    rep0 = theory.check_assumptions(ws0, x0_NxD, labels0_N, 3, 100.0)
    assert rep0.orthonormality < 1e-12


def test_narrow_width_still_min_norm_and_balanced():
    x_NxD, labels_N = _data(OTHER)
    ws = theory.min_norm_balanced(x_NxD, labels_N, 4, 3, 8, 0.5, 3.0)
    rep = theory.check_assumptions(ws, x_NxD, labels_N, 4, 3.0)
    assert rep.min_norm_residual < 1e-12 and rep.balancedness_hidden_max < 1e-12


_X, _LAB = nearly_orthonormal(0, 3, 4, 20, 1.0)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: theory.min_norm_balanced(_X, _LAB, 3, 1, 20, 0.1), "depth"),
        (lambda: theory.min_norm_balanced(_X, _LAB, 3, 3, 2, 0.1), "width"),
        (lambda: theory.min_norm_balanced(_X, _LAB, 3, 3, 20, 0.0), "init_scale"),
        (lambda: theory.min_norm_balanced(_X, _LAB, 3, 3, 20, 0.1, -1.0), "loss_scale"),
        (lambda: theory.min_norm_balanced(_X[:, :8], _LAB, 3, 3, 20, 0.1), "x_NxD"),
        (lambda: theory.min_norm_balanced(_X, _LAB[:-1], 3, 3, 20, 0.1), "labels_N"),
        (lambda: theory.min_norm_balanced(_X, _LAB, 1, 3, 20, 0.1), "num_classes"),
        (lambda: theory.predict_rates(0, 3, 6, 0.3), "samples_per_class"),
        (lambda: theory.predict_rates(10, 3, 1, 0.3), "depth"),
        (lambda: theory.predict_rates(10, 3, 6, -0.3), "init_scale"),
        (lambda: theory.predict_rates(10, 3, 6, 0.3, 0.0), "loss_scale"),
        (lambda: theory.predict_rates(5, 3, 6, 0.3, 1.0, _X, _LAB), "samples_per_class"),
        (lambda: theory.predict_rates(4, 3, 6, 0.3, 1.0, _X[:, :8], _LAB), "x_NxD"),
        (lambda: theory.predict_rates(4, 3, 6, 0.3, 1.0, _X), "labels_N"),
        (lambda: theory.check_assumptions([np.eye(20)], _X, _LAB, 3), "weights"),
        (lambda: theory.check_assumptions([np.eye(20), np.ones((3, 19))], _X, _LAB, 3), "weights"),
    ],
)
def test_bad_arguments_raise_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_library_metrics_agree_with_prediction():
    metrics = pytest.importorskip("pnc_jax.metrics")
    x_NxD, labels_N = _data(FIG4)
    pred = theory.predict_rates(10, 3, 6, 0.3, 100.0, x_NxD, labels_N)
    feats = theory.layer_features(_network(FIG4, x_NxD, labels_N), x_NxD)
    c = [float(metrics.compression(h, labels_N, 3)) for h in feats]
    d = [float(metrics.discrimination(h, labels_N, 3)) for h in feats]
    np.testing.assert_allclose(c, pred.compression, rtol=1e-8)
    np.testing.assert_allclose(d, pred.discrimination, rtol=1e-8)
