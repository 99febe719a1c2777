"""Assumptions of the theory on trained deep linear networks (the paper's Figure 6).

Trains on the nearly orthonormal data of Figure 6 (N = 30: K = 3 classes of n = 10, d = 50), with
orthogonal init xi = 0.1, loss scale alpha = 1 and the training rule of the paper's Figure-6 code
(full-batch SGD lr 0.1, no momentum, cosine over at most 100000 epochs to lr/1000, stop once
the loss is below 1e-10), 10 seeds, and measures per trained net (``theory.check_assumptions``):
  min-norm residual      norm_F(Y X^+ / alpha - W_L...W_1);
  balancedness           mean over l of norm_F(W_{l+1}^T W_{l+1} - W_l W_l^T) / norm_F(W_l);
  middle singular var.   variance of singular values K+1..d-K of W_1..W_{L-1}.
Two sweeps: depth L at width ``--width`` (default 400) and width ``--widths`` at depth
``--width-depth``. Mean and std over seeds go to summary.md and assumptions.png. The seeds vary
the init only; the data are one draw (``--data-seed``), where the paper's code draws new data
per seed.

How long the paper's rule trains at alpha = 1, xi = 0.1 (measured, float32, 10 seeds): L = 2
converges in ~740 epochs, L = 3 in ~930, L = 4 in ~3300 (the same at widths 200..700), L = 5
only after ~21500-26000 epochs (widths 50 and 400; at width 400, 2 seeds: residual 0.034-0.037,
balancedness 0.0375, variance 1.2e-11, also the paper's magnitudes), and L >= 6 stays at the
saddle near 0 (loss 1.0 for all 100000 epochs, width 50). The paper's sweeps (width 400 with
L = 2..5, L = 5 with widths 200..700) thus need ~25000 epochs of 10 nets of width up to 700:
~0.1 s per epoch at width 700 and L = 5 on a 2-core CPU, 1-2 hours in all. The CPU default
keeps the paper's data, init, loss and training rule but stops at L = 4: depths 2, 3, 4 at width
400 and the width sweep at L = 4 (~3300 epochs everywhere). The paper's grid (GPU) is
``--depths 2,3,4,5 --width-depth 5``. A depth that stays at the saddle (L >= 6) trains all
``--epochs`` (100000, the paper's cap) before it is reported as not converged.

Reproduce (2-core CPU; measured 245 s wall idle, 262 s at load ~1.5-2, 553 s at load
~4-5; 0.8 GB RSS):

    python -m experiments.assumptions [--workdir runs/assumptions]

Expected (data seed 0, mean +- std over 10 seeds, all 80 trained nets converge):
  min-norm residual  0.049, 0.043, 0.042 (+- 0.004) for L = 2, 3, 4 at width 400; at L = 4 it
                     falls with width: 0.058 (h=200), 0.048, 0.042, 0.039, 0.032, 0.031 (h=700);
  balancedness       0.023, 0.067, 0.048 for L = 2, 3, 4; at L = 4 it grows with width: 0.034
                     (h=200) .. 0.061 (h=700), the same for every seed: it is the imbalance of
                     the init, which gradient flow conserves: the hidden pairs start balanced,
                     the first and last pairs with norm xi^2 sqrt(h - d) and xi^2 sqrt(h - K);
  middle singular values all within 0.09999..0.10000 of xi = 0.1, variance ~1e-14 (L = 2) to
                     ~2e-12 (L = 4), float32 rounding;
matching science.md's ~0.03-0.06, ~0.02-0.07 and ~0.

Outputs: results.json (one entry per trained net and sweep), summary.md (mean, std per point),
assumptions.png (top row vs depth, bottom row vs width), config.json, sweeps/<run>/ (metrics and
checkpoints for --resume).
"""

import argparse
import dataclasses
import sys
import time

import jax
import numpy as np

import pnc_jax  # noqa: F401  (sets XLA flags before JAX starts)
from pnc_jax import cli
from pnc_jax.config import Config
from pnc_jax.data import dataset_for
from pnc_jax.models import weight_matrices
from pnc_jax.plots.theory import assumptions_figure
from pnc_jax.sweep import run_sweep
from pnc_jax.workdir import Workdir, json_float
from theory import check_assumptions

DEFAULTS = Config(
    samples_per_class=10, input_dim=50, num_classes=3, depths=(2, 3, 4), width=400,
    init_scale=0.1, loss_scale=1.0, lr=0.1, schedule="cosine", final_lr_factor=1e-3,
    epochs=100000, tol=1e-10, seeds=tuple(range(10)), chunk_epochs=100,
)
DEFAULT_WIDTHS = (200, 300, 400, 500, 600, 700)
DEFAULT_WIDTH_DEPTH = 4
METRICS = ("min_norm_residual", "balancedness_mean", "middle_singular_variance")
EXPECTED = {  # science.md §2, the paper's Figure 6
    "min_norm_residual": "~0.03-0.06",
    "balancedness_mean": "~0.02-0.07",
    "middle_singular_variance": "~0",
}


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") \
            from None


def build_parser():
    parser = cli.parser_for(__doc__, DEFAULTS, "runs/assumptions")
    parser.add_argument(
        "--widths", type=_widths, default=DEFAULT_WIDTHS,
        help="widths of the width sweep, comma list; empty: no width sweep (default: "
             + ",".join(map(str, DEFAULT_WIDTHS)) + ")",
    )
    parser.add_argument(
        "--width-depth", type=int, default=DEFAULT_WIDTH_DEPTH,
        help=f"depth L of the width sweep (default: {DEFAULT_WIDTH_DEPTH}; the paper: 5)",
    )
    return parser


def assumption_records(cfg: Config, records, states, x, y, sweep: str) -> list[dict]:
    """One entry per trained net: its run record's training outcome and its assumption metrics."""
    runs = cfg.runs()
    out = []
    for group, state in states.items():
        group_runs = [r for r in runs if r[0] in group]
        for i, (depth, seed) in enumerate(group_runs):
            rec = records[runs.index((depth, seed))]
            params = jax.tree.map(lambda a, i=i: a[i], state.params)
            weights = [np.asarray(w, np.float64) for w in weight_matrices(params, depth)]
            entry = {
                "sweep": sweep, "depth": depth, "width": cfg.width, "seed": seed,
                "converged": rec["converged"], "status": rec["status"],
                "epochs_trained": rec["epochs_trained"], "final_loss": rec["final_loss"],
            }
            try:
                rep = check_assumptions(weights, x, y, cfg.num_classes, cfg.loss_scale)
            except (ValueError, np.linalg.LinAlgError) as e:  # real data with d < N, NaNs
                entry.update({k: None for k in METRICS}, note=f"check skipped: {e}")
                out.append(entry)
                continue
            entry.update({
                "min_norm_residual": json_float(rep.min_norm_residual),
                "min_norm_relative": json_float(rep.min_norm_relative),
                "balancedness": [json_float(v) for v in rep.balancedness],
                "balancedness_normalized": [json_float(v) for v in rep.balancedness_normalized],
                "balancedness_mean": json_float(rep.balancedness_mean),
                "balancedness_hidden_max": json_float(rep.balancedness_hidden_max),
                "middle_singular_variance": json_float(rep.middle_singular_variance),
                "middle_singular_range": [
                    [float(s.min()), float(s.max())] if s.size else None
                    for s in rep.middle_singular_values
                ],
                "orthonormality": json_float(rep.orthonormality),
            })
            out.append(entry)
    return out


def train(cfg: Config, x, y, args, workdir: Workdir, tag: str, sweep: str) -> list[dict]:
    sub = Workdir(workdir.path / "sweeps" / tag, overwrite=not args.resume, resume=args.resume)
    if not args.no_progress:
        sys.stderr.write(f"{tag}: depths {cfg.depths}, width {cfg.width}\n")
    records, states = run_sweep(cfg, x, y, sub, resume=args.resume,
                                progress=not args.no_progress,
                                depth_strategy=args.depth_strategy,
                                workers=args.workers)
    return assumption_records(cfg, records, states, x, y, sweep)


def point_stats(entries: list[dict], sweep: str) -> list[dict]:
    """Mean and std (ddof=1) over the converged seeds of each point of one sweep."""
    axis = sweep
    out = []
    for value in sorted({e[axis] for e in entries if e["sweep"] == sweep}):
        pts = [e for e in entries if e["sweep"] == sweep and e[axis] == value]
        good = [e for e in pts if e["converged"]]
        row = {"sweep": sweep, "depth": pts[0]["depth"], "width": pts[0]["width"],
               "converged": len(good), "seeds": len(pts),
               "epochs_median": float(np.median([e["epochs_trained"] for e in pts]))}
        for key in METRICS:
            vals = np.array([e[key] for e in good if e[key] is not None], np.float64)
            row[key] = float(vals.mean()) if vals.size else None
            row[key + "_std"] = float(vals.std(ddof=1)) if vals.size > 1 else None
        ranges = [r for e in good for r in e.get("middle_singular_range") or [] if r]
        row["middle_singular_min"] = min(r[0] for r in ranges) if ranges else None
        row["middle_singular_max"] = max(r[1] for r in ranges) if ranges else None
        out.append(row)
    return out


def _ms(mean, std, fmt) -> str:
    if mean is None:
        return "n/a"
    return format(mean, fmt) + ("" if std is None else f" +- {std:.2g}")


def summary_markdown(stats: list[dict], seconds: float, cfg: Config, widths, width_depth) -> str:
    lines = [
        "# Assumptions of the theory on trained deep linear nets (the paper's Figure 6)",
        "",
        f"Data: N = {cfg.num_classes * cfg.samples_per_class}, d = {cfg.input_dim}, "
        f"K = {cfg.num_classes}; xi = {cfg.init_scale:g}, alpha = {cfg.loss_scale:g}, lr "
        f"{cfg.lr:g} {cfg.schedule} to x{cfg.final_lr_factor:g} over {cfg.epochs} epochs, stop "
        f"at loss < {cfg.tol:g}; {len(cfg.seeds)} seeds. Depth sweep at width {cfg.width}; "
        f"width sweep ({', '.join(map(str, widths)) or 'none'}) at L = {width_depth}. "
        f"Wall time {seconds:.0f} s.",
        "",
        "Mean +- std over converged seeds. Expected (science.md): residual "
        f"{EXPECTED['min_norm_residual']}, balancedness {EXPECTED['balancedness_mean']}, middle "
        f"singular value variance {EXPECTED['middle_singular_variance']}.",
        "",
        "| sweep | L | width | min-norm residual | balancedness (mean over l) "
        "| middle singular value variance | their range (xi = "
        f"{cfg.init_scale:g}) | converged | median epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in stats:
        span = ("n/a" if r["middle_singular_min"] is None
                else f"{r['middle_singular_min']:.6f}..{r['middle_singular_max']:.6f}")
        lines.append(
            f"| {r['sweep']} | {r['depth']} | {r['width']} "
            f"| {_ms(r['min_norm_residual'], r['min_norm_residual_std'], '.4f')} "
            f"| {_ms(r['balancedness_mean'], r['balancedness_mean_std'], '.4f')} "
            f"| {_ms(r['middle_singular_variance'], r['middle_singular_variance_std'], '.2e')} "
            f"| {span} | {r['converged']}/{r['seeds']} | {r['epochs_median']:.0f} |"
        )
    if any(r["converged"] < r["seeds"] for r in stats):
        lines += ["", "Unconverged nets (loss not below tol within the epochs; at alpha = 1, "
                  "xi = 0.1, L >= 6 stays at the saddle near 0) are left out of mean and std."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    cfg, args, workdir = cli.parse(build_parser(), DEFAULTS, argv)
    widths, width_depth = tuple(args.widths), args.width_depth
    try:
        if min(cfg.depths) < 2 or width_depth < 2:
            raise ValueError(f"the checks need L >= 2 weight matrices, got depths={cfg.depths}, "
                             f"--width-depth={width_depth}")
        for w in widths:
            if w < cfg.num_classes:
                raise ValueError(f"--widths: width {w} < num_classes={cfg.num_classes}")
        data = dataset_for(cfg)
    except (ValueError, OSError) as e:
        cli.fail(str(e))
    x, y = np.asarray(data.x_train, np.float64), np.asarray(data.y_train)
    grid = {"depths": list(cfg.depths), "width": cfg.width, "widths": list(widths),
            "width_depth": width_depth}
    cli.record_config(workdir, args, cfg.to_json(), grid=grid)

    start = time.time()
    entries = train(cfg, x, y, args, workdir, f"depth_w{cfg.width}", "depth")
    for w in widths:
        if w == cfg.width and width_depth in cfg.depths:  # already trained: same nets
            entries += [dict(e, sweep="width") for e in entries
                        if e["sweep"] == "depth" and e["depth"] == width_depth]
            continue
        wcfg = dataclasses.replace(cfg, width=w, depths=(width_depth,))
        entries += train(wcfg, x, y, args, workdir, f"width_w{w}_L{width_depth}", "width")
    seconds = time.time() - start
    stats = point_stats(entries, "depth") + point_stats(entries, "width")
    workdir.write_json("results.json", entries)
    workdir.write_text("summary.md", summary_markdown(stats, seconds, cfg, widths, width_depth))
    assumptions_figure(entries, workdir.file("assumptions.png"))
    for r in stats:
        print(f"{r['sweep']:5s} L={r['depth']} width={r['width']}: residual "
              f"{_ms(r['min_norm_residual'], r['min_norm_residual_std'], '.4f')}, balancedness "
              f"{_ms(r['balancedness_mean'], r['balancedness_mean_std'], '.4f')}, variance "
              f"{_ms(r['middle_singular_variance'], r['middle_singular_variance_std'], '.1e')}, "
              f"converged {r['converged']}/{r['seeds']}")
    print(f"{seconds:.0f} s -> {workdir.path}")
    return entries


if __name__ == "__main__":
    main()
