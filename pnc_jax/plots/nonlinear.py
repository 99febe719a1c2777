"""Figures of ``experiments.nonlinear``, drawn from its results.json only.

rank_probe.png (paper's Figure 1): numerical rank and linear-probe accuracy vs layer, twin axes,
one panel per model kind. compression_discrimination.png (Figure 5): C_l (log scale) and D_l vs
layer, both kinds. embedding.png (Figure 2): 2-D PCA of layers 1, 2, 4, 6 coloured by class.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

KIND_COLOURS = {"hybrid": "tab:blue", "mlp": "tab:red"}
RANK_COLOUR, PROBE_COLOUR = "tab:purple", "tab:green"


def _title(kind: str, res: dict) -> str:
    depth = res["runs"][0]["depth"]
    if kind == "hybrid":
        return f"hybrid: {res['num_nonlinear']} ReLU + {depth - 1 - res['num_nonlinear']} linear"
    return f"MLP: {depth - 1} ReLU layers"


def _shade_nonlinear(ax, res: dict) -> None:
    """Grey band behind the ReLU layers 1..num_nonlinear."""
    ax.axvspan(0.5, res["num_nonlinear"] + 0.5, color="0.92", zorder=0, lw=0)


def rank_probe_figure(results: dict, path) -> None:
    """Per kind: rank (left axis, seeds as lines) and probe train/test accuracy (right axis)."""
    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(5.6 * len(models), 4.6), dpi=130,
                             squeeze=False)
    for ax, (kind, res) in zip(axes[0], models.items(), strict=True):
        _shade_nonlinear(ax, res)
        acc = ax.twinx()
        for i, rec in enumerate(res["runs"]):
            l = np.asarray(rec["layers"])
            first = i == 0
            ax.plot(l, rec["numerical_rank"], "o-", color=RANK_COLOUR, ms=4,
                    label="numerical rank" if first else None)
            acc.plot(l, 100 * np.asarray(rec["probe_train_accuracy"]), "s-", color=PROBE_COLOUR,
                     ms=4, label="probe train acc." if first else None)
            acc.plot(l, 100 * np.asarray(rec["probe_test_accuracy"]), "s--", color=PROBE_COLOUR,
                     ms=3, mfc="white", label="probe test acc." if first else None)
        ax.set_xlabel("layer l (0 = input; grey: ReLU layers)")
        ax.set_ylabel("numerical rank (95% of singular-value sum)", color=RANK_COLOUR)
        ax.tick_params(axis="y", colors=RANK_COLOUR)
        ax.set_ylim(bottom=0)
        acc.set_ylabel("linear-probe accuracy (%)", color=PROBE_COLOUR)
        acc.tick_params(axis="y", colors=PROBE_COLOUR)
        lo = min(min(r["probe_test_accuracy"] + r["probe_train_accuracy"]) for r in res["runs"])
        acc.set_ylim(min(100 * lo - 2, 90), 100.5)
        ax.set_xticks(res["runs"][0]["layers"])
        ax.set_title(_title(kind, res), fontsize=10)
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + acc.get_legend_handles_labels()[0]
        acc.legend(handles, [h.get_label() for h in handles], fontsize=8, ncol=3,
                   loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.suptitle(f"Rank vs linear separability per layer ({results['dataset']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def compression_discrimination_figure(results: dict, path) -> None:
    """C_l (log) and D_l vs l; the deep-layer fits drawn over their range, with their rates."""
    fig, (ax_c, ax_d) = plt.subplots(1, 2, figsize=(11.0, 4.2), dpi=130)
    for kind, res in results["models"].items():
        colour = KIND_COLOURS.get(kind, "k")
        for i, rec in enumerate(res["runs"]):
            l = np.asarray(rec["layers"])
            c, d = np.asarray(rec["compression"]), np.asarray(rec["discrimination"])
            label = kind if i == 0 else None
            ax_c.plot(l, c, "o-", color=colour, ms=4, alpha=0.8, label=label)
            ax_d.plot(l, d, "o-", color=colour, ms=4, alpha=0.8, label=label)
            if i:
                continue
            cf, df = rec["fits"]["compression_deep"], rec["fits"]["discrimination_deep"]
            if cf:
                ll = l[cf["start"]:]
                logc = np.log(c[ll])
                b = np.mean(logc - ll * np.log(cf["ratio"]))
                ax_c.plot(ll, np.exp(b) * cf["ratio"] ** ll, "--", color=colour, lw=2, alpha=0.6,
                          label=f"{kind} fit l>={cf['start']}: ratio {cf['ratio']:.3f} "
                                f"(R$^2$ {cf['r2']:.3f})")
            if df:
                ll = l[df["start"]:]
                b = np.mean(d[ll] - df["slope"] * ll)
                ax_d.plot(ll, b + df["slope"] * ll, "--", color=colour, lw=2, alpha=0.6,
                          label=f"{kind} fit l>={df['start']}: slope {df['slope']:.3f} "
                                f"(R$^2$ {df['r2']:.3f})")
    ax_c.set_yscale("log")
    ax_c.set_ylabel(r"compression $C_l = \mathrm{Tr}\,\Sigma_W / \mathrm{Tr}\,\Sigma_B$")
    ax_c.set_title("Within-class compression (smaller = more compressed)", fontsize=10)
    ax_d.set_ylabel(r"discrimination $D_l$ = 1 - max cos($\mu_k, \mu_{k'}$)")
    ax_d.set_title("Between-class discrimination", fontsize=10)
    for ax in (ax_c, ax_d):
        ax.set_xlabel("layer l (0 = input)")
        ax.set_xticks(next(iter(results["models"].values()))["runs"][0]["layers"])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def embedding_figure(results: dict, path) -> None:
    """Rows: model kinds (first seed); columns: layers; points: 2-D PCA coloured by class."""
    models = results["models"]
    ncols = max(len(res["runs"][0]["embedding"]["layers"]) for res in models.values())
    fig, axes = plt.subplots(len(models), ncols, figsize=(3.0 * ncols, 3.0 * len(models) + 0.4),
                             dpi=130, squeeze=False)
    cmap = plt.get_cmap("tab10")
    for row, (kind, res) in zip(axes, models.items(), strict=True):
        emb = res["runs"][0]["embedding"]
        labels = np.asarray(emb["labels"])
        for ax in row[len(emb["layers"]):]:
            ax.axis("off")
        for ax, l, coords, explained in zip(row, emb["layers"], emb["coords"], emb["explained"],
                                            strict=False):
            xy = np.asarray(coords)
            ax.scatter(xy[:, 0], xy[:, 1], c=cmap(labels % 10), s=4, alpha=0.7, lw=0)
            what = "ReLU" if l <= res["num_nonlinear"] else "linear"
            ax.set_title(f"{kind}, layer {l} ({what})\nPC1+2: {100 * sum(explained):.0f}% of var.",
                         fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(k), label=str(k))
               for k in range(int(max(np.asarray(r["runs"][0]["embedding"]["labels"]).max()
                                      for r in models.values())) + 1)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               title="class", title_fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def draw_all(workdir) -> list[Path]:
    """Read ``workdir/results.json``; write the three figures next to it; return their paths."""
    workdir = Path(workdir)
    results = json.loads((workdir / "results.json").read_text())
    out = []
    for name, fn in (("rank_probe.png", rank_probe_figure),
                     ("compression_discrimination.png", compression_discrimination_figure),
                     ("embedding.png", embedding_figure)):
        fn(results, workdir / name)
        out.append(workdir / name)
    return out
