"""DLUFM vs independent references: science.md's published numbers (configurations A and B), the
closed form's own equation, a hand-built collapsed point (stationary, with the stated values),
dense jax.hessian blocks and numpy eigendecompositions of the trained models."""

import decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnc_jax import dlufm, spectra

A = dlufm.DLUFMConfig(steps=6000)  # configuration A; reaches loss* to ~1e-14 by 6000 steps
L2 = dlufm.DLUFMConfig(num_classes=3, samples_per_class=5, width=16, depth=2,
                       weight_decay=5e-3, feature_decay=1e-2, steps=6000)
L4 = dlufm.DLUFMConfig(num_classes=3, samples_per_class=6, width=12, depth=4,
                       weight_decay=4e-3, feature_decay=8e-3, steps=6000)
B = dlufm.DLUFMConfig(num_classes=3, samples_per_class=4, width=12, depth=3, steps=6000)
B_DECAYS = [(5e-3, 5e-3), (4e-3, 6e-3)]  # configuration B and a second lambda pair, one program
CONFIGS = {"A": A, "L2": L2, "L4": L4}


def _cf(cfg, lam_w=None, lam_h=None):
    return dlufm.closed_form(cfg.num_classes, cfg.samples_per_class, cfg.depth,
                             cfg.weight_decay if lam_w is None else lam_w,
                             cfg.feature_decay if lam_h is None else lam_h)


@pytest.fixture(scope="module")
def runs():
    out = {name: dlufm.train(cfg, seeds=(0, 1) if name == "A" else (0,), track_every=500)
           for name, cfg in CONFIGS.items()}
    # 6000 = 4 * 1400 + 400: the last measurement comes after an unaligned remainder
    out["B"] = dlufm.train(B, seeds=(0,), decays=B_DECAYS, track_every=1400)
    return out


# ----------------------------------------------------------------------------- closed form


def test_closed_form_matches_published_configuration_a():
    cf = _cf(A)
    assert cf.gamma == pytest.approx(0.963772, abs=5e-7)
    assert cf.loss == pytest.approx(0.07048705, abs=5e-9)
    assert cf.sigma == pytest.approx(1.32128, abs=5e-6)
    assert cf.feature_norm == pytest.approx(0.41782, abs=5e-6)
    assert cf.outlier == pytest.approx(0.133015, abs=5e-7)
    assert cf.outlier + A.weight_decay == pytest.approx(0.138015, abs=5e-7)  # with the regulariser


def _residual(g, k, n, depth, lam_w, lam_h):
    """gamma^(L-1) (1-gamma)^(L+1) - c in exact decimal arithmetic (60 digits) at the float g."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        g_, one = decimal.Decimal(g), decimal.Decimal(1)
        c = (k * decimal.Decimal(lam_w)) ** depth * (k * n * decimal.Decimal(lam_h))
        return g_ ** (depth - 1) * (one - g_) ** (depth + 1) - c, c


def test_every_root_solves_its_equation_to_1e12():
    """Exact (decimal) residual at the float gamma: below 1e-12 relative, or, for roots so close
    to 1 that one ulp of gamma moves the left side by more, below two ulps' worth."""
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(300):
        k, n, depth = int(rng.integers(2, 8)), int(rng.integers(1, 30)), int(rng.integers(1, 7))
        lam_w, lam_h = 10.0 ** rng.uniform(-5, -1), 10.0 ** rng.uniform(-5, -1)
        roots = dlufm.gamma_roots(k, n, depth, lam_w, lam_h)
        assert len(roots) <= (1 if depth == 1 else 2)
        assert list(roots) == sorted(roots)
        for g in roots:
            assert 0 < g < 1
            res, c = _residual(g, k, n, depth, lam_w, lam_h)
            bits = np.spacing(g) * ((depth - 1) / g + (depth + 1) / (1 - g))
            assert abs(float(res / c)) < max(1e-12, 2 * bits)
            found += 1
    assert found > 200


@pytest.mark.parametrize("cfg", [A, L2, L4, B])
def test_gamma_solves_its_equation_to_1e12(cfg):
    res, c = _residual(_cf(cfg).gamma, cfg.num_classes, cfg.samples_per_class, cfg.depth,
                       cfg.weight_decay, cfg.feature_decay)
    assert abs(float(res / c)) < 1e-12


def test_depth_one_root_is_explicit():
    k, n, lam_w, lam_h = 4, 10, 5e-3, 2e-3
    c = k * lam_w * k * n * lam_h
    (g,) = dlufm.gamma_roots(k, n, 1, lam_w, lam_h)
    assert g == pytest.approx(1 - np.sqrt(c), rel=1e-14)


def test_closed_form_refuses_when_zero_is_the_minimum():
    with pytest.raises(ValueError, match="no root"):
        dlufm.closed_form(4, 10, 3, 0.1, 0.1)
    # c just below the maximum of gamma^2 (1-gamma)^4 (at gamma = 1/3): two roots near 1/3,
    # both below (L-1)/L = 2/3, so deep collapse loses to the zero solution
    k, n, lam_w = 4, 10, 0.01
    c = 0.9 * (1 / 3) ** 2 * (2 / 3) ** 4
    lam_h = c / ((k * lam_w) ** 3 * k * n)
    roots = dlufm.gamma_roots(k, n, 3, lam_w, lam_h)
    assert len(roots) == 2 and roots[1] < 2 / 3
    with pytest.raises(ValueError, match="zero solution"):
        dlufm.closed_form(k, n, 3, lam_w, lam_h)
    with pytest.raises(ValueError, match="weight_decay must be > 0"):
        dlufm.closed_form(4, 10, 3, 0.0, 0.1)


def _collapsed_point(cfg, cf, seed=0):
    """W_l = sigma U_{l+1} U_l^T (W_L = sigma U_L^T), H_1 = ||mu|| U_1 Y, random orthonormal U_l."""
    k, n, d, depth = cfg.num_classes, cfg.samples_per_class, cfg.width, cfg.depth
    rng = np.random.default_rng(seed)
    us = [np.linalg.qr(rng.standard_normal((d, k)))[0] for _ in range(depth)] + [np.eye(k)]
    ws = tuple(jnp.asarray(cf.sigma * us[l + 1] @ us[l].T) for l in range(depth))
    y = np.repeat(np.eye(k), n, axis=1)
    return dlufm.DLUFMParams(jnp.asarray(cf.feature_norm * us[0] @ y), ws)


@pytest.mark.parametrize("name", ["A", "L2", "L4"])
def test_closed_form_point_is_stationary_with_the_stated_loss_and_outliers(name):
    cfg = CONFIGS[name]
    cf = _cf(cfg)
    p = _collapsed_point(cfg, cf)
    y = dlufm.targets(cfg.num_classes, cfg.samples_per_class)
    assert cf.sigma**cfg.depth * cf.feature_norm == pytest.approx(cf.gamma, rel=1e-13)
    total = jax.jit(lambda q: dlufm.loss(q, y, cfg.weight_decay, cfg.feature_decay))
    assert float(total(p)) == pytest.approx(cf.loss, rel=1e-13)
    grads = jax.jit(jax.grad(total))(p)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-14
    k2 = cfg.num_classes**2
    for l in range(cfg.depth):
        def data_w(w, l=l):
            return dlufm.data_loss(p._replace(ws=(*p.ws[:l], w, *p.ws[l + 1:])), y)

        size = p.ws[l].size
        h = np.asarray(jax.jit(jax.hessian(data_w))(p.ws[l])).reshape(size, size)
        lam = np.linalg.eigvalsh(h)[::-1]
        np.testing.assert_allclose(lam[:k2], cf.outlier, rtol=1e-12)
        assert np.abs(lam[k2:]).max() < 1e-12 * lam[0]


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("fields, match", [
    ({"num_classes": 5, "width": 4}, "K=5 > width d=4"),
    ({"weight_decay": -1e-3}, "weight_decay"),
    ({"feature_decay": float("nan")}, "feature_decay"),
    ({"depth": 0}, "depth"),
    ({"samples_per_class": 0}, "samples_per_class"),
    ({"num_classes": 1}, "num_classes"),
    ({"lr": 0.0}, "lr"),
    ({"steps": -1}, "steps"),
])
def test_bad_config_raises_naming_the_value(fields, match):
    cfg = dlufm.DLUFMConfig(**fields)
    with pytest.raises(ValueError, match=match):
        cfg.validate()
    with pytest.raises(ValueError, match=match):
        dlufm.train(cfg)


def test_bad_train_arguments_raise():
    with pytest.raises(ValueError, match="seeds is empty"):
        dlufm.train(A, seeds=())
    with pytest.raises(ValueError, match="seed"):
        dlufm.train(A, seeds=(-1,))
    with pytest.raises(ValueError, match="track_every"):
        dlufm.train(A, track_every=0)
    with pytest.raises(ValueError, match="feature_decay"):
        dlufm.train(A, decays=[(1e-3, -1.0)])
    p = _collapsed_point(A, _cf(A))
    with pytest.raises(ValueError, match="layer"):
        dlufm.layer_gauss_newton_split(p, 0)


def test_track_steps():
    np.testing.assert_array_equal(dlufm.track_steps(10, 4), [0, 4, 8, 10])
    np.testing.assert_array_equal(dlufm.track_steps(8, 4), [0, 4, 8])
    np.testing.assert_array_equal(dlufm.track_steps(0, 4), [0])


# ----------------------------------------------------------------------------- training


def _check_collapse(final, r, cfg, cf):
    k = cfg.num_classes
    k2 = k * k
    assert abs(final["loss"][r] - cf.loss) < 1e-10
    sv = final["singular_values"][r]  # (L, K+1)
    np.testing.assert_allclose(sv[:, :k], cf.sigma, rtol=1e-6)
    # d x d layers have rank K; the rest decays only by weight decay, ~(1 - lr lambda_W)^t
    assert (sv[:-1, k] < 1e-4 * cf.sigma).all()
    top = final["hessian_top"][r]  # (L, K^2+1)
    np.testing.assert_allclose(top[:, :k2], cf.outlier, rtol=1e-6)
    assert (np.abs(top[:, k2]) < 1e-9 * top[:, 0]).all()
    assert (final["outliers"][r] == k2).all()
    assert (final["gap_ratio"][r] < 1e-9).all()
    assert (final["overlap"][r] > 0.9999).all()
    np.testing.assert_allclose(final["feature_norms"][r], cf.feature_norm, rtol=1e-6)
    assert (final["nc1"][r] < 1e-12).all()
    assert (final["nc2_equinorm"][r] < 1e-6).all()
    assert (final["nc3_uncentred"][r] < 1e-10).all()
    assert (final["nc4"][r] == 0).all()


@pytest.mark.parametrize("name", ["A", "L2", "L4"])
def test_gradient_descent_reaches_deep_collapse(runs, name):
    cfg, run = CONFIGS[name], runs[name]
    cf = _cf(cfg)
    assert cf.gamma > (cfg.depth - 1) / cfg.depth
    for r in range(len(run.seed_R)):
        assert run.loss_star_R[r] == cf.loss
        _check_collapse(run.final, r, cfg, cf)


def test_runs_vmapped_over_lambdas_reach_their_own_optimum(runs):
    run = runs["B"]
    np.testing.assert_array_equal(run.weight_decay_R, [p[0] for p in B_DECAYS])
    np.testing.assert_array_equal(run.feature_decay_R, [p[1] for p in B_DECAYS])
    for r, (lam_w, lam_h) in enumerate(B_DECAYS):
        _check_collapse(run.final, r, B, _cf(B, lam_w, lam_h))
    np.testing.assert_array_equal(run.steps_T, [0, 1400, 2800, 4200, 5600, 6000])


def test_tracking_over_training(runs):
    run = runs["A"]
    np.testing.assert_array_equal(run.steps_T, np.arange(0, 6001, 500))
    t = len(run.steps_T)
    assert run.track["nc1"].shape == (2, t, 3)
    assert run.track["hessian_top"].shape == (2, t, 3, 17)
    assert run.track["singular_values"].shape == (2, t, 3, 5)
    for name, v in run.final.items():
        np.testing.assert_array_equal(v, run.track[name][:, -1])
    loss = run.track["loss"]
    assert (np.diff(loss, axis=1) <= 1e-15).all()  # GD at lr 0.5 below 2/sharpness: monotone
    np.testing.assert_allclose(run.track["loss_gap"], loss - _cf(A).loss, atol=1e-15)
    assert (run.track["nc1"][:, 0] > 1e-2).all() and (run.track["nc1"][:, -1] < 1e-20).all()
    assert (run.track["outliers"][:, 0] > 16).all()  # at init the bulk is not yet zero


def test_tracked_layer_spectra_equal_dense_hessian_blocks(runs):
    """The on-device Kronecker spectra and overlaps vs jax.hessian of the data term w.r.t. each
    W_l and numpy's eigenvectors; and Papyan's split ranks K / K(K-1) / 0."""
    run, k = runs["A"], A.num_classes
    k2 = k * k
    p = jax.tree.map(jnp.asarray, run.params_of(0))
    y = dlufm.targets(k, A.samples_per_class)
    grads = jax.jit(jax.grad(dlufm.data_loss))(p, y).ws
    cf = _cf(A)
    for l in range(A.depth):
        def data_w(w, l=l):
            return dlufm.data_loss(p._replace(ws=(*p.ws[:l], w, *p.ws[l + 1:])), y)

        size = p.ws[l].size
        h = np.asarray(jax.jit(jax.hessian(data_w))(p.ws[l])).reshape(size, size)
        lam, vec = np.linalg.eigh(0.5 * (h + h.T))
        lam, vec = lam[::-1], vec[:, ::-1]
        np.testing.assert_allclose(run.final["hessian_top"][0, l], lam[: k2 + 1],
                                   atol=1e-13 * lam[0])
        g = np.asarray(grads[l]).reshape(-1)
        ref = np.sum((vec[:, :k2].T @ g) ** 2) / np.sum(g**2)
        assert abs(run.final["overlap"][0, l] - ref) < 1e-12
        split = dlufm.layer_gauss_newton_split(run.params_of(0), l + 1)
        assert (int(split.class_rank), int(split.cross_rank), int(split.within_rank)) == (
            k, k * (k - 1), 0)
        assert int(split.total_rank) == k2
        np.testing.assert_allclose(split.total_eigs[:k2], cf.outlier, rtol=1e-6)


def test_config_b_full_parameter_hessian_spectrum(runs):
    """science.md: top 9 = 0.93265 (x3), 0.90265 (x6), then K^2(n-1) = 27 at 0.23316, then a bulk
    at 0.01, 0.005 and 0 (the full loss, regulariser included)."""
    p = runs["B"].params_of(0)
    lam = dlufm.full_hessian_eigvals(p, 5e-3, 5e-3)
    assert lam.size == 468
    np.testing.assert_allclose(lam[:3], 0.93265, atol=1e-5)
    np.testing.assert_allclose(lam[3:9], 0.90265, atol=1e-5)
    assert lam[2] - lam[3] > 0.01
    np.testing.assert_allclose(lam[9:36], 0.23316, atol=1e-5)
    bulk = lam[36:]
    dist = np.min(np.abs(bulk[:, None] - np.array([0.01, 0.005, 0.0])[None, :]), axis=1)
    assert dist.max() < 1e-8
    # zeros: rotations Q between consecutive layers (W_{l+1} Q^T, Q W_l; the regulariser is
    # O(d)-invariant) that move the rank-K optimum: L [d(d-1)/2 - (d-K)(d-K-1)/2] = 90
    assert np.sum(np.abs(bulk) < 1e-8) == 3 * (12 * 11 // 2 - 9 * 8 // 2)
    assert (np.abs(bulk - 0.01) < 1e-8).any() and (np.abs(bulk - 0.005) < 1e-8).any()
    # lambda_W = lambda_H: the regulariser's Hessian is lambda I, so the data term's spectrum is
    # the same shifted by -lambda
    data = dlufm.full_hessian_eigvals(p, 5e-3, 5e-3, data_only=True)
    np.testing.assert_allclose(data, lam - 5e-3, atol=1e-12)
    # Lanczos on HVPs finds the degenerate top 9 (x3, x6) in 40 of 468 steps: the spectrum has
    # six distinct values, so the Krylov space exhausts one copy of each and restarts
    y = dlufm.targets(B.num_classes, B.samples_per_class)
    top, _ = spectra.hessian_top(lambda q: dlufm.loss(q, y, 5e-3, 5e-3),
                                 jax.tree.map(jnp.asarray, p), 9, jax.random.key(0), num_iter=40)
    np.testing.assert_allclose(np.asarray(top), lam[:9], atol=1e-12)


def test_train_is_float64_without_global_x64(runs):
    with jax.enable_x64(False):
        again = dlufm.train(B, seeds=(0,), decays=B_DECAYS, track_every=1400)
        assert not jax.config.jax_enable_x64
    assert again.final["loss"].dtype == np.float64
    np.testing.assert_array_equal(again.final["loss"], runs["B"].final["loss"])
