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


def transfer(results: dict, seconds: dict[str, float]) -> str:
    """Per head depth h: mean +- std over seeds of the source accuracies, the transfer accuracy,
    the backbone output's C, D, NC1 and the probe accuracy per backbone layer; then the verdict
    (``pnc_jax.transfer.verdict``)."""
    src, tgt, b = results["source"], results["target"], results["backbone_depth"]
    rows = []
    for r in results["per_head_depth"]:
        def ms(key: str, fmt: str = ".4g", r=r) -> str:
            return mean_std(r[key], r[key + "_std"], fmt)

        def pc(key: str, r=r) -> str:
            return "-" if r[key] is None else mean_std(100 * r[key], r[key + "_std"] and
                                                       100 * r[key + "_std"], ".2f")

        layers = r["layer_probe_accuracy"]
        rows.append([
            r["head_depth"], b + r["head_depth"] + 1, f"{r['ok']}/{r['seeds']}",
            pc("source_train_accuracy"), pc("source_test_accuracy"), pc("transfer_accuracy"),
            ms("backbone_compression_source"), ms("backbone_compression_target"),
            ms("backbone_discrimination_target", ".3f"), ms("backbone_nc1_target"),
            "-" if layers is None else " / ".join(f"{100 * a:.1f}" for a in layers)])
    v = results["verdict"]
    lines = [
        "# Transfer through a projection head", "",
        f"Source {src['dataset']} classes {src['classes']} ({src['num_train']} train / "
        f"{src['num_test']} test) -> target {tgt['dataset']} classes {tgt['classes']} (probe "
        f"trained on {tgt['labelled_per_class']} labelled examples per class, mean over "
        f"{tgt['draws']} draws, scored on {tgt['num_test']} held-out). Backbone: {b} blocks "
        f"({results['block']}) of width {results['width']}; head: h {results['head']} "
        f"layers; {results['epochs']} epochs. Mean +- std (ddof 1) over seeds; accuracies in %; "
        f"C, D, NC1 of the backbone output h_{b}. Training {seconds['train']:.0f} s, measuring "
        f"{seconds['measure']:.0f} s.", "",
        *table(["h", "L", "ok", "source train", "source test", "transfer", "C source",
                "C target", "D target", "NC1 target", f"probe per layer 0..{b}"], rows), ""]
    if v["increase"] is None:
        lines.append("Verdict: needs h = 0 and some h >= 2 with results.")
    else:
        lines.append(
            f"Transfer: h = 0 gives {100 * v['h0']:.2f}%, the best h >= 2 (h = {v['best_h']}) "
            f"{100 * v['best']:.2f}%: {100 * v['increase']:+.2f} points against a seed spread of "
            f"{num(v['spread'] and 100 * v['spread'], '.2f')} (larger std of the two): "
            f"{'exceeds' if v['exceeds_spread'] else 'does NOT exceed'} the spread.")
    for side in ("source", "target"):
        rho, up = v[f"compression_{side}_spearman"], v[f"compression_{side}_increases"]
        lines.append(f"Backbone C on {side} data vs h: Spearman {num(rho, '.3f')}, "
                     f"{'rises strictly' if up else 'does not rise strictly'} with h.")
    return "\n".join(lines) + "\n"


def _seed_mean_std(values: Sequence, fmt: str = ".4g") -> str:
    """``mean +- std`` (ddof 1) of the non-None values, "-" if there are none."""
    v = [x for x in values if x is not None]
    return mean_std(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None,
                    fmt) if v else "-"


def data_separation(runs: Sequence[dict], cfg: Config, dataset: str,
                    seconds: dict[str, dict[str, float]], start: int = 0) -> str:
    """experiments.data_separation (``records.SeparationRun``): per ablation and depth, mean +-
    std over seeds of rho and Pearson r (BatchNorm in training mode, and eval mode), r at init,
    accuracies; r during training (ablation none); the done-when checks."""
    ablations = list(dict.fromkeys(r["ablation"] for r in runs))
    rows, means = [], {}
    for ablation in ablations:
        for depth in cfg.depths:
            rs = [r for r in runs if r["ablation"] == ablation and r["depth"] == depth]
            ok = [r for r in rs if r["status"] == "ok"]
            col = {k: [r[k] for r in ok] for k in ("rho", "pearson_r", "pearson_r_at_init")}
            means[ablation, depth] = {k: float(np.mean(v)) if v and None not in v else None
                                      for k, v in col.items()}
            rows.append([
                ablation, depth, f"{rs[0]['lr']:g}", f"{len(ok)}/{len(rs)}",
                _seed_mean_std(col["rho"], ".3f"), _seed_mean_std(col["pearson_r"], ".4f"),
                _seed_mean_std([r["r2"] for r in ok], ".4f"),
                _seed_mean_std(col["pearson_r_at_init"], ".3f"),
                _seed_mean_std([r["rho_eval_bn"] for r in ok], ".3f"),
                _seed_mean_std([r["pearson_r_eval_bn"] for r in ok], ".4f"),
                _seed_mean_std([r["train_accuracy"] and 100 * r["train_accuracy"] for r in ok],
                               ".2f"),
                _seed_mean_std([r["test_accuracy"] and 100 * r["test_accuracy"] for r in ok],
                               ".2f")])
    time_s = {k: sum(v.values()) for k, v in seconds.items()}
    real = cfg.resize and cfg.dataset not in ("synthetic", "gaussian")
    lines = [
        "# The law of data separation (He & Su)", "",
        f"{dataset}: {cfg.samples_per_class} training images per class"
        f"{f', {cfg.resize} x {cfg.resize}' if real else ''}"
        f", K = {cfg.num_classes}; "
        f"{cfg.model} of width {cfg.width} (L - 1 blocks Linear -> "
        f"{'BatchNorm -> ' if cfg.batch_norm else ''}{cfg.activation}), {cfg.optimizer}, "
        f"weight decay {cfg.weight_decay:g}, {cfg.epochs} epochs, lr / 10 at "
        f"{', '.join(map(str, cfg.milestones)) or '-'}. Fuzziness D_l of the training set with "
        f"BatchNorm in training mode over consecutive batches of {cfg.measure_batch} (rho, r, "
        "R^2, r at init) or in eval mode (eval BN); rho = exp(slope of ln D_l on l), fit over "
        f"l = {start}..L-1 (0 = input); mean +- std (ddof 1) over seeds; "
        "accuracies in % (random_labels: train accuracy on its random labels). Wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in time_s.items())
        + f" (total {sum(time_s.values()):.0f} s).", "",
        *table(["ablation", "L", "lr", "ok", "rho", "Pearson r", "R^2", "r at init",
                "rho (eval BN)", "r (eval BN)", "train acc", "test acc"], rows), ""]
    base = [r for r in runs if r["ablation"] == ablations[0]]
    if base and base[0]["emergence"]:
        measured = [p["epoch"] for p in base[0]["emergence"]]
        shown = [e for e in measured if e in (0, 10, 50, 100, 200, 300, 400, 500)
                 or e == measured[-1]]
        erows = []
        for depth in cfg.depths:
            curves = [{p["epoch"]: p["pearson_r"] for p in r["emergence"]}
                      for r in base if r["depth"] == depth]
            erows.append([depth, *(_seed_mean_std([c.get(e) for c in curves], ".3f")
                                   for e in shown)])
        lines += [f"Pearson r during training ({ablations[0]}; epoch 0 = init):", "",
                  *table(["L", *(f"epoch {e}" for e in shown)], erows), ""]
    if "none" in ablations:
        depths = np.array(cfg.depths)
        r, rho, r0 = (np.array([np.nan if (v := means["none", d][key]) is None else v
                                for d in cfg.depths])
                      for key in ("pearson_r", "rho", "pearson_r_at_init"))
        checks = {  # NaN (no fit) fails every comparison
            "mean r <= -0.98 at every depth <= 8": bool(np.all(r[depths <= 8] <= -0.98)),
            "rho increases with depth": bool(np.all(np.diff(rho) > 0)),
            "r at init above the trained r (by > 0.1) at every depth": bool(np.all(r0 > r + 0.1)),
        }
        lines += ["Checks (ablation none): " + "; ".join(
            f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()), ""]
    return "\n".join(lines)


def _span(values, fmt: str = ".10g") -> str:
    """``a`` or ``a .. b``: the range of the finite values as formatted ("-" if none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return "-"
    lo, hi = format(float(v.min()), fmt), format(float(v.max()), fmt)
    return lo if lo == hi else f"{lo} .. {hi}"


def _max_rel(values, ref: float) -> str:
    v = np.asarray(values, dtype=float)
    return f"{float(np.nanmax(np.abs(v / ref - 1))):.1e}"


def dlufm(results: dict, seconds: dict[str, float]) -> str:
    """experiments.dlufm (``records.DLUFMResults``): measured vs closed form over every seed
    and layer, the done-when checks, and with --full-hessian the clustered spectrum against
    science.md."""
    c, cf, f = results["config"], results["closed_form"], results["final"]
    k, k2 = c["num_classes"], c["num_classes"] ** 2
    ok = {name: "yes" if v else "NO" for name, v in results["checks"].items()}
    sv = np.array(f["singular_values"], dtype=float)
    top = np.array(f["hessian_top"], dtype=float)
    loss, data_loss = np.array(f["loss"]), np.array(f["data_loss"])
    gamma = 1 - np.sqrt(2 * data_loss)  # at collapse the logits are gamma Y
    rows = [
        ["gamma (measured: 1 - sqrt(2 data loss))", f"{cf['gamma']:.10g}", _span(gamma),
         _max_rel(gamma, cf["gamma"]), ""],
        ["loss*", f"{cf['loss']:.10g}", _span(loss),
         f"abs {float(np.max(np.abs(loss - cf['loss']))):.1e}",
         f"abs < 1e-10: {ok['loss_within_1e-10']}"],
        ["sigma (top K singular values of each W_l)", f"{cf['sigma']:.10g}",
         _span(sv[..., :k]), _max_rel(sv[..., :k], cf["sigma"]),
         f"< 1e-6: {ok['sigma_within_1e-6']}"],
        ["(K+1)-th singular value / sigma", "0", _span(sv[..., k] / cf["sigma"], ".1e"), "", ""],
        ["class-mean norm of H_1", f"{cf['feature_norm']:.10g}", _span(f["feature_norms"]),
         _max_rel(f["feature_norms"], cf["feature_norm"]), ""],
        ["top K^2 layer-Hessian eigenvalues: lambda_W gamma/(1-gamma)", f"{cf['outlier']:.10g}",
         _span(top[..., :k2]), _max_rel(top[..., :k2], cf["outlier"]),
         f"< 1e-6: {ok['outliers_within_1e-6']}"],
        ["lambda_{K^2+1} / lambda_1", "0", _span(np.abs(top[..., k2]) / top[..., 0], ".1e"), "",
         f"< 1e-9: {ok['rest_below_1e-9']}"],
        [f"outliers (> {c.get('outlier_rtol', 1e-6):g} lambda_1)", str(k2),
         _span(f["outliers"], "g"), "", ""],
        ["data-gradient overlap with the top-K^2 space", "1", _span(f["gradient_overlap"],
                                                                    ".16f"),
         "", f"> 0.9999: {ok['overlap_above_0.9999']}"],
        ["NC1 of H_l (every layer)", "0", _span(f["nc1"], ".1e"), "", ""],
    ]
    lines = [
        "# Deep linear unconstrained feature model", "",
        f"K = {k}, n = {c['samples_per_class']}, d = {c['width']}, L = {c['depth']}, lambda_W = "
        f"{c['weight_decay']:g}, lambda_H = {c['feature_decay']:g}; full-batch gradient descent "
        f"lr {c['lr']:g}, {c['steps']} steps from N(0, 1/d), float64; seeds "
        f"{', '.join(map(str, c['seeds']))}. Measured over every seed and layer after the last "
        f"step (layer Hessian: the data term w.r.t. W_l; with the regulariser the outliers sit "
        f"at {cf['outlier'] + c['weight_decay']:.7g}). Training {seconds['train']:.1f} s "
        "(compilation included).", "",
        *table(["quantity", "closed form", "measured", "max error (rel.)", "done when"], rows),
    ]
    full = results.get("full_hessian")
    if full:
        ref = full["reference"] or []
        first = full["runs"][0]
        frows = []
        for value, count in first["clusters"]:
            match = next((r for r in ref if abs(value - r[0]) <= full["tolerance"]), None)
            frows.append([f"{value:.8f}", count, "-" if match is None else f"{match[0]:g}",
                          "-" if match is None or match[1] is None else match[1]])
        lines += [
            "", f"## Full-parameter Hessian (P = {full['parameters']}, loss with regulariser)",
            "", f"Eigenvalues of seed {first['seed']} grouped to 1e-8 of the largest"
            f"{'; reference: science.md (5 decimals)' if ref else ''}.", "",
            *table(["eigenvalue", "multiplicity", "science.md", "stated multiplicity"], frows)]
        if full["matches_reference"] is not None:
            lines += ["", "Every stated multiplicity found and every eigenvalue within "
                      f"{full['tolerance']:g} of a science.md value, all seeds: "
                      f"{'yes' if full['matches_reference'] else 'NO'} (full Hessian "
                      f"{seconds.get('full_hessian', 0.0):.1f} s)."]
    return "\n".join(lines) + "\n"


def sweep_spectra(results: dict, seconds: dict[str, float]) -> str:
    """experiments.dlufm --from-workdir (``records.SweepSpectra``): per depth and layer W_l,
    the median over seeds of the data-term Hessian's top eigenvalue, lambda_{K^2+1} /
    lambda_{K^2}, the outlier count, the data-gradient overlap and NC1 of the features; runs
    the sweep reported as not "ok" (diverged) are left out of the medians."""
    k2 = results["num_classes"] ** 2
    rows = []
    for depth in sorted({r["depth"] for r in results["runs"]}):
        every = [r for r in results["runs"] if r["depth"] == depth]
        rs = [r for r in every if r.get("status") in ("ok", None)]
        if not rs:
            rows.append([depth, "-", f"0/{len(every)}", *["-"] * 6])
            continue
        for l in range(depth):
            def med(key: str, col: int | None = None, rs=rs, l=l) -> float:
                v = [r[key][l] if col is None else r[key][l][col] for r in rs]
                return float(np.nanmedian(np.array(v, dtype=float)))

            rows.append([depth, l + 1, f"{len(rs)}/{len(every)}", num(med("hessian_top", 0)),
                         num(med("hessian_top", k2 - 1)), num(med("gap_ratio"), ".3g"),
                         num(med("outliers"), "g"), num(med("overlap"), ".3g"),
                         num(med("nc1"), ".3g")])
    return "\n".join([
        "# Per-layer Hessian spectra of a trained sweep", "",
        f"Networks of {results['source']} on their training data; data term (1/N) sum_i "
        f"||alpha f(x_i) - y_i||^2 (alpha = {results['loss_scale']:g}), exact Kronecker Hessian "
        f"w.r.t. each W_l; K^2 = {k2}; outliers above {results['outlier_rtol']:g} x lambda_1; "
        f"NC1 of the features entering W_l; medians over the runs the sweep reports ok. "
        f"{seconds['spectra']:.1f} s.", "",
        *table(["L", "W_l", "ok/runs", "lambda_1", "lambda_{K^2}", "lambda_{K^2+1}/lambda_{K^2}",
                "outliers", "grad. overlap", "NC1"], rows)]) + "\n"
