"""Image classification data sets as flattened, normalised numpy arrays: ``load_dataset``.

Pipeline: read the raw uint8 files (``files.py``), split (official test set, or a seeded
stratified split for mnist10k), keep the chosen classes (relabelled 0..K'-1 in the given order),
cap each class at its first n samples after a seeded shuffle, scale pixels to [0, 1], resize,
standardise each channel (published or training-set mean/std), flatten channels-last.

Normalisation (pixels / 255, then (x - mean) / std per channel), ``normalize=``:

- ``"published"`` (default): the usual published constants, not statistics of the loaded subset,
  so every subset and split share one affine map:
  mnist, mnist10k: mean 0.1307, std 0.3081 (MNIST training set); fashion_mnist: mean 0.2860,
  std 0.3530; cifar10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616) for R, G, B.
- ``"train"``: the mean and (population) std of each channel over the selected, resized training
  images (all their pixels), applied to both splits. Per channel, not per pixel: it is the map
  torchvision's ``Normalize`` applies (He & Su's code normalises each channel with fixed
  constants, (x - 0.5) / 0.5, so ours differs from theirs by one shift and one scale per channel,
  which a first Linear -> BatchNorm absorbs and the fuzziness ignores); per-pixel statistics
  would divide the nearly constant border pixels by stds near zero and reweight the pixels.

Order: both splits come back in a seeded random order, never sorted by class (He & Su take
BatchNorm-mode features over fixed batches of consecutive points; science.md section 3).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pnc_jax.data import files

DATASET_NAMES = ("mnist10k", "mnist", "fashion_mnist", "cifar10")
NUM_CLASSES = 10
RESIZE_METHODS = ("bilinear", "area")
NORMALIZE_MODES = ("published", "train")
NORMALIZATION = {  # name -> (per-channel mean, per-channel std) of pixels / 255
    "mnist10k": ((0.1307,), (0.3081,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
MNIST10K_FILE = "mnist10k.npz"
# <repo>/../shared/datasets, where the project keeps its offline data (shared/datasets/README.md).
SHARED_DATASETS_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Flattened float32 inputs ``x_NxD`` and int32 labels 0..K'-1.

    ``classes[k]`` is the original label id of new label k; ``input_shape`` is (H, W, C) of one
    image before flattening (channels last, C = 1 for grayscale), so D = H * W * C.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    classes: tuple[int, ...]
    input_shape: tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Resizing


def resize_matrix(n_in: int, n_out: int, method: str = "bilinear") -> np.ndarray:
    """(n_out, n_in) row-stochastic matrix resampling one axis of n_in pixels to n_out.

    ``"area"``: each output pixel averages the input interval it covers, with fractional weights
    at its ends (OpenCV INTER_AREA); a factor-k shrink gives k-blocks means.
    ``"bilinear"``: triangle filter at pixel centres, widened by the shrink factor to avoid
    aliasing (PIL's / torchvision's antialiased bilinear resize).
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}: use one of {RESIZE_METHODS}")
    scale = n_in / n_out
    pixels = np.arange(n_in)[None, :]
    if method == "area":
        start = (np.arange(n_out) * scale)[:, None]
        overlap = np.minimum(start + scale, pixels + 1) - np.maximum(start, pixels)
        weights = np.clip(overlap, 0, None)
    else:
        centres = ((np.arange(n_out) + 0.5) * scale)[:, None]
        weights = np.clip(1 - np.abs(pixels + 0.5 - centres) / max(scale, 1.0), 0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_images(images: np.ndarray, size, method: str = "bilinear") -> np.ndarray:
    """Resize (N, H, W, C) images to (N, h, w, C) with separable ``resize_matrix`` filters."""
    h, w = _check_resize(size)
    rows = resize_matrix(images.shape[1], h, method).astype(np.float32)
    cols = resize_matrix(images.shape[2], w, method).astype(np.float32)
    return np.einsum("ih,nhwc,jw->nijc", rows, images.astype(np.float32), cols, optimize=True)


# --------------------------------------------------------------------------------------------
# Argument checks


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_resize(size) -> tuple[int, int]:
    if _is_int(size):
        size = (size, size)
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(_is_int(s) and s > 0 for s in size)
    ):
        raise ValueError(f"resize must be (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _check_count(name: str, value) -> None:
    if value is not None and not (_is_int(value) and value >= 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")


def _check_classes(classes) -> tuple[int, ...]:
    if classes is None:
        return tuple(range(NUM_CLASSES))
    kept = tuple(classes)
    for c in kept:
        if not (_is_int(c) and 0 <= c < NUM_CLASSES):
            raise ValueError(f"class {c!r} out of range: classes are ints in 0..{NUM_CLASSES - 1}")
    if not kept or len(set(kept)) != len(kept):
        raise ValueError(f"classes must be non-empty and without repeats, got {classes!r}")
    return tuple(int(c) for c in kept)


# --------------------------------------------------------------------------------------------
# Loading raw splits


def _mnist10k_places(data_dir) -> list[Path]:
    """An explicit data directory alone (a wrong one must not silently give another copy);
    else the shared one and the current directory."""
    dirs = [Path(data_dir)] if data_dir is not None else [SHARED_DATASETS_DIR, Path.cwd()]
    return list(dict.fromkeys(d / MNIST10K_FILE for d in dirs))


def _read_raw(name: str, data_dir, download: bool):
    """Raw ((train images, labels), (test images, labels) or None) with images (N, H, W, C)."""
    if name == "mnist10k":  # no download source: the file ships in shared/datasets
        places = _mnist10k_places(data_dir)
        path = next((p for p in places if p.is_file()), None)
        if path is None:
            error = files.not_found_error(MNIST10K_FILE, places)
            if data_dir is not None:  # say why the shared copy was not used
                error = FileNotFoundError(f"{error} An explicit data directory (--data-dir or "
                                          "PNC_DATA) is the only place searched; unset both to "
                                          "use the shared copy.")
            raise error
        return files.read_mnist10k(path), None
    if download:
        if data_dir is None:
            raise ValueError(f"download=True needs data_dir (--data-dir) or PNC_DATA for {name!r}")
        _download_missing(name, data_dir)
    if name == "cifar10":
        return files.read_cifar10(data_dir, train=True), files.read_cifar10(data_dir, train=False)
    return files.read_mnist(data_dir, name, True), files.read_mnist(data_dir, name, False)


def _download_missing(name: str, data_dir) -> None:
    try:
        for train in (True, False):
            if name == "cifar10":
                files.find_cifar10_files(data_dir, train)
            else:
                files.find_mnist_files(data_dir, name, train)
    except FileNotFoundError:
        if name == "cifar10":
            files.download_cifar10(data_dir)
        else:
            files.download_mnist(data_dir, name)


def _stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """(train, test) index arrays holding round(test_fraction * n_c) of each class c in test
    (at least 1 and at most n_c - 1 when n_c >= 2)."""
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(members)))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _select(labels, classes, cap, rng, split: str) -> np.ndarray:
    """Indices, in a seeded random order, of the kept classes, at most ``cap`` per class
    (the first ``cap`` of each class in that order)."""
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    keep = np.zeros(len(order), dtype=bool)
    for c in classes:
        positions = np.flatnonzero(shuffled == c)
        if len(positions) == 0:
            raise ValueError(f"class {c} has no {split} samples")
        if cap is not None:
            if len(positions) < cap:
                raise ValueError(
                    f"class {c} has only {len(positions)} {split} samples, "
                    f"fewer than the {cap} per class requested"
                )
            positions = positions[:cap]
        keep[positions] = True
    return order[keep]


def _scaled(images, index, size, method) -> np.ndarray:
    """Selected images as float32 (n, H, W, C) pixels / 255, resized."""
    x = images[index].astype(np.float32) / 255.0
    return x if size is None else resize_images(x, size, method)


def channel_stats(x_NxHxWxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std over all images and pixels (float64 sums)."""
    x = np.asarray(x_NxHxWxC, np.float64).reshape(-1, x_NxHxWxC.shape[-1])
    mean, std = x.mean(0), x.std(0)
    if not np.all(std > 0):
        raise ValueError(f"normalize='train': a channel of the training images is constant "
                         f"(std per channel {std.tolist()})")
    return mean, std


def _prepare(x, labels, index, classes, mean_std):
    """Scaled images -> (normalised float32 (n, D), relabelled int32 labels, (H, W, C))."""
    mean, std = (np.asarray(v, dtype=np.float32) for v in mean_std)
    x = (x - mean) / std
    relabel = np.full(NUM_CLASSES, -1, dtype=np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
    return x.reshape(len(x), -1), relabel[labels[index]], x.shape[1:]


# --------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    data_dir=None,
    *,
    classes=None,
    samples_per_class: int | None = None,
    test_samples_per_class: int | None = None,
    resize=None,
    test_fraction: float = 0.2,
    seed: int = 0,
    download: bool = False,
    resize_method: str = "bilinear",
    normalize: str = "published",
) -> Dataset:
    """Load one of ``DATASET_NAMES`` as a ``Dataset`` (see the module docstring for the steps).

    ``data_dir`` defaults to ``$PNC_DATA``; given either way, it is the only place searched (a
    wrong one is an error naming it); without both, mnist10k is looked up in
    ``<repo>/../shared/datasets/`` and the current directory. mnist10k is split with
    ``test_fraction`` (seeded, stratified); the others use their official test set.
    ``classes`` lists original label ids to keep (new label k = ``classes[k]``).
    ``samples_per_class`` and ``test_samples_per_class`` keep the first n of each class after a
    seeded shuffle (He & Su's ``sample_size``). ``resize`` = (h, w) or an int, with
    ``resize_method`` "bilinear" (antialiased, as torchvision's Resize) or "area". ``download``
    fetches missing MNIST / FashionMNIST / CIFAR-10 files into ``data_dir`` (needs a network;
    ignored for mnist10k). ``normalize``: "published" constants or the "train" split's own
    per-channel mean and std (module docstring).
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}: use one of {DATASET_NAMES}")
    kept = _check_classes(classes)
    _check_count("samples_per_class", samples_per_class)
    _check_count("test_samples_per_class", test_samples_per_class)
    size = None if resize is None else _check_resize(resize)
    if resize_method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize_method {resize_method!r}: use one of {RESIZE_METHODS}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize {normalize!r}: use one of {NORMALIZE_MODES}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if data_dir is None:
        data_dir = os.environ.get("PNC_DATA") or None

    rng = np.random.default_rng(seed)
    train, test = _read_raw(name, data_dir, download)
    if test is None:  # mnist10k: no official split
        images, labels = train
        train_idx, test_idx = _stratified_split(labels, test_fraction, rng)
        train, test = (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])

    scaled = []
    for (images, labels), cap, split in (
        (train, samples_per_class, "train"),
        (test, test_samples_per_class, "test"),
    ):
        if images.ndim == 3:
            images = images[..., None]
        index = _select(labels, kept, cap, rng, split)
        scaled.append((_scaled(images, index, size, resize_method), labels, index))
    mean_std = (channel_stats(scaled[0][0]) if normalize == "train" else NORMALIZATION[name])
    (x_train, y_train, shape), (x_test, y_test, _) = (
        _prepare(x, labels, index, kept, mean_std) for x, labels, index in scaled)
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(kept),
        name=name,
        classes=kept,
        input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
    )
