"""Checks of the theory's assumptions on a (trained or closed-form) deep linear network.

Follows the paper's Figure 6 (authors' code): min-norm residual, balancedness of consecutive
layers, spread of the middle singular values; plus how far X is from orthonormal.
"""

from dataclasses import dataclass

import numpy as np

from theory.closed_form import _positive, check_data, min_norm_product


@dataclass(frozen=True, eq=False)
class AssumptionReport:
    """Assumption metrics; per-pair arrays are indexed by l = 1..L-1 (entry l-1).

    min_norm_residual: norm_F(Y X^+ / alpha - W_{L:1}) (the paper's norm_F(Y X^+ - W_{L:1}) at
        alpha = 1; a network fitting norm(alpha W X - Y) has end-to-end map W* = Y X^+ / alpha).
    min_norm_relative: min_norm_residual / norm_F(Y X^+ / alpha).
    balancedness: norm_F(W_{l+1}^T W_{l+1} - W_l W_l^T) for every consecutive pair l = 1..L-1
        (the classifier pair l = L-1 included, as in the paper's code).
    balancedness_normalized: balancedness / norm_F(W_l).
    balancedness_mean: mean of balancedness_normalized (the paper's Figure 6 quantity).
    balancedness_hidden_max: max of balancedness_normalized over the hidden pairs l = 1..L-2, the
        exact condition of the theory (0.0 when L = 2: no hidden pairs).
    middle_singular_values: per layer l = 1..L-1 (classifier excluded), the singular values with
        1-based indices K+1..d-K in descending order (numpy slice [K : d-K], d = input dim).
    middle_singular_variance: variance (ddof=1, like torch.var in the paper's code) of all of
        them concatenated (0.0 if fewer than 2).
    orthonormality: norm_F(X^T X - I_N) = norm_F(x_NxD x_NxD^T - I_N) (0 for orthonormal data).
    """

    min_norm_residual: float
    min_norm_relative: float
    balancedness: np.ndarray
    balancedness_normalized: np.ndarray
    balancedness_mean: float
    balancedness_hidden_max: float
    middle_singular_values: list[np.ndarray]
    middle_singular_variance: float
    orthonormality: float


def _check_weights(weights, d: int, k: int) -> list[np.ndarray]:
    ws = [np.asarray(w, dtype=np.float64) for w in weights]
    if len(ws) < 2:
        raise ValueError(f"weights must hold L >= 2 matrices, got {len(ws)}")
    if any(w.ndim != 2 for w in ws):
        raise ValueError(f"weights must be 2-D (out x in), got shapes {[w.shape for w in ws]}")
    shapes = [w.shape for w in ws]
    chained = all(a[0] == b[1] for a, b in zip(shapes[:-1], shapes[1:], strict=True))
    if shapes[0][1] != d or shapes[-1][0] != k or not chained:
        raise ValueError(
            f"weights must chain (out x in) from d={d} to K={k}, got shapes {shapes}"
        )
    return ws


def check_assumptions(
    weights: list[np.ndarray],
    x_NxD: np.ndarray,
    labels_N: np.ndarray,
    num_classes: int,
    loss_scale: float = 1.0,
) -> AssumptionReport:
    """Assumption metrics of ``weights`` = [W_1 (h x d), ..., W_L (K x h)] on the data
    (``x_NxD``, ``labels_N``: balanced classes, d >= N) for loss scale alpha = ``loss_scale``."""
    alpha = _positive("loss_scale", loss_scale)
    x_NxD, labels_N, _ = check_data(x_NxD, labels_N, num_classes)
    k, d = int(num_classes), x_NxD.shape[1]
    ws = _check_weights(weights, d, k)

    target_KxD = min_norm_product(x_NxD, labels_N, k, alpha)
    prod_KxD = ws[0]
    for w in ws[1:]:
        prod_KxD = w @ prod_KxD
    residual = float(np.linalg.norm(target_KxD - prod_KxD))

    raw, normed = [], []
    for w_cur, w_next in zip(ws[:-1], ws[1:], strict=True):
        diff = w_next.T @ w_next - w_cur @ w_cur.T
        raw.append(float(np.linalg.norm(diff)))
        normed.append(raw[-1] / float(np.linalg.norm(w_cur)))
    hidden = normed[:-1]

    middle = [np.linalg.svd(w, compute_uv=False)[k : d - k] for w in ws[:-1]]
    flat = np.concatenate(middle)
    variance = float(np.var(flat, ddof=1)) if flat.size >= 2 else 0.0

    gram_NxN = x_NxD @ x_NxD.T
    return AssumptionReport(
        min_norm_residual=residual,
        min_norm_relative=residual / float(np.linalg.norm(target_KxD)),
        balancedness=np.array(raw),
        balancedness_normalized=np.array(normed),
        balancedness_mean=float(np.mean(normed)),
        balancedness_hidden_max=float(max(hidden)) if hidden else 0.0,
        middle_singular_values=middle,
        middle_singular_variance=variance,
        orthonormality=float(np.linalg.norm(gram_NxN - np.eye(gram_NxN.shape[0]))),
    )
