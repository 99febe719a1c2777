"""File readers and load_dataset on small files written in the real formats (no network)."""

import collections
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from pnc_jax.data import datasets, files
from pnc_jax.data.datasets import load_dataset, resize_images, resize_matrix

MNIST10K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist10k.npz"
MNIST10K_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
IDX_CODES = {"uint8": 8, "int8": 9, "int16": 11, "int32": 12, "float32": 13, "float64": 14}
N_TRAIN, N_TEST = 6, 3  # per class in the fake MNIST files


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODES[array.dtype.name], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist_split(per_class: int, offset: int):
    """Class-sorted images whose pixels (0, 0), (0, 1) encode a unique id; labels 0..9."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    ids = offset + np.arange(len(labels))
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    return images, labels


def write_fake_mnist(directory: Path, gz: bool):
    splits = {}
    for prefix, n, offset in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1000)):
        images, labels = fake_mnist_split(n, offset)
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        splits[prefix] = (images, labels)
    return splits


def unnormalise(x, mean, std, shape=(28, 28)):
    raw = np.rint((x.astype(np.float64) * std + mean) * 255).reshape(-1, *shape)
    assert np.allclose((x * std + mean) * 255, raw.reshape(len(x), -1), atol=1e-3)
    return raw.astype(np.int64)


def ids_of(raw):
    return raw[:, 0, 0] + 256 * raw[:, 0, 1]


def cifar_batch_bytes(data: np.ndarray, labels, protocol: int = pickle.HIGHEST_PROTOCOL):
    batch = {b"batch_label": b"fake", b"labels": list(map(int, labels)), b"data": data}
    return pickle.dumps(batch, protocol=protocol)


def fake_cifar(per_class: int):
    """Data whose channel c equals 10 * label + 50 * c at every pixel."""
    labels = np.tile(np.arange(10), per_class)
    data = np.repeat(10 * labels[:, None] + 50 * np.arange(3)[None, :], 1024, axis=1)
    return data.astype(np.uint8), labels


def write_fake_cifar(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (directory / f"data_batch_{i}").write_bytes(cifar_batch_bytes(*fake_cifar(2)))
    (directory / "test_batch").write_bytes(cifar_batch_bytes(*fake_cifar(1)))


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("PNC_DATA", raising=False)


# --------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_round_trip(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype == "uint8":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array, gz)
    out = files.read_idx(path)
    assert out.dtype == array.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_detects_gzip_by_magic(tmp_path):
    array = np.arange(5, dtype=np.uint8)
    path = write_idx(tmp_path / "labels-no-suffix", array, gz=True)
    np.testing.assert_array_equal(files.read_idx(path), array)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("badmagic", b"\x08\x03\x00\x00" + bytes(16), "magic"),
        ("badcode", b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        ("short", b"\x00\x00", "too short"),
        ("header", b"\x00\x00\x08\x03" + struct.pack(">I", 5), "truncated IDX header"),
        ("truncated", idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "size mismatch"),
        ("trailing", idx_bytes(np.zeros(3, np.int32)) + b"\x00", "size mismatch"),
        ("garbage.gz", b"not gzip at all", "gzip"),
        ("cut.gz", gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-10], "gzip"),
    ],
)
def test_read_idx_corrupt_names_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        files.read_idx(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.mark.parametrize("protocol, old_numpy", [(3, True), (pickle.HIGHEST_PROTOCOL, False)])
def test_read_cifar10_batch_layout(tmp_path, protocol, old_numpy):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(7, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7)
    payload = cifar_batch_bytes(data, labels, protocol)
    if old_numpy:  # real batches were written by old numpy: arrays refer to numpy.core
        payload = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
    (tmp_path / "b").write_bytes(payload)
    images, out_labels = files.read_cifar10_batch(tmp_path / "b")
    assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8
    assert out_labels.dtype == np.int32
    np.testing.assert_array_equal(out_labels, labels)
    n, y, x, c = 3, 5, 17, 2  # row n holds R plane, G plane, B plane, each row-major
    assert images[n, y, x, c] == data[n, c * 1024 + y * 32 + x]


@pytest.mark.parametrize("subdir", ["cifar-10-batches-py", "."])
def test_read_cifar10_split(tmp_path, subdir):
    write_fake_cifar(tmp_path / subdir)
    images, labels = files.read_cifar10(tmp_path, train=True)
    assert images.shape == (100, 32, 32, 3) and labels.shape == (100,)
    images, labels = files.read_cifar10(tmp_path, train=False)
    assert images.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(images[:, 4, 9, 1], 10 * labels + 50)


@pytest.mark.parametrize(
    "content, message",
    [
        (cifar_batch_bytes(*fake_cifar(1))[:-50], "not a valid CIFAR-10 batch"),
        (b"garbage", "not a valid CIFAR-10 batch"),
        (pickle.dumps({b"data": collections.OrderedDict()}), "unexpected object"),
        (pickle.dumps({b"labels": [1]}), "not a valid CIFAR-10 batch"),
        (cifar_batch_bytes(np.zeros((2, 100), np.uint8), [0, 1]), "expected uint8 data"),
        (cifar_batch_bytes(np.zeros((2, 3072), np.uint8), [0]), "labels"),
    ],
)
def test_read_cifar10_corrupt_names_file(tmp_path, content, message):
    write_fake_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        files.read_cifar10(tmp_path, train=True)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------
# load_dataset on fake MNIST / FashionMNIST / CIFAR-10


@pytest.mark.parametrize(
    "name, subdir, gz",
    [
        ("mnist", "mnist", True),
        ("mnist", "MNIST/raw", False),
        ("mnist", ".", True),
        ("fashion_mnist", "fashion_mnist", False),
        ("fashion_mnist", "FashionMNIST/raw", True),
    ],
)
def test_load_mnist_layouts_round_trip(tmp_path, no_env, name, subdir, gz):
    splits = write_fake_mnist(tmp_path / subdir, gz)
    d = load_dataset(name, tmp_path)
    mean, std = datasets.NORMALIZATION[name][0][0], datasets.NORMALIZATION[name][1][0]
    assert d.x_train.shape == (10 * N_TRAIN, 784) and d.x_train.dtype == np.float32
    assert d.y_train.dtype == np.int32 and d.input_shape == (28, 28, 1)
    assert d.num_classes == 10 and d.classes == tuple(range(10)) and d.name == name
    for x, y, (images, labels), offset in (
        (d.x_train, d.y_train, splits["train"], 0),
        (d.x_test, d.y_test, splits["t10k"], 1000),
    ):
        raw = unnormalise(x, mean, std)
        index = ids_of(raw) - offset
        assert sorted(index) == list(range(len(labels)))  # each sample exactly once
        np.testing.assert_array_equal(raw, images[index])
        np.testing.assert_array_equal(y, labels[index])
    assert not np.all(np.diff(d.y_train) >= 0), "training data must not be class-sorted"


def test_load_mnist_env_var_and_relabel(tmp_path, monkeypatch):
    splits = write_fake_mnist(tmp_path / "mnist", gz=True)
    monkeypatch.setenv("PNC_DATA", str(tmp_path))
    d = load_dataset("mnist", classes=[7, 3], samples_per_class=4, test_samples_per_class=2)
    assert d.classes == (7, 3) and d.num_classes == 2
    assert np.bincount(d.y_train).tolist() == [4, 4] and np.bincount(d.y_test).tolist() == [2, 2]
    original = splits["train"][1][ids_of(unnormalise(d.x_train, 0.1307, 0.3081))]
    np.testing.assert_array_equal(original, np.array([7, 3])[d.y_train])


def test_caps_are_seeded_and_too_few_raises(tmp_path, no_env):
    write_fake_mnist(tmp_path / "mnist", gz=False)
    a = load_dataset("mnist", tmp_path, samples_per_class=3, seed=1)
    b = load_dataset("mnist", tmp_path, samples_per_class=3, seed=1)
    c = load_dataset("mnist", tmp_path, samples_per_class=3, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    with pytest.raises(ValueError, match=r"class 0 has only 6 train samples.*7"):
        load_dataset("mnist", tmp_path, samples_per_class=7)
    with pytest.raises(ValueError, match=r"class 5 has only 3 test samples"):
        load_dataset("mnist", tmp_path, classes=(5,), test_samples_per_class=4)


def test_load_cifar10_normalisation_and_resize(tmp_path, no_env):
    write_fake_cifar(tmp_path / "cifar-10-batches-py")
    d = load_dataset("cifar10", tmp_path, classes=(2, 9), resize=(8, 4), resize_method="area")
    assert d.input_shape == (8, 4, 3) and d.x_train.shape == (20, 96)
    assert np.bincount(d.y_train).tolist() == [10, 10]
    mean, std = (np.array(v) for v in datasets.NORMALIZATION["cifar10"])
    expected = ((10 * np.array([2, 9])[d.y_train][:, None] + 50 * np.arange(3)) / 255 - mean) / std
    images = d.x_train.reshape(-1, 8, 4, 3)
    np.testing.assert_allclose(
        images, np.broadcast_to(expected[:, None, None], images.shape), rtol=1e-5, atol=1e-5
    )


# --------------------------------------------------------------------------------------------
# Resize


@pytest.mark.parametrize("method", datasets.RESIZE_METHODS)
@pytest.mark.parametrize("n_in, n_out", [(28, 10), (10, 10), (7, 3), (4, 9)])
def test_resize_matrix_rows_average(method, n_in, n_out):
    m = resize_matrix(n_in, n_out, method)
    assert m.shape == (n_out, n_in) and np.all(m >= 0)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)


@pytest.mark.parametrize("method", datasets.RESIZE_METHODS)
def test_resize_constant_stays_constant(method):
    images = np.full((2, 28, 28, 3), 0.7, dtype=np.float32)
    out = resize_images(images, (10, 10), method)
    assert out.shape == (2, 10, 10, 3)
    np.testing.assert_allclose(out, 0.7, rtol=1e-6)


def test_resize_area_gives_block_means():
    rng = np.random.default_rng(0)
    images = rng.random((3, 8, 6, 2)).astype(np.float32)
    blocks = images.reshape(3, 4, 2, 3, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(resize_images(images, (4, 3), "area"), blocks, rtol=1e-5)


def test_resize_bilinear_matches_pil():
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow (a matplotlib dependency)")
    rng = np.random.default_rng(0)
    for (h_in, w_in), (h, w) in [((28, 28), (10, 10)), ((7, 5), (3, 4)), ((6, 6), (11, 13))]:
        image = rng.random((h_in, w_in)).astype(np.float32)
        expected = np.asarray(image_mod.fromarray(image).resize((w, h), image_mod.BILINEAR))
        ours = resize_images(image[None, :, :, None], (h, w), "bilinear")[0, :, :, 0]
        np.testing.assert_allclose(ours, expected, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Errors: arguments, missing files


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "imagenet"}, "imagenet"),
        ({"classes": (3, 10)}, "class 10"),
        ({"classes": (-1,)}, "class -1"),
        ({"classes": (2, 2)}, "repeats"),
        ({"classes": ()}, "non-empty"),
        ({"resize": (0, 5)}, r"\(0, 5\)"),
        ({"resize": -3}, "-3"),
        ({"samples_per_class": 0}, "samples_per_class"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"resize_method": "cubic"}, "cubic"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, message):
    kwargs = {"name": "mnist", "data_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)


def test_missing_mnist_lists_places(tmp_path, no_env):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion_mnist", tmp_path)
    message = str(info.value)
    for sub in ("fashion_mnist", "FashionMNIST/raw"):
        assert str(tmp_path / sub / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "train-labels-idx1-ubyte") in message
    assert "--data-dir" in message and "PNC_DATA" in message
    with pytest.raises(FileNotFoundError, match="no data directory"):
        load_dataset("mnist")


def test_missing_cifar_lists_places(tmp_path, no_env):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(info.value)
    assert str(tmp_path / "data_batch_5") in str(info.value)


def test_missing_mnist10k_lists_places(tmp_path, monkeypatch, no_env):
    monkeypatch.setattr(datasets, "SHARED_DATASETS_DIR", tmp_path / "shared")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist10k")
    for place in (tmp_path / "shared", tmp_path):
        assert str(place / "mnist10k.npz") in str(info.value)
    assert "PNC_DATA" in str(info.value)


def test_explicit_data_dir_without_mnist10k_is_an_error_not_the_shared_copy(
        tmp_path, monkeypatch, no_env):
    """A wrong --data-dir / PNC_DATA must not silently train on another copy of the data."""
    images, labels = fake_mnist_split(2, 0)
    monkeypatch.setattr(datasets, "SHARED_DATASETS_DIR", tmp_path / "shared")
    (tmp_path / "shared").mkdir()
    np.savez(tmp_path / "shared" / "mnist10k.npz", images=images, labels=labels)
    assert len(load_dataset("mnist10k").y_train) == 10  # the shared copy, when nothing is given
    wrong = tmp_path / "nonexistent"
    with pytest.raises(FileNotFoundError, match="only place searched") as info:
        load_dataset("mnist10k", wrong)
    assert str(wrong / "mnist10k.npz") in str(info.value)
    assert str(tmp_path / "shared") not in str(info.value)
    monkeypatch.setenv("PNC_DATA", str(wrong))
    with pytest.raises(FileNotFoundError, match=str(wrong / "mnist10k.npz")):
        load_dataset("mnist10k")


def _with_labels(labels, bad: dict[int, int]):
    labels = labels.astype(np.int64)
    for i, value in bad.items():
        labels[i] = value
    return labels


@pytest.mark.parametrize("bad", [{0: 10}, {3: -1, 7: 200, 11: 10}])
def test_labels_outside_0_to_9_are_refused_by_name_and_count(tmp_path, no_env, bad):
    """npz, IDX and CIFAR label files with labels outside [0, 10): a ValueError naming the file
    and how many, not 10-20% of the samples silently dropped."""
    count = f"{len(bad)} of "
    images, labels = fake_mnist_split(2, 0)
    np.savez(tmp_path / "mnist10k.npz", images=images, labels=_with_labels(labels, bad))
    with pytest.raises(ValueError, match=f"{count}20 labels outside \\[0, 10\\)") as info:
        load_dataset("mnist10k", tmp_path)
    assert str(tmp_path / "mnist10k.npz") in str(info.value)

    write_fake_mnist(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte"
    dtype = np.int8 if min(bad.values()) < 0 else np.uint8
    write_idx(path, _with_labels(files.read_idx(path), bad).astype(dtype))
    with pytest.raises(ValueError, match=f"{count}{10 * N_TRAIN} labels outside") as info:
        load_dataset("mnist", tmp_path)
    assert str(path) in str(info.value)

    data, labels = fake_cifar(2)
    directory = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(directory)
    (directory / "test_batch").write_bytes(cifar_batch_bytes(data, _with_labels(labels, bad)))
    with pytest.raises(ValueError, match=f"{count}20 labels outside") as info:
        load_dataset("cifar10", tmp_path)
    assert str(directory / "test_batch") in str(info.value)


def test_idx_test_labels_all_out_of_range_name_the_file(tmp_path, no_env):
    """Used to end in "cannot reshape array of size 0" after dropping every test sample."""
    write_fake_mnist(tmp_path / "mnist", gz=True)
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, np.full(10 * N_TEST, 11, np.uint8), gz=True)
    with pytest.raises(ValueError, match=f"{path}: {10 * N_TEST} of {10 * N_TEST} labels"):
        load_dataset("mnist", tmp_path)


def test_a_class_without_samples_is_named(tmp_path, no_env):
    images, labels = fake_mnist_split(3, 0)
    keep = labels != 4  # no 4s in the file at all
    np.savez(tmp_path / "mnist10k.npz", images=images[keep], labels=labels[keep])
    with pytest.raises(ValueError, match="class 4 has no train samples"):
        load_dataset("mnist10k", tmp_path)
    assert len(load_dataset("mnist10k", tmp_path, classes=(3, 5)).y_train) == 4


def test_mnist10k_from_data_dir_and_corrupt(tmp_path, no_env):
    images, labels = fake_mnist_split(10, 0)
    np.savez(tmp_path / "mnist10k.npz", images=images, labels=labels)
    d = load_dataset("mnist10k", tmp_path, test_fraction=0.3)
    assert np.bincount(d.y_test).tolist() == [3] * 10 and len(d.y_train) == 70
    raw = unnormalise(np.concatenate([d.x_train, d.x_test]), 0.1307, 0.3081)
    assert sorted(ids_of(raw)) == list(range(100))  # the split is a partition
    good = (tmp_path / "mnist10k.npz").read_bytes()
    for bad in (b"PK\x03\x04 truncated", good[: len(good) // 2], good[:-30]):
        (tmp_path / "mnist10k.npz").write_bytes(bad)
        with pytest.raises(ValueError, match="mnist10k") as info:
            load_dataset("mnist10k", tmp_path)
        assert str(tmp_path / "mnist10k.npz") in str(info.value)


# --------------------------------------------------------------------------------------------
# mnist10k, the shared real file


@pytest.mark.skipif(not MNIST10K.is_file(), reason=f"shared data file {MNIST10K} not present")
def test_mnist10k_shared_file(no_env):
    images, labels = files.read_mnist10k(MNIST10K)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == MNIST10K_COUNTS
    d = load_dataset("mnist10k")  # found beside the repository, no data_dir needed
    assert len(d.x_train) + len(d.x_test) == 10000
    total = np.bincount(d.y_train, minlength=10) + np.bincount(d.y_test, minlength=10)
    assert total.tolist() == MNIST10K_COUNTS
    np.testing.assert_array_equal(np.bincount(d.y_test), np.rint(0.2 * np.array(MNIST10K_COUNTS)))
    assert abs(float(d.x_train.mean())) < 0.05 and abs(float(d.x_train.std()) - 1) < 0.05
    # He & Su: 100 training images per class at 10 x 10, shuffled, reproducible from the seed.
    a = load_dataset("mnist10k", MNIST10K.parent, samples_per_class=100, resize=(10, 10), seed=3)
    b = load_dataset("mnist10k", MNIST10K.parent, samples_per_class=100, resize=(10, 10), seed=3)
    c = load_dataset("mnist10k", MNIST10K.parent, samples_per_class=100, resize=(10, 10), seed=4)
    assert a.x_train.shape == (1000, 100) and a.input_shape == (10, 10, 1)
    assert np.bincount(a.y_train).tolist() == [100] * 10
    assert len(set(a.y_train[:100].tolist())) >= 8  # any batch of 100 mixes the classes
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_train, c.x_train)


# --------------------------------------------------------------------------------------------
# Downloads, with urlopen replaced (no network)


def test_download_mnist_uses_mirrors_and_checksums(tmp_path, monkeypatch, no_env):
    served, requested = {}, []
    for prefix, n, offset in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1000)):
        images, labels = fake_mnist_split(n, offset)
        served[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        served[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    first, second = files.MNIST_MIRRORS["mnist"][:2]

    def fake_urlopen(url, timeout):
        requested.append(url)
        if url.startswith(first):
            raise urllib.error.URLError("mirror down")
        return io.BytesIO(served[url.rpartition("/")[2]])

    monkeypatch.setattr(files, "urlopen", fake_urlopen)

    for filename, content in served.items():
        monkeypatch.setitem(files.MNIST_MD5["mnist"], filename, hashlib.md5(content).hexdigest())
    d = load_dataset("mnist", tmp_path, download=True)
    assert d.x_train.shape == (10 * N_TRAIN, 784)
    assert sorted(requested) == sorted(
        base + f for base in (first, second) for f in files.MNIST_MD5["mnist"]
    )
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(served)
    requested.clear()
    load_dataset("mnist", tmp_path, download=True)  # present: nothing fetched
    assert requested == []


def test_download_bad_checksum_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "urlopen", lambda url, timeout: io.BytesIO(b"wrong"))
    with pytest.raises(OSError, match="MD5") as info:
        files.download_mnist(tmp_path, "fashion_mnist")
    for base in files.MNIST_MIRRORS["fashion_mnist"]:
        assert base + "train-images-idx3-ubyte.gz" in str(info.value)
    assert list((tmp_path / "fashion_mnist").iterdir()) == []


def test_download_cifar10_extracts_only_batches(tmp_path, monkeypatch, no_env):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        source = tmp_path / "source"
        write_fake_cifar(source)
        for path in source.iterdir():
            tar.add(path, arcname=f"cifar-10-batches-py/{path.name}")
        evil = tarfile.TarInfo("../evil")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    archive = buffer.getvalue()

    monkeypatch.setattr(files, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(files, "urlopen", lambda url, timeout: io.BytesIO(archive))
    data_dir = tmp_path / "data"
    d = load_dataset("cifar10", data_dir, download=True)
    assert d.x_train.shape == (100, 3072) and d.x_test.shape == (10, 3072)
    assert not (tmp_path / "evil").exists() and not (data_dir / "cifar-10-python.tar.gz").exists()
