"""Predicted compression C_l and discrimination D_l of the min-norm balanced net (science.md §2).

Exact for the features of ``min_norm_balanced`` with width h >= d (any seed), l = 0..L-1.
"""

from dataclasses import dataclass

import numpy as np

from theory.closed_form import _positive, check_data, min_norm_svd, one_hot_KxN


@dataclass(frozen=True, eq=False)
class RatePrediction:
    """Predicted per-layer profiles; arrays are indexed by layer l = 0..L-1 (0 = input).

    compression_ratio: rho = xi^2 alpha^{2/L} / n^{1/L} (orthonormal-data limit; exact C_{l+1}/C_l
        for orthonormal X).
    compression: C_0..C_{L-1} = xi^{2l} A / (T_l + xi^{2l} B) with data, C_0 rho^l without.
    discrimination: D_0..D_{L-1} from the exact class-mean Gram
        G_l = M^{l/L-1} alpha^{-2l/L} + xi^{2l} mu_P^T mu_P (mu_P: input class means projected off
        the row space of W*); all 1 without data (orthonormal means).
    discrimination_signal: the xi-independent formula from M^{l/L-1} alone (mu_P dropped);
        equals ``discrimination`` for orthonormal X.
    discrimination_linear: the linear approximation 1 - (1 - l/L)(1 - D^_0), D^_0 =
        discrimination_signal[0].
    fitted_ratio: exp(slope) of least squares of log C_l on l = 1..L-1 (nan if L < 3 or C_l <= 0).
    discrimination_slope: slope of least squares of D_l on l = 1..L-1 (nan if L < 3).
    from_data: whether the finite-data formulas were used.
    """

    samples_per_class: int
    num_classes: int
    depth: int
    init_scale: float
    loss_scale: float
    from_data: bool
    compression_ratio: float
    compression: np.ndarray
    discrimination: np.ndarray
    discrimination_signal: np.ndarray
    discrimination_linear: np.ndarray
    fitted_ratio: float
    discrimination_slope: float


def _discrimination_from_gram(gram_KxK: np.ndarray) -> float:
    diag = np.sqrt(np.diag(gram_KxK))
    cos_KxK = gram_KxK / np.outer(diag, diag)
    off = ~np.eye(gram_KxK.shape[0], dtype=bool)
    return float(1.0 - cos_KxK[off].max())


def _fits(c_L: np.ndarray, d_L: np.ndarray) -> tuple[float, float]:
    ls = np.arange(1, c_L.size, dtype=np.float64)
    if ls.size < 2:
        return float("nan"), float("nan")
    slope_d = float(np.polyfit(ls, d_L[1:], 1)[0])
    if np.any(c_L[1:] <= 0):
        return float("nan"), slope_d
    return float(np.exp(np.polyfit(ls, np.log(c_L[1:]), 1)[0])), slope_d


def _resolve_data(x_NxD, labels_N, X, Y, num_classes):
    if X is None and Y is None:
        return x_NxD, labels_N
    if x_NxD is not None or labels_N is not None:
        raise ValueError("give either x_NxD/labels_N or the paper's X/Y, not both")
    if X is None or Y is None:
        raise ValueError(
            f"X and Y must be given together, got X={X is not None}, Y={Y is not None}"
        )
    y_KxN = np.asarray(Y, dtype=np.float64)
    if y_KxN.ndim != 2 or y_KxN.shape[0] != num_classes:
        raise ValueError(f"Y must be one-hot K x N with K={num_classes}, got shape {y_KxN.shape}")
    labels_N = np.argmax(y_KxN, axis=0)
    if not np.array_equal(y_KxN, one_hot_KxN(labels_N, num_classes)):
        raise ValueError("Y must be one-hot (K x N, a single 1 per column)")
    x_DxN = np.asarray(X, dtype=np.float64)
    if x_DxN.ndim != 2 or x_DxN.shape[1] != y_KxN.shape[1]:
        raise ValueError(f"X must be d x N with N={y_KxN.shape[1]}, got shape {x_DxN.shape}")
    return x_DxN.T, labels_N


def predict_rates(
    samples_per_class: int,
    num_classes: int,
    depth: int,
    init_scale: float,
    loss_scale: float = 1.0,
    x_NxD: np.ndarray | None = None,
    labels_N: np.ndarray | None = None,
    *,
    X: np.ndarray | None = None,
    Y: np.ndarray | None = None,
) -> RatePrediction:
    """Predicted C_l, D_l (l = 0..L-1) for n = ``samples_per_class``, K, L = ``depth``,
    xi = ``init_scale``, alpha = ``loss_scale``.

    Without data: the exactly-orthonormal limit C_l = C_0 rho^l, C_0 = (n-1)K/(K-1), D_l = 1.
    With data (``x_NxD`` N x d and ``labels_N``, or the paper's ``X`` d x N and one-hot ``Y``
    K x N; balanced classes of n samples, d >= N), with W* = Y X^+/alpha = U S V^T,
    C = I_K - 11^T/K, t = l/L:
      C_l = xi^{2l} A / (T_l + xi^{2l} B),  A = norm_F((I - VV^T) X (I - Y^T Y/n))^2 / N,
      B = norm_F((I - VV^T)[mu_k^0 - mu_G^0]_k)^2 / K,  T_l = Tr(S^{2t-2} U^T C U) / (K alpha^2),
    and D_l from the exact class-mean Gram (see ``RatePrediction``). These are exact for the
    features of ``min_norm_balanced(..., width >= d)``.
    """
    for name, value, low in (("samples_per_class", samples_per_class, 1),
                             ("num_classes", num_classes, 2), ("depth", depth, 2)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    n, k, depth = int(samples_per_class), int(num_classes), int(depth)
    xi = _positive("init_scale", init_scale)
    alpha = _positive("loss_scale", loss_scale)
    x_NxD, labels_N = _resolve_data(x_NxD, labels_N, X, Y, k)
    rho = xi**2 * alpha ** (2.0 / depth) / n ** (1.0 / depth)
    ls = np.arange(depth, dtype=np.float64)

    if x_NxD is None and labels_N is None:
        compression = (n - 1) * k / (k - 1) * rho**ls
        discrimination = np.ones(depth)
        signal, linear = discrimination.copy(), discrimination.copy()
    elif x_NxD is None or labels_N is None:
        raise ValueError("x_NxD and labels_N must be given together")
    else:
        x_NxD, labels_N, n_data = check_data(x_NxD, labels_N, k)
        if n_data != n:
            raise ValueError(
                f"samples_per_class={n} disagrees with labels_N ({n_data} samples per class)"
            )
        u_KxK, s_K, vfull_DxD = min_norm_svd(x_NxD, labels_N, k, alpha)
        v_DxK = vfull_DxD[:, :k]
        y_KxN = one_hot_KxN(labels_N, k)
        # Input projected off the row space of W*: rows (I - VV^T) x_i.
        xp_NxD = x_NxD - (x_NxD @ v_DxK) @ v_DxK.T
        mup_KxD = y_KxN @ xp_NxD / n
        a = float(np.sum((xp_NxD - mup_KxD[labels_N]) ** 2)) / labels_N.size
        b = float(np.sum((mup_KxD - mup_KxD.mean(axis=0)) ** 2)) / k
        centre_KxK = np.eye(k) - 1.0 / k
        ucu_KxK = u_KxK.T @ centre_KxK @ u_KxK
        gram_p_KxK = mup_KxD @ mup_KxD.T
        compression, discrimination, signal = (np.empty(depth) for _ in range(3))
        for l in range(depth):
            t = l / depth
            power_K = s_K ** (2 * t - 2)
            t_l = float(np.sum(power_K * np.diag(ucu_KxK))) / (k * alpha**2)
            noise = xi ** (2 * l)
            compression[l] = noise * a / (t_l + noise * b)
            # Signal class-mean Gram U S^{2t-2} U^T / alpha^2 = M^{t-1} alpha^{-2t}.
            gram_s_KxK = (u_KxK * power_K) @ u_KxK.T / alpha**2
            discrimination[l] = _discrimination_from_gram(gram_s_KxK + noise * gram_p_KxK)
            signal[l] = _discrimination_from_gram(gram_s_KxK)
        linear = 1.0 - (1.0 - ls / depth) * (1.0 - signal[0])

    fitted_ratio, slope = _fits(compression, discrimination)
    return RatePrediction(
        samples_per_class=n,
        num_classes=k,
        depth=depth,
        init_scale=xi,
        loss_scale=alpha,
        from_data=x_NxD is not None,
        compression_ratio=float(rho),
        compression=compression,
        discrimination=discrimination,
        discrimination_signal=signal,
        discrimination_linear=linear,
        fitted_ratio=fitted_ratio,
        discrimination_slope=slope,
    )
