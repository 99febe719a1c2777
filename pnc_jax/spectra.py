"""Hessian spectra of any JAX loss (science.md, section 4): Hessian-vector products, dense
Hessians, Lanczos, stochastic Lanczos quadrature, Kronecker layer Hessians, Papyan's Gauss-Newton
split and the overlap of a gradient with an eigenspace.

Conventions. ``loss_fn(params) -> scalar`` for any pytree ``params``; flat vectors (``_P``) are in
``jax.flatten_util.ravel_pytree`` order (leaves in tree order, each row-major). A weight matrix W
(O x I) flattens row-major, so a Kronecker Hessian reads ``left_OxO (x) right_IxI``.

Precision. Everything computes in the dtype of the parameters: for 1e-10 work pass float64 arrays
(under ``jax.enable_x64(True)`` or the global flag); nothing here flips x64. Every function is
jittable (static: sizes and counts). Only ``dense_hessian`` and ``kron_dense`` form a P x P matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

HI = jax.lax.Precision.HIGHEST
Matvec = Callable[[jax.Array], jax.Array]

__all__ = [
    "hvp",
    "flat_hvp",
    "dense_hessian",
    "Lanczos",
    "lanczos",
    "lanczos_top",
    "hessian_top",
    "SLQ",
    "slq",
    "slq_density",
    "eigenvalue_clusters",
    "KronHessian",
    "KronEig",
    "linear_layer_hessian",
    "kron_matvec",
    "kron_eigvalsh",
    "kron_eigh",
    "kron_dense",
    "kron_overlap",
    "overlap",
    "linear_chain_spectra",
    "GaussNewtonSplit",
    "gauss_newton_split",
]


def _mm(a, b):
    return jnp.matmul(a, b, precision=HI)


def _positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- Hessian-vector


def hvp(loss_fn: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    """H v of ``loss_fn`` at ``params`` (forward-over-reverse: ``jax.jvp`` of ``jax.grad``).

    ``v`` has the structure of ``params``; so has the result.
    """
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def flat_hvp(loss_fn: Callable[[Any], jax.Array], params: Any) -> tuple[Matvec, int]:
    """(matvec, P): v_P -> H v_P on flat vectors, linearised once (each call is one JVP)."""
    flat_P, unravel = ravel_pytree(params)
    _, matvec = jax.linearize(jax.grad(lambda p: loss_fn(unravel(p))), flat_P)
    return matvec, int(flat_P.size)


def dense_hessian(
    loss_fn: Callable[[Any], jax.Array], params: Any, max_params: int = 10_000
) -> jax.Array:
    """The full P x P Hessian w.r.t. all of ``params`` (flattened), by ``jax.hessian``.

    Refuses P > ``max_params`` (memory P^2): use ``hessian_top`` / ``slq`` there.
    """
    flat_P, unravel = ravel_pytree(params)
    if flat_P.size > max_params:
        raise ValueError(
            f"dense_hessian: P={flat_P.size} parameters exceeds max_params={max_params}"
        )
    return jax.jit(jax.hessian(lambda p: loss_fn(unravel(p))))(flat_P)


# ----------------------------------------------------------------------------- Lanczos


class Lanczos(NamedTuple):
    """m Lanczos steps: T = tridiag(beta_M[:-1], alpha_M, beta_M[:-1]) = Q A Q^T.

    ``beta_M[-1]`` is the residual norm of the last step (Ritz residual of eigenpair i:
    |beta_M[-1] s_{m,i}|). A zero ``beta_M[j]`` marks a restart after an invariant subspace.
    """

    alpha_M: jax.Array
    beta_M: jax.Array
    basis_MxP: jax.Array

    def tridiagonal(self) -> jax.Array:
        off = self.beta_M[:-1]
        return jnp.diag(self.alpha_M) + jnp.diag(off, 1) + jnp.diag(off, -1)


def _orthogonalise(q_MxP, w_P):
    """w - Q^T Q w, twice (classical Gram-Schmidt; rows of Q not yet filled are zero)."""
    for _ in range(2):
        w_P = w_P - _mm(_mm(q_MxP, w_P), q_MxP)
    return w_P


def lanczos(matvec: Matvec, v0_P: jax.Array, num_iter: int, key: jax.Array) -> Lanczos:
    """``num_iter`` Lanczos steps of the symmetric operator ``matvec`` from ``v0_P``, with full
    reorthogonalisation (every new vector is orthogonalised twice against all previous ones).

    On breakdown (beta below ~eps * ||A||: an invariant subspace is found) the next vector is a
    random one (from ``key``) orthogonal to the basis, with beta = 0, so the Krylov space keeps
    growing and multiplicities are found once the first invariant subspace is exhausted.
    Deterministic given (``v0_P``, ``key``). Cost: m matvecs + O(m^2 P).
    """
    p = int(v0_P.shape[0])
    m = _positive_int("num_iter", num_iter)
    if m > p:
        raise ValueError(f"num_iter={m} exceeds the dimension P={p}")
    dtype = v0_P.dtype
    eps = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    q_MxP = jnp.zeros((m, p), dtype).at[0].set(v0_P / jnp.linalg.norm(v0_P))

    def step(j, carry):
        q_MxP, alpha_M, beta_M, scale = carry
        q_P = q_MxP[j]
        w_P = matvec(q_P).astype(dtype)
        a = jnp.dot(q_P, w_P, precision=HI)
        w_P = _orthogonalise(q_MxP, w_P)  # removes a q_j + beta_{j-1} q_{j-1} and rounding
        b = jnp.linalg.norm(w_P)
        scale = jnp.maximum(scale, jnp.maximum(jnp.abs(a), b))
        broke = b <= 10.0 * np.sqrt(p) * eps * scale
        r_P = jax.random.normal(jax.random.fold_in(key, j), (p,), dtype)
        r_P = _orthogonalise(q_MxP, r_P)
        restart_P = r_P / jnp.maximum(jnp.linalg.norm(r_P), tiny)
        next_P = jnp.where(broke, restart_P, w_P / jnp.where(broke, 1.0, b))
        b = jnp.where(broke, 0.0, b)
        row = jnp.minimum(j + 1, m - 1)
        q_MxP = jnp.where(j + 1 < m, q_MxP.at[row].set(next_P), q_MxP)
        return q_MxP, alpha_M.at[j].set(a), beta_M.at[j].set(b), scale

    init = (q_MxP, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype), jnp.zeros((), dtype))
    q_MxP, alpha_M, beta_M, _ = jax.lax.fori_loop(0, m, step, init)
    return Lanczos(alpha_M, beta_M, q_MxP)


def _default_iter(k: int, p: int) -> int:
    return min(p, max(2 * k + 20, 40))


def lanczos_top(
    matvec: Matvec,
    dim: int,
    k: int,
    key: jax.Array,
    num_iter: int | None = None,
    dtype: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` (largest algebraic) eigenpairs of a symmetric operator on R^dim by Lanczos.

    -> (values_k descending, vectors_Pxk orthonormal Ritz vectors). ``num_iter`` defaults to
    min(P, max(2k + 20, 40)); with ``num_iter = P`` the result is exact up to rounding. A
    single start vector finds an m-fold degenerate eigenvalue m times only after breakdown
    restarts (see ``lanczos``): for exactly degenerate outliers use num_iter well above the
    number of distinct eigenvalues, or the Kronecker form. ``dtype``: default float (float64
    under x64).
    """
    p = _positive_int("dim", dim)
    k = _positive_int("k", k)
    m = _default_iter(k, p) if num_iter is None else _positive_int("num_iter", num_iter)
    if k > m:
        raise ValueError(f"k={k} exceeds num_iter={m}")
    dtype = jnp.result_type(float) if dtype is None else dtype

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        steps = lanczos(matvec, jax.random.normal(k0, (p,), dtype), m, k1)
        theta_M, s_MxM = jnp.linalg.eigh(steps.tridiagonal())
        top = jnp.arange(m - 1, m - 1 - k, -1)
        return theta_M[top], _mm(steps.basis_MxP.T, s_MxM[:, top])

    return run(key)


def hessian_top(
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    k: int,
    key: jax.Array,
    num_iter: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` Hessian eigenpairs of ``loss_fn`` at ``params`` (Lanczos on HVPs); vectors are
    flat (P x k, ``ravel_pytree`` order). Never forms the P x P Hessian."""
    matvec, p = flat_hvp(loss_fn, params)
    dtype = ravel_pytree(params)[0].dtype
    return lanczos_top(matvec, p, k, key, num_iter, dtype)


# ----------------------------------------------------------------------------- SLQ


class SLQ(NamedTuple):
    """Stochastic Lanczos quadrature: per probe vector v, Gauss nodes (Ritz values of T) and
    weights (squared first components of T's eigenvectors; they sum to 1), so that
    sum_i weights[v, i] f(nodes[v, i]) ~ v^T f(H) v / ||v||^2 and the average over v ~ Tr f(H)/P.
    """

    nodes_VxM: jax.Array
    weights_VxM: jax.Array


def slq(
    matvec: Matvec,
    dim: int,
    key: jax.Array,
    num_vectors: int = 10,
    num_iter: int = 80,
    dtype: Any = None,
) -> SLQ:
    """Spectral density estimate as in PyHessian (Yao et al. 2020): ``num_vectors`` Rademacher
    probes, ``num_iter`` Lanczos steps each (full reorthogonalisation). With m steps the quadrature
    is exact for polynomials of degree <= 2m - 1 of each probe's quadratic form."""
    p = _positive_int("dim", dim)
    nv = _positive_int("num_vectors", num_vectors)
    m = _positive_int("num_iter", num_iter)
    if m > p:
        raise ValueError(f"num_iter={m} exceeds the dimension P={p}")
    dtype = jnp.result_type(float) if dtype is None else dtype

    def one(k):
        k0, k1 = jax.random.split(k)
        v_P = jax.random.rademacher(k0, (p,), dtype)
        run = lanczos(matvec, v_P, m, k1)
        theta_M, s_MxM = jnp.linalg.eigh(run.tridiagonal())
        return theta_M, s_MxM[0] ** 2

    nodes, weights = jax.jit(lambda key: jax.lax.map(one, jax.random.split(key, nv)))(key)
    return SLQ(nodes, weights)


def slq_density(result: SLQ, grid_G: jax.Array, sigma: float) -> jax.Array:
    """Gaussian-smoothed density on ``grid_G``: mean_v sum_i w_vi N(x; theta_vi, sigma^2).

    Integrates to 1 over the real line (on a grid that covers the nodes by several sigma).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    grid_G = jnp.asarray(grid_G)
    nodes = result.nodes_VxM.reshape(-1)
    weights = result.weights_VxM.reshape(-1) / result.nodes_VxM.shape[0]
    z_GxQ = (grid_G[:, None] - nodes[None, :]) / sigma
    gauss_GxQ = jnp.exp(-0.5 * z_GxQ**2) / (sigma * np.sqrt(2.0 * np.pi))
    return _mm(gauss_GxQ, weights)


def eigenvalue_clusters(values: ArrayLike, atol: float) -> list[tuple[float, int]]:
    """Eigenvalues grouped into (mean value, multiplicity), descending: sorted values join the
    current group while within ``atol`` of its first member (host numpy, any length)."""
    if not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    lam = np.sort(np.asarray(values, np.float64).reshape(-1))[::-1]
    groups: list[list[float]] = []
    for v in lam:
        if groups and groups[-1][0] - v <= atol:
            groups[-1].append(float(v))
        else:
            groups.append([float(v)])
    return [(float(np.mean(g)), len(g)) for g in groups]


# ----------------------------------------------------------------------------- Kronecker


class KronHessian(NamedTuple):
    """H = left_OxO (x) right_IxI: the Hessian w.r.t. a weight W (O x I), row-major vec(W)."""

    left_OxO: jax.Array
    right_IxI: jax.Array


class KronEig(NamedTuple):
    """Top eigenpairs of a KronHessian: eigenvector i is kron(left_Oxk[:, i], right_Ixk[:, i])."""

    values_k: jax.Array
    left_Oxk: jax.Array
    right_Ixk: jax.Array


def linear_layer_hessian(a_CxO: jax.Array, h_IxN: jax.Array, scale: float = 1.0) -> KronHessian:
    """Exact Hessian w.r.t. W (O x I) of the data term (scale/2N) sum_i ||A W h_i - y_i||^2:
    scale (A^T A) (x) (1/N) sum_i h_i h_i^T.

    A (C x O) is the product of the (linear) layers above W (the identity for the last layer),
    h_i the columns of the features entering W. The data term is quadratic in W, so this is also
    its Gauss-Newton matrix. For pnc_jax's (1/N) ||alpha f - Y||^2 use scale = 2 alpha^2.
    """
    if a_CxO.ndim != 2 or h_IxN.ndim != 2:
        raise ValueError(f"a and h must be 2-D, got shapes {a_CxO.shape} and {h_IxN.shape}")
    left = scale * _mm(a_CxO.T, a_CxO)
    right = _mm(h_IxN, h_IxN.T) / h_IxN.shape[1]
    return KronHessian(left, right)


def kron_matvec(kron: KronHessian, v_OxI: jax.Array) -> jax.Array:
    """(left (x) right) vec(V) = vec(left V right), as an O x I matrix."""
    return _mm(_mm(kron.left_OxO, v_OxI), kron.right_IxI)


def _kron_products(kron: KronHessian):
    a_O, u_OxO = jnp.linalg.eigh(kron.left_OxO)
    b_I, v_IxI = jnp.linalg.eigh(kron.right_IxI)
    return a_O[:, None] * b_I[None, :], u_OxO, v_IxI


@jax.jit
def kron_eigvalsh(kron: KronHessian) -> jax.Array:
    """All O*I eigenvalues (products a_i b_j of the factors' eigenvalues), descending."""
    prod_OxI, _, _ = _kron_products(kron)
    return -jnp.sort(-prod_OxI.reshape(-1))


def _check_k(kron: KronHessian, k) -> int:
    k = _positive_int("k", k)
    size = kron.left_OxO.shape[0] * kron.right_IxI.shape[0]
    if k > size:
        raise ValueError(f"k={k} exceeds the {size} eigenvalues")
    return k


def kron_eigh(kron: KronHessian, k: int) -> KronEig:
    """Top-``k`` eigenpairs from the factors' eigendecompositions (never the O*I matrix)."""
    return _kron_eigh(kron, _check_k(kron, k))


@functools.partial(jax.jit, static_argnames="k")
def _kron_eigh(kron, k):
    prod_OxI, u_OxO, v_IxI = _kron_products(kron)
    values, idx = jax.lax.top_k(prod_OxI.reshape(-1), k)
    i, j = jnp.divmod(idx, prod_OxI.shape[1])
    return KronEig(values, u_OxO[:, i], v_IxI[:, j])


def kron_dense(kron: KronHessian) -> jax.Array:
    """The (O*I) x (O*I) matrix, for checks on small layers."""
    return jnp.kron(kron.left_OxO, kron.right_IxI)


def kron_overlap(kron: KronHessian, g_OxI: jax.Array, k: int) -> jax.Array:
    """||P_k g||^2 / ||g||^2, P_k the projector on the span of the top-``k`` eigenvectors.

    Coefficients of g on u_i (x) v_j are (U^T G V)_ij. With exactly tied eigenvalues at the
    k-th place the chosen subspace is one of the tied ones (top_k's order).
    """
    return _kron_overlap(kron, g_OxI, _check_k(kron, k))


@functools.partial(jax.jit, static_argnames="k")
def _kron_overlap(kron, g_OxI, k):
    prod_OxI, u_OxO, v_IxI = _kron_products(kron)
    _, idx = jax.lax.top_k(prod_OxI.reshape(-1), k)
    c = _mm(_mm(u_OxO.T, g_OxI), v_IxI).reshape(-1)
    return jnp.sum(c[idx] ** 2) / jnp.sum(g_OxI * g_OxI)


def overlap(g_P: jax.Array, vectors_Pxk: jax.Array) -> jax.Array:
    """||V^T g||^2 / ||g||^2 for orthonormal columns V (e.g. from ``hessian_top``)."""
    c_k = _mm(vectors_Pxk.T, g_P)
    return jnp.sum(c_k * c_k) / jnp.sum(g_P * g_P)


def linear_chain_spectra(
    data_loss_fn: Callable[[list[jax.Array]], jax.Array],
    ws: list[jax.Array],
    h0_IxN: jax.Array,
    num_outliers: int,
    scale: float = 1.0,
    outlier_rtol: float = 1e-6,
) -> dict[str, jax.Array]:
    """Per weight W_l of a linear chain f = W_L ... W_1 h0 (``ws`` = [W_1, ..., W_L]), through
    the exact Kronecker Hessian of the data term w.r.t. W_l (``linear_layer_hessian`` with
    A = W_L...W_{l+1} and features W_{l-1}...W_1 h0), with k = ``num_outliers`` (K^2 for deep
    neural collapse):

    hessian_top (L, k+1): the top k+1 eigenvalues, descending (NaN where W_l has fewer);
    outliers (L,): how many eigenvalues exceed ``outlier_rtol`` times the largest;
    gap_ratio (L,): lambda_{k+1} / lambda_k (0 when the k outliers are exact);
    overlap (L,): ||P_k g_l||^2 / ||g_l||^2, g_l the gradient of ``data_loss_fn`` w.r.t. W_l.

    ``data_loss_fn(ws)`` must be the data term (scale/2N) ||W_L...W_1 h0 - Y||_F^2 (up to a
    constant); it gives the gradients. The data-term gradient, not the total one: at the optimum
    the total gradient is 0 and, late in training, dominated by weight decay (science.md, sec. 4).
    """
    k = _positive_int("num_outliers", num_outliers)

    def run(ws: list[jax.Array], h0_IxN: jax.Array) -> dict[str, jax.Array]:
        grads = jax.grad(data_loss_fn)(ws)
        feats, h = [], h0_IxN
        for w in ws:
            feats.append(h)
            h = _mm(w, h)
        out: dict[str, list] = {"hessian_top": [], "outliers": [], "gap_ratio": [],
                                "overlap": []}
        for l, (w, h, g) in enumerate(zip(ws, feats, grads, strict=True)):
            a = jnp.eye(ws[-1].shape[0], dtype=w.dtype)
            for above in reversed(ws[l + 1:]):
                a = _mm(a, above)
            kron = linear_layer_hessian(a, h, scale)
            eig = kron_eigvalsh(kron)
            top = eig[: k + 1]
            top = jnp.concatenate([top, jnp.full((k + 1 - top.shape[0],), jnp.nan, eig.dtype)])
            out["hessian_top"].append(top)
            out["outliers"].append(jnp.sum(eig > outlier_rtol * eig[0]))
            out["gap_ratio"].append(top[k] / top[k - 1])
            out["overlap"].append(kron_overlap(kron, g, min(k, eig.shape[0])))
        return {name: jnp.stack(v) for name, v in out.items()}

    return jax.jit(run)(list(ws), h0_IxN)


# ----------------------------------------------------------------------------- Gauss-Newton


class GaussNewtonSplit(NamedTuple):
    """Eigenvalues (descending) of G and of its three parts, and their numerical ranks.

    Ranks count eigenvalues above ``rtol`` times the largest eigenvalue of G (one threshold for
    all parts, so a part that is ~0 relative to G has rank 0).
    """

    total_eigs: jax.Array
    class_eigs: jax.Array
    cross_eigs: jax.Array
    within_eigs: jax.Array
    total_rank: jax.Array
    class_rank: jax.Array
    cross_rank: jax.Array
    within_rank: jax.Array


def _gram_eigs(rows_MxP):
    """Nonzero eigenvalues of B^T B via the M x M Gram B B^T (descending; zero-padded)."""
    return -jnp.sort(-jnp.linalg.eigvalsh(_mm(rows_MxP, rows_MxP.T)))


def gauss_newton_split(
    logits_fn: Callable[[Any], jax.Array],
    params: Any,
    labels_N: ArrayLike,
    num_classes: int,
    rtol: float = 1e-9,
) -> GaussNewtonSplit:
    """Papyan's split of the Gauss-Newton matrix of the MSE data term
    (1/N) sum_i (1/2) ||f_i - y_i||^2, f = ``logits_fn(params)`` (N x K), w.r.t. all of ``params``.

    With g_{i,c'} = grad_theta f_{i,c'} (logit c' of sample i), G = (1/N) sum_{i,c'} g g^T
    (the output Hessian is I). With pi_c = n_c/N, class means g_{c,c'} = mean_{i in c} g_{i,c'}
    and g_c = (1/K) sum_{c'} g_{c,c'}, exactly
      G_class  = sum_c pi_c K g_c g_c^T                               (rank <= K)
      G_cross  = sum_c pi_c sum_{c'} (g_{c,c'} - g_c)(g_{c,c'} - g_c)^T (rank <= K(K-1))
      G_within = (1/N) sum_{i,c'} (g_{i,c'} - g_{y_i,c'})(...)^T
    and G = G_class + G_cross + G_within. Eigenvalues come from the Grams of the factors (sizes
    K, K^2, NK, NK), never a P x P matrix; memory O(N K P) for the Jacobian. For the DLUFM data
    term at collapse the ranks w.r.t. one W_l are K / K(K-1) / 0 (science.md, section 4).
    """
    k = _positive_int("num_classes", num_classes, 2)
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0, got {rtol}")
    flat_P, unravel = ravel_pytree(params)

    @jax.jit
    def run(flat_P, labels_N):
        jac_NxKxP = jax.jacrev(lambda p: logits_fn(unravel(p)))(flat_P)
        n = jac_NxKxP.shape[0]
        if jac_NxKxP.shape[1] != k:
            raise ValueError(
                f"logits_fn must return N x K = N x {k}, got {jac_NxKxP.shape[:2]}")
        p = jac_NxKxP.shape[2]
        y_NxC = jax.nn.one_hot(labels_N, k, dtype=jac_NxKxP.dtype)
        count_C = jnp.sum(y_NxC, axis=0)
        pi_C = count_C / n
        g_CxKxP = jnp.einsum("nc,nkp->ckp", y_NxC, jac_NxKxP,
                             precision=HI) / count_C[:, None, None]
        gc_CxP = jnp.mean(g_CxKxP, axis=1)
        class_rows = jnp.sqrt(k * pi_C)[:, None] * gc_CxP
        cross_CxKxP = jnp.sqrt(pi_C)[:, None, None] * (g_CxKxP - gc_CxP[:, None, :])
        cross_rows = cross_CxKxP.reshape(-1, p)
        within_rows = (jac_NxKxP - g_CxKxP[labels_N]).reshape(-1, p) / np.sqrt(n)
        total_rows = jac_NxKxP.reshape(-1, p) / np.sqrt(n)
        eigs = [_gram_eigs(r) for r in (total_rows, class_rows, cross_rows, within_rows)]
        cut = rtol * eigs[0][0]
        ranks = [jnp.sum(e > cut) for e in eigs]
        return GaussNewtonSplit(*eigs, *ranks)

    return run(flat_P, jnp.asarray(labels_N))
