"""Training throughput: the vmapped grid vs one model at a time, and FLOP/s vs the matmul peak.

    python benchmarks/bench_train.py            # ~1-2 minutes on a 2-core CPU
    python benchmarks/bench_train.py --quick    # fewer epochs

Prints (targets from the issue, 2-core CPU): model-steps per second of the default grid trained
as ``run_sweep`` trains it (vmapped; on CPU one program per depth, as many depths at once as
cores) against one model at a time with one jitted step per Python call (>= 2x); the other
variants (one padded program, on one thread or split in parts over the cores; one program per
depth on one thread); and achieved training FLOP/s at width 1024 as a fraction of the measured
float32 matmul peak (> 60%).
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from pnc_jax.config import Config
from pnc_jax.data import nearly_orthonormal
from pnc_jax.sharding import model_mesh, padded_count
from pnc_jax.sweep import default_threads, depth_groups, resolve_strategy, run_all, thread_plan
from pnc_jax.train import make_trainer
from pnc_jax.xla_cpu import avoid_cpu_deadlock

avoid_cpu_deadlock()  # before JAX starts its CPU client (import pnc_jax no longer does it)


def _data(cfg):
    x, y = nearly_orthonormal(0, cfg.num_classes, cfg.samples_per_class, cfg.input_dim)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def time_grid(cfg: Config, epochs: int, strategy: str, threads: int = 1) -> float:
    """Seconds to train every (depth, seed) of cfg for ``epochs`` epochs, vmapped, after compile,
    on ``threads`` host threads shared out as ``run_sweep`` does (``sweep.thread_plan``)."""
    x, y = _data(cfg)
    groups = depth_groups(cfg, strategy)
    runs_of = [[r for r in cfg.runs() if r[0] in group] for group in groups]
    mesh = model_mesh()
    _, parts = thread_plan(threads, [len(r) for r in runs_of], mesh)
    programs = []
    for group, runs, k in zip(groups, runs_of, parts, strict=True):
        trainer = make_trainer(cfg, x.shape[1], x.shape[0], max_depth=max(group))
        size = padded_count(len(runs), mesh, k) // k  # models per part, as run_sweep pads them
        keys = jnp.stack([jax.random.PRNGKey(s) for _, s in runs[:size]])
        depths = jnp.array([d for d, _ in runs[:size]])
        state = jax.jit(jax.vmap(trainer.init))(keys, depths)
        run = jax.jit(jax.vmap(lambda s, x, y: trainer.run(s, x, y, epochs),  # noqa: B023
                               in_axes=(0, None, None))).lower(state, x, y).compile()
        jax.block_until_ready(run(state, x, y))  # warm up
        programs += [(max(group) * size, run, state)] * k  # (the parts' timing, not values)
    programs.sort(key=lambda p: -p[0])  # largest first, as run_sweep orders them
    t = time.perf_counter()
    run_all(lambda p, _: jax.block_until_ready(p[1](p[2], x, y)), programs, threads)
    return time.perf_counter() - t


def time_loop(cfg: Config, epochs: int) -> float:
    """Seconds to train the same models one after another, one jitted step per Python call."""
    x, y = _data(cfg)
    total = 0.0
    for depth in cfg.depths:
        trainer = make_trainer(cfg, x.shape[1], x.shape[0], max_depth=depth)
        step = jax.jit(lambda s: trainer.run(s, x, y, 1))  # noqa: B023
        for seed in cfg.seeds:
            state = trainer.init(jax.random.PRNGKey(seed), depth)
            jax.block_until_ready(step(state))  # compile (cached after the first seed)
            t = time.perf_counter()
            for _ in range(epochs):
                state, _ = step(state)
            jax.block_until_ready(state)
            total += time.perf_counter() - t
    return total


def matmul_peak(n: int = 1024, reps: int = 5, trials: int = 10) -> float:
    """float32 FLOP/s of an n x n matmul: the best of ``trials`` timings of ``reps`` products."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best


def training_flops(width: int, epochs: int) -> float:
    """Width-1024 deep linear net, N = d = width, L = 6: FLOP/s of the full-batch scan."""
    cfg = Config(input_dim=width, width=width, samples_per_class=width // 4, num_classes=4,
                 depths=(6,), seeds=(0,), tol=0.0, loss_scale=1.0, lr=1e-3)
    x, y = _data(cfg)
    trainer = make_trainer(cfg, width, x.shape[0])
    state = trainer.init(jax.random.PRNGKey(0), 6)
    run = jax.jit(trainer.run, static_argnums=3)
    jax.block_until_ready(run(state, x, y, epochs))
    t = time.perf_counter()
    jax.block_until_ready(run(state, x, y, epochs))
    seconds = time.perf_counter() - t
    n = x.shape[0]
    # per step: forward 2 N W^2 per hidden matrix (5 of width x width incl. W_1 with d = W),
    # backward twice that (activations and weight gradients); the K x W classifier is negligible
    flops = epochs * 3 * 2 * n * width * width * 5
    return flops / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs = 100 if args.quick else 400
    cfg = dataclasses.replace(Config(), tol=0.0)  # no early stop: every model trains every step
    n_models = len(cfg.runs())
    steps = n_models * epochs
    print(f"devices: {jax.devices()}  mesh: {model_mesh().size}")
    threads = default_threads()  # 1 on accelerators: the threaded rows would repeat these
    pad1 = time_grid(cfg, epochs, "pad")
    pad = time_grid(cfg, epochs, "pad", threads) if threads > 1 else pad1
    group1 = time_grid(cfg, epochs, "group")
    group = time_grid(cfg, epochs, "group", threads) if threads > 1 else group1
    loop = time_loop(cfg, epochs)
    print(f"default grid: {n_models} models x {epochs} epochs (depths {cfg.depths}, width "
          f"{cfg.width}), {threads} host threads")
    rows = [("one padded program, one thread", pad1),
            (f"one padded program in {threads} parts at once", pad),
            ("one program per depth, one thread", group1),
            (f"one program per depth, {threads} at once", group),
            ("one model at a time (jitted step)", loop)]
    for label, seconds in rows:
        print(f"  {label:<42}: {steps / seconds:9.0f} model-steps/s")
    auto = resolve_strategy("auto")  # what the sweep runs here: group on CPU, pad elsewhere
    sweep = group if auto == "group" else pad
    print(f"  ratio sweep ({auto}, {threads} threads) / loop = {loop / sweep:.2f}x (target >= 2x "
          f"on CPU, 20x on GPU); best one-thread grid / loop = {loop / min(pad1, group1):.2f}x")
    peak = matmul_peak()
    achieved = training_flops(1024, 5 if args.quick else 20)
    print(f"width 1024: {achieved / 1e9:.1f} GFLOP/s of a measured {peak / 1e9:.1f} GFLOP/s "
          f"float32 matmul peak = {100 * achieved / peak:.0f}% (target > 60%)")
    print(f"(numpy {np.__version__}, jax {jax.__version__})")


if __name__ == "__main__":
    main()
