"""spectra vs independent references: jax.hessian on the pytree, numpy eigendecompositions of
dense matrices, explicit per-sample Gauss-Newton sums, and exact quadrature identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnc_jax import losses
from pnc_jax import spectra as S

N, K, D_IN, D_HID = 12, 3, 4, 5


def _mlp_problem(seed=0):
    """A small tanh network with biases (P = 5*4 + 5 + 3*5 + 3 = 43) and an MSE loss."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((N, D_IN)))
    labels = jnp.asarray(np.arange(N) % K)
    params = {
        "w1": jnp.asarray(rng.standard_normal((D_HID, D_IN)) / 2),
        "b1": jnp.asarray(rng.standard_normal(D_HID) / 2),
        "w2": jnp.asarray(rng.standard_normal((K, D_HID)) / 2),
        "b2": jnp.asarray(rng.standard_normal(K) / 2),
    }

    def logits_fn(p):
        return jnp.tanh(x @ p["w1"].T + p["b1"][None, :]) @ p["w2"].T + p["b2"][None, :]

    def loss_fn(p):
        y = jax.nn.one_hot(labels, K, dtype=x.dtype)
        return 0.5 * jnp.sum((logits_fn(p) - y) ** 2) / N

    return params, loss_fn, logits_fn, labels


def _pytree_hessian(loss_fn, params):
    """Reference: jax.hessian on the pytree (nested blocks), assembled in ravel_pytree order."""
    h = jax.jit(jax.hessian(loss_fn))(params)
    leaves, treedef = jax.tree.flatten(params)
    rows = []
    for name_i, li in zip(treedef.node_data()[1], leaves, strict=True):
        rows.append(np.concatenate(
            [np.asarray(h[name_i][name_j]).reshape(li.size, lj.size)
             for name_j, lj in zip(treedef.node_data()[1], leaves, strict=True)], axis=1))
    return np.concatenate(rows, axis=0)


def _sym_operator(eigs, seed):
    """Q diag(eigs) Q^T with a random orthogonal Q, and its matvec."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    a = (q * np.asarray(eigs)[None, :]) @ q.T
    a = 0.5 * (a + a.T)
    a_j = jnp.asarray(a)
    return a, lambda v: a_j @ v


# ----------------------------------------------------------------------------- HVP, dense


def test_hvp_and_dense_hessian_equal_jax_hessian_on_the_pytree():
    params, loss_fn, _, _ = _mlp_problem()
    ref = _pytree_hessian(loss_fn, params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    p = flat.size
    assert p == 43
    np.testing.assert_allclose(np.asarray(S.dense_hessian(loss_fn, params)), ref,
                               rtol=1e-12, atol=1e-14)
    rng = np.random.default_rng(1)
    matvec, dim = S.flat_hvp(loss_fn, params)
    matvec = jax.jit(matvec)
    tree_hvp = jax.jit(lambda v: S.hvp(loss_fn, params, v))
    assert dim == p
    for _ in range(3):
        v = rng.standard_normal(p)
        hv_tree = tree_hvp(unravel(jnp.asarray(v)))
        np.testing.assert_allclose(np.asarray(jax.flatten_util.ravel_pytree(hv_tree)[0]), ref @ v,
                                   rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(np.asarray(matvec(jnp.asarray(v))), ref @ v,
                                   rtol=1e-11, atol=1e-13)


def test_dense_hessian_refuses_too_many_parameters():
    params, loss_fn, _, _ = _mlp_problem()
    with pytest.raises(ValueError, match="P=43"):
        S.dense_hessian(loss_fn, params, max_params=42)


# ----------------------------------------------------------------------------- Lanczos


def test_lanczos_top_with_full_krylov_space_equals_dense_eigh():
    params, loss_fn, _, _ = _mlp_problem()
    ref = _pytree_hessian(loss_fn, params)
    lam, vec = np.linalg.eigh(ref)
    lam, vec = lam[::-1], vec[:, ::-1]
    values, vectors = S.hessian_top(loss_fn, params, 6, jax.random.key(0), num_iter=43)
    scale = np.abs(lam).max()
    np.testing.assert_allclose(np.asarray(values), lam[:6], atol=1e-12 * scale)
    assert np.min(np.diff(lam[:7]) / -scale) > 1e-6  # distinct: eigenvectors are defined
    cos = np.abs(np.sum(np.asarray(vectors) * vec[:, :6], axis=0))
    np.testing.assert_allclose(cos, 1.0, atol=1e-9)


def test_lanczos_converges_to_separated_top_eigenvalues_in_few_steps():
    rng = np.random.default_rng(2)
    top = np.array([10.0, 9.0, 8.0, 7.0, 6.0])
    eigs = np.concatenate([top, rng.uniform(0.0, 1.0, 295)])
    a, matvec = _sym_operator(eigs, 3)
    values, vectors = S.lanczos_top(matvec, 300, 5, jax.random.key(1), num_iter=60)
    np.testing.assert_allclose(np.asarray(values), top, rtol=1e-10)
    v = np.asarray(vectors)
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-12)  # orthonormal Ritz vectors
    np.testing.assert_allclose(a @ v, v * top[None, :], atol=1e-8)


def test_lanczos_finds_exact_multiplicities_by_restarts():
    """Operator with eigenvalue 2 (multiplicity 4) and 0: a single Krylov space holds one copy;
    the restarts after each breakdown find all four."""
    eigs = np.array([2.0] * 4 + [0.0] * 32)
    _, matvec = _sym_operator(eigs, 4)
    values, _ = S.lanczos_top(matvec, 36, 5, jax.random.key(2), num_iter=16)
    np.testing.assert_allclose(np.asarray(values[:4]), 2.0, rtol=1e-12)
    assert abs(float(values[4])) < 1e-12


def test_lanczos_is_deterministic_and_jittable():
    _, matvec = _sym_operator(np.linspace(0.0, 1.0, 50), 5)

    def top(key):
        return S.lanczos_top(matvec, 50, 3, key, num_iter=20)[0]

    jitted = jax.jit(top)
    a, b = top(jax.random.key(7)), jitted(jax.random.key(7))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(jitted(jax.random.key(7))), np.asarray(b))
    assert not np.allclose(np.asarray(jitted(jax.random.key(8))), np.asarray(b), rtol=1e-13,
                           atol=0)  # 20 of 50 steps: the key matters


def test_lanczos_bad_sizes_raise():
    _, matvec = _sym_operator(np.ones(10), 6)
    with pytest.raises(ValueError, match="num_iter=11"):
        S.lanczos(matvec, jnp.ones(10), 11, jax.random.key(0))
    with pytest.raises(ValueError, match="k=5"):
        S.lanczos_top(matvec, 10, 5, jax.random.key(0), num_iter=4)
    with pytest.raises(ValueError, match="k must be"):
        S.lanczos_top(matvec, 10, 0, jax.random.key(0))


# ----------------------------------------------------------------------------- SLQ


def test_slq_moments_are_exact_for_a_diagonal_operator():
    """Rademacher probes of a diagonal H give v^T H^j v / P = Tr(H^j)/P exactly, so each
    probe's Gauss quadrature (exact to degree 2m-1) reproduces the first two moments."""
    d = np.random.default_rng(8).uniform(-1.0, 3.0, 64)
    d_j = jnp.asarray(d)
    res = S.slq(lambda v: d_j * v, 64, jax.random.key(3), num_vectors=4, num_iter=10)
    w, th = np.asarray(res.weights_VxM), np.asarray(res.nodes_VxM)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-13)
    np.testing.assert_allclose((w * th).sum(1), d.mean(), rtol=1e-12)
    np.testing.assert_allclose((w * th**2).sum(1), (d**2).mean(), rtol=1e-12)
    assert th.min() >= d.min() - 1e-12 and th.max() <= d.max() + 1e-12


def test_slq_density_integrates_to_one_and_matches_dense_traces():
    params, loss_fn, _, _ = _mlp_problem()
    h = _pytree_hessian(loss_fn, params)
    p = h.shape[0]
    matvec, _ = S.flat_hvp(loss_fn, params)
    res = S.slq(matvec, p, jax.random.key(4), num_vectors=64, num_iter=20)
    w, th = np.asarray(res.weights_VxM), np.asarray(res.nodes_VxM)
    for power, tr in ((1, np.trace(h)), (2, np.trace(h @ h))):
        per_probe = (w * th**power).sum(1)  # unbiased estimates of Tr(H^j)/P
        err = abs(per_probe.mean() - tr / p)
        assert err < 5 * per_probe.std(ddof=1) / np.sqrt(len(per_probe)) + 1e-12
    sigma = 0.02
    grid = np.linspace(th.min() - 12 * sigma, th.max() + 12 * sigma, 20001)
    rho = np.asarray(S.slq_density(res, jnp.asarray(grid), sigma))
    np.testing.assert_allclose(np.trapezoid(rho, grid), 1.0, atol=1e-9)
    m1 = (w * th).sum(1).mean()
    np.testing.assert_allclose(np.trapezoid(grid * rho, grid), m1, atol=1e-9)
    np.testing.assert_allclose(np.trapezoid(grid**2 * rho, grid),
                               (w * th**2).sum(1).mean() + sigma**2, atol=1e-9)
    with pytest.raises(ValueError, match="sigma"):
        S.slq_density(res, jnp.asarray(grid), 0.0)


# ----------------------------------------------------------------------------- Kronecker


def _chain(seed, dims=(6, 5, 4, 3), n=10):
    """A linear chain W_3 W_2 W_1 h0 (h0: 6 x 10) with one-hot targets (3 classes)."""
    rng = np.random.default_rng(seed)
    ws = [jnp.asarray(rng.standard_normal((dims[i + 1], dims[i])) / np.sqrt(dims[i]))
          for i in range(len(dims) - 1)]
    h0 = jnp.asarray(rng.standard_normal((dims[0], n)))
    y = jax.nn.one_hot(np.arange(n) % dims[-1], dims[-1], dtype=h0.dtype).T

    def data_loss(ws_):
        f = h0
        for w in ws_:
            f = w @ f
        return 0.5 * jnp.sum((f - y) ** 2) / n

    return ws, h0, y, data_loss


def _dense_block(data_loss, ws, l):
    """jax.hessian w.r.t. W_l alone, as an (O*I) x (O*I) matrix (row-major vec)."""
    def f(w):
        return data_loss([*ws[:l], w, *ws[l + 1:]])

    o, i = ws[l].shape
    return np.asarray(jax.jit(jax.hessian(f))(ws[l])).reshape(o * i, o * i)


def test_kron_layer_hessian_equals_the_dense_block():
    ws, h0, _, data_loss = _chain(0)
    feats = [np.asarray(h0)]
    for w in ws[:-1]:
        feats.append(np.asarray(w) @ feats[-1])
    for l in range(len(ws)):
        a = np.eye(3)
        for w in reversed(ws[l + 1:]):
            a = a @ np.asarray(w)
        kron = S.linear_layer_hessian(jnp.asarray(a), jnp.asarray(feats[l]))
        dense = _dense_block(data_loss, ws, l)
        np.testing.assert_allclose(np.asarray(S.kron_dense(kron)), dense, atol=1e-13)
        ref = np.sort(np.linalg.eigvalsh(dense))[::-1]
        np.testing.assert_allclose(np.asarray(S.kron_eigvalsh(kron)), ref, atol=1e-13)
        v = np.random.default_rng(l).standard_normal(ws[l].shape)
        np.testing.assert_allclose(np.asarray(S.kron_matvec(kron, jnp.asarray(v))).reshape(-1),
                                   dense @ v.reshape(-1), atol=1e-13)
        eig = S.kron_eigh(kron, 4)
        np.testing.assert_allclose(np.asarray(eig.values_k), ref[:4], atol=1e-13)
        for i in range(4):
            u = np.kron(np.asarray(eig.left_Oxk[:, i]), np.asarray(eig.right_Ixk[:, i]))
            np.testing.assert_allclose(dense @ u, ref[i] * u, atol=1e-12)


def test_kron_scale_matches_pnc_jax_mse_with_loss_scale():
    """losses.mse = (1/N) ||alpha f - Y||^2 on logits N x K: Hessian scale 2 alpha^2."""
    ws, h0, _, _ = _chain(1)
    alpha, n = 3.0, h0.shape[1]
    labels = jnp.asarray(np.arange(n) % 3)

    def mse_last(w):
        return losses.mse((w @ (ws[1] @ (ws[0] @ h0))).T, labels, alpha)

    o, i = ws[2].shape
    dense = np.asarray(jax.jit(jax.hessian(mse_last))(ws[2])).reshape(o * i, o * i)
    kron = S.linear_layer_hessian(jnp.eye(3), ws[1] @ (ws[0] @ h0), scale=2 * alpha**2)
    np.testing.assert_allclose(np.asarray(S.kron_dense(kron)), dense, rtol=1e-12, atol=1e-12)


def test_overlaps_equal_numpy_projections():
    ws, h0, _, data_loss = _chain(2)
    l = 1
    dense = _dense_block(data_loss, ws, l)
    lam, vec = np.linalg.eigh(dense)
    top = vec[:, ::-1][:, :5]
    g = np.asarray(jax.jit(jax.grad(data_loss))(ws)[l])
    ref = np.sum((top.T @ g.reshape(-1)) ** 2) / np.sum(g**2)
    assert 0.01 < ref < 0.99  # a non-trivial case
    kron = S.linear_layer_hessian(ws[2], ws[0] @ h0)
    np.testing.assert_allclose(float(S.kron_overlap(kron, jnp.asarray(g), 5)), ref, rtol=1e-10)
    np.testing.assert_allclose(float(S.overlap(jnp.asarray(g.reshape(-1)), jnp.asarray(top))),
                               ref, rtol=1e-10)
    assert float(S.overlap(jnp.asarray(top[:, 0]), jnp.asarray(top))) == pytest.approx(1.0)
    assert float(S.overlap(jnp.asarray(vec[:, 0]), jnp.asarray(top))) == pytest.approx(0.0,
                                                                                       abs=1e-20)


def test_linear_chain_spectra_equals_dense_per_layer():
    ws, h0, _, data_loss = _chain(3)
    k = 3  # the last layer's left factor is I_3: its eigenvalues come in threes
    out = S.linear_chain_spectra(data_loss, ws, h0, k)
    grads = jax.jit(jax.grad(data_loss))(ws)
    for l in range(3):
        dense = _dense_block(data_loss, ws, l)
        lam, vec = np.linalg.eigh(dense)
        lam, vec = lam[::-1], vec[:, ::-1]
        assert lam[k - 1] - lam[k] > 1e-6 * lam[0]  # the top-k space is well defined
        np.testing.assert_allclose(np.asarray(out["hessian_top"][l]), lam[: k + 1], atol=1e-13)
        assert int(out["outliers"][l]) == np.sum(lam > 1e-6 * lam[0])
        np.testing.assert_allclose(float(out["gap_ratio"][l]), lam[k] / lam[k - 1], rtol=1e-9)
        g = np.asarray(grads[l]).reshape(-1)
        ref = np.sum((vec[:, :k].T @ g) ** 2) / np.sum(g**2)
        np.testing.assert_allclose(float(out["overlap"][l]), ref, rtol=1e-9)


def test_linear_chain_spectra_pads_missing_eigenvalues_with_nan():
    """A K x K last layer on rank-K features has K^2 = 4 eigenvalues: the 5th is NaN."""
    ws, h0, _, data_loss = _chain(4, dims=(2, 2, 2), n=6)
    out = S.linear_chain_spectra(data_loss, ws, h0, 4)
    assert np.isnan(np.asarray(out["hessian_top"])[:, 4]).all()
    assert np.isfinite(np.asarray(out["hessian_top"])[:, :4]).all()


def test_kron_bad_inputs_raise():
    kron = S.KronHessian(jnp.eye(2), jnp.eye(3))
    with pytest.raises(ValueError, match="k=7"):
        S.kron_eigh(kron, 7)
    with pytest.raises(ValueError, match="k=7"):
        S.kron_overlap(kron, jnp.ones((2, 3)), 7)
    with pytest.raises(ValueError, match="2-D"):
        S.linear_layer_hessian(jnp.ones(3), jnp.ones((3, 4)))


# ----------------------------------------------------------------------------- Gauss-Newton


def _bf_split(jac_NxKxP, labels, k):
    """Brute force: explicit sums of outer products, numpy float64."""
    n, _, p = jac_NxKxP.shape
    g_total = sum(np.outer(jac_NxKxP[i, c], jac_NxKxP[i, c]) for i in range(n)
                  for c in range(k)) / n
    gcc = np.stack([jac_NxKxP[labels == c].mean(0) for c in range(k)])  # C x K x P
    gc = gcc.mean(1)
    pi = np.array([(labels == c).mean() for c in range(k)])
    g_class = sum(pi[c] * k * np.outer(gc[c], gc[c]) for c in range(k))
    g_cross = sum(pi[c] * np.outer(gcc[c, c2] - gc[c], gcc[c, c2] - gc[c])
                  for c in range(k) for c2 in range(k))
    g_within = sum(np.outer(jac_NxKxP[i, c2] - gcc[labels[i], c2],
                            jac_NxKxP[i, c2] - gcc[labels[i], c2])
                   for i in range(n) for c2 in range(k)) / n
    return g_total, g_class, g_cross, g_within


@pytest.mark.parametrize("unbalanced", [False, True])
def test_gauss_newton_split_equals_brute_force(unbalanced):
    params, loss_fn, logits_fn, labels = _mlp_problem(5)
    if unbalanced:
        labels = jnp.asarray(np.array([0] * 6 + [1] * 4 + [2] * 2))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    jac = np.asarray(jax.jit(jax.jacfwd(lambda q: logits_fn(unravel(q))))(flat))
    parts = _bf_split(jac, np.asarray(labels), K)
    np.testing.assert_allclose(parts[1] + parts[2] + parts[3], parts[0], atol=1e-13)
    np.testing.assert_allclose(parts[0], np.einsum("nkp,nkq->pq", jac, jac) / N, atol=1e-13)
    split = S.gauss_newton_split(logits_fn, params, labels, K, rtol=1e-9)
    for got, ref in zip((split.total_eigs, split.class_eigs, split.cross_eigs,
                         split.within_eigs), parts, strict=True):
        ref_eigs = np.sort(np.linalg.eigvalsh(ref))[::-1]
        got = np.asarray(got)
        np.testing.assert_allclose(got, ref_eigs[: got.size], atol=1e-12)
        np.testing.assert_allclose(ref_eigs[got.size:], 0.0, atol=1e-12)
    cut = 1e-9 * np.linalg.eigvalsh(parts[0]).max()
    for got, ref in zip((split.total_rank, split.class_rank, split.cross_rank,
                         split.within_rank), parts, strict=True):
        assert int(got) == np.sum(np.linalg.eigvalsh(ref) > cut)
    assert int(split.class_rank) == K and int(split.cross_rank) == K * (K - 1)


def test_gauss_newton_split_bad_inputs_raise():
    params, _, logits_fn, labels = _mlp_problem()
    with pytest.raises(ValueError, match="rtol"):
        S.gauss_newton_split(logits_fn, params, labels, K, rtol=0.0)
    with pytest.raises(ValueError, match="N x 4"):
        S.gauss_newton_split(logits_fn, params, labels, 4)
