"""Min-norm, balanced, approximately low-rank deep linear network of Wang et al. (science.md §2).

Conventions shared by all of ``theory``: data come as ``x_NxD`` (rows are samples; the paper's
X is ``x_NxD.T``, d x N) and integer ``labels_N`` in ``[0, num_classes)``; the one-hot Y is
K x N. Weights are a list ``[W_1, ..., W_L]`` of numpy float64 arrays in the paper's (out x in)
layout: W_1 is h x d, W_2..W_{L-1} are h x h, W_L is K x h, and f(x) = W_L ... W_1 x.
Layer l's features (l = 0..L-1) are ``h_l = h_{l-1} @ W_l.T`` with ``h_0 = x_NxD``.
"""

import numpy as np


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def one_hot_KxN(labels_N: np.ndarray, num_classes: int) -> np.ndarray:
    """The paper's Y (K x N, float64) from integer labels."""
    labels_N = np.asarray(labels_N)
    return (np.arange(num_classes)[:, None] == labels_N[None, :]).astype(np.float64)


def check_data(
    x_NxD: np.ndarray, labels_N: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate and convert; returns (x_NxD float64, labels_N int, n = samples per class).

    The theory needs K >= 2 balanced classes (n samples each, any order) and X of full column
    rank N (so d >= N): then W* X = Y / alpha exactly.
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    num_classes = int(num_classes)
    x_NxD = np.asarray(x_NxD, dtype=np.float64)
    labels_N = np.asarray(labels_N)
    if x_NxD.ndim != 2:
        raise ValueError(f"x_NxD must be 2-D (N x d), got shape {x_NxD.shape}")
    n_total, d = x_NxD.shape
    if labels_N.shape != (n_total,):
        raise ValueError(f"labels_N must have shape ({n_total},), got {labels_N.shape}")
    if not np.all(np.isfinite(x_NxD)):
        raise ValueError("x_NxD must be finite")
    if not np.issubdtype(labels_N.dtype, np.integer):
        raise ValueError(f"labels_N must be integers, got dtype {labels_N.dtype}")
    if n_total and (labels_N.min() < 0 or labels_N.max() >= num_classes):
        raise ValueError(
            f"labels_N must lie in [0, num_classes={num_classes}), got range "
            f"[{labels_N.min()}, {labels_N.max()}]"
        )
    counts = np.bincount(labels_N, minlength=num_classes)
    if counts.min() < 1 or counts.min() != counts.max():
        raise ValueError(
            f"labels_N must hold the same number >= 1 of samples per class, got counts "
            f"{counts.tolist()}"
        )
    if d < n_total:
        raise ValueError(
            f"x_NxD has d={d} < N={n_total}: the theory needs X (d x N) of full column rank, "
            "so d >= N"
        )
    s = np.linalg.svd(x_NxD, compute_uv=False)
    if s[-1] <= s[0] * n_total * np.finfo(np.float64).eps:
        raise ValueError(
            f"x_NxD is rank deficient (smallest singular value {s[-1]:.3g}): the theory needs "
            "X of full column rank N"
        )
    return x_NxD, labels_N.astype(np.int64), int(counts[0])


def min_norm_product(
    x_NxD: np.ndarray, labels_N: np.ndarray, num_classes: int, loss_scale: float = 1.0
) -> np.ndarray:
    """W* = Y X^+ / alpha (K x d): the min-norm end-to-end map minimising norm(alpha W X - Y)."""
    alpha = _positive("loss_scale", loss_scale)
    x_NxD, labels_N, _ = check_data(x_NxD, labels_N, num_classes)
    # X^+ (N x d) = pinv(x_NxD.T), so Y X^+ = Y pinv(x_NxD).T.
    return one_hot_KxN(labels_N, num_classes) @ np.linalg.pinv(x_NxD).T / alpha


def min_norm_svd(
    x_NxD: np.ndarray, labels_N: np.ndarray, num_classes: int, loss_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full SVD of W* = U diag(S) [V, P_0]^T: returns (u_KxK, s_K, vfull_DxD).

    ``vfull_DxD[:, :K]`` is V (row space of W*), ``vfull_DxD[:, K:]`` is P_0 (its complement).
    """
    w_KxD = min_norm_product(x_NxD, labels_N, num_classes, loss_scale)
    u_KxK, s_K, vt_DxD = np.linalg.svd(w_KxD, full_matrices=True)
    return u_KxK, s_K, vt_DxD.T


def _haar_orthogonal(rng: np.random.Generator, size: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    return q * np.sign(np.diag(r))


def min_norm_balanced(
    x_NxD: np.ndarray,
    labels_N: np.ndarray,
    num_classes: int,
    depth: int,
    width: int,
    init_scale: float,
    loss_scale: float = 1.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """Closed-form weights [W_1, ..., W_L] (out x in, float64) of science.md §2.

    With W* = Y X^+ / alpha = U S V^T, Q_0 = V, P_0 = complement of V in R^d, and for each hidden
    layer a Haar-random orthogonal [Q_l, P_l] (Q_l: h x K, P_l: h x r, r = min(h, d) - K):
      W_1 = Q_1 S^{1/L} V^T + xi P_1 P_0^T,  W_l = Q_l S^{1/L} Q_{l-1}^T + xi P_l P_{l-1}^T,
      W_L = U S^{1/L} Q_{L-1}^T.
    Then W_L...W_1 = W* exactly, hidden pairs are exactly balanced
    (W_{l+1}^T W_{l+1} = W_l W_l^T, l = 1..L-2) and hidden singular values are S^{1/L} (K of
    them), xi (r of them), and 0 for the h - min(h, d) directions the data never reach (none when
    h <= d; zeros keep pair (1, 2) exactly balanced when h > d). With h < d the complement keeps
    only h - K of the d - K directions of P_0, so the exact rates of ``predict_rates`` (which
    assume the whole complement, h >= d) do not apply.

    Args: ``x_NxD``, ``labels_N`` (balanced classes, d >= N), ``depth`` L >= 2 (number of weight
    matrices), ``width`` h >= K, ``init_scale`` xi > 0, ``loss_scale`` alpha > 0, ``seed`` for Q_l,
    P_l.
    """
    if int(depth) != depth or depth < 2:
        raise ValueError(f"depth must be an integer >= 2, got {depth}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    if int(width) != width or width < num_classes:
        raise ValueError(f"width must be an integer >= num_classes={num_classes}, got {width}")
    depth, width, num_classes = int(depth), int(width), int(num_classes)
    xi = _positive("init_scale", init_scale)
    u_KxK, s_K, vfull_DxD = min_norm_svd(x_NxD, labels_N, num_classes, loss_scale)
    k, d = num_classes, vfull_DxD.shape[0]
    r = min(width, d) - k
    root_K = s_K ** (1.0 / depth)
    rng = np.random.default_rng(seed)

    q_prev, p_prev = vfull_DxD[:, :k], vfull_DxD[:, k : k + r]
    weights = []
    for _ in range(depth - 1):
        o_HxH = _haar_orthogonal(rng, width)
        q_HxK, p_HxR = o_HxH[:, :k], o_HxH[:, k : k + r]
        weights.append((q_HxK * root_K) @ q_prev.T + xi * p_HxR @ p_prev.T)
        q_prev, p_prev = q_HxK, p_HxR
    weights.append((u_KxK * root_K) @ q_prev.T)
    return weights


def layer_features(weights: list[np.ndarray], x_NxD: np.ndarray) -> list[np.ndarray]:
    """[h_0, ..., h_{L-1}]: h_0 = x_NxD, h_l = h_{l-1} W_l^T (N x h); the logits are excluded."""
    feats = [np.asarray(x_NxD, dtype=np.float64)]
    for w in weights[:-1]:
        feats.append(feats[-1] @ np.asarray(w, dtype=np.float64).T)
    return feats
