"""summary.md of each experiment: markdown tables drawn from its results records only (like
the plots, they never recompute), and the number formats they share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pnc_jax.config import Config
from pnc_jax.records import LayerRecord, RunRecord, TheoryPoint

# ----------------------------------------------------------------------------- formats


def num(value, fmt: str = ".4g", missing: str = "-") -> str:
    """``value`` formatted, or ``missing`` for None."""
    return missing if value is None else format(value, fmt)


def pct(value, signed: bool = True) -> str:
    """A fraction as a percentage: +1.23% (signed) or 1.23%; n/a for None."""
    return "n/a" if value is None else f"{100 * value:{'+' if signed else ''}.2f}%"


def mean_std(mean, std, fmt: str = ".4g", missing: str = "-") -> str:
    """``mean +- std`` (``std`` with 2 significant digits; omitted when None)."""
    if mean is None:
        return missing
    return format(mean, fmt) + ("" if std is None else f" +- {std:.2g}")


def mean_std_of(values: Sequence, fmt: str = ".4g") -> str:
    """``mean +- std`` (population std) of the non-None values, "-" if there are none."""
    v = [x for x in values if x is not None]
    return mean_std(float(np.mean(v)), float(np.std(v)), fmt) if v else "-"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


# ----------------------------------------------------------------------------- experiments


def sweep_depth(cfg: Config, runs: Sequence[RunRecord]) -> str:
    """Per depth: runs ok, accuracy, fitted C ratio and D slope over seeds, the theory's rho."""
    rows = []
    for depth in cfg.depths:
        rs = [r for r in runs if r["depth"] == depth]
        ok = [r for r in rs if r["status"] == "ok"]
        cf = [r["compression_fit"] for r in ok if r["compression_fit"]]
        df = [r["discrimination_fit"] for r in ok if r["discrimination_fit"]]
        th = rs[0]["theory"]
        rows.append([
            depth, f"{len(ok)}/{len(rs)}", mean_std_of([r["train_accuracy"] for r in ok]),
            mean_std_of([f["ratio"] for f in cf]), mean_std_of([f["r2"] for f in cf]),
            num(th and th["rho"], ".4f", "nan"), num(th and th["fitted_ratio"], ".4f", "nan"),
            mean_std_of([f["slope"] for f in df]), mean_std_of([f["r2"] for f in df])])
    init = f"init {cfg.init}" + (f" (xi {cfg.init_scale})" if cfg.init == "orthogonal" else "")
    lines = [
        "# Depth sweep", "",
        f"model {cfg.model}, width {cfg.width}, {init}, loss {cfg.loss} (alpha "
        f"{cfg.loss_scale}), lr {cfg.lr}, dataset {cfg.dataset}; mean +- std over seeds; fits "
        "over l = 1..L-1.", "",
        *table(["L", "ok/runs", "train acc", "C ratio (fit)", "C fit R^2", "theory rho",
                "theory exact", "D slope (fit)", "D fit R^2"], rows),
    ]
    diverged = [f"L={r['depth']} seed {r['seed']}" for r in runs if r["status"] == "diverged"]
    if diverged:
        lines += ["", f"Diverged (NaN/inf loss): {', '.join(diverged)}."]
    return "\n".join(lines) + "\n"


def theory_vs_practice(points: Sequence[TheoryPoint], stats: dict, seconds: float,
                       regime_rho: float) -> str:
    """Medians of |relative error| per reference, then one row per (setting, depth)."""
    lines = [
        "# Theory vs practice: trained compression ratio against the prediction", "",
        f"{stats['num_points']} points, {stats['num_ok']} with every seed converged, "
        f"{stats['num_in_regime']} of those with rho <= {regime_rho}. Wall time {seconds:.0f} s.",
        "", "Median |relative error| of the trained fitted ratio (mean over seeds, l >= 1 fit):",
        "",
        *table(["reference", f"rho <= {regime_rho}", "all converged points"], [
            [name, f"{pct(stats[f'median_{ref}_regime'], False)} (max "
                   f"{pct(stats[f'max_{ref}_regime'], False)})",
             f"{pct(stats[f'median_{ref}_all'], False)} (max "
             f"{pct(stats[f'max_{ref}_all'], False)})"]
            for ref, name in (("rho", "orthonormal limit rho"),
                              ("predicted", "finite-data prediction"))]),
        "",
        "Columns: rho = xi^2 alpha^(2/L) / n^(1/L); predicted = fitted ratio of the exact "
        "finite-data C_l; closed form = measured ratio of the min-norm balanced net; trained = "
        "mean (std) over converged seeds; errors are trained / reference - 1.", "",
    ]
    rows = []
    for p in points:
        m = p["measured"]
        trained = num(m["fitted_ratio_mean"], ".4f", "n/a")
        if m["fitted_ratio_std"] is not None:
            trained += f" ({m['fitted_ratio_std']:.4f})"
        rows.append([
            f"{p['init_scale']:g}", p["samples_per_class"], f"{p['loss_scale']:g}", p["depth"],
            f"{p['rho']:.4f}", num(p["predicted_fitted_ratio"], ".4f", "n/a"),
            num(p["closed_form"]["fitted_ratio"] if p["closed_form"] else None, ".4f", "n/a"),
            trained,
            pct(p["rel_error_rho"]), pct(p["rel_error_predicted"]),
            f"{sum(m['converged'])}/{len(m['converged'])}",
            p["status"] + ("" if p["in_regime"] else f", rho > {regime_rho}")])
    lines += table(["xi", "n", "alpha", "L", "rho", "predicted", "closed form", "trained",
                    "err vs rho", "err vs predicted", "converged", "status"], rows)

    def where(p: TheoryPoint) -> str:
        return (f"- xi={p['init_scale']:g} n={p['samples_per_class']} alpha={p['loss_scale']:g}"
                f" L={p['depth']}")

    flagged = [p for p in points if p["status"] != "ok"]
    if flagged:
        lines += ["", "Flagged (not in the medians): runs that did not reach the loss tolerance "
                  "(e.g. alpha = 1 with small xi and deep L stays at the saddle near 0):", ""]
        lines += [f"{where(p)}: {p['status']}, final losses {p['measured']['final_loss']}"
                  for p in flagged]
    noted = [p for p in points if p["notes"]]
    if noted:
        lines += ["", "Notes:", ""] + [f"{where(p)}: {'; '.join(p['notes'])}" for p in noted]
    return "\n".join(lines) + "\n"


def assumptions(stats: Sequence[dict], seconds: float, cfg: Config, widths: Sequence[int],
                width_depth: int, expected: dict[str, str]) -> str:
    """One row per (sweep, point): residual, balancedness, middle singular values."""
    rows = []
    for r in stats:
        span = ("n/a" if r["middle_singular_min"] is None
                else f"{r['middle_singular_min']:.6f}..{r['middle_singular_max']:.6f}")
        rows.append([
            r["sweep"], r["depth"], r["width"],
            mean_std(r["min_norm_residual"], r["min_norm_residual_std"], ".4f", "n/a"),
            mean_std(r["balancedness_mean"], r["balancedness_mean_std"], ".4f", "n/a"),
            mean_std(r["middle_singular_variance"], r["middle_singular_variance_std"], ".2e",
                     "n/a"),
            span, f"{r['converged']}/{r['seeds']}", f"{r['epochs_median']:.0f}"])
    lines = [
        "# Assumptions of the theory on trained deep linear nets (the paper's Figure 6)", "",
        f"Data: N = {cfg.num_classes * cfg.samples_per_class}, d = {cfg.input_dim}, "
        f"K = {cfg.num_classes}; xi = {cfg.init_scale:g}, alpha = {cfg.loss_scale:g}, lr "
        f"{cfg.lr:g} {cfg.schedule} to x{cfg.final_lr_factor:g} over {cfg.epochs} epochs, stop "
        f"at loss < {cfg.tol:g}; {len(cfg.seeds)} seeds. Depth sweep at width {cfg.width}; "
        f"width sweep ({', '.join(map(str, widths)) or 'none'}) at L = {width_depth}. "
        f"Wall time {seconds:.0f} s.", "",
        "Mean +- std over converged seeds. Expected (science.md): residual "
        f"{expected['min_norm_residual']}, balancedness {expected['balancedness_mean']}, middle "
        f"singular value variance {expected['middle_singular_variance']}.", "",
        *table(["sweep", "L", "width", "min-norm residual", "balancedness (mean over l)",
                "middle singular value variance", f"their range (xi = {cfg.init_scale:g})",
                "converged", "median epochs"], rows),
    ]
    if any(r["converged"] < r["seeds"] for r in stats):
        lines += ["", "Unconverged nets (loss not below tol within the epochs; at alpha = 1, "
                  "xi = 0.1, L >= 6 stays at the saddle near 0) are left out of mean and std."]
    return "\n".join(lines) + "\n"


def nonlinear(results: dict, seconds: dict[str, dict[str, float]]) -> str:
    """Per kind and seed: the per-layer table, the fits and the checks; ``seconds[kind]`` holds
    the "train" and "measure" wall times."""
    lines = ["# Nonlinear networks on real data", "",
             f"data {results['dataset']} ({results['num_train']} train / {results['num_test']} "
             f"test); features with BatchNorm in {'train' if results['bn_train'] else 'eval'} "
             f"mode; preset {results['preset']}.", ""]
    for kind, res in results["models"].items():
        cfg = res["config"]
        for rec in res["runs"]:
            rec_: LayerRecord = rec
            lines += [
                f"## {kind}, seed {rec_['seed']}", "",
                f"width {cfg['width']}, L = {rec_['depth']}, alpha {cfg['loss_scale']}, "
                f"lr {cfg['lr']}, wd {cfg['weight_decay']}, {cfg['epochs']} epochs: train "
                f"accuracy {num(rec_['train_accuracy'], '.4f')}, test accuracy "
                f"{num(rec_['test_accuracy'], '.4f')}, final loss {num(rec_['final_loss'])}, "
                f"training {seconds[kind]['train']:.0f} s, measuring "
                f"{seconds[kind]['measure']:.0f} s.",
                "",
            ]
            rows = []
            for l in rec_["layers"]:
                what = "input" if l == 0 else ("ReLU" if l <= res["num_nonlinear"] else "linear")
                rows.append([l, what, rec_["numerical_rank"][l],
                             f"{rec_['probe_train_accuracy'][l]:.4f}",
                             f"{rec_['probe_test_accuracy'][l]:.4f}",
                             f"{rec_['compression'][l]:.4g}", f"{rec_['discrimination'][l]:.4f}",
                             f"{rec_['nc1'][l]:.4g}", f"{rec_['fuzziness'][l]:.4g}"])
            lines += table(["l", "layer", "rank", "probe train", "probe test", "C_l", "D_l",
                            "NC1", "fuzziness"], rows)
            lines.append("")
            for span in ("deep", "all"):
                cf = rec_["fits"][f"compression_{span}"]
                df = rec_["fits"][f"discrimination_{span}"]
                if cf and df:
                    lines.append(
                        f"- fit over l = {cf['start']}..{rec_['depth'] - 1}: C ratio "
                        f"{cf['ratio']:.4f} (R^2 {cf['r2']:.4f}), D slope {df['slope']:.4f} "
                        f"(R^2 {df['r2']:.4f})")
            lines += ["", "Checks: " + "; ".join(
                f"{name}: {'yes' if ok else 'NO'}" for name, ok in rec_["checks"].items()), ""]
    return "\n".join(lines) + "\n"
