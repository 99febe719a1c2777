"""Data sets as host numpy arrays: ``x_NxD`` (float) and integer ``labels_N``."""

from pnc_jax.data.synthetic import gaussian_mixture, nearly_orthonormal

__all__ = ["gaussian_mixture", "nearly_orthonormal"]
