"""Figures of a depth sweep, from results.json: compression.png and discrimination.png."""

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _by_depth(runs: list[dict]) -> dict[int, list[dict]]:
    groups = defaultdict(list)
    for r in runs:
        if r["status"] == "ok":
            groups[r["depth"]].append(r)
    return dict(sorted(groups.items()))


def _start(runs: list[dict]):
    """(converged runs by depth, a colour per depth, fig, ax)."""
    groups = _by_depth(runs)
    cmap = plt.get_cmap("viridis")
    colours = {d: cmap(i / max(len(groups) - 1, 1)) for i, d in enumerate(groups)}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=130)
    return groups, colours, fig, ax


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def compression_figure(runs: list[dict], path: str | Path) -> None:
    """log C_l vs l: seeds faint, their geometric mean as dots, the mean fitted ratio solid, one
    colour per depth; the exact theory (where it applies) dotted black."""
    groups, colours, fig, ax = _start(runs)
    for depth, rs in groups.items():
        c = np.array([r["compression"] for r in rs], dtype=float)
        l = np.arange(depth)
        for row in c:
            ax.plot(l, row, color=colours[depth], alpha=0.25, lw=0.8)
        mean_log = np.exp(np.mean(np.log(c), axis=0))
        ax.plot(l, mean_log, "o", color=colours[depth], ms=4)
        ratios = [r["compression_fit"]["ratio"] for r in rs if r.get("compression_fit")]
        if ratios and depth > 2:
            intercept = np.mean(np.log(c[:, 1:]) - np.arange(1, depth) * np.log(np.mean(ratios)))
            ax.plot(l[1:], np.exp(intercept) * np.mean(ratios) ** l[1:], "-",
                    color=colours[depth], lw=1.6, label=f"L={depth}: ratio {np.mean(ratios):.3f}")
        theory = rs[0].get("theory")
        if theory and theory.get("compression"):
            ax.plot(l, theory["compression"], ":", color="k", lw=1.0,
                    label="theory (exact)" if depth == max(groups) else None)
    ax.set_yscale("log")
    _finish(fig, ax, path, "layer l (0 = input)",
            r"compression $C_l = \mathrm{Tr}\,\Sigma_W / \mathrm{Tr}\,\Sigma_B$",
            "Within-class compression per layer, geometric fits")


def discrimination_figure(runs: list[dict], path: str | Path) -> None:
    """D_l vs l (l >= 1): seed means, their linear fit (solid), the theory (dotted)."""
    groups, colours, fig, ax = _start(runs)
    for depth, rs in groups.items():
        d = np.array([r["discrimination"] for r in rs], dtype=float)
        l = np.arange(depth)
        ax.plot(l[1:], d.mean(axis=0)[1:], "o", color=colours[depth], ms=4)
        fits = [r["discrimination_fit"] for r in rs if r.get("discrimination_fit")]
        if fits:
            slope = np.mean([f["slope"] for f in fits])
            intercept = np.mean(d[:, 1:] - np.arange(1, depth) * slope)
            ax.plot(l[1:], intercept + slope * l[1:], "-", color=colours[depth], lw=1.4,
                    label=f"L={depth}: slope {slope:.2e}")
        theory = rs[0].get("theory")
        if theory and theory.get("discrimination"):
            ax.plot(l[1:], theory["discrimination"][1:], ":", color=colours[depth], lw=1.0)
    _finish(fig, ax, path, "layer l", r"discrimination $D_l$ (1 - max cos of class means)",
            "Between-class discrimination per layer, linear fits")
