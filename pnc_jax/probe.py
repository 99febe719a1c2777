"""Linear probes: softmax regression on frozen features, every layer (and model) in one program.

A probe is logits = standardise(h) W + b with W, b zero-initialised and trained by Adam on the
mean cross-entropy for a fixed number of steps (full batch, or random minibatches), then scored by
accuracy on its training and test features. Standardisation uses the training features' mean and
std per coordinate (coordinates with std 0 are only centred) and is folded into W, so no
standardised copy of the features is made.

Layers of different widths share one ``jax.vmap``-ed, jitted program by zero-padding every layer to
a common width (``pad_layers``). This is exact: a padded coordinate is 0 in every sample, so it is
0 after centring, its gradient x^T (p - y) is 0 at every step, Adam's update of a zero gradient
from zero moments is 0, and its weight stays at the zero init; the logits, hence the whole
optimisation, are those of the unpadded probe (up to the summation order of the matmuls). Dead
ReLU units (constant coordinates) are treated the same way.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnc_jax.config import setting

__all__ = ["fit_probes", "pad_layers", "Settings"]

CONSTANT_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the linear probes train (``fit_probes``): Adam on the mean cross-entropy."""

    steps: int = setting(300, "Adam steps of each linear probe")
    lr: float = setting(0.01, "Adam learning rate of the probes")
    batch_size: int = setting(0, "probe minibatch size (0 = full batch)")

    def validate(self) -> Settings:
        if self.steps < 1 or not self.lr > 0 or self.batch_size < 0:
            raise ValueError(f"probe needs steps >= 1, lr > 0, batch_size >= 0; got steps="
                             f"{self.steps}, lr={self.lr}, batch_size={self.batch_size}")
        return self


def pad_layers(layers, width: int | None = None) -> np.ndarray:
    """Stack a list of (N, m_l) arrays into (P, N, width), zero-padding each on the right."""
    layers = [np.asarray(h) for h in layers]
    if not layers or any(h.ndim != 2 for h in layers):
        raise ValueError("layers must be a non-empty list of 2-D (N, m) arrays")
    n = layers[0].shape[0]
    if any(h.shape[0] != n for h in layers):
        raise ValueError(f"every layer needs the same N, got {[h.shape[0] for h in layers]}")
    width = width or max(h.shape[1] for h in layers)
    out = np.zeros((len(layers), n, width), np.result_type(*layers))
    for i, h in enumerate(layers):
        if h.shape[1] > width:
            raise ValueError(f"layer {i} has width {h.shape[1]} > width={width}")
        out[i, :, : h.shape[1]] = h
    return out


def _standardiser(x_NxM):
    """Per-coordinate mean and 1/std; a coordinate whose std is below 1e-6 of the layer's largest
    |h| (zero padding, dead units, rounding noise of a constant) keeps scale 1."""
    mean = jnp.mean(x_NxM, axis=0)
    std = jnp.sqrt(jnp.mean((x_NxM - mean[None, :]) ** 2, axis=0))
    varying = std > CONSTANT_RTOL * jnp.max(jnp.abs(x_NxM))
    return mean, jnp.where(varying, 1.0 / jnp.where(varying, std, 1.0), 1.0)


def _logits(params, x_NxM, mean, scale):
    w, b = params
    ws = w * scale[:, None]  # standardise(x) W + b = x (scale W) + (b - (mean scale) W)
    return jnp.matmul(x_NxM, ws) + (b - jnp.matmul(mean * scale, w))[None, :]


def _accuracy(params, x, y, mean, scale, chunk: int):
    """Accuracy in chunks of ``chunk`` rows (bounded N x K logits)."""
    hits: jax.Array = jnp.zeros((), jnp.int32)
    for a in range(0, x.shape[0], chunk):
        pred = jnp.argmax(_logits(params, x[a:a + chunk], mean, scale), axis=-1)
        hits = hits + jnp.sum(pred == y[a:a + chunk])
    return hits / max(x.shape[0], 1)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps", "lr", "batch_size",
                                             "weight_decay"))
def _fit(x_train, y_train, x_test, y_test, key, *, num_classes, steps, lr, batch_size,
         weight_decay):
    tx = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
    n, m = x_train.shape[1:]
    chunk = 8192

    def one(x, xt):
        mean, scale = _standardiser(x)
        params = (jnp.zeros((m, num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))

        def loss_fn(p, xb, yb):
            logits = _logits(p, xb, mean, scale)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

        def step(carry, t):
            p, opt = carry
            if batch_size:
                idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n)
                xb, yb = x[idx], y_train[idx]
            else:
                xb, yb = x, y_train
            loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
            updates, opt = tx.update(g, opt, p)
            return (optax.apply_updates(p, updates), opt), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
        return {
            "train_accuracy": _accuracy(params, x, y_train, mean, scale, chunk),
            "test_accuracy": _accuracy(params, xt, y_test, mean, scale, chunk),
            "final_loss": losses[-1],
        }

    return jax.vmap(one)(x_train, x_test)


def fit_probes(train_PxNxM, y_train, test_PxNxM, y_test, num_classes: int, *,
               steps: int = 300, lr: float = 0.01, batch_size: int = 0,
               weight_decay: float = 0.0, seed: int = 0) -> dict:
    """Train P linear probes at once, probe p on ``train_PxNxM[p]``; score on train and test.

    Labels are shared by all probes. ``batch_size`` 0 = full-batch Adam, else random minibatches
    (with replacement, the same for every probe). Returns numpy arrays of shape (P,):
    train_accuracy, test_accuracy (NaN without test samples), final_loss (of the last step).
    """
    x, xt = np.asarray(train_PxNxM), np.asarray(test_PxNxM)
    y, yt = np.asarray(y_train), np.asarray(y_test)
    if x.ndim != 3 or xt.ndim != 3 or x.shape[0] != xt.shape[0] or x.shape[2] != xt.shape[2]:
        raise ValueError(f"features must be (P, N, m) and (P, N_test, m), got {x.shape}, "
                         f"{xt.shape}")
    if y.shape != (x.shape[1],) or yt.shape != (xt.shape[1],):
        raise ValueError(f"labels must be ({x.shape[1]},) and ({xt.shape[1]},), got "
                         f"{y.shape} and {yt.shape}")
    for lab in (y, yt):
        if lab.size and not (np.issubdtype(lab.dtype, np.integer)
                             and 0 <= lab.min() and lab.max() < num_classes):
            raise ValueError(f"labels must be integers in [0, {num_classes})")
    if steps < 1 or batch_size < 0 or not lr > 0 or weight_decay < 0:
        raise ValueError(f"need steps >= 1, batch_size >= 0, lr > 0, weight_decay >= 0; got "
                         f"{steps}, {batch_size}, {lr}, {weight_decay}")
    out = _fit(jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(xt),
               jnp.asarray(yt, jnp.int32), jax.random.PRNGKey(seed), num_classes=int(num_classes),
               steps=int(steps), lr=float(lr),
               batch_size=int(batch_size) if batch_size < x.shape[1] else 0,
               weight_decay=float(weight_decay))
    out = {k: np.asarray(v, np.float64) for k, v in jax.device_get(out).items()}
    if xt.shape[1] == 0:
        out["test_accuracy"][:] = np.nan
    return out
