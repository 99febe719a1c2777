"""Speed of the float64 metrics (compression + NC1 + fuzziness) vs per-sample outer products.

    python benchmarks/bench_metrics.py [--n 5000] [--m 256] [--k 10] [--repeats 5]

The baseline builds Sigma_W as a sum of N outer products and pinv's the m x m between-class
matrices (numpy float64). Also checks that both give the same numbers. Prints, never asserts.
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pnc_jax import metrics as M  # noqa: E402


def baseline(h, y, k):
    n, m = h.shape
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    cnt = np.bincount(y, minlength=k).astype(float)
    s_w = np.zeros((m, m))
    for i in range(n):  # per-sample outer products
        z = h[i] - mu[y[i]]
        s_w += np.outer(z, z)
    s_w /= n
    mc = mu - mu.mean(0)
    s_b = sum(np.outer(mc[c], mc[c]) for c in range(k)) / k
    mw = mu - h.mean(0)
    ss_b = sum(cnt[c] * np.outer(mw[c], mw[c]) for c in range(k)) / n
    return {
        "compression": np.trace(s_w) / np.trace(s_b),
        "nc1": np.trace(s_w @ np.linalg.pinv(s_b, rcond=M.PINV_RTOL, hermitian=True)) / k,
        "separation_fuzziness": np.trace(
            s_w @ np.linalg.pinv(ss_b, rcond=M.PINV_RTOL, hermitian=True)
        ),
    }


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    rng = np.random.default_rng(0)
    y = rng.integers(0, a.k, a.n)
    h = rng.standard_normal((a.k, a.m))[y] + rng.standard_normal((a.n, a.m))
    h_dev, y_dev = jnp.asarray(h), jnp.asarray(y)

    @jax.jit
    def fused(h, y):  # what the training engine does: one jitted call, no host checks
        return {
            "compression": M.compression(h, y, a.k),
            "nc1": M.nc1(h, y, a.k),
            "separation_fuzziness": M.separation_fuzziness(h, y, a.k),
        }

    def public():  # three eager public calls, each with concrete-label checks
        return [f(h_dev, y_dev, a.k) for f in (M.compression, M.nc1, M.separation_fuzziness)]

    jax.block_until_ready(fused(h_dev, y_dev))  # compile
    jax.block_until_ready(public())
    t_fused = best_of(lambda: fused(h_dev, y_dev), a.repeats)
    t_public = best_of(public, a.repeats)
    t0 = time.perf_counter()
    ref = baseline(h, y, a.k)
    t_base = time.perf_counter() - t0

    got = fused(h_dev, y_dev)
    print(f"N={a.n} m={a.m} K={a.k} float64, device {jax.devices()[0].device_kind}")
    for key, val in ref.items():
        rel = abs(float(got[key]) - val) / abs(val)
        print(f"  {key:22s} {float(got[key]):.12g}  baseline {val:.12g}  rel diff {rel:.1e}")
    print(f"  baseline (outer products, numpy): {t_base * 1e3:9.2f} ms")
    print(
        f"  jitted fused (3 metrics):         {t_fused * 1e3:9.2f} ms  "
        f"speed-up {t_base / t_fused:7.1f}x (goal >= 10x)"
    )
    print(
        f"  public eager calls (with checks): {t_public * 1e3:9.2f} ms  "
        f"speed-up {t_base / t_public:7.1f}x"
    )


if __name__ == "__main__":
    main()
