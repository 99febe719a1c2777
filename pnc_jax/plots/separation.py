"""Figures of ``experiments.data_separation``, drawn from its results.json only: the fuzziness
profiles with their fits (separation.png), the law's emergence during training (emergence.png)
and the ablations (ablations.png)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _ablations(runs: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["ablation"] for r in runs))


def _depths(runs: list[dict]) -> list[int]:
    return sorted({r["depth"] for r in runs})


def _colours(depths: list[int]) -> dict:
    cmap = plt.get_cmap("viridis")
    return {d: cmap(0.85 * i / max(len(depths) - 1, 1)) for i, d in enumerate(depths)}


def _ok(runs: list[dict], ablation: str, depth: int) -> list[dict]:
    return [r for r in runs if r["ablation"] == ablation and r["depth"] == depth
            and r["status"] == "ok" and r["rho"] is not None]


def separation_figure(runs: list[dict], path) -> None:
    """One panel per ablation: D_l against l (log scale) per depth, seeds as dots, the line of
    the mean fit (rho, intercept) solid, the mean profile at initialisation dashed."""
    ablations, depths = _ablations(runs), _depths(runs)
    colours = _colours(depths)
    fig, axes = plt.subplots(1, len(ablations), figsize=(3.6 * len(ablations), 3.6), dpi=130,
                             squeeze=False)
    for ax, ablation in zip(axes[0], ablations, strict=True):
        for depth in depths:
            rs = _ok(runs, ablation, depth)
            if not rs:
                ax.plot([], [], color=colours[depth], label=f"L={depth}: no fit (a D_l <= 0)")
                continue
            l = np.arange(depth)
            for r in rs:
                ax.plot(l, r["fuzziness"], "o", color=colours[depth], ms=2.5, alpha=0.6)
            rho = float(np.mean([r["rho"] for r in rs]))
            log_d0 = float(np.mean([r["log_d0"] for r in rs]))
            r_mean = float(np.mean([r["pearson_r"] for r in rs]))
            ax.plot(l, np.exp(log_d0) * rho ** l, "-", color=colours[depth], lw=1.5,
                    label=f"L={depth}: rho {rho:.2f}, r {r_mean:.3f}")
            init = np.exp(np.mean(np.log([r["fuzziness_at_init"] for r in rs]), axis=0))
            ax.plot(l, init, "--", color=colours[depth], lw=0.9, alpha=0.7)
        ax.set_yscale("log")
        ax.set_xlabel("layer l (0 = input)")
        ax.set_title(ablation, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5)
    axes[0][0].set_ylabel(r"fuzziness $D_l = \mathrm{Tr}(SS_w SS_b^+)$")
    fig.suptitle("Law of data separation: trained (dots, fit) and at init (dashed)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def emergence_figure(runs: list[dict], path) -> None:
    """Pearson r and rho against the epoch, per depth (mean over seeds, band = min..max), for
    the first ablation (normally "none")."""
    ablation = _ablations(runs)[0]
    depths = _depths(runs)
    colours = _colours(depths)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=130)
    for depth in depths:
        rs = [r for r in runs if r["ablation"] == ablation and r["depth"] == depth]
        if not rs or not rs[0]["emergence"]:
            continue
        epochs = [p["epoch"] for p in rs[0]["emergence"]]
        for ax, key in zip(axes, ("pearson_r", "rho"), strict=True):
            v = np.array([[np.nan if p[key] is None else p[key] for p in r["emergence"]]
                          for r in rs], float)
            ax.plot(epochs, np.nanmean(v, axis=0), color=colours[depth], lw=1.4,
                    label=f"L={depth}")
            ax.fill_between(epochs, np.nanmin(v, axis=0), np.nanmax(v, axis=0),
                            color=colours[depth], alpha=0.2, lw=0)
    for ax, label in zip(axes, ("Pearson r of ln D_l on l", r"$\rho$ = exp(slope)"),
                         strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    fig.suptitle(f"Emergence of the law during training ({ablation}; epoch 0 = init)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def ablations_figure(runs: list[dict], path) -> None:
    """Per ablation and depth: Pearson r, rho and the train / test accuracy (mean +- std over
    seeds; BatchNorm in training mode for the fuzziness)."""
    ablations, depths = _ablations(runs), _depths(runs)
    colours = _colours(depths)
    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.6), dpi=130)
    x = np.arange(len(ablations))
    width = 0.8 / len(depths)
    for j, depth in enumerate(depths):
        pos = x - 0.4 + width * (j + 0.5)
        for ax, key in zip(axes[:2], ("pearson_r", "rho"), strict=True):
            v = [[r[key] for r in _ok(runs, a, depth)] for a in ablations]
            ax.errorbar(pos, [np.mean(s) if s else np.nan for s in v],
                        [np.std(s, ddof=1) if len(s) > 1 else 0 for s in v], fmt="o",
                        color=colours[depth], ms=4, capsize=2, label=f"L={depth}")
        for key, marker in (("train_accuracy", "o"), ("test_accuracy", "s")):
            v = [[r[key] for r in runs if r["ablation"] == a and r["depth"] == depth
                  and r["status"] == "ok" and r[key] is not None] for a in ablations]
            axes[2].plot(pos, [100 * np.mean(s) if s else np.nan for s in v], marker,
                         color=colours[depth], ms=4, mfc="none" if marker == "s" else None,
                         label=f"L={depth} {key.split('_')[0]}")
    axes[1].set_yscale("log")
    for ax, label in zip(axes, ("Pearson r", r"$\rho$", "accuracy (%)"), strict=True):
        ax.set_xticks(x, ablations, fontsize=7)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("Ablations (random_labels: train accuracy on its random labels)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_all(workdir) -> list[Path]:
    """Read ``workdir/results.json``; write the three figures next to it; return their paths."""
    workdir = Path(workdir)
    runs = json.loads((workdir / "results.json").read_text())
    paths = [workdir / name for name in ("separation.png", "emergence.png", "ablations.png")]
    for draw, path in zip((separation_figure, emergence_figure, ablations_figure), paths,
                          strict=True):
        draw(runs, path)
    return paths
