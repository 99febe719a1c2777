"""Accelerator benchmark that fits a short device lease (< 4 minutes on one GPU). Prints:

1. the padded deep-linear grid (depths 3..8 x many seeds, width 50) vs one model at a time with
   one jitted step per Python call, in model-steps/s, and their ratio;
2. training FLOP/s of a wide deep linear net (width 4096, N = 4096, L = 6) against the measured
   matmul ceiling of the same precision (``--precision highest|tensorfloat32``);
3. the nonlinear path of ``experiments.nonlinear`` (hybrid, width 256, batch 128, 8,000 samples
   of 784 inputs, K = 10): steps/s for one model and per model with seeds vmapped;
4. the same nonlinear training as a plain PyTorch loop of the same model on the same device
   (torch is imported only here, and skipped where absent), side by side;
5. the paper's real-data preset (width 1024, 8 matrices, batch 128, CIFAR-10's shape: 50,000 x
   3,072, synthetic data), per kind with 3 seeds vmapped: time per epoch and the 400-epoch
   projection.

    python benchmarks/bench_gpu.py [--precision highest] [--tiny]   # --tiny: CPU smoke test

Each section reports its compile time apart from its steady-state time. Prints, never asserts.
"""

import argparse
import dataclasses
import time

from pnc_jax import xla_cpu

xla_cpu.avoid_cpu_deadlock()  # before JAX starts its CPU client (a no-op on GPU)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pnc_jax.config import Config  # noqa: E402
from pnc_jax.data import nearly_orthonormal  # noqa: E402
from pnc_jax.train import make_trainer  # noqa: E402


def timed(fn, *args):
    """(seconds of the first call incl. compile, seconds of the second call)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return first, time.perf_counter() - t


def stacked(trainer, seeds, depths):
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    return jax.jit(jax.vmap(trainer.init))(keys, jnp.asarray(depths, jnp.int32))


def grid_vs_loop(seeds: int, epochs: int) -> None:
    cfg = Config(depths=(3, 4, 5, 6, 7, 8), seeds=tuple(range(seeds)), tol=0.0)
    x, y = (jnp.asarray(a) for a in nearly_orthonormal(0, 3, 10, 50))
    x = x.astype(jnp.float32)
    trainer = make_trainer(cfg, 50, 30)
    runs = cfg.runs()
    state = stacked(trainer, [s for _, s in runs], [d for d, _ in runs])
    run = jax.jit(jax.vmap(lambda s: trainer.run(s, x, y, epochs)))
    compile_s, grid_s = timed(run, state)
    one = make_trainer(cfg, 50, 30, max_depth=6)
    step = jax.jit(lambda s: one.run(s, x, y, 1))
    s = one.init(jax.random.PRNGKey(0), 6)
    jax.block_until_ready(step(s))
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        s, _ = step(s)
    jax.block_until_ready(s)
    loop_rate = n / (time.perf_counter() - t)
    grid_rate = len(runs) * epochs / grid_s
    print(f"1. grid {len(runs)} models x {epochs} epochs: {grid_rate:,.0f} model-steps/s "
          f"(compile {compile_s:.1f} s); one model, one jitted step per call: "
          f"{loop_rate:,.0f} steps/s; ratio {grid_rate / loop_rate:.1f}x")


def wide_flops(width: int, epochs: int, precision: str) -> None:
    cfg = Config(input_dim=width, width=width, samples_per_class=width // 4, num_classes=4,
                 depths=(6,), seeds=(0,), tol=0.0, loss_scale=1.0, lr=1e-3,
                 matmul_precision=precision)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((width, width)), jnp.float32)
    y = jnp.asarray(np.repeat(np.arange(4), width // 4), jnp.int32)
    trainer = make_trainer(cfg, width, width)
    state = trainer.init(jax.random.PRNGKey(0), 6)
    run = jax.jit(lambda s: trainer.run(s, x, y, epochs))
    compile_s, seconds = timed(run, state)
    achieved = epochs * 3 * 2 * width**3 * 5 / seconds  # 5 width x width matmuls, fwd + 2 bwd
    n = 2 * width
    a = jnp.ones((n, n), jnp.float32)
    lax_precision = {"highest": jax.lax.Precision.HIGHEST,
                     "tensorfloat32": jax.lax.Precision.DEFAULT}[precision]
    mm = jax.jit(lambda a: jnp.matmul(a, a, precision=lax_precision))
    _, mm_s = timed(mm, a)
    peak = 2 * n**3 / mm_s
    print(f"2. width {width}, L=6, {precision}: {achieved / 1e12:.2f} TFLOP/s of a measured "
          f"{peak / 1e12:.2f} TFLOP/s {n}^3 matmul = {100 * achieved / peak:.0f}% "
          f"(compile {compile_s:.1f} s)")


def nonlinear_cfg(width: int, seeds: int, precision: str, **kw) -> Config:
    return dataclasses.replace(Config(
        dataset="mnist10k", num_classes=10, samples_per_class=0, model="hybrid", depths=(8,),
        width=width, num_nonlinear=3, init_scale=0.1, loss_scale=100.0, lr=1e-3, momentum=0.9,
        weight_decay=1e-4, final_lr_factor=0.01, epochs=60, batch_size=128, tol=0.0,
        seeds=tuple(range(seeds)), matmul_precision=precision), **kw)


def nonlinear_rate(n: int, d: int, width: int, seeds: int, epochs: int, precision: str,
                   model: str = "hybrid") -> tuple[float, float]:
    """(steps/s per model, compile seconds) of ``seeds`` vmapped models, minibatch SGD."""
    cfg = nonlinear_cfg(width, seeds, precision, model=model)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, n), jnp.int32)
    trainer = make_trainer(cfg, d, n)
    state = stacked(trainer, cfg.seeds, [8] * seeds)
    run = jax.jit(jax.vmap(lambda s: trainer.run(s, x, y, epochs)))
    compile_s, seconds = timed(run, state)
    return epochs * (n // 128) / seconds, compile_s


def torch_rate(n: int, d: int, width: int, epochs: int) -> float | None:
    """Steps/s of the same hybrid (3 x Linear-BN-ReLU + 4 linear + classifier, no biases) in a
    plain PyTorch loop on the same device: SGD momentum 0.9, weight decay 1e-4, MSE x alpha."""
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    layers: list = []
    for i in range(7):
        layers.append(torch.nn.Linear(d if i == 0 else width, width, bias=False))
        if i < 3:
            layers += [torch.nn.BatchNorm1d(width), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10, bias=False)).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(n, d, device=dev)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (n,), device=dev), 10).float()
    steps = n // 128

    def epoch():
        perm = torch.randperm(n, device=dev)
        for i in range(steps):
            idx = perm[i * 128:(i + 1) * 128]
            loss = ((100.0 * net(x[idx]) - y[idx]) ** 2).sum() / 128
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(epochs):
        epoch()
    if dev == "cuda":
        torch.cuda.synchronize()
    return epochs * steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=("highest", "tensorfloat32"), default="highest")
    parser.add_argument("--tiny", action="store_true", help="small sizes: a CPU smoke test")
    args = parser.parse_args()
    tiny = args.tiny
    print(f"devices {jax.devices()}, jax {jax.__version__}")
    grid_vs_loop(seeds=3 if tiny else 500, epochs=20 if tiny else 400)
    wide_flops(256 if tiny else 4096, 2 if tiny else 20, args.precision)
    n, d, w = (1024, 784, 64) if tiny else (8000, 784, 256)
    epochs = 1 if tiny else 5
    one, c1 = nonlinear_rate(n, d, w, 1, epochs, args.precision)
    three, c3 = nonlinear_rate(n, d, w, 3, epochs, args.precision)
    print(f"3. nonlinear hybrid width {w}, batch 128, N {n}: 1 model {one:,.0f} steps/s "
          f"(compile {c1:.1f} s); 3 seeds vmapped {three:,.0f} steps/s per model "
          f"({3 * three:,.0f} model-steps/s, compile {c3:.1f} s)")
    torch_steps = torch_rate(n, d, w, epochs)
    if torch_steps is None:
        print("4. PyTorch: not installed, skipped")
    else:
        print(f"4. PyTorch loop, same model and device: {torch_steps:,.0f} steps/s; pnc_jax / "
              f"torch = {one / torch_steps:.2f}x (1 model), {3 * three / torch_steps:.2f}x "
              "(3 seeds vmapped, model-steps)")
    n, d, w = (1280, 3072, 128) if tiny else (50000, 3072, 1024)
    for model in ("mlp", "hybrid"):
        rate, c = nonlinear_rate(n, d, w, 3, 1, args.precision, model=model)
        epoch_s = (n // 128) / rate
        print(f"5. paper preset {model}, width {w}, 3 seeds vmapped: {epoch_s:.2f} s/epoch, "
              f"400 epochs ~ {400 * epoch_s / 60:.1f} min (compile {c:.1f} s)")


if __name__ == "__main__":
    main()
