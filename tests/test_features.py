"""Streaming per-layer features (pnc_jax.features) equal the in-memory metrics in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnc_jax import features, metrics
from pnc_jax.config import Config
from pnc_jax.train import dtype_of as trainer_dtype
from pnc_jax.train import make_trainer

K, N, D = 3, 203, 12
RTOL = 1e-9
NAMES = {"compression": metrics.compression, "discrimination": metrics.discrimination,
         "nc1": metrics.nc1, "fuzziness": metrics.separation_fuzziness}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(N) % K).astype(np.int32)
    mu = 2.0 * rng.standard_normal((K, D))
    return (mu[y] + rng.standard_normal((N, D))).astype(np.float32), y


def _models(kind="hybrid", depths=(3, 4), dtype="float64"):
    """Untrained models of ``depths`` padded to max(depths), stacked; BatchNorm running
    statistics set to non-trivial values so eval and train mode differ. float64 models: the
    vmapped and the reference forward pass then agree to ~1e-16 (in float32, BatchNorm's batch
    statistics round differently under vmap, ~1e-7)."""
    cfg = Config(model=kind, depths=depths, width=8, num_nonlinear=2, num_classes=K,
                 init_scale=1.0, seeds=(0,), dtype=dtype)
    trainer = make_trainer(cfg, D, N)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(len(depths))])
    state = jax.jit(jax.vmap(trainer.init))(keys, jnp.asarray(depths))
    # (flax keeps BatchNorm statistics in float32 whatever the model dtype: cast them too)
    stats = jax.tree.map(lambda a: (a + 0.3).astype(trainer_dtype(cfg)), state.stats)
    return trainer, state._replace(stats=stats)


def _one(state, i):
    return jax.tree.map(lambda a: a[i], state)


def _reference(trainer, state, x, y, batch, bn_train):
    """In-memory features (batch by batch, as BatchNorm in train mode needs) and metrics."""
    apply = jax.jit(trainer.apply, static_argnums=4)
    parts = [apply(state.params, state.stats, x[a:a + batch], state.depth, bn_train)[:2]
             for a in range(0, N, batch)]
    hs = [np.concatenate([np.asarray(p[1][l]) for p in parts]) for l in range(int(state.depth))]
    logits = np.concatenate([np.asarray(p[0]) for p in parts])
    out = {name: np.array([float(fn(h, y, K)) for h in hs]) for name, fn in NAMES.items()}
    out["numerical_rank"] = np.array([int(metrics.numerical_rank(h)) for h in hs])
    out.update(metrics.layerwise(metrics.nc2, hs, y, K))
    out["nc4"] = metrics.layerwise(metrics.nc4, hs, y, K, logits=logits)
    return out, hs


BATCH = 50  # does not divide N: a short last batch


@pytest.fixture(scope="module")
def hybrid():
    """Two hybrid models (depths 3 and 4, padded to 4), data, and both BatchNorm modes."""
    x, y = _data()
    trainer, state = _models()
    got = {bn: features.layer_metrics(trainer, state, x, y, K, batch_size=BATCH, bn_train=bn)
           for bn in (False, True)}
    return trainer, state, x, y, got


@pytest.mark.parametrize("bn_train", [False, True])
def test_streaming_equals_in_memory(hybrid, bn_train):
    trainer, state, x, y, results = hybrid
    got = results[bn_train]
    assert got["bn_train"] is bn_train and got["batch_size"] == BATCH
    assert got["compression"].shape == (2, 4)
    for i, depth in enumerate((3, 4)):
        ref, _ = _reference(trainer, _one(state, i), x, y, BATCH, bn_train)
        for name in (*NAMES, "nc2_equinorm", "nc2_equiangularity", "nc2_max_angle_gap", "nc4"):
            np.testing.assert_allclose(got[name][i, :depth], ref[name], rtol=RTOL, err_msg=name)
        np.testing.assert_array_equal(got["numerical_rank"][i, :depth], ref["numerical_rank"])


def test_bn_mode_matters(hybrid):
    *_, results = hybrid
    evals, trains = results[False], results[True]
    np.testing.assert_array_equal(evals["compression"][:, 0], trains["compression"][:, 0])
    assert not np.allclose(evals["compression"][:, 1:], trains["compression"][:, 1:])


def test_single_model_full_batch():
    """A state without model axis gives (L,) arrays; batch_size 0 = one batch."""
    x, y = _data(2)
    trainer, state = _models(kind="linear", depths=(4,))
    single = _one(state, 0)
    got = features.layer_metrics(trainer, single, x, y, K, batch_size=0)
    assert got["batch_size"] == N and got["compression"].shape == (4,)
    ref, _ = _reference(trainer, single, x, y, N, False)
    for name in NAMES:
        np.testing.assert_allclose(got[name], ref[name], rtol=RTOL, err_msg=name)


def test_float32_model_without_x64():
    """A caller with x64 off: the forward pass stays float32, the statistics float64 (the same
    numbers as with x64 on, whose float32 forward pass is the same computation)."""
    x, y = _data(3)
    trainer, state = _models(kind="linear", depths=(3,), dtype="float32")
    single = _one(state, 0)
    want = features.layer_metrics(trainer, single, x, y, K, batch_size=BATCH)
    with jax.enable_x64(False):
        got = features.layer_metrics(trainer, single, x, y, K, batch_size=BATCH)
        assert not jax.config.jax_enable_x64
    for name in (*NAMES, "nc4"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, err_msg=name)


@pytest.mark.parametrize("shape,decay", [((300, 40), 0.9), ((30, 50), 0.8), ((500, 64), 0.97)])
def test_rank_from_gram_equals_svd(shape, decay):
    rng = np.random.default_rng(shape[0])
    n, m = shape
    u, _ = np.linalg.qr(rng.standard_normal((n, min(n, m))))
    v, _ = np.linalg.qr(rng.standard_normal((m, min(n, m))))
    h = (u * decay ** np.arange(min(n, m))) @ v.T
    ref = int(metrics.numerical_rank(h))
    assert int(features.rank_from_gram(h.T @ h)) == ref
    s = np.linalg.svd(h, compute_uv=False)
    for energy in (0.5, 0.9, 0.99):
        assert int(features.rank_from_singular_values(s[::-1], energy)) == int(
            metrics.numerical_rank(h, energy=energy))


def test_collect_features_pads_with_zeros(hybrid):
    trainer, state, x, y, _ = hybrid
    single = _one(state, 1)  # depth 4
    got = features.collect_features(trainer, single, x, batch_size=BATCH, layers=[0, 2, 3])
    assert got.shape == (3, N, D) and got.dtype == np.float32
    _, hs = _reference(trainer, single, x, y, BATCH, False)
    np.testing.assert_allclose(got[0], hs[0], rtol=1e-6)
    np.testing.assert_allclose(got[1, :, :8], hs[2], rtol=1e-6, atol=1e-6)
    assert not got[1:, :, 8:].any()
    with pytest.raises(ValueError, match="layers"):
        features.collect_features(trainer, single, x, layers=[4])


def test_bad_inputs(hybrid):
    trainer, state, x, y, _ = hybrid
    with pytest.raises(ValueError, match="batch_size"):
        features.layer_metrics(trainer, state, x, y, K, batch_size=-1)
    with pytest.raises(ValueError, match="labels"):
        features.layer_metrics(trainer, state, x, y + K, K)
