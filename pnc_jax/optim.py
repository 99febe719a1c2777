"""optax optimisers as PyTorch defines them: SGD with momentum or Adam, both with coupled weight
decay (the decay is added to the gradient, as ``torch.optim.SGD/Adam(weight_decay=...)``), and
per-epoch learning-rate schedules (constant, cosine, step)."""

import jax.numpy as jnp
import optax

from pnc_jax.config import Config


def epoch_lr(cfg: Config, epoch, lr: float | None = None):
    """lr at ``epoch`` (base ``lr``, default ``cfg.lr``). cosine: PyTorch's
    CosineAnnealingLR(T_max=epochs, eta_min=lr*final_lr_factor); step: MultiStepLR(milestones,
    gamma=0.1), i.e. lr / 10 from each milestone epoch on."""
    lr = cfg.lr if lr is None else lr
    if cfg.schedule == "constant":
        return lr + 0.0 * epoch  # optax casts to the parameters' dtype
    if cfg.schedule == "step":
        passed = sum(jnp.where(epoch >= m, 1, 0) for m in cfg.milestones)
        return lr * 0.1**passed
    eta_min = lr * cfg.final_lr_factor
    return eta_min + (lr - eta_min) * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / cfg.epochs))


def make_optimizer(cfg: Config, steps_per_epoch: int,
                   lr: float | None = None) -> optax.GradientTransformation:
    """g <- g + wd * p, then SGD (buf <- mu * buf + g; p <- p - lr_epoch * buf) or Adam (betas
    0.9, 0.999, eps 1e-8, bias-corrected: p <- p - lr_epoch * m_hat / (sqrt(v_hat) + eps))."""
    schedule = lambda count: epoch_lr(cfg, count // steps_per_epoch, lr)  # noqa: E731
    step = (optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8) if cfg.optimizer == "adam"
            else optax.sgd(schedule, momentum=cfg.momentum or None))
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), step)
