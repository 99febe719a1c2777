"""Figure of ``experiments.transfer`` (transfer.png), drawn from its results.json only.

Left: transfer accuracy (probe on the backbone output, held-out target data) against the head
depth h, mean +- std over seeds with the seeds as dots, and the backbone output's C on source and
target data on a second (log) axis. Right: probe accuracy of every backbone layer, one line per h.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

ACC_COLOUR, C_SOURCE, C_TARGET = "tab:blue", "tab:red", "tab:orange"


def transfer_figure(results: dict, path) -> None:
    """Transfer accuracy and backbone C vs h (left); probe accuracy per backbone layer (right)."""
    rows = [r for r in results["per_head_depth"] if r["transfer_accuracy"] is not None]
    runs = [r for r in results["runs"] if r["status"] == "ok" and r["transfer_accuracy"]]
    b = results["backbone_depth"]
    fig, (ax, ax_l) = plt.subplots(1, 2, figsize=(12.5, 4.8), dpi=130)
    h = np.array([r["head_depth"] for r in rows])
    acc = np.array([100 * r["transfer_accuracy"] for r in rows])
    std = np.array([100 * (r["transfer_accuracy_std"] or 0.0) for r in rows])
    ax.scatter([r["head_depth"] for r in runs], [100 * r["transfer_accuracy"] for r in runs],
               s=10, color=ACC_COLOUR, alpha=0.35, zorder=2)
    ax.errorbar(h, acc, yerr=std, fmt="o-", color=ACC_COLOUR, capsize=3, zorder=3,
                label="transfer accuracy (mean +- std; dots: seeds)")
    ax.set_xlabel("projection-head depth h")
    ax.set_ylabel("transfer accuracy (%)", color=ACC_COLOUR)
    ax.tick_params(axis="y", colors=ACC_COLOUR)
    ax.set_xticks(h)
    ax.grid(alpha=0.3)
    ax_c = ax.twinx()
    for side, colour in (("source", C_SOURCE), ("target", C_TARGET)):
        key = f"backbone_compression_{side}"
        c = np.array([np.nan if r[key] is None else r[key] for r in rows])
        ax_c.errorbar(h + (0.06 if side == "target" else -0.06), c,
                      yerr=[r[key + "_std"] or 0.0 for r in rows], fmt="s--", ms=4,
                      color=colour, capsize=2, label=f"backbone C_{b} ({side} data)")
    ax_c.set_yscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax_c.yaxis.set_major_formatter(plain)
    ax_c.yaxis.set_minor_formatter(plain)
    ax_c.set_ylabel(f"backbone compression C_{b}")
    handles = ax.get_legend_handles_labels()[0] + ax_c.get_legend_handles_labels()[0]
    ax.legend(handles, [x.get_label() for x in handles], fontsize=8, ncol=3, frameon=False,
              loc="upper center", bbox_to_anchor=(0.5, -0.14))
    src, tgt = results["source"], results["target"]
    ax.set_title(f"{src['dataset']} {src['classes']} -> {tgt['dataset']} {tgt['classes']}, "
                 f"{tgt['labelled_per_class']} labelled / class", fontsize=9)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(rows), 1)))
    for r, colour in zip(rows, colours, strict=False):
        layers = r["layer_probe_accuracy"]
        ax_l.plot(range(len(layers)), 100 * np.asarray(layers), "o-", color=colour, ms=4,
                  label=f"h = {r['head_depth']}")
    ax_l.set_xticks(range(b + 1))
    ax_l.set_xlabel("backbone layer l (0 = input)")
    ax_l.set_ylabel("target probe accuracy (%)")
    ax_l.set_title(f"probe on each backbone layer ({results['head']} head, width "
                   f"{results['width']})", fontsize=9)
    ax_l.grid(alpha=0.3)
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
