"""The data set a ``Config`` names, as a ``Dataset`` (synthetic sets have an empty test split)."""

import numpy as np

from pnc_jax.config import Config
from pnc_jax.data.datasets import Dataset, load_dataset
from pnc_jax.data.synthetic import gaussian_mixture, nearly_orthonormal


def dataset_for(cfg: Config) -> Dataset:
    """Synthetic: ``cfg.input_dim``, K classes of ``samples_per_class``. Real: the first K
    classes, at most ``samples_per_class`` training images each (the first n of each class
    after a seeded shuffle; 0 = all), official test set (mnist10k: a seeded 20% split), resized
    to ``resize`` x ``resize`` (antialiased bilinear; 0 = native) and standardised per channel
    with the ``normalize`` statistics ("published" constants or the training images' own)."""
    if cfg.dataset in ("synthetic", "gaussian"):
        make = nearly_orthonormal if cfg.dataset == "synthetic" else gaussian_mixture
        args = (cfg.data_seed, cfg.num_classes, cfg.samples_per_class, cfg.input_dim)
        x, y = make(*args, cfg.perturbation) if cfg.dataset == "synthetic" else make(*args)
        empty = np.zeros((0, x.shape[1]), x.dtype)
        return Dataset(x, y.astype(np.int32), empty, np.zeros(0, np.int32), cfg.num_classes,
                       cfg.dataset, tuple(range(cfg.num_classes)), (1, 1, x.shape[1]))
    return load_dataset(
        cfg.dataset, cfg.data_dir, classes=tuple(range(cfg.num_classes)),
        samples_per_class=cfg.samples_per_class or None, seed=cfg.data_seed,
        resize=cfg.resize or None, normalize=cfg.normalize,
    )
