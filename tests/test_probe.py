"""Linear probes (pnc_jax.probe): separable -> ~100%, random labels -> chance on test, and the
zero-padded, vmapped-over-layers program equals one probe per layer."""

import numpy as np
import pytest

from pnc_jax import probe

K = 4


def _mixture(seed, n, m, sep):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n).astype(np.int32)
    mu = sep * rng.standard_normal((K, m))
    return (mu[y] + rng.standard_normal((n, m)) + 3.0).astype(np.float32), y  # offset: centring


def test_separable_features_reach_100_percent():
    x, y = _mixture(0, 600, 10, sep=4.0)
    out = probe.fit_probes(x[None, :400], y[:400], x[None, 400:], y[400:], K)
    assert out["train_accuracy"][0] >= 0.99
    assert out["test_accuracy"][0] >= 0.98
    mini = probe.fit_probes(x[None, :400], y[:400], x[None, 400:], y[400:], K, batch_size=64,
                            steps=400)
    assert mini["train_accuracy"][0] >= 0.99


def test_random_labels_give_chance_on_test():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2050, 60)).astype(np.float32)
    y = rng.integers(0, K, 2050).astype(np.int32)
    out = probe.fit_probes(x[:, :50], y[:50], x[:, 50:], y[50:], K, steps=300, lr=0.05)
    assert out["train_accuracy"][0] == 1.0  # 50 points in 60 dims: any labels are separable
    assert abs(out["test_accuracy"][0] - 1 / K) < 0.05  # 2000 test points: sd ~0.01


def test_vmapped_padded_equals_per_layer():
    """Layers of widths 5, 12, 20 (one with a dead unit) in one program == three probes."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, K, 300).astype(np.int32)
    layers = []
    for m, sep in ((5, 0.5), (12, 1.0), (20, 2.0)):
        mu = sep * rng.standard_normal((K, m))
        layers.append(mu[y] + rng.standard_normal((300, m)))
    layers[1][:, 3] = 0.0  # a dead ReLU unit
    train, test = [h[:200] for h in layers], [h[200:] for h in layers]
    kw = {"steps": 150, "lr": 0.05}
    joint = probe.fit_probes(probe.pad_layers(train), y[:200], probe.pad_layers(test), y[200:],
                             K, **kw)
    assert joint["train_accuracy"].shape == (3,)
    for i in range(3):
        alone = probe.fit_probes(train[i][None], y[:200], test[i][None], y[200:], K, **kw)
        for key in ("train_accuracy", "test_accuracy"):
            assert joint[key][i] == alone[key][0], key
        np.testing.assert_allclose(joint["final_loss"][i], alone["final_loss"][0], rtol=1e-10)
    assert joint["train_accuracy"][2] > joint["train_accuracy"][0]  # more separable, higher


def test_pad_layers_and_errors():
    a, b = np.ones((4, 2)), 2 * np.ones((4, 3))
    p = probe.pad_layers([a, b])
    assert p.shape == (2, 4, 3) and not p[0, :, 2:].any() and (p[1] == 2).all()
    with pytest.raises(ValueError, match="same N"):
        probe.pad_layers([a, np.ones((5, 2))])
    with pytest.raises(ValueError, match="width"):
        probe.pad_layers([b], width=2)
    x = np.zeros((1, 4, 3), np.float32)
    with pytest.raises(ValueError, match="labels"):
        probe.fit_probes(x, np.array([0, 1, 2, 9]), x, np.zeros(4, int), K)
    with pytest.raises(ValueError, match="features"):
        probe.fit_probes(x[0], np.zeros(4, int), x, np.zeros(4, int), K)
