"""models: the paper's orthogonal init, PyTorch's default init, pad-and-mask depths, ReLU layers.

References are numpy float64 (matrix products of ``weight_matrices``, SVDs), never the module
under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pnc_jax.config import Config
from pnc_jax.models import (
    MODELS,
    build_network,
    default_init,
    orthogonal_init,
    register_model,
    weight_matrices,
)

D, WIDTH, K = 12, 9, 3  # d > width on purpose: W_1 has zero-padded columns


def _net(depth, *, kind="linear", seed=0, input_dim=D, width=WIDTH, num_classes=K,
         dtype=jnp.float64, init_scale=0.7, **kw):
    """The registered model ``kind`` (built as the trainer builds it)."""
    cfg = Config(model=kind, width=width, num_classes=num_classes, init_scale=init_scale,
                 dtype="float64" if dtype == jnp.float64 else "float32", **kw)
    return build_network(cfg, input_dim, depth, jax.random.PRNGKey(seed))


def _x(n=20, d=D, seed=1):
    return np.random.default_rng(seed).standard_normal((n, d))


def _w_outxin(init, key, n_in, n_out):
    """The paper's W (out x in) from an NNX kernel initialiser (kernels are stored in x out)."""
    return np.asarray(init(key, (n_in, n_out), jnp.float64)).T


# ----------------------------------------------------------------------------- initialisers


@pytest.mark.parametrize(
    "n_in, n_out",
    [(20, 50), (80, 50), (50, 50), (50, 3)],
    ids=["W1 d<width", "W1 d>width", "hidden", "classifier"],
)
def test_orthogonal_init_is_scaled_orthogonal_and_zero_padded(n_in, n_out):
    xi = 0.3
    w = _w_outxin(orthogonal_init(xi), jax.random.PRNGKey(3), n_in, n_out)
    assert w.shape == (n_out, n_in)
    r = min(n_in, n_out)
    # the first r columns are xi * (orthonormal columns): every singular value is xi
    np.testing.assert_allclose(w[:, :r].T @ w[:, :r], xi**2 * np.eye(r), atol=1e-12)
    s = np.linalg.svd(w, compute_uv=False)
    np.testing.assert_allclose(s, np.full(r, xi), rtol=1e-12)
    # columns r.. (d - width of them for W_1 with d > width, K.. for W_L) are exactly zero
    assert np.all(w[:, r:] == 0.0)
    if n_in > n_out:  # a zero-padded W: its square block is a full orthogonal matrix
        np.testing.assert_allclose(w[:, :r] @ w[:, :r].T, xi**2 * np.eye(n_out), atol=1e-12)


def test_orthogonal_init_in_network_follows_the_paper():
    """W_1 = xi U (d > width: zero columns), hidden xi * orthogonal, W_L = xi [Q_KxK, 0]."""
    xi = 0.3
    for d, width in [(12, 9), (5, 9)]:
        net = _net(4, input_dim=d, width=width, init_scale=xi)
        ws = [np.asarray(w) for w in weight_matrices(nnx.state(net, nnx.Param), 4)]
        assert [w.shape for w in ws] == [(width, d), (width, width), (width, width), (K, width)]
        r1 = min(d, width)
        np.testing.assert_allclose(np.linalg.svd(ws[0], compute_uv=False), xi, rtol=1e-12)
        assert np.linalg.matrix_rank(ws[0]) == r1
        assert np.all(ws[0][:, r1:] == 0.0)
        for w in ws[1:3]:
            np.testing.assert_allclose(w @ w.T, xi**2 * np.eye(width), atol=1e-12)
        np.testing.assert_allclose(ws[3][:, :K] @ ws[3][:, :K].T, xi**2 * np.eye(K), atol=1e-12)
        assert np.all(ws[3][:, K:] == 0.0)
        # different layers draw different keys
        assert not np.allclose(ws[1], ws[2])


def test_orthogonal_init_is_haar_distributed():
    """QR's sign convention must be undone: LAPACK returns R_00 < 0 whenever a_00 > 0, which
    without the sign fix would make Q_00 negative for every draw."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    q = np.asarray(jax.vmap(lambda k: orthogonal_init(1.0)(k, (2, 2), jnp.float64))(keys))
    frac = np.mean(q[:, 0, 0] > 0)
    assert 0.45 < frac < 0.55, frac
    # the angle of the first column is uniform: E cos = E sin = 0, E cos^2 = 1/2
    assert abs(np.mean(q[:, 0, 0])) < 0.05 and abs(np.mean(q[:, 1, 0])) < 0.05
    assert abs(np.mean(q[:, 0, 0] ** 2) - 0.5) < 0.03
    dets = np.linalg.det(q)
    np.testing.assert_allclose(np.abs(dets), 1.0, atol=1e-12)
    assert 0.45 < np.mean(dets > 0) < 0.55


def test_default_init_is_torch_uniform_bound():
    fan_in, fan_out = 300, 200
    w = np.asarray(default_init(jax.random.PRNGKey(0), (fan_in, fan_out), jnp.float64))
    bound = 1.0 / np.sqrt(fan_in)
    assert w.shape == (fan_in, fan_out)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert abs(w.mean()) < 0.02 * bound
    np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.03)  # variance of U(-b, b)

    net = _net(3, init="default", input_dim=40, width=30)
    ws = weight_matrices(nnx.state(net, nnx.Param), 3)
    for w, fan in zip(ws, [40, 30, 30], strict=True):
        assert np.abs(np.asarray(w)).max() <= 1 / np.sqrt(fan)
        assert np.abs(np.asarray(w)).max() > 0.9 / np.sqrt(fan)


# ----------------------------------------------------------------------------- forward pass


def _numpy_forward(ws, x, relu_layers=0):
    """Features h_0..h_{L-1} and logits from W_1..W_L (out x in), numpy float64, no BatchNorm."""
    h = x
    feats = [h]
    for l, w in enumerate(ws[:-1], start=1):
        h = h @ w.T
        if l <= relu_layers:
            h = np.maximum(h, 0.0)
        feats.append(h)
    return h @ ws[-1].T, feats


@pytest.mark.parametrize("kind, relu_layers", [("linear", 0), ("mlp", 4), ("hybrid", 2)])
def test_forward_equals_numpy_product_of_weight_matrices(kind, relu_layers):
    net = _net(5, kind=kind, num_nonlinear=2, batch_norm=False)
    x = _x()
    logits, feats = net(jnp.asarray(x))
    ws = [np.asarray(w) for w in weight_matrices(nnx.state(net, nnx.Param), 5)]
    ref_logits, ref_feats = _numpy_forward(ws, x, relu_layers)
    assert len(feats) == 5
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-12, atol=1e-14)
    for h, ref in zip(feats, ref_feats, strict=True):
        np.testing.assert_allclose(np.asarray(h), ref, rtol=1e-12, atol=1e-14)


def test_depth_one_network_is_a_single_classifier():
    net = _net(1)
    x = _x()
    logits, feats = net(jnp.asarray(x))
    w = np.asarray(net.classifier.kernel[...]).T
    assert w.shape == (K, D) and len(net.layers) == 0
    assert len(feats) == 1
    np.testing.assert_allclose(np.asarray(logits), x @ w.T, rtol=1e-12)


def test_weight_matrices_of_depth_one():
    net = _net(1)
    ws = weight_matrices(nnx.state(net, nnx.Param), 1)
    assert [tuple(w.shape) for w in ws] == [(K, D)]


# BatchNorm in train mode runs in float32 here: see test_float64_batchnorm_keeps_float64_stats.
@pytest.mark.parametrize(
    "kind, train, dtype",
    [("linear", False, jnp.float64), ("mlp", False, jnp.float64), ("hybrid", False, jnp.float64),
     ("mlp", True, jnp.float32), ("hybrid", True, jnp.float32)],
)
def test_padded_network_equals_unpadded_network(kind, train, dtype):
    """A Network of 8 matrices called with depth=L == the Network of L matrices, same key."""
    x = jnp.asarray(_x(n=24), dtype)
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == jnp.float64 else dict(rtol=1e-5, atol=1e-6)
    padded = _net(8, kind=kind, num_nonlinear=1, seed=5, dtype=dtype)
    apply_padded = nnx.jit(lambda m, x, depth: m(x, depth=depth, train=train))
    for depth in range(2, 9):
        small = _net(depth, kind=kind, num_nonlinear=1, seed=5, dtype=dtype)
        logits, feats = small(x, train=train)
        logits_p, feats_p = apply_padded(padded, x, jnp.int32(depth))
        assert len(feats) == depth and len(feats_p) == 8
        np.testing.assert_allclose(logits_p, logits, **tol)
        for l in range(depth):
            np.testing.assert_allclose(feats_p[l], feats[l], **tol)
        for l in range(depth, 8):  # missing layers are the identity
            np.testing.assert_array_equal(feats_p[l], feats_p[depth - 1])
        # and the padded model's first L weight matrices are those of the small one
        for w_p, w in zip(weight_matrices(nnx.state(padded, nnx.Param), depth),
                          weight_matrices(nnx.state(small, nnx.Param), depth), strict=True):
            np.testing.assert_array_equal(w_p, w)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_relu_layers_are_nonnegative_and_linear_layers_are_not(batch_norm):
    x = jnp.asarray(_x(n=40), jnp.float32)
    _, feats = _net(6, kind="mlp", batch_norm=batch_norm, dtype=jnp.float32)(x, train=True)
    assert all(np.all(np.asarray(h) >= 0) for h in feats[1:])
    assert all(np.mean(np.asarray(h) > 0) > 0.2 for h in feats[1:])  # not dead
    assert np.any(np.asarray(feats[0]) < 0)

    hybrid = _net(6, kind="hybrid", num_nonlinear=2, batch_norm=batch_norm, dtype=jnp.float32)
    assert hybrid.num_blocks == 2
    _, feats = hybrid(x, train=True)
    for l in (1, 2):
        assert np.all(np.asarray(feats[l]) >= 0), l
    for l in (3, 4, 5):
        assert np.any(np.asarray(feats[l]) < 0), l
    assert len(hybrid.norms) == (2 if batch_norm else 0)


def test_batchnorm_train_mode_normalises_with_batch_statistics():
    """mlp with BatchNorm, train=True: h_1 = relu((W_1 x - mean) / sqrt(var + eps)); eval mode
    with fresh running stats (mean 0, var 1): h_1 = relu(W_1 x / sqrt(1 + eps))."""
    net = _net(3, kind="mlp", batch_norm=True, dtype=jnp.float32)
    x = _x(n=30).astype(np.float32)
    w1 = np.asarray(weight_matrices(nnx.state(net, nnx.Param), 3)[0], np.float64)
    z = x.astype(np.float64) @ w1.T
    _, feats = net(jnp.asarray(x), train=False)
    np.testing.assert_allclose(feats[1], np.maximum(z / np.sqrt(1 + 1e-5), 0), atol=2e-6)
    _, feats = net(jnp.asarray(x), train=True)
    ref = np.maximum((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5), 0.0)
    np.testing.assert_allclose(np.asarray(feats[1]), ref, rtol=1e-4, atol=1e-5)
    # running stats moved towards the batch statistics with momentum 0.9
    np.testing.assert_allclose(net.norms[0].mean[...], 0.1 * z.mean(0), rtol=1e-4, atol=1e-6)


def test_float64_batchnorm_keeps_float64_stats():
    net = _net(3, kind="mlp", batch_norm=True, dtype=jnp.float64)
    net(jnp.asarray(_x(n=30)), train=True)
    assert net.norms[0].mean[...].dtype == jnp.float64
    assert net.norms[0].var[...].dtype == jnp.float64


@pytest.mark.parametrize(
    "kind, depth, num_nonlinear, expected",
    [("linear", 5, 3, 0), ("mlp", 5, 0, 4), ("hybrid", 5, 3, 3), ("hybrid", 3, 3, 2),
     ("mlp", 1, 0, 0)],
)
def test_registered_kinds_have_their_nonlinear_blocks(kind, depth, num_nonlinear, expected):
    assert _net(depth, kind=kind, num_nonlinear=num_nonlinear).num_blocks == expected


def test_identity_activation_gives_linear_batchnorm_blocks():
    """activation "identity" (He & Su's no-ReLU ablation): h_1 = BN(W_1 x), negative entries."""
    net = _net(3, kind="mlp", activation="identity", dtype=jnp.float32)
    x = _x(n=30).astype(np.float32)
    w1 = np.asarray(weight_matrices(nnx.state(net, nnx.Param), 3)[0], np.float64)
    z = x.astype(np.float64) @ w1.T
    _, feats = net(jnp.asarray(x), train=True)
    ref = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
    np.testing.assert_allclose(np.asarray(feats[1]), ref, rtol=1e-4, atol=1e-5)
    assert np.any(np.asarray(feats[1]) < 0)


def test_a_registered_kind_is_a_valid_config_choice():
    """One builder + one registry entry: the config accepts the new name and builds it."""
    @register_model("test_two_layer")
    def two_layer(cfg, input_dim, depth, rngs):
        return MODELS["mlp"](cfg, input_dim, 2, rngs)

    try:
        cfg = Config(model="test_two_layer", depths=(5,)).validate()
        assert build_network(cfg, D, 5, jax.random.PRNGKey(0)).depth == 2
    finally:
        del MODELS["test_two_layer"]
    with pytest.raises(ValueError, match="model='test_two_layer' is not one of"):
        Config(model="test_two_layer").validate()


def test_weight_matrices_of_padded_params_keep_the_first_L():
    net = _net(8, input_dim=6, width=10)
    params = nnx.state(net, nnx.Param)
    for depth in (2, 5, 8):
        ws = weight_matrices(params, depth)
        assert [tuple(w.shape) for w in ws] == (
            [(10, 6)] + [(10, 10)] * (depth - 2) + [(K, 10)]
        )
        np.testing.assert_array_equal(ws[-1], np.asarray(net.classifier.kernel[...]).T)
        np.testing.assert_array_equal(ws[0], np.asarray(net.layers[0].kernel[...]).T)
