"""losses, optim and the training engine (train.py), against hand-written references.

References: numpy losses, a torch.optim.SGD-style loop written out by hand, and gradient
descent on a deep linear network written from the paper's formula (its own loss, its own jax.grad
of the weight matrices) -- none of them uses pnc_jax's models, losses or optimiser.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from pnc_jax import fits, metrics
from pnc_jax.config import Config
from pnc_jax.data import nearly_orthonormal
from pnc_jax.losses import cross_entropy, mse
from pnc_jax.models import weight_matrices
from pnc_jax.optim import epoch_lr, make_optimizer
from pnc_jax.train import (
    CONVERGED,
    DIVERGED,
    RUNNING,
    make_train,
    make_trainer,
    steps_per_epoch,
)

# A small deep-linear setting (N = 12, d = width = 16) used by the fast tests.
SMALL = Config(
    input_dim=16, width=16, num_classes=3, samples_per_class=4, depths=(3,), seeds=(0,),
    init_scale=0.6, loss_scale=2.0, lr=0.05, dtype="float64", epochs=40,
)


def _small_data(cfg=SMALL, seed=0):
    return nearly_orthonormal(seed, cfg.num_classes, cfg.samples_per_class, cfg.input_dim)


def _run_one(trainer, key, depth, x, labels, epochs):
    state = jax.jit(trainer.init)(key, depth)
    run = jax.jit(trainer.run, static_argnums=3)
    return run(state, jnp.asarray(x), jnp.asarray(labels), epochs)


def _vmapped(trainer, keys, depths, x, labels, epochs):
    state = jax.jit(jax.vmap(trainer.init))(keys, jnp.asarray(depths, jnp.int32))
    run = jax.jit(jax.vmap(trainer.run, in_axes=(0, None, None, None)), static_argnums=3)
    return run(state, jnp.asarray(x), jnp.asarray(labels), epochs)


def _weights(params, depth):
    return [np.asarray(w, np.float64) for w in weight_matrices(params, depth)]


def _stack_keys(seeds):
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


# ----------------------------------------------------------------------------- losses


def _onehot(labels, k):
    return np.eye(k)[labels]


def test_mse_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((17, 4))
    labels = rng.integers(0, 4, 17)
    for alpha in (1.0, 100.0):
        ref = np.sum((alpha * logits - _onehot(labels, 4)) ** 2) / 17
        np.testing.assert_allclose(mse(jnp.asarray(logits), jnp.asarray(labels), alpha), ref,
                                   rtol=1e-13)


def test_cross_entropy_matches_numpy_log_softmax():
    rng = np.random.default_rng(1)
    logits = 3 * rng.standard_normal((17, 5))
    labels = rng.integers(0, 5, 17)
    for alpha in (1.0, 7.0):
        z = alpha * logits
        log_softmax = z - z.max(1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
        ref = -np.mean(log_softmax[np.arange(17), labels])
        np.testing.assert_allclose(
            cross_entropy(jnp.asarray(logits), jnp.asarray(labels), alpha), ref, rtol=1e-12
        )


# ----------------------------------------------------------------------------- optimiser


def _cosine_lr(lr, final_factor, epochs, epoch):
    """torch.optim.lr_scheduler.CosineAnnealingLR's closed form, T_max = epochs."""
    eta_min = lr * final_factor
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def _torch_sgd(params, grad_fn, lrs, momentum, weight_decay):
    """torch.optim.SGD (dampening 0, not nesterov): the momentum buffer is g on the first step."""
    params = {k: np.array(v, np.float64) for k, v in params.items()}
    bufs = {}
    for lr in lrs:
        grads = grad_fn(params)
        for k in params:
            g = grads[k] + weight_decay * params[k]
            if momentum:
                bufs[k] = g.copy() if k not in bufs else momentum * bufs[k] + g
                g = bufs[k]
            params[k] = params[k] - lr * g
    return params


# a quadratic: f(p) = sum_k 0.5 * c_k p_k^2 + d_k p_k, gradient c_k p_k + d_k
_C = {"a": np.array([1.0, 3.0, 0.5]), "b": np.array([[2.0, 0.1], [4.0, 1.5]])}
_D = {"a": np.array([0.3, -1.0, 2.0]), "b": np.array([[-0.5, 1.0], [0.0, 0.7]])}
_P0 = {"a": np.array([1.0, -2.0, 0.5]), "b": np.array([[0.3, 0.2], [-1.0, 2.0]])}


def _quadratic_grad_np(p):
    return {k: _C[k] * p[k] + _D[k] for k in p}


def _optax_run(cfg, n_steps, steps):
    tx = make_optimizer(cfg, n_steps)
    loss = lambda p: sum(jnp.sum(0.5 * _C[k] * p[k] ** 2 + _D[k] * p[k]) for k in p)  # noqa: E731
    params = {k: jnp.asarray(v) for k, v in _P0.items()}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return jax.tree.map(jnp.add, params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return {k: np.asarray(v) for k, v in params.items()}


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.01), (0.0, 0.01), (0.5, 0.0)])
def test_optimizer_matches_torch_sgd_with_per_epoch_cosine(momentum, weight_decay):
    cfg = Config(lr=0.2, momentum=momentum, weight_decay=weight_decay, schedule="cosine",
                 final_lr_factor=0.1, epochs=4)
    n_steps, steps = 3, 14  # 3 steps per epoch; the last 2 steps run past T_max (epoch 4)
    lrs = [_cosine_lr(0.2, 0.1, 4, s // n_steps) for s in range(steps)]
    assert lrs[0] == lrs[2] == 0.2 and lrs[3] < 0.2  # lr changes per epoch, not per step
    ref = _torch_sgd(_P0, _quadratic_grad_np, lrs, momentum, weight_decay)
    got = _optax_run(cfg, n_steps, steps)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-13, atol=1e-14)
    # and not the per-step schedule
    wrong = _torch_sgd(_P0, _quadratic_grad_np,
                       [_cosine_lr(0.2, 0.1, 4, s / n_steps) for s in range(steps)],
                       momentum, weight_decay)
    assert not np.allclose(got["a"], wrong["a"], rtol=1e-6)


def test_first_momentum_step_is_the_plain_gradient_step():
    """torch: buf = g on step 1 (optax.trace starts at zeros, so mu*0 + g = g as well)."""
    cfg = Config(lr=0.1, momentum=0.9, weight_decay=0.0, schedule="cosine", epochs=10)
    got = _optax_run(cfg, 1, 1)
    g = _quadratic_grad_np(_P0)
    for k in _P0:
        np.testing.assert_allclose(got[k], _P0[k] - 0.1 * g[k], rtol=1e-14)


def test_constant_schedule_is_exact_in_float64():
    cfg = Config(lr=0.1, momentum=0.9, weight_decay=0.01, schedule="constant", epochs=4)
    ref = _torch_sgd(_P0, _quadratic_grad_np, [0.1] * 12, 0.9, 0.01)
    got = _optax_run(cfg, 3, 12)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-13, atol=1e-14)


def test_constant_schedule_to_float32_precision():
    cfg = Config(lr=0.1, momentum=0.9, weight_decay=0.01, schedule="constant", epochs=4)
    ref = _torch_sgd(_P0, _quadratic_grad_np, [0.1] * 12, 0.9, 0.01)
    got = _optax_run(cfg, 3, 12)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6)


def test_epoch_lr_cosine_endpoints():
    cfg = Config(lr=0.3, final_lr_factor=0.01, epochs=100)
    for e in (0, 1, 50, 99, 100):
        np.testing.assert_allclose(epoch_lr(cfg, jnp.int32(e)), _cosine_lr(0.3, 0.01, 100, e),
                                   rtol=1e-13)
    np.testing.assert_allclose(epoch_lr(cfg, jnp.int32(100)), 0.003, rtol=1e-13)


def test_steps_per_epoch_drops_the_remainder():
    assert steps_per_epoch(SMALL, 30) == 1
    assert steps_per_epoch(dataclasses.replace(SMALL, batch_size=30), 30) == 1
    assert steps_per_epoch(dataclasses.replace(SMALL, batch_size=8), 30) == 3
    assert steps_per_epoch(dataclasses.replace(SMALL, batch_size=7), 30) == 4


# ------------------------------------------------------------------------ a reference DLN trainer


def _dln_loss(ws, x, y_onehot, alpha):
    """(1/N) ||alpha W_L ... W_1 X - Y||_F^2 (rows are samples)."""
    h = x
    for w in ws:
        h = h @ w.T
    return jnp.sum((alpha * h - y_onehot) ** 2) / x.shape[0]


def _reference_sgd(ws, x, labels, cfg, epochs, batches_of_epoch=None):
    """Torch-style SGD on the weight matrices (out x in), per-epoch cosine lr.
    Returns the weights and each epoch's mean batch loss (before each step)."""
    y = jnp.asarray(_onehot(labels, cfg.num_classes))
    grad = jax.jit(jax.value_and_grad(_dln_loss), static_argnums=3)
    ws = [jnp.asarray(w) for w in ws]
    bufs = None
    epoch_losses = []
    for e in range(epochs):
        lr = _cosine_lr(cfg.lr, cfg.final_lr_factor, cfg.epochs, e)
        batch_losses = []
        for idx in (batches_of_epoch(e) if batches_of_epoch else [np.arange(len(labels))]):
            loss, gs = grad(ws, jnp.asarray(x)[idx], y[idx], cfg.loss_scale)
            batch_losses.append(float(loss))
            gs = [g + cfg.weight_decay * w for g, w in zip(gs, ws, strict=True)]
            if cfg.momentum:
                bufs = gs if bufs is None else [cfg.momentum * b + g
                                                 for b, g in zip(bufs, gs, strict=True)]
                gs = bufs
            ws = [w - lr * g for w, g in zip(ws, gs, strict=True)]
        epoch_losses.append(np.mean(batch_losses))
    return [np.asarray(w) for w in ws], np.array(epoch_losses)


def test_full_batch_training_matches_reference_gradient_descent():
    cfg = dataclasses.replace(SMALL, momentum=0.9, weight_decay=1e-3, epochs=8)
    x, labels = _small_data(cfg)
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    key = jax.random.PRNGKey(4)
    state0 = trainer.init(key, 3)
    state, losses = _run_one(trainer, key, 3, x, labels, 6)
    ref, ref_losses = _reference_sgd(_weights(state0.params, 3), x, labels, cfg, 6)
    for w, r in zip(_weights(state.params, 3), ref, strict=True):
        np.testing.assert_allclose(w, r, rtol=1e-10, atol=1e-13)
    assert int(state.epoch) == 6 and int(state.status) == RUNNING
    # losses_E[e] is the full-batch loss before epoch e's step
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10)
    np.testing.assert_allclose(state.loss, losses[-1], rtol=0)
    assert np.all(np.diff(np.asarray(losses)) < 0)


def test_minibatch_training_matches_reference_and_counts_epochs():
    """batch 5 of N = 12: 2 steps per epoch (2 samples dropped), reshuffled every epoch from
    fold_in(state.key, epoch); the epoch's loss is the mean of its batch losses."""
    cfg = dataclasses.replace(SMALL, batch_size=5, momentum=0.5, epochs=10)
    x, labels = _small_data(cfg)
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    key = jax.random.PRNGKey(2)
    state0 = trainer.init(key, 3)

    def batches_of_epoch(e):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(state0.key, e), 12))
        return [perm[:5], perm[5:10]]

    assert not np.array_equal(batches_of_epoch(0)[0], batches_of_epoch(1)[0])
    state, losses = _run_one(trainer, key, 3, x, labels, 4)
    ref, ref_losses = _reference_sgd(_weights(state0.params, 3), x, labels, cfg, 4,
                                     batches_of_epoch)
    for w, r in zip(_weights(state.params, 3), ref, strict=True):
        np.testing.assert_allclose(w, r, rtol=1e-10, atol=1e-13)
    # an epoch's loss is the mean of its batch losses
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10)
    assert int(state.epoch) == 4
    # the schedule's step count: 2 optimizer steps per epoch
    counts = [np.asarray(leaf) for leaf in jax.tree.leaves(state.opt_state)
              if np.asarray(leaf).dtype == np.int32]
    assert counts and all(int(c) == 8 for c in counts)
    # more epochs: the loss keeps falling
    state, losses = _run_one(trainer, key, 3, x, labels, 10)
    assert int(state.epoch) == 10 and losses[-1] < 0.5 * losses[0]


# ----------------------------------------------------------------------------- vmap and padding


def test_vmapped_seeds_equal_single_runs():
    cfg = dataclasses.replace(SMALL, depths=(3,), momentum=0.9)
    x, labels = _small_data(cfg)
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    seeds = (0, 1, 7)
    batch, batch_losses = _vmapped(trainer, _stack_keys(seeds), [3] * 3, x, labels, 15)
    for i, s in enumerate(seeds):
        one, losses = _run_one(trainer, jax.random.PRNGKey(s), 3, x, labels, 15)
        jax.tree.map(lambda b, o, i=i: np.testing.assert_allclose(b[i], o, rtol=1e-10,
                                                                  atol=1e-13),
                     batch.params, one.params)
        np.testing.assert_allclose(batch_losses[i], losses, rtol=1e-10)
        assert int(batch.epoch[i]) == int(one.epoch)
    # seeds really differ
    w = [_weights(jax.tree.map(lambda a, i=i: a[i], batch.params), 3)[0] for i in range(3)]
    assert not np.allclose(w[0], w[1])


@pytest.mark.parametrize("kind, dtype, depth", [("linear", "float64", 2), ("mlp", "float32", 3)])
def test_padded_depth_trains_like_unpadded(kind, dtype, depth):
    """Depth L trained inside a network padded to 5 matrices == the network of L matrices.
    (mlp without BatchNorm: see test_mlp_with_batchnorm_trains.)"""
    cfg = dataclasses.replace(SMALL, model=kind, depths=(2, 3, 5), dtype=dtype, batch_norm=False,
                              momentum=0.9, weight_decay=1e-3, init_scale=0.9)
    x, labels = _small_data(cfg)
    tol = dict(rtol=1e-10, atol=1e-13) if dtype == "float64" else dict(rtol=2e-4, atol=2e-6)
    padded = make_trainer(cfg, cfg.input_dim, len(labels), max_depth=5)
    depths = [2, 3, 5]
    batch, batch_losses = _vmapped(padded, _stack_keys([5] * 3), depths, x, labels, 8)
    assert np.all(np.asarray(batch.status) == RUNNING)
    # different depths really train differently
    assert not np.allclose(batch_losses[0], batch_losses[1])
    own = make_trainer(cfg, cfg.input_dim, len(labels), max_depth=depth)
    one, losses = _run_one(own, jax.random.PRNGKey(5), depth, x, labels, 8)
    i = depths.index(depth)
    mine = jax.tree.map(lambda a: a[i], batch.params)
    for w_p, w in zip(_weights(mine, depth), _weights(one.params, depth), strict=True):
        np.testing.assert_allclose(w_p, w, **tol)
    np.testing.assert_allclose(batch_losses[i], losses, **tol)


@pytest.mark.parametrize("kind", ["mlp", "hybrid"])
def test_mlp_with_batchnorm_trains(kind):
    cfg = dataclasses.replace(SMALL, model=kind, num_nonlinear=1, batch_norm=True,
                              dtype="float32", loss_scale=1.0, init_scale=1.0, lr=0.05)
    x, labels = _small_data(cfg)
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    state, losses = _run_one(trainer, jax.random.PRNGKey(0), 3, x, labels, 20)
    assert int(state.epoch) == 20 and losses[-1] < losses[0]
    # the running statistics moved away from their initial (0, 1)
    means = [np.asarray(leaf) for leaf in jax.tree.leaves(state.stats)]
    assert means and not np.allclose(means[0], 0.0)


# ----------------------------------------------------------------------------- stopping rules


def test_converged_model_stops_and_never_changes():
    cfg = dataclasses.replace(SMALL, tol=1e-6, epochs=1000)
    x, labels = _small_data(cfg)
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    state, losses = _run_one(trainer, jax.random.PRNGKey(0), 3, x, labels, 400)
    assert int(state.status) == CONVERGED
    e = int(state.epoch)
    losses = np.asarray(losses)
    # the paper's rule: evaluate, stop if below tol, else step; epoch counts the steps taken
    assert np.all(losses[:e] >= cfg.tol) and losses[e] < cfg.tol
    assert float(state.loss) == losses[e]
    run = jax.jit(trainer.run, static_argnums=3)
    later, _ = run(state, jnp.asarray(x), jnp.asarray(labels), 5)
    jax.tree.map(np.testing.assert_array_equal, later.params, state.params)
    assert int(later.epoch) == e and int(later.status) == CONVERGED


def test_training_stops_at_cfg_epochs():
    cfg = dataclasses.replace(SMALL, epochs=5)
    x, labels = _small_data(cfg)
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    state, losses = _run_one(trainer, jax.random.PRNGKey(0), 3, x, labels, 9)
    assert int(state.epoch) == 5 and int(state.status) == RUNNING
    losses = np.asarray(losses)
    assert np.all(np.diff(losses[:6]) < 0)  # 5 steps taken ...
    np.testing.assert_array_equal(losses[6:], losses[5])  # ... then the params stay put
    assert float(state.loss) == losses[4]  # the loss of the last epoch trained


def test_diverging_model_is_marked_while_the_other_converges():
    """Figure-4 setting (alpha = 100, xi = 0.3, lr 0.1) on small data: depth 2's curvature
    alpha^2 xi^2 ~ 900 times depth 6's makes lr 0.1 a huge step for it; in the same vmapped
    batch depth 2 blows up and depth 6 converges."""
    cfg = dataclasses.replace(SMALL, depths=(2, 6), init_scale=0.3, loss_scale=100.0, lr=0.1,
                              epochs=5000, tol=1e-11)
    x, labels = _small_data(cfg)
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    state, losses = _vmapped(trainer, _stack_keys([0, 0]), [2, 6], x, labels, 200)
    status = np.asarray(state.status)
    assert status[0] == DIVERGED and status[1] == CONVERGED, status
    assert not np.isfinite(float(state.loss[0])) and float(state.loss[1]) < 1e-11
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses[1, : int(state.epoch[1])]))
    # the diverged model stopped updating once its loss was non-finite
    later, _ = jax.jit(jax.vmap(trainer.run, in_axes=(0, None, None, None)), static_argnums=3)(
        state, jnp.asarray(x), jnp.asarray(labels), 3)
    assert np.array_equal(np.asarray(later.epoch), np.asarray(state.epoch))
    np.testing.assert_array_equal(later.status, state.status)


# ----------------------------------------------------------------------------- make_train


def test_make_train_measures_every_k_epochs():
    cfg = dataclasses.replace(SMALL, depths=(2, 4), epochs=12)
    x, labels = _small_data(cfg)
    train = jax.jit(make_train(cfg, x, labels, measure_every=4))
    state, losses, measured = train(jax.random.PRNGKey(3), 3)
    assert losses.shape == (12,)
    assert int(state.epoch) == 12
    for name in ("compression", "discrimination", "nc1", "fuzziness"):
        assert measured[name].shape == (3, cfg.max_depth), name  # 12 / 4 points, L_max layers
    assert measured["loss"].shape == (3,) and measured["accuracy"].shape == (3,)
    # the last measurement is that of the final state; the first is after epoch 4
    trainer = make_trainer(cfg, cfg.input_dim, len(labels))
    final = trainer.measure(state, jnp.asarray(x), jnp.asarray(labels))
    for name in ("compression", "discrimination", "loss", "accuracy"):
        np.testing.assert_allclose(measured[name][-1], final[name], rtol=1e-10)
    np.testing.assert_allclose(measured["loss"][0], losses[4], rtol=1e-10)
    # layer 0 is the input: constant over training; depth 3 inside L_max = 4: h_3 == h_2
    np.testing.assert_allclose(measured["compression"][:, 0], measured["compression"][0, 0])
    np.testing.assert_allclose(measured["compression"][:, 3], measured["compression"][:, 2])
    np.testing.assert_allclose(
        measured["compression"][-1, 0],
        metrics.compression(jnp.asarray(x), jnp.asarray(labels), 3), rtol=1e-12,
    )
    # without measure_every: no metrics (shapes only, nothing compiled)
    state2, losses2, nothing = jax.eval_shape(make_train(cfg, x, labels),
                                              jax.random.PRNGKey(3), 3)
    assert nothing == {} and losses2.shape == (12,)


# ----------------------------------------------------------------------------- the paper's check


def _numpy_compression(h, labels, k):
    mus = np.stack([h[labels == c].mean(0) for c in range(k)])
    within = np.sum((h - mus[labels]) ** 2) / len(labels)
    between = np.sum((mus - mus.mean(0)) ** 2) / k
    return within / between


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_figure4_trains_to_geometric_compression_at_the_predicted_rate(dtype):
    """Wang et al. Figure 4: n=10/class, d=width=50, K=3, L=6, xi=0.3, alpha=100, full-batch SGD
    lr 0.1 (cosine), tol 1e-11. Every seed converges (loss < 1e-10) and C_l falls geometrically
    over l = 1..5 at rho = xi^2 alpha^(2/L) / n^(1/L) = 0.2846 within 3%."""
    cfg = Config(depths=(6,), seeds=(0, 1, 2, 3, 4), dtype=dtype)
    assert (cfg.samples_per_class, cfg.input_dim, cfg.num_classes, cfg.width, cfg.init_scale,
            cfg.loss_scale, cfg.lr, cfg.schedule, cfg.tol) == (
        10, 50, 3, 50, 0.3, 100.0, 0.1, "cosine", 1e-11)
    rho = theory.predict_rates(10, 3, 6, 0.3, 100.0).compression_ratio
    np.testing.assert_allclose(rho, 0.2846, atol=1e-4)
    x, labels = nearly_orthonormal(cfg.data_seed, 3, 10, 50, 1.0)
    trainer = make_trainer(cfg, 50, 30)
    state, losses = _vmapped(trainer, _stack_keys(cfg.seeds), [6] * 5, x, labels, 250)
    assert np.all(np.asarray(state.status) == CONVERGED), np.asarray(state.status)
    assert np.all(np.asarray(state.loss) < 1e-10), np.asarray(state.loss)
    assert np.all(np.asarray(state.epoch) < 250)  # the paper: ~60-250 steps

    xj, lj = jnp.asarray(x, state.params["classifier"]["kernel"][...].dtype), jnp.asarray(labels)
    measured = jax.jit(jax.vmap(trainer.measure, in_axes=(0, None, None)))(state, xj, lj)
    _, feats, _ = jax.jit(jax.vmap(trainer.apply, in_axes=(0, 0, None, 0)))(
        state.params, state.stats, xj, state.depth)
    report = []
    for i in range(5):
        c = np.asarray(measured["compression"][i], np.float64)
        ref = [_numpy_compression(np.asarray(h[i], np.float64), labels, 3) for h in feats]
        np.testing.assert_allclose(c, ref, rtol=1e-8)
        assert np.all(np.diff(c) < 0)
        fit = fits.geometric_fit(c, start=1)
        ratio, r2 = float(fit["ratio"]), float(fit["r2"])
        report.append((ratio, r2))
        assert r2 > 0.999, (i, r2)
        assert abs(ratio / rho - 1) < 0.03, (i, ratio, rho)
        # the deepest layer is compressed ~rho^4 from layer 1
        assert c[5] < 0.01 * c[1]
    print(f"{dtype}: final losses {np.asarray(state.loss)}, (ratio, r2) per seed {report}")
