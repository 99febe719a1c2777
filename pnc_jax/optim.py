"""optax SGD with momentum, PyTorch-style coupled weight decay and per-epoch lr schedules."""

import jax.numpy as jnp
import optax

from pnc_jax.config import Config


def epoch_lr(cfg: Config, epoch):
    """lr at ``epoch``; cosine is PyTorch's CosineAnnealingLR(T_max=epochs, eta_min=lr*factor)."""
    if cfg.schedule == "constant":
        return cfg.lr + 0.0 * epoch  # optax casts to the parameters' dtype
    eta_min = cfg.lr * cfg.final_lr_factor
    return eta_min + (cfg.lr - eta_min) * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / cfg.epochs))


def make_optimizer(cfg: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """g <- g + wd * p; buf <- mu * buf + g; p <- p - lr_epoch * buf (torch.optim.SGD)."""
    schedule = lambda count: epoch_lr(cfg, count // steps_per_epoch)  # noqa: E731
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(schedule, momentum=cfg.momentum or None),
    )
