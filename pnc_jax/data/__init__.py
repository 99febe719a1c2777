"""Data sets as host numpy arrays: ``x_NxD`` (float) and integer ``labels_N``."""

from pnc_jax.data.datasets import Dataset, load_dataset, resize_images
from pnc_jax.data.files import read_cifar10, read_idx, read_mnist, read_mnist10k
from pnc_jax.data.select import dataset_for
from pnc_jax.data.synthetic import gaussian_mixture, nearly_orthonormal

__all__ = [
    "Dataset", "dataset_for", "gaussian_mixture", "load_dataset", "nearly_orthonormal",
    "read_cifar10", "read_idx", "read_mnist", "read_mnist10k", "resize_images",
]
