"""Figures of ``experiments.theory_vs_practice`` and ``experiments.assumptions``.

Each function draws one figure from a results.json's list (given as the list or the file's path),
never recomputing, and writes one PNG with matplotlib's Agg backend; it returns the path.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

REGIME_RHO = 0.3


def _load(results) -> list[dict]:
    """A results.json's list, given either the list itself or the file's path."""
    if isinstance(results, (str, Path)):
        return json.loads(Path(results).read_text())
    return results


def _plain_log_ticks(ax, lo: float, hi: float, axes: str = "xy") -> None:
    """Log axes labelled 0.1, 0.2, 0.3, 0.5 ... instead of overlapping 3 x 10^-1 minor labels."""
    ticks = [m * 10.0**e for e in range(-4, 2) for m in (1, 2, 3, 5) if lo <= m * 10.0**e <= hi]
    for axis in (ax.xaxis if "x" in axes else None, ax.yaxis if "y" in axes else None):
        if axis is not None:
            axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def theory_vs_practice_figure(points, path) -> Path:
    """Top row: trained fitted ratio (mean over converged seeds) against the orthonormal-limit
    rho (left) and the exact finite-data prediction (right), log-log with the identity line.
    Bottom row: the relative error against each reference, in percent, over rho, with a +-3%
    band. Coloured by depth; filled: every seed converged, hollow: some seeds did not (points
    where none did are left out); grey: rho > 0.3, where science.md expects the trained ratio
    up to ~8% low."""
    points = [p for p in _load(points) if p["measured"]["fitted_ratio_mean"] is not None]
    depths = sorted({p["depth"] for p in points})
    cmap = plt.get_cmap("viridis", max(len(depths), 2))
    colour = {d: cmap(i) for i, d in enumerate(depths)}
    fig, axes = plt.subplots(2, 2, figsize=(11, 9.5), constrained_layout=True,
                             height_ratios=(1.25, 1))
    refs = (("rho", "rel_error_rho", "orthonormal-limit rho = xi^2 alpha^(2/L) / n^(1/L)"),
            ("predicted_fitted_ratio", "rel_error_predicted",
             "exact finite-data prediction (fitted ratio)"))

    def dots(ax, xs, ys, pts):
        for p, x, y in zip(pts, xs, ys, strict=True):
            c = colour[p["depth"]]
            ax.scatter(x, y, s=40, zorder=3, facecolors=c if p["status"] == "ok" else "none",
                       edgecolors=c, linewidths=1.5)

    for col, (key, err_key, label) in enumerate(refs):
        top, bottom = axes[0, col], axes[1, col]
        pts = [p for p in points if p[key] is not None]
        if not pts:
            for ax in (top, bottom):
                ax.text(0.5, 0.5, "no prediction (see summary.md)", ha="center",
                        transform=ax.transAxes)
            continue
        ref = np.array([p[key] for p in pts])
        meas = np.array([p["measured"]["fitted_ratio_mean"] for p in pts])
        rho = np.array([p["rho"] for p in pts])
        err = 100 * np.array([p[err_key] for p in pts])
        lo, hi = 0.8 * min(ref.min(), meas.min()), 1.25 * max(ref.max(), meas.max())
        grid = np.geomspace(lo, hi, 50)
        top.plot(grid, grid, "k-", lw=1, label="measured = predicted")
        dots(top, ref, meas, pts)
        top.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
                xlabel=f"predicted: {label}", ylabel="trained fitted ratio (mean over seeds)")
        _plain_log_ticks(top, lo, hi)
        errs = [abs(p[err_key]) for p in pts if p["status"] == "ok"]
        regime = [abs(p[err_key]) for p in pts if p["status"] == "ok" and p["in_regime"]]
        if errs:
            top.set_title(f"median |error| {100 * np.median(errs):.2f}% (all), "
                          + (f"{100 * np.median(regime):.2f}% (rho <= {REGIME_RHO})"
                             if regime else "no point with rho <= 0.3"), fontsize=10)
        rlo, rhi = 0.8 * rho.min(), 1.25 * rho.max()
        bottom.axhspan(-3, 3, color="tab:green", alpha=0.12, lw=0, label="+-3%")
        bottom.axhline(0, color="k", lw=1)
        dots(bottom, rho, err, pts)
        bottom.set(xscale="log", xlim=(rlo, rhi), xlabel="rho (orthonormal limit)",
                   ylabel=f"trained / reference - 1 (%)\nreference: {label.split(' =')[0]}")
        _plain_log_ticks(bottom, rlo, rhi, "x")
        for ax in (top, bottom) if key == "rho" else (bottom,):  # axes that show rho
            if rhi > REGIME_RHO:
                ax.axvspan(REGIME_RHO, max(hi, rhi), color="0.9", zorder=0)
            ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colour[d], label=f"L = {d}")
               for d in depths]
    handles.append(plt.Line2D([], [], ls="", marker="o", mfc="none", mec="k",
                              label="not all seeds converged"))
    axes[0, 0].legend(handles=handles, fontsize=8, loc="upper left")
    axes[1, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Layerwise compression ratio C_(l+1)/C_l (fit over l >= 1): trained deep "
                 "linear nets vs theory; grey: rho > 0.3")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


ASSUMPTION_METRICS = (  # key, axis label, the paper's range (science.md §2) or None
    ("min_norm_residual", "min-norm residual\n||Y X^+ / alpha - W_L...W_1||_F", (0.03, 0.06)),
    ("balancedness_mean",
     "balancedness (mean over l)\n||W_l+1^T W_l+1 - W_l W_l^T||_F / ||W_l||_F", (0.02, 0.07)),
    ("middle_singular_variance",
     "variance of the middle singular values\n(K+1..d-K of W_1..W_L-1; log scale)", None),
)


def assumptions_figure(entries, path) -> Path:
    """The paper's Figure 6: each assumption metric (columns) against depth at fixed width (top
    row) and against width at fixed depth (bottom row); seeds as dots, mean +- std as a line
    with error bars. Unconverged seeds are drawn as crosses and left out of mean and std."""
    results = _load(entries)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True)
    rows = (("depth", "depth L (number of weight matrices)"),
            ("width", "width h"))
    for row, (sweep, xlabel) in enumerate(rows):
        runs = [r for r in results if r["sweep"] == sweep]
        fixed = sorted({r["width" if sweep == "depth" else "depth"] for r in runs})
        fixed_text = (f"width {', '.join(map(str, fixed))}" if sweep == "depth"
                      else f"L = {', '.join(map(str, fixed))}")
        xs = sorted({r[sweep] for r in runs})
        for col, (key, label, paper) in enumerate(ASSUMPTION_METRICS):
            ax = axes[row, col]
            if not runs:
                ax.set_axis_off()
                continue
            means, stds = [], []
            for x in xs:
                good = [r[key] for r in runs if r[sweep] == x and r["converged"]]
                bad = [r[key] for r in runs if r[sweep] == x and not r["converged"]]
                jitter = 0.015 * (xs[-1] - xs[0] + 1) * np.linspace(-1, 1, max(len(good), 1))
                ax.scatter(x + jitter[: len(good)], good, s=12, color="tab:blue", alpha=0.45)
                if bad:
                    ax.scatter([x] * len(bad), bad, s=30, marker="x", color="tab:red")
                means.append(np.mean(good) if good else np.nan)
                stds.append(np.std(good, ddof=1) if len(good) > 1 else 0.0)
            ax.errorbar(xs, means, yerr=stds, color="k", marker="o", ms=5, capsize=4, lw=1.5)
            ax.set_xticks(xs)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label, fontsize=9)
            ax.grid(True, alpha=0.3)
            if paper is None:
                ax.set_yscale("log")
            else:  # from 0, so that the magnitude reads off the axis, with the paper's range
                ax.axhspan(*paper, color="tab:orange", alpha=0.15, lw=0,
                           label="paper's range (science.md)")
                top = max([v for v in means if np.isfinite(v)] + [paper[1]])
                ax.set_ylim(0, 1.4 * top)
                ax.legend(fontsize=8, loc="upper right")
            ax.set_title(f"vs {sweep} ({fixed_text})", fontsize=10)
    if any(not r["converged"] for r in results):
        axes[0, 0].scatter([], [], marker="x", color="tab:red", label="not converged")
        axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.suptitle("Assumptions of the theory on trained deep linear nets (dots: seeds; "
                 "line: mean +- std)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
