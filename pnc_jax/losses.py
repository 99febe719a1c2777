"""Losses on logits f(x) (N x K) and integer labels; alpha = ``loss_scale``."""

import jax
import jax.numpy as jnp
import optax


def mse(logits_NxK, labels_N, loss_scale: float):
    """The paper's (1/N) sum_i ||alpha f(x_i) - y_i||^2 with one-hot y_i."""
    y_NxK = jax.nn.one_hot(labels_N, logits_NxK.shape[-1], dtype=logits_NxK.dtype)
    return jnp.sum((loss_scale * logits_NxK - y_NxK) ** 2) / logits_NxK.shape[0]


def cross_entropy(logits_NxK, labels_N, loss_scale: float):
    """Mean softmax cross-entropy of alpha f(x)."""
    return jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(loss_scale * logits_NxK, labels_N)
    )


LOSSES = {"mse": mse, "ce": cross_entropy}
