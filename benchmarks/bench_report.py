"""Speed of ``pnc_jax.report`` (every metric of every layer, one pass of class statistics per
layer) vs the separate public calls a user would otherwise make, layer by layer.

    python benchmarks/bench_report.py            # 8 layers, N = 50,000, m = 1,024, K = 10
    python benchmarks/bench_report.py --quick    # 4 layers, N = 10,000, m = 256 (smoke test)

Features are float32 (as a model's), x64 off (as in most JAX projects): everything is float64
inside the metrics anyway. The separate calls: compression, discrimination, nc1,
separation_fuzziness, nc2, nc4 and numerical_rank per layer, nc3 on the last layer, both fits.
Also without the numerical rank (``report(rank=False)`` vs the calls without
``numerical_rank``): the rank is the only O(N m^2) part (an m x m Gram in the report, an SVD of
N x m in ``numerical_rank``). Checks that both give the same numbers. Prints, never asserts.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import pnc_jax as pj
from pnc_jax.xla_cpu import avoid_cpu_deadlock

avoid_cpu_deadlock()


def features(key, num_layers, n, m, k):
    """Per layer: class means (scale shrinking with depth) + unit noise, float32; labels."""
    ky, *keys = jax.random.split(key, num_layers + 1)
    y = jax.random.randint(ky, (n,), 0, k)
    out = []
    for l, kl in enumerate(keys):
        km, kn = jax.random.split(kl)
        mu = (1.0 + l) * jax.random.normal(km, (k, m), jnp.float32)
        out.append(mu[y] + jax.random.normal(kn, (n, m), jnp.float32))
    return out, y


def separate(feats, y, k, logits, classifier, rank=True):
    """The separate public calls, eager (each checks its inputs), as a user writes them."""
    out = {name: [] for name in ("compression", "discrimination", "nc1", "fuzziness", "nc4")}
    out.update({key: [] for key in ("nc2_equinorm", "nc2_equiangularity", "nc2_max_angle_gap")})
    if rank:
        out["numerical_rank"] = []
    for h in feats:
        out["compression"].append(pj.compression(h, y, k))
        out["discrimination"].append(pj.discrimination(h, y, k))
        out["nc1"].append(pj.nc1(h, y, k))
        out["fuzziness"].append(pj.separation_fuzziness(h, y, k))
        for key, v in pj.nc2(h, y, k).items():
            out[key].append(v)
        out["nc4"].append(pj.nc4(h, y, k, logits))
        if rank:
            out["numerical_rank"].append(pj.numerical_rank(h))
    out = {key: jnp.stack(v) for key, v in out.items()}
    out.update(pj.nc3(feats[-1], y, k, classifier))
    out["compression_fit"] = pj.geometric_fit(out["compression"])
    out["discrimination_fit"] = pj.linear_fit(out["discrimination"])
    return out


def best_of(fn, repeats):
    """(best seconds over ``repeats`` calls after a compiling one, the last output)."""
    out = jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times), out


def max_rel(a, b):
    return max(jax.tree.leaves(jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u, float) - np.asarray(v, float))
                                  / np.maximum(np.abs(np.asarray(v, float)), 1e-300))), a, b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--m", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 layers, N = 10,000, m = 256")
    a = ap.parse_args()
    if a.quick:
        a.layers, a.n, a.m = 4, 10_000, 256

    feats, y = features(jax.random.PRNGKey(0), a.layers, a.n, a.m, a.k)
    classifier = jax.random.normal(jax.random.PRNGKey(1), (a.k, a.m), jnp.float32)
    logits = feats[-1] @ classifier.T
    print(f"{a.layers} layers, N={a.n:,} m={a.m:,} K={a.k}, float32 features, x64 "
          f"{'on' if jax.config.jax_enable_x64 else 'off'}, {jax.devices()[0].device_kind}")

    def rep(rank):
        return pj.report(feats, y, a.k, logits=logits, classifier=classifier, rank=rank)

    for rank in (True, False):
        t_rep, got = best_of(lambda rank=rank: rep(rank), a.repeats)
        t_sep, want = best_of(
            lambda rank=rank: separate(feats, y, a.k, logits, classifier, rank), a.repeats)
        diff = max_rel({k: v for k, v in got.items() if k != "class_counts"}, want)
        label = "with the numerical rank" if rank else "without the rank"
        print(f"  {label:24s} report {t_rep * 1e3:9.1f} ms   separate calls "
              f"{t_sep * 1e3:9.1f} ms   ratio {t_sep / t_rep:5.2f}x (target >= 3x)   "
              f"max rel diff {diff:.1e}")


if __name__ == "__main__":
    main()
