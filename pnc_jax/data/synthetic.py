"""Synthetic data of Wang et al. (science.md, section 2): classes in contiguous blocks."""

import numpy as np


def _check_sizes(num_classes: int, samples_per_class: int, input_dim: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
    if input_dim < 1:
        raise ValueError(f"input_dim must be >= 1, got {input_dim}")


def block_labels(num_classes: int, samples_per_class: int) -> np.ndarray:
    """labels_N = [0]*n + [1]*n + ... (Y = I_K kron 1_n^T)."""
    return np.repeat(np.arange(num_classes), samples_per_class)


def nearly_orthonormal(
    seed: int,
    num_classes: int = 3,
    samples_per_class: int = 10,
    input_dim: int = 50,
    perturbation: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """N = nK orthonormal vectors in R^d plus a Gaussian matrix of Frobenius norm ``perturbation``.

    Returns ``x_NxD`` (float64, rows are samples; the paper's X is its transpose) and ``labels_N``.
    The orthonormal part is the Q factor of a d x N Gaussian, so it needs d >= N.
    """
    _check_sizes(num_classes, samples_per_class, input_dim)
    n = num_classes * samples_per_class
    if input_dim < n:
        raise ValueError(
            f"input_dim={input_dim} < N={n}: N orthonormal vectors need input_dim >= N"
        )
    if perturbation < 0:
        raise ValueError(f"perturbation must be >= 0, got {perturbation}")
    rng = np.random.default_rng(seed)
    q_DxN, _ = np.linalg.qr(rng.standard_normal((input_dim, n)))
    e_NxD = rng.standard_normal((n, input_dim))
    e_NxD *= perturbation / np.linalg.norm(e_NxD)
    return q_DxN.T + e_NxD, block_labels(num_classes, samples_per_class)


def gaussian_mixture(
    seed: int,
    num_classes: int = 3,
    samples_per_class: int = 10,
    input_dim: int = 50,
    mean_norm: float = 1.0,
    noise: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Class k draws x = mu_k + noise * N(0, I_d / d); mu_k Gaussian rescaled to ``mean_norm``."""
    _check_sizes(num_classes, samples_per_class, input_dim)
    if mean_norm <= 0 or noise < 0:
        raise ValueError(f"need mean_norm > 0 and noise >= 0, got {mean_norm}, {noise}")
    rng = np.random.default_rng(seed)
    mu_KxD = rng.standard_normal((num_classes, input_dim))
    mu_KxD *= mean_norm / np.linalg.norm(mu_KxD, axis=1, keepdims=True)
    labels = block_labels(num_classes, samples_per_class)
    e_NxD = rng.standard_normal((labels.size, input_dim)) / np.sqrt(input_dim)
    x_NxD = mu_KxD[labels] + noise * e_NxD
    return x_NxD, labels
