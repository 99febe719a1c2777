"""Readers for the standard image-data files (IDX, CIFAR-10 pickles, mnist10k npz) and downloads.

Readers return raw images as uint8 arrays (N, H, W) or (N, H, W, C) and labels as int32 in
0..9; a corrupt or truncated file, or labels outside 0..9, raise ``ValueError`` naming the file
(and how many labels are bad), a missing one ``FileNotFoundError`` listing every place searched.

Search lists, relative to ``data_dir`` (first match wins; each IDX file may be plain or ``.gz``):

- mnist: ``mnist/``, ``MNIST/raw/`` (torchvision layout), ``data_dir`` itself;
- fashion_mnist: ``fashion_mnist/``, ``FashionMNIST/raw/`` (torchvision layout), ``data_dir``;
- cifar10: ``cifar-10-batches-py/`` (the extracted archive), ``data_dir`` itself.
"""

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from urllib.request import urlopen

import numpy as np

DATA_HINT = "provide the data with --data-dir DIR or the PNC_DATA=DIR environment variable"
NUM_LABELS = 10  # every supported file has 10 classes, labels 0..9

MNIST_SEARCH_DIRS = {
    "mnist": ("mnist", "MNIST/raw", "."),
    "fashion_mnist": ("fashion_mnist", "FashionMNIST/raw", "."),
}
MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_SEARCH_DIRS = ("cifar-10-batches-py", ".")
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)

# Download sources (tried in order) and the MD5 of each official file, as used by torchvision.
MNIST_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": (
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}
MNIST_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

# IDX type codes (third byte of the magic number); all values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def check_labels(path, labels: np.ndarray, num_classes: int = NUM_LABELS) -> np.ndarray:
    """``labels`` as int32 if all lie in [0, num_classes); else ``ValueError`` naming ``path``
    and the count of bad ones (they would otherwise vanish from every class silently)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers, got {labels.dtype}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{path}: {int(bad.sum())} of {labels.size} labels outside [0, {num_classes}) "
            f"(e.g. {int(labels[bad][0])}): not a {num_classes}-class label file"
        )
    return labels.astype(np.int32)


def not_found_error(what: str, places: list[Path]) -> FileNotFoundError:
    """``FileNotFoundError`` listing every place searched and how to provide the data."""
    listing = "\n".join(f"  - {p}" for p in places) or "  (no data directory given)"
    return FileNotFoundError(f"{what} not found. Looked in:\n{listing}\nTo fix: {DATA_HINT}.")


# --------------------------------------------------------------------------------------------
# IDX (MNIST, FashionMNIST)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (plain or gzip, detected by magic bytes or a ``.gz`` suffix).

    Returns an array of the header's shape in native byte order.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC or path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: bad IDX magic number 0x{raw[:4].hex()}")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dims need {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: size mismatch, header says shape {shape} of {dtype.name} "
            f"({expected} bytes) but the data has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def find_mnist_files(data_dir, name: str = "mnist", train: bool = True) -> tuple[Path, Path]:
    """(images, labels) paths of one split, from the first directory in the search list
    that holds both (module docstring); ``FileNotFoundError`` lists every path tried."""
    if name not in MNIST_SEARCH_DIRS:
        raise ValueError(
            f"unknown MNIST-format data set {name!r}: use one of {list(MNIST_SEARCH_DIRS)}"
        )
    places: list[Path] = []
    if data_dir is not None:
        for sub in MNIST_SEARCH_DIRS[name]:
            directory = Path(data_dir) / sub
            found = []
            for stem in MNIST_FILES[train]:
                candidates = [directory / stem, directory / f"{stem}.gz"]
                places.extend(candidates)
                found.append(next((c for c in candidates if c.is_file()), None))
            images, labels = found
            if images is not None and labels is not None:
                return images, labels
    split = "train" if train else "test"
    raise not_found_error(f"{name} {split} files (IDX, plain or .gz)", places)


def read_mnist(data_dir, name: str = "mnist", train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or FashionMNIST split: images uint8 (N, 28, 28), labels int32 (N,)."""
    images_path, labels_path = find_mnist_files(data_dir, name, train)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: expected {len(images)} labels to match "
            f"{images_path}, got shape {labels.shape}"
        )
    return images, check_labels(labels_path, labels)


# --------------------------------------------------------------------------------------------
# CIFAR-10 python pickles

# Only these globals may appear in a CIFAR batch: pickle can otherwise run arbitrary code.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}
_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a data batch")
        if _NUMPY2 and module.startswith("numpy.core."):
            module = "numpy._core." + module.removeprefix("numpy.core.")  # avoid the shim
        return super().find_class(module, name)


def _get(batch: dict, key: str):
    return batch[key.encode()] if key.encode() in batch else batch[key]


def read_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 pickle batch: images uint8 (N, 32, 32, 3), labels int32 (N,)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(_get(batch, "data"))
        labels = np.asarray(_get(batch, "labels"), dtype=np.int64)
    except Exception as err:  # any failure to decode means the file is corrupt
        raise ValueError(
            f"{path}: not a valid CIFAR-10 batch ({type(err).__name__}: {err})"
        ) from err
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected uint8 data (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: expected {len(data)} labels in 0..9, got shape {labels.shape}")
    labels = check_labels(path, labels)
    # Rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major: make channels last.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def find_cifar10_files(directory, train: bool = True) -> list[Path]:
    """Batch paths of one split from the first directory in the search list holding them all
    (module docstring); ``FileNotFoundError`` lists every path tried."""
    names = CIFAR10_TRAIN_BATCHES if train else CIFAR10_TEST_BATCHES
    places: list[Path] = []
    if directory is not None:
        for sub in CIFAR10_SEARCH_DIRS:
            paths = [Path(directory) / sub / n for n in names]
            places.extend(paths)
            if all(p.is_file() for p in paths):
                return paths
    split = "train" if train else "test"
    raise not_found_error(f"CIFAR-10 {split} batches", places)


def read_cifar10(directory, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 split from ``directory/cifar-10-batches-py/`` or ``directory``:
    images uint8 (N, 32, 32, 3), labels int32 (N,)."""
    parts = [read_cifar10_batch(p) for p in find_cifar10_files(directory, train)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------------------------
# mnist10k (shared/datasets/mnist10k.npz)


def read_mnist10k(path) -> tuple[np.ndarray, np.ndarray]:
    """The mnist10k npz: images uint8 (N, 28, 28), labels int32 (N,)."""
    path = Path(path)
    if not path.is_file():
        raise not_found_error("mnist10k.npz", [path])
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            images = np.asarray(archive["images"])
            labels = np.asarray(archive["labels"])
    except Exception as err:  # bad zip, truncated member, missing key...
        raise ValueError(f"{path}: not a valid mnist10k npz ({type(err).__name__}: {err})") from err
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != (len(images),):
        raise ValueError(
            f"{path}: expected uint8 images (N, 28, 28) and N labels, got "
            f"{images.dtype} {images.shape} and {labels.shape}"
        )
    return images, check_labels(path, labels)


# --------------------------------------------------------------------------------------------
# Downloads (never used by the tests; the project's machines have no internet)


def _fetch(urls: list[str], dest: Path, md5: str, timeout: float = 60.0) -> None:
    """Download the first of ``urls`` whose content has the given MD5 to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as err:  # URLError, HTTPError and timeouts are OSErrors
            errors.append(f"{url}: {err}")
            part.unlink(missing_ok=True)
            continue
        if digest.hexdigest() != md5:
            errors.append(f"{url}: MD5 {digest.hexdigest()} != expected {md5}")
            part.unlink(missing_ok=True)
            continue
        part.replace(dest)
        return
    raise OSError(f"could not download {dest.name}:\n" + "\n".join(f"  - {e}" for e in errors))


def download_mnist(data_dir, name: str = "mnist") -> Path:
    """Fetch the four missing ``.gz`` IDX files of MNIST or FashionMNIST into
    ``data_dir/mnist/`` or ``data_dir/fashion_mnist/``; returns that directory."""
    if name not in MNIST_MIRRORS:
        raise ValueError(
            f"unknown MNIST-format data set {name!r}: use one of {list(MNIST_MIRRORS)}"
        )
    directory = Path(data_dir) / MNIST_SEARCH_DIRS[name][0]
    for filename, md5 in MNIST_MD5[name].items():
        dest = directory / filename
        if dest.is_file() or dest.with_suffix("").is_file():
            continue
        _fetch([base + filename for base in MNIST_MIRRORS[name]], dest, md5)
    return directory


def download_cifar10(data_dir) -> Path:
    """Fetch and extract the CIFAR-10 python archive into ``data_dir/cifar-10-batches-py/``
    unless its batches are there; returns that directory."""
    directory = Path(data_dir) / CIFAR10_SEARCH_DIRS[0]
    names = CIFAR10_TRAIN_BATCHES + CIFAR10_TEST_BATCHES
    if all((directory / n).is_file() for n in names):
        return directory
    archive = Path(data_dir) / "cifar-10-python.tar.gz"
    if not archive.is_file():
        _fetch([CIFAR10_URL], archive, CIFAR10_MD5)
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        # Extract only the regular files of cifar-10-batches-py/, by base name (no path tricks).
        for member in tar.getmembers():
            parent, _, base = member.name.rpartition("/")
            if member.isfile() and parent == CIFAR10_SEARCH_DIRS[0] and base:
                handle = tar.extractfile(member)
                if handle is not None:
                    (directory / base).write_bytes(handle.read())
    archive.unlink()
    return directory
