"""pnc_jax.optim's Adam and step schedule against a hand-written numpy reference of
torch.optim.Adam(weight_decay=wd) (coupled decay: g <- g + wd p) stepped per minibatch, with
torch.optim.lr_scheduler.MultiStepLR(milestones, gamma=0.1) stepped per epoch. The reference
uses none of pnc_jax's or optax's code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnc_jax.config import Config
from pnc_jax.optim import epoch_lr, make_optimizer

# loss(p) = sum_k sum(0.5 * C_k p_k^2 + D_k p_k) (elementwise): gradient C_k p_k + D_k
_RNG = np.random.default_rng(7)
_P0 = {"a": _RNG.normal(size=(3, 2)), "b": _RNG.normal(size=(4,))}
_C = {k: _RNG.uniform(0.5, 2.0, size=v.shape) for k, v in _P0.items()}
_D = {k: _RNG.normal(size=v.shape) for k, v in _P0.items()}


def _grad_np(p):
    return {k: _C[k] * p[k] + _D[k] for k in p}


def _multistep_lr(lr, milestones, epoch):
    """MultiStepLR after ``epoch`` scheduler.step() calls: lr * 0.1^(milestones reached)."""
    return lr * 0.1 ** sum(1 for m in milestones if epoch >= m)


def _torch_adam(p0, lrs, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam.step, one call per entry of ``lrs`` (the lr in force at that step)."""
    p = {k: v.copy() for k, v in p0.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, lr in enumerate(lrs, start=1):
        g = _grad_np(p)
        for k in p:
            gk = g[k] + weight_decay * p[k]
            m[k] = b1 * m[k] + (1 - b1) * gk
            v2[k] = b2 * v2[k] + (1 - b2) * gk * gk
            denom = np.sqrt(v2[k]) / np.sqrt(1 - b2**t) + eps
            p[k] = p[k] - (lr / (1 - b1**t)) * m[k] / denom
    return p


def _optax_run(cfg, steps_per_epoch, steps):
    tx = make_optimizer(cfg, steps_per_epoch)

    def loss(p):
        return sum(jnp.sum(0.5 * _C[k] * p[k] ** 2 + _D[k] * p[k]) for k in p)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return jax.tree.map(jnp.add, params, updates), state

    params = {k: jnp.asarray(v) for k, v in _P0.items()}
    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return {k: np.asarray(v) for k, v in params.items()}


def test_step_schedule_divides_by_ten_at_each_milestone():
    cfg = Config(lr=3e-3, schedule="step", milestones=(2, 4), epochs=6)
    got = [float(epoch_lr(cfg, jnp.int32(e))) for e in range(6)]
    np.testing.assert_allclose(got, [3e-3, 3e-3, 3e-4, 3e-4, 3e-5, 3e-5], rtol=1e-12)
    # a per-depth base lr (depth_lrs) is scaled the same way
    np.testing.assert_allclose(float(epoch_lr(cfg, jnp.int32(5), 1e-3)), 1e-5, rtol=1e-12)


@pytest.mark.parametrize("weight_decay", [5e-4, 0.0, 0.3])
def test_adam_with_step_schedule_matches_torch_reference(weight_decay):
    """3 steps per epoch, milestones at epochs 2 and 3 of 5: lr changes only at the steps that
    begin those epochs; 15 steps agree to float64 rounding."""
    milestones, n_steps, steps = (2, 3), 3, 15
    cfg = Config(optimizer="adam", lr=0.05, weight_decay=weight_decay, schedule="step",
                 milestones=milestones, epochs=5)
    lrs = [_multistep_lr(0.05, milestones, s // n_steps) for s in range(steps)]
    assert lrs[5] == 0.05 and lrs[6] == pytest.approx(0.005) and lrs[9] == pytest.approx(5e-4)
    ref = _torch_adam(_P0, lrs, weight_decay)
    got = _optax_run(cfg, n_steps, steps)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-14)
    # and not a schedule that steps per update
    per_step = _torch_adam(_P0, [_multistep_lr(0.05, milestones, s) for s in range(steps)],
                           weight_decay)
    assert not np.allclose(got["a"], per_step["a"], rtol=1e-6)


def test_adam_weight_decay_is_coupled():
    """With a zero loss gradient the first Adam step is p - lr * sign(p) (m_hat / sqrt(v_hat)
    = g / |g| for g = wd p): coupled decay goes through the moments, unlike AdamW's p - lr wd p."""
    cfg = Config(optimizer="adam", lr=0.01, weight_decay=0.1, schedule="constant", epochs=1)
    tx = make_optimizer(cfg, 1)
    p = {"w": jnp.asarray([2.0, -0.5, 1e-3])}
    updates, _ = tx.update({"w": jnp.zeros(3)}, tx.init(p), p)
    g = 0.1 * np.array([2.0, -0.5, 1e-3])
    expected = -0.01 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-10)
