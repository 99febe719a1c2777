"""Speed of the float64 metrics (compression + NC1 + fuzziness) vs per-sample outer products,
and the precision options: float64 in a scoped x64 (the library) vs the same formulas in float32.

    python benchmarks/bench_metrics.py [--n 5000] [--m 256] [--k 10] [--repeats 5]

The baseline builds Sigma_W as a sum of N outer products and pinv's the m x m between-class
matrices (numpy float64, mu_G the sample mean). Also checks that both give the same numbers.
Precision: float32 features, x64 off (as in most JAX projects), ordinary and collapsed (1e-6
within-class noise) data; time and largest relative error vs the numpy float64 baseline on the
same float32 values. Prints, never asserts.
"""

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from pnc_jax import metrics as M
from pnc_jax.xla_cpu import avoid_cpu_deadlock

avoid_cpu_deadlock()
KEYS = ("compression", "nc1", "fuzziness")


def baseline(h, y, k):
    n, m = h.shape
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    cnt = np.bincount(y, minlength=k).astype(float)
    s_w = np.zeros((m, m))
    for i in range(n):  # per-sample outer products
        z = h[i] - mu[y[i]]
        s_w += np.outer(z, z)
    s_w /= n
    mw = mu - h.mean(0)  # the sample mean (Wang et al.; He & Su)
    s_b = sum(np.outer(mw[c], mw[c]) for c in range(k)) / k
    ss_b = sum(cnt[c] * np.outer(mw[c], mw[c]) for c in range(k)) / n
    return {
        "compression": np.trace(s_w) / np.trace(s_b),
        "nc1": np.trace(s_w @ np.linalg.pinv(s_b, rcond=M.PINV_RTOL, hermitian=True)) / k,
        "fuzziness": np.trace(
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


def float32_formulas(h32, y, k):
    """The library's formulas traced with x64 off and no float64 scope: all float32."""
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "float64 requested ... truncated to float32"
        return {key: fn(h32, y, None, num_classes=k, center="sample")
                for key, fn in zip(KEYS, (M._compression, M._nc1, M._fuzziness), strict=True)}


def float64_scoped(h32, y, k):
    with jax.enable_x64(False):  # the caller's mode; the metrics scope float64 themselves
        return {key: fn(h32, y, k) for key, fn in zip(
            KEYS, (M.compression, M.nc1, M.separation_fuzziness), strict=True)}


def precision(h, y, k, repeats):
    """Rows: (data, option, ms, max rel error vs numpy float64 on the same float32 values)."""
    rows = []
    rng = np.random.default_rng(1)
    collapsed = rng.standard_normal((k, h.shape[1]))[y] + 1e-6 * rng.standard_normal(h.shape)
    for data, x in (("ordinary", h), ("collapsed 1e-6", collapsed)):
        x32 = jnp.asarray(x, jnp.float32)
        ref = baseline(np.asarray(x32, np.float64), y, k)
        for name, fn in (("float64 (library)", float64_scoped),
                         ("float32 formulas", float32_formulas)):
            jax.block_until_ready(fn(x32, y, k))
            t = best_of(lambda fn=fn, x32=x32: fn(x32, y, k), repeats)
            got = fn(x32, y, k)
            err = max(abs(float(got[key]) / ref[key] - 1) for key in KEYS)
            rows.append((data, name, t * 1e3, err))
    return rows


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
    h = h.astype(np.float32).astype(np.float64)  # float32 values: the same with x64 on or off
    h_dev, y_dev = jnp.asarray(h), jnp.asarray(y)

    @jax.jit
    def fused(h, y):  # what the training engine does: one jitted call, no host checks
        return {
            "compression": M.compression(h, y, a.k),
            "nc1": M.nc1(h, y, a.k),
            "fuzziness": M.separation_fuzziness(h, y, a.k),
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
    print(f"N={a.n} m={a.m} K={a.k} float64, x64 {'on' if jax.config.jax_enable_x64 else 'off'}, "
          f"device {jax.devices()[0].device_kind}")
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
    print("precision options (float32 features, x64 off; C + NC1 + fuzziness):")
    for data, name, ms, err in precision(h, y, a.k, a.repeats):
        print(f"  {data:15s} {name:18s} {ms:8.2f} ms   max rel error {err:.1e}")


if __name__ == "__main__":
    main()
