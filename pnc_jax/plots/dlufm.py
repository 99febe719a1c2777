"""Figures of ``experiments.dlufm``, drawn from its results.json only (``records.DLUFMResults``,
``records.SweepSpectra``).

dlufm_collapse.png: per-layer NC1, NC2 (equinorm, equiangularity), NC3, NC4 and the loss gap to
loss* over training. dlufm_spectrum.png: the final top K^2+1 data-term Hessian eigenvalues of each
W_l (log scale, the K^2 outliers filled, the closed form lambda_W gamma/(1-gamma) as a line) and,
with --full-hessian, the full-parameter spectrum against science.md. dlufm_alignment.png: the
data-gradient overlap with the top-K^2 space, lambda_{K^2} and lambda_{K^2+1}, and the outlier
count over training. layer_spectra.png (--from-workdir): lambda_{K^2+1}/lambda_{K^2} and NC1 per
layer of each depth.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

TINY = 1e-300  # floor for log axes: exact zeros are drawn at the bottom


def _arr(values) -> np.ndarray:
    return np.array(values, dtype=float)  # JSON null -> NaN


def _colours(n: int) -> list:
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def _per_layer(ax, steps, series_RxTxL, log: bool = True, style: str = "-",
               floor: float = TINY) -> None:
    """One colour per layer W_l, one line per seed (labelled once); on a log axis |values|,
    at least ``floor``."""
    _, _, depth = series_RxTxL.shape
    for l, colour in enumerate(_colours(depth)):
        for r, seed_series in enumerate(series_RxTxL):
            y = seed_series[:, l]
            ax.plot(steps, np.maximum(np.abs(y), floor) if log else y, style, color=colour,
                    lw=1.2, label=f"W_{l + 1}" if r == 0 and style == "-" else None)
    if log:
        ax.set_yscale("log")


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(Path(path))
    plt.close(fig)


def collapse_figure(results: dict, path) -> None:
    """2 x 3 panels over gradient-descent steps, one colour per layer."""
    track, steps = results["track"], np.array(results["track"]["steps"])
    panels = [("nc1", "NC1 of H_l"), ("nc2_equinorm", "NC2 equinorm"),
              ("nc2_equiangularity", "NC2 equiangularity"),
              ("nc3_uncentred", "NC3 (uncentred, vs W_L...W_l)"), ("nc4", "NC4 mismatch")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=120)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        _per_layer(ax, steps, _arr(track[key]), log=key != "nc4")
        ax.set_title(title)
    ax = axes.flat[5]
    floor = np.finfo(np.float64).eps * results["closed_form"]["loss"]  # rounding of loss*
    for r, gap in enumerate(_arr(track["loss_gap"])):
        ax.plot(steps, np.maximum(np.abs(gap), floor), color="k", lw=1.2,
                label="|loss - loss*|" if r == 0 else None)
    ax.axhline(floor, color="0.5", ls=":", lw=1, label="float64 rounding of loss*")
    ax.set_yscale("log")
    ax.set_title(f"loss gap (loss* = {results['closed_form']['loss']:.8f})")
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    c = results["config"]
    fig.suptitle(f"DLUFM K={c['num_classes']}, n={c['samples_per_class']}, d={c['width']}, "
                 f"L={c['depth']}: deep neural collapse over training")
    _save(fig, path)


def spectrum_figure(results: dict, path) -> None:
    """Final layer-Hessian eigenvalues (and the full-parameter spectrum with --full-hessian)."""
    cf, c = results["closed_form"], results["config"]
    k2 = c["num_classes"] ** 2
    top = _arr(results["final"]["hessian_top"])  # (R, L, K^2+1)
    full = results.get("full_hessian")
    fig, axes = plt.subplots(1, 2 if full else 1, figsize=(13 if full else 6.8, 4.8), dpi=120,
                             squeeze=False)
    ax = axes[0, 0]
    index = np.arange(1, k2 + 2)
    depth = top.shape[1]
    for l, colour in enumerate(_colours(depth)):
        x = index + 0.12 * (l - (depth - 1) / 2)
        for r, seed_top in enumerate(top):
            y = np.maximum(np.abs(seed_top[l]), TINY)
            first = r == 0
            ax.plot(x[:k2], y[:k2], "o", color=colour, ms=5,
                    label=f"W_{l + 1}: top K^2 = {k2}" if first else None)
            ax.plot(x[k2:], y[k2:], "o", mfc="white", color=colour, ms=5,
                    label=f"W_{l + 1}: lambda_{{K^2+1}}" if first else None)
    ax.axhline(cf["outlier"], color="tab:red", ls="--", lw=1,
               label=f"lambda_W gamma/(1-gamma) = {cf['outlier']:.6f}")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("|eigenvalue| of the data-term Hessian w.r.t. W_l")
    ax.set_title("per-layer Hessian after training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if full:
        ax = axes[0, 1]
        first = full["runs"][0]
        lam = _arr(first["eigenvalues"])
        ax.plot(np.arange(1, lam.size + 1), np.maximum(np.abs(lam), TINY), ".", ms=3,
                color="tab:blue", label=f"seed {first['seed']}: all P = {lam.size}")
        refs = [(v, m) for v, m in full["reference"] or [] if v > 0]
        for i, (value, mult) in enumerate(refs):
            ax.axhline(value, color=plt.get_cmap("tab10")(i + 1), ls=":", lw=1.2,
                       label=f"science.md {value:g}" + (f" (x{mult})" if mult else ""))
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue index (descending)")
        ax.set_ylabel("|eigenvalue| of the full Hessian (loss with regulariser)")
        ax.set_title("full-parameter Hessian" + (" vs science.md (dotted)"
                                                 if full["reference"] else ""))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    _save(fig, path)


def alignment_figure(results: dict, path) -> None:
    """Gradient alignment, the eigenvalue gap and the outlier count over training."""
    track, steps = results["track"], np.array(results["track"]["steps"])
    k2 = results["config"]["num_classes"] ** 2
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), dpi=120)
    eps = np.finfo(np.float64).eps
    _per_layer(axes[0], steps, 1 - _arr(track["overlap"]), floor=eps)
    axes[0].axhline(eps, color="0.5", ls=":", lw=1, label="float64 eps")
    axes[0].set_title("1 - overlap of the data-term gradient\nwith the top-K^2 eigenspace")
    _per_layer(axes[1], steps, _arr(track["outlier_smallest"]))
    _per_layer(axes[1], steps, _arr(track["bulk_largest"]), style="--")
    axes[1].axhline(results["closed_form"]["outlier"], color="tab:red", ls=":", lw=1,
                    label="lambda_W gamma/(1-gamma)")
    axes[1].set_title("lambda_{K^2} (solid) and lambda_{K^2+1} (dashed)")
    _per_layer(axes[2], steps, _arr(track["outliers"]), log=False)
    axes[2].axhline(k2, color="tab:red", ls=":", lw=1, label=f"K^2 = {k2}")
    axes[2].set_yscale("log")
    axes[2].set_title(f"eigenvalues above {results['config']['outlier_rtol']:g} lambda_1")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    _save(fig, path)


def layer_spectra_figure(results: dict, path) -> None:
    """Per depth (median over the seeds the sweep reports "ok"): lambda_{K^2+1}/lambda_{K^2}
    and NC1 vs layer W_l."""
    runs = results["runs"]
    depths = sorted({r["depth"] for r in runs})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    for depth, colour in zip(depths, _colours(len(depths)), strict=True):
        rs = [r for r in runs if r["depth"] == depth and r.get("status") in ("ok", None)]
        if not rs:
            continue
        layer = np.arange(1, depth + 1)
        for ax, key in zip(axes, ("gap_ratio", "nc1"), strict=True):
            med = np.nanmedian(_arr([r[key] for r in rs]), axis=0)
            ax.plot(layer, np.maximum(med, TINY), "o-", color=colour, ms=4, label=f"L={depth}")
    axes[0].set_title("lambda_{K^2+1} / lambda_{K^2}, data-term Hessian w.r.t. W_l")
    axes[1].set_title("NC1 of the features entering W_l")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("layer l (matrix W_l)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{results['source']}: medians over converged seeds")
    _save(fig, path)
