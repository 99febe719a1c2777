"""The training engine: ``make_train(cfg, x, labels) -> train(key, depth)``, pure and vmappable.

One model = one ``TrainState``; a sweep stacks states on a leading model axis and ``jax.vmap``s
``init``/``run``/``measure`` (see ``pnc_jax.sweep``). The epoch loop is a ``lax.scan``.

Depths: two strategies, both exact (``sweep.depth_groups``). Pad-and-mask: every model is a
``Network`` of L_max weight matrices whose hidden layers l >= depth are the identity, so one
program trains all depths (a padded model computes and trains exactly the unpadded one). Group:
one program per depth, vmapped over seeds. ``"auto"`` groups on CPU (a tiny model's step is
already matmul-bound there, and padding adds FLOPs) and pads on accelerators (where the per-step
launch dominates); the measurements are in benchmarks/README.md.

Stopping: a model whose full-batch loss falls below ``cfg.tol`` (or turns NaN/inf) stops updating
(status CONVERGED / DIVERGED); the scan keeps running for the others, so stopped models cost
compute but never change. With minibatches the check uses the epoch's mean loss.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pnc_jax import metrics
from pnc_jax.config import Config
from pnc_jax.losses import LOSSES
from pnc_jax.models import build_network
from pnc_jax.optim import make_optimizer

RUNNING, CONVERGED, DIVERGED = 0, 1, 2
STATUS_NAMES = {RUNNING: "ok", CONVERGED: "ok", DIVERGED: "diverged"}


class TrainState(NamedTuple):
    """One model's training state (stack these on axis 0 for a sweep)."""

    params: nnx.State  # nnx.Param leaves
    stats: nnx.State  # BatchNorm running statistics (empty for linear nets)
    opt_state: optax.OptState
    epoch: jax.Array  # int32: epochs trained so far
    status: jax.Array  # int32: RUNNING / CONVERGED / DIVERGED
    loss: jax.Array  # loss of the last epoch
    depth: jax.Array  # int32: this model's L (<= the padded L_max)
    key: jax.Array  # PRNGKey for minibatch shuffles


Features = list[jax.Array]  # [h_0, ..., h_{L-1}], h_l of shape (N, m_l)
InitFn = Callable[[jax.Array, jax.Array | int], TrainState]  # (key, depth) -> state
RunFn = Callable[[TrainState, jax.Array, jax.Array, int], tuple[TrainState, jax.Array]]
"""(state, x_NxD, labels_N, num_epochs: static) -> (state, losses_E)"""
ApplyFn = Callable[..., tuple[jax.Array, Features, nnx.State]]
"""(params, stats, x_NxD, depth, train=False) -> (logits_NxK, [h_0..h_{Lmax-1}], new stats)"""
MeasureFn = Callable[..., dict[str, jax.Array]]
"""(state, x_NxD, labels_N, bn_train=False) -> per-layer metrics (L_max,), loss, accuracy"""


class Trainer(NamedTuple):
    """Pure functions of one model; all are jit- and vmap-able (hashable: a static jit arg)."""

    graphdef: nnx.GraphDef
    init: InitFn
    run: RunFn
    apply: ApplyFn
    measure: MeasureFn


def dtype_of(cfg: Config):
    return jnp.float64 if cfg.dtype == "float64" else jnp.float32


def steps_per_epoch(cfg: Config, num_samples: int) -> int:
    """Full batch: 1. Minibatches: floor(N / B) (the remainder of each shuffle is dropped)."""
    if cfg.batch_size == 0 or cfg.batch_size >= num_samples:
        return 1
    return num_samples // cfg.batch_size


def _select(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def make_trainer(cfg: Config, input_dim: int, num_samples: int, max_depth: int | None = None,
                 lr: float | None = None) -> Trainer:
    """Trainer for networks padded to ``max_depth`` (default ``cfg.max_depth``) matrices, at
    base learning rate ``lr`` (default ``cfg.lr``)."""
    max_depth = max_depth or cfg.max_depth
    graphdef = nnx.split(
        nnx.eval_shape(lambda: build_network(cfg, input_dim, max_depth, jax.random.PRNGKey(0))),
        nnx.Param, ...,
    )[0]
    loss_of = LOSSES[cfg.loss]
    n_steps = steps_per_epoch(cfg, num_samples)
    tx = make_optimizer(cfg, n_steps, lr)
    full_batch = n_steps == 1

    def apply(params, stats, x_NxD, depth, train=False):
        # copy: fresh Variables in this trace (BatchNorm writes its running stats into them)
        model = nnx.merge(graphdef, params, stats, copy=True)
        logits, features = model(x_NxD, depth=depth if max_depth > 1 else None, train=train)
        return logits, features, nnx.state(model, nnx.BatchStat)

    def init(key, depth):
        init_key, data_key = jax.random.split(key)
        model = build_network(cfg, input_dim, max_depth, init_key)
        _, params, stats = nnx.split(model, nnx.Param, ...)
        return TrainState(
            params=params, stats=stats, opt_state=tx.init(params),
            epoch=jnp.zeros((), jnp.int32), status=jnp.zeros((), jnp.int32),
            loss=jnp.full((), jnp.inf, dtype_of(cfg)), depth=jnp.asarray(depth, jnp.int32),
            key=data_key,
        )

    def loss_and_stats(params, stats, x, labels, depth):
        logits, _, new_stats = apply(params, stats, x, depth, train=True)
        return loss_of(logits, labels, cfg.loss_scale), new_stats

    grad_fn = jax.value_and_grad(loss_and_stats, has_aux=True)

    def sgd_step(state, x, labels, go, tol):
        """One SGD step where ``go``, the loss is finite and >= tol; else ``state`` unchanged."""
        (loss, stats), grads = grad_fn(state.params, state.stats, x, labels, state.depth)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(jnp.add, state.params, updates)
        new = state._replace(params=params, stats=stats, opt_state=opt_state)
        return _select(go & jnp.isfinite(loss) & (loss >= tol), new, state), loss

    def epoch(state, x, labels):
        running = (state.status == RUNNING) & (state.epoch < cfg.epochs)
        if full_batch:  # the paper's rule: evaluate the loss, stop if below tol, else step
            new, loss = sgd_step(state, x, labels, running, cfg.tol)
        else:
            perm = jax.random.permutation(jax.random.fold_in(state.key, state.epoch), x.shape[0])
            batches = perm[: n_steps * cfg.batch_size].reshape(n_steps, cfg.batch_size)

            def body(s, idx):
                return sgd_step(s, x[idx], labels[idx], running, -jnp.inf)

            new, batch_losses = jax.lax.scan(body, state, batches)
            loss = jnp.mean(batch_losses)
        status = jnp.where(
            running & ~jnp.isfinite(loss), DIVERGED,
            jnp.where(running & (loss < cfg.tol), CONVERGED, state.status),
        )
        # epochs counts epochs whose updates were applied (a full-batch stop applies none)
        trained = running & ((status == RUNNING) | (not full_batch))
        new = new._replace(
            status=status, loss=jnp.where(running, loss, state.loss),
            epoch=state.epoch + trained.astype(jnp.int32),
        )
        return new, loss

    def run(state, x_NxD, labels_N, num_epochs: int):
        return jax.lax.scan(lambda s, _: epoch(s, x_NxD, labels_N), state, None, length=num_epochs)

    def measure(state, x_NxD, labels_N, bn_train: bool = False):
        logits, features, _ = apply(state.params, state.stats, x_NxD, state.depth, bn_train)
        K = cfg.num_classes
        per_layer = {name: metrics.layerwise(fn, features, labels_N, K)
                     for name, fn in METRICS.items()}
        per_layer["loss"] = loss_of(logits, labels_N, cfg.loss_scale)
        per_layer["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == labels_N)
        return per_layer

    return Trainer(graphdef=graphdef, init=init, run=run, apply=apply, measure=measure)


METRICS = {
    "compression": metrics.compression,
    "discrimination": metrics.discrimination,
    "nc1": metrics.nc1,
    "fuzziness": metrics.separation_fuzziness,
}


def layer_fuzziness(trainer: Trainer, cfg: Config, state: TrainState, x_NxD: jax.Array,
                    labels_N: jax.Array) -> jax.Array:
    """He & Su's fuzziness D_l of h_0..h_{L_max-1} of one model, (L_max,) float64 (jit/vmap-able).

    BatchNorm per ``cfg.measure_batch``: 0 = eval mode (running statistics); B > 0 = training
    mode, each of the consecutive batches x[0:B], x[B:2B], ... (the last one shorter when B does
    not divide N) normalised with its own statistics, as ``features.layer_metrics(...,
    bn_train=True, batch_size=B)`` and He & Su's extraction. Running statistics stay as they are.
    """
    def feats(x, train):
        return trainer.apply(state.params, state.stats, x, state.depth, train)[1]

    b, n = cfg.measure_batch, x_NxD.shape[0]
    if b == 0:
        hs = feats(x_NxD, False)
    else:
        full = n // b * b
        per_batch = jax.vmap(lambda xb: feats(xb, True))(x_NxD[:full].reshape(n // b, b, -1))
        hs = [h.reshape(full, h.shape[-1]) for h in per_batch]
        if full < n:
            hs = [jnp.concatenate([h, r]) for h, r in zip(hs, feats(x_NxD[full:], True),
                                                          strict=True)]
    return metrics.layerwise(metrics.separation_fuzziness, hs, labels_N, cfg.num_classes)


def run_measured(trainer: Trainer, cfg: Config, state: TrainState, x_NxD: jax.Array,
                 labels_N: jax.Array, num_epochs: int):
    """``trainer.run`` for ``num_epochs`` (a multiple of ``cfg.measure_every`` = k) as a scan
    over k-epoch blocks, each followed by ``layer_fuzziness``: returns (state, losses_E,
    fuzziness_MxL), M = num_epochs / k, row j measured after j+1 blocks. All on device."""
    k = cfg.measure_every
    if k < 1 or num_epochs % k:
        raise ValueError(f"num_epochs={num_epochs} must be a multiple of measure_every={k} >= 1")

    def block(s, _):
        s, losses = trainer.run(s, x_NxD, labels_N, k)
        return s, (losses, layer_fuzziness(trainer, cfg, s, x_NxD, labels_N))

    state, (losses, fuzz) = jax.lax.scan(block, state, None, length=num_epochs // k)
    return state, losses.reshape(-1), fuzz


def make_train(cfg: Config, x_NxD, labels_N, measure_every: int = 0):
    """``train(key, depth=L_max) -> (state, losses_E, metrics_over_training)``, jit/vmap-able.

    Trains ``cfg.epochs`` epochs in one scan. With ``measure_every`` > 0 the per-layer metrics
    are also taken every ``measure_every`` epochs (leading axis: measurement index).
    """
    x = jnp.asarray(x_NxD, dtype_of(cfg))
    labels = jnp.asarray(labels_N, jnp.int32)
    trainer = make_trainer(cfg, x.shape[1], x.shape[0])

    def train(key, depth=None):
        state = trainer.init(key, cfg.max_depth if depth is None else depth)
        if not measure_every:
            state, losses = trainer.run(state, x, labels, cfg.epochs)
            return state, losses, {}

        def outer(s, _):
            s, losses = trainer.run(s, x, labels, measure_every)
            return s, (losses, trainer.measure(s, x, labels))

        state, (losses, measured) = jax.lax.scan(
            outer, state, None, length=cfg.epochs // measure_every
        )
        return state, losses.reshape(-1), measured

    return train
