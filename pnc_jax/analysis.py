"""From trained sweeps to results records: what every experiment shares after ``run_sweep``.

- ``unstack`` / ``models_of``: one model out of a sweep's stacked states;
- ``theory_reference``: Wang et al.'s prediction for one (setting, depth), the one place that
  asks ``theory`` for it;
- ``seed_stats``, ``measured_point``, ``group_stats``: statistics over seeds;
- ``layer_records``: trained networks -> per-layer records (streamed metrics, numerical rank,
  linear probes of every layer, fits, accuracy, a 2-D PCA embedding);
- ``assumption_records``: the theory's assumptions checked on trained deep linear networks.

Inputs are host arrays and the records of ``pnc_jax.records``; nothing here trains.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import jax
import numpy as np

from pnc_jax import features, fits, probe
from pnc_jax.config import Config
from pnc_jax.data import Dataset
from pnc_jax.models import weight_matrices
from pnc_jax.records import (
    AssumptionEntry,
    ClosedForm,
    Embedding,
    FitRecord,
    LayerRecord,
    MeasuredPoint,
    RunRecord,
    SeedStats,
    TheoryPoint,
    TheoryReference,
)
from pnc_jax.train import Trainer, TrainState, make_trainer
from pnc_jax.workdir import json_float

# ----------------------------------------------------------------------------- stacked states


def unstack(tree, i: int):
    """Model ``i`` of a pytree whose leaves carry a leading model axis."""
    return jax.tree.map(lambda a: a[i], tree)


def models_of(cfg: Config, states: dict) -> Iterator[tuple[int, int, TrainState]]:
    """(depth, seed, that model's TrainState) of every run of a ``run_sweep`` result, in
    ``cfg.runs()`` order (``states`` maps each depth group to its stacked TrainState)."""
    found = {}
    for group, state in states.items():
        group_runs = [r for r in cfg.runs() if r[0] in group]
        for i, run in enumerate(group_runs):
            found[run] = unstack(state, i)
    for depth, seed in cfg.runs():
        yield depth, seed, found[(depth, seed)]


# ----------------------------------------------------------------------------- theory


def theory_applies(cfg: Config) -> bool:
    """Wang et al.'s closed form is for deep linear nets, orthogonal init and MSE."""
    return (cfg.model, cfg.init, cfg.loss) == ("linear", "orthogonal", "mse")


def theory_reference(cfg: Config, x_NxD, labels_N, depth: int,
                     closed_form: bool = False) -> TheoryReference | None:
    """Wang et al.'s prediction at depth L for ``cfg``'s (xi, alpha) on (x, labels): the
    orthonormal-limit rho (n = the smallest class), the exact finite-data profiles where the data
    allow them (balanced classes, d >= N, full rank; else a note), and with ``closed_form`` the
    measured profile of the min-norm balanced network itself. None when the theory does not apply
    (``theory_applies``) or L < 2."""
    if depth < 2 or not theory_applies(cfg):
        return None
    import theory
    from pnc_jax import metrics

    labels_N = np.asarray(labels_N)
    counts = np.bincount(labels_N, minlength=cfg.num_classes)
    n = int(counts.min())
    xi, alpha, k = cfg.init_scale, cfg.loss_scale, cfg.num_classes
    notes = [] if counts.min() == counts.max() else [
        f"unbalanced classes {counts.tolist()}: rho uses n={n}"]
    ref: TheoryReference = {
        "samples_per_class": n,
        "rho": float(theory.predict_rates(n, k, depth, xi, alpha).compression_ratio),
        "fitted_ratio": None, "compression": None, "discrimination": None,
        "closed_form": None, "notes": notes,
    }
    try:
        exact = theory.predict_rates(n, k, depth, xi, alpha, x_NxD=x_NxD, labels_N=labels_N)
    except ValueError as e:
        notes.append(f"finite-data theory skipped: {e}")
        return ref
    ref["fitted_ratio"] = json_float(exact.fitted_ratio)
    ref["compression"] = [float(c) for c in exact.compression]
    ref["discrimination"] = [float(d) for d in exact.discrimination]
    if closed_form:
        weights = theory.min_norm_balanced(x_NxD, labels_N, k, depth, cfg.width, xi, alpha)
        feats = theory.layer_features(weights, x_NxD)
        comp = np.array([float(metrics.compression(h, labels_N, k)) for h in feats])
        cfit = fit(comp.tolist(), "geometric") if depth >= 3 else None
        ref["closed_form"] = ClosedForm(
            compression=comp.tolist(),
            discrimination=[float(metrics.discrimination(h, labels_N, k)) for h in feats],
            fitted_ratio=cfit["ratio"] if cfit else None, r2=cfit["r2"] if cfit else None)
        if cfg.width < np.shape(x_NxD)[1]:
            notes.append(f"width {cfg.width} < d {np.shape(x_NxD)[1]}: the exact prediction "
                         "assumes width >= d")
    return ref


# ----------------------------------------------------------------------------- over seeds


def fit(values_L: Sequence[float | None], kind: str, start: int = 1) -> FitRecord | None:
    """``fits.fit_record`` of a per-layer list ("geometric" or "linear" over l >= start)."""
    return cast(FitRecord | None, fits.fit_record(np.asarray(values_L, np.float64), kind, start))


def seed_stats(values: Sequence[float | None]) -> SeedStats:
    """Mean and sample std (ddof 1) of the non-None values."""
    v = np.array([x for x in values if x is not None], np.float64)
    return {"mean": float(v.mean()) if v.size else None,
            "std": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def measured_point(records: Sequence[RunRecord]) -> MeasuredPoint:
    """Mean and spread over the converged seeds of one depth's trained fitted ratios, and the
    mean layer-to-layer ratios C_{l+1}/C_l (l = 1..L-2)."""
    per_seed = [(r["compression_fit"] or {}).get("ratio") for r in records]
    converged = [bool(r["converged"]) and p is not None
                 for r, p in zip(records, per_seed, strict=True)]
    stats = seed_stats([p for p, c in zip(per_seed, converged, strict=True) if c])
    depth = records[0]["depth"]
    layer_ratios = [np.asarray(r["compression"], np.float64) for r, c in
                    zip(records, converged, strict=True) if c and depth >= 3]
    r2s = [r["compression_fit"]["r2"] for r in records if r["compression_fit"]]
    return {
        "seeds": [r["seed"] for r in records],
        "per_seed_fitted_ratio": per_seed,
        "converged": converged,
        "status": [r["status"] for r in records],
        "epochs_trained": [r["epochs_trained"] for r in records],
        "final_loss": [r["final_loss"] for r in records],
        "fitted_ratio_mean": stats["mean"],
        "fitted_ratio_std": stats["std"],
        "fit_r2_min": min(r2s) if r2s else None,
        "layer_ratios_mean": (np.mean([c[2:] / c[1:-1] for c in layer_ratios], axis=0).tolist()
                              if layer_ratios else None),
        "compression_per_seed": [r["compression"] for r in records],
    }


def group_stats(entries: Sequence[Mapping[str, Any]], by: str,
                keys: Sequence[str]) -> list[dict]:
    """Per distinct value of ``entries[i][by]`` (sorted): mean and std (ddof 1) of each of
    ``keys`` over the converged entries, with counts."""
    out = []
    for value in sorted({e[by] for e in entries}):
        pts = [e for e in entries if e[by] == value]
        good = [e for e in pts if e["converged"]]
        row = {by: value, "converged": len(good), "seeds": len(pts)}
        for key in keys:
            stats = seed_stats([e.get(key) for e in good])
            row[key], row[key + "_std"] = stats["mean"], stats["std"]
        out.append(row)
    return out


# ----------------------------------------------------------------------------- per layer


@functools.partial(jax.jit, static_argnames="trainer")
def _hits(params, stats, depth, x, y, *, trainer: Trainer):
    def one(p, s, d):
        logits, _, _ = trainer.apply(p, s, x, d, False)
        return (logits.argmax(-1) == y).sum()

    return jax.vmap(one)(params, stats, depth)


def network_accuracy(trainer: Trainer, state: TrainState, x_NxD, labels_N,
                     batch: int) -> np.ndarray:
    """Accuracy of every model of the stacked ``state`` on (x, labels), BatchNorm in eval mode,
    in batches of ``batch`` samples."""
    total = np.zeros(len(np.asarray(state.depth)), np.int64)
    for a in range(0, len(x_NxD), batch):
        total += np.asarray(_hits(state.params, state.stats, state.depth, x_NxD[a:a + batch],
                                  labels_N[a:a + batch], trainer=trainer))
    return total / len(x_NxD)


def pca2(h_NxM) -> tuple[np.ndarray, list[float]]:
    """Top-2 principal coordinates (N x 2, float64) and their explained-variance fractions."""
    hc = np.asarray(h_NxM, np.float64)
    hc = hc - hc.mean(0)
    u, s, _ = np.linalg.svd(hc, full_matrices=False)
    total = float(np.sum(s**2)) or 1.0
    return u[:, :2] * s[:2], [float(v) / total for v in s[:2] ** 2]


def embedding(trainer: Trainer, state: TrainState, x_NxD, labels_N, num_classes: int,
              per_class: int, layers: Sequence[int], batch: int, bn_train: bool) -> Embedding:
    """2-D PCA of the first ``per_class`` points of each class at ``layers`` (data order kept:
    BatchNorm in train mode needs mixed batches, science.md section 3)."""
    idx = np.sort(np.concatenate([np.flatnonzero(labels_N == c)[:per_class]
                                  for c in range(num_classes)]))
    hs = features.collect_features(trainer, state, x_NxD[idx], batch_size=batch,
                                   bn_train=bn_train, layers=layers)
    out: Embedding = {"layers": list(layers), "labels": labels_N[idx].tolist(), "coords": [],
                      "explained": []}
    for h in hs:
        coords, explained = pca2(h)  # zero padding, if any, adds no variance
        out["coords"].append(np.round(coords, 4).tolist())
        out["explained"].append(explained)
    return out


def deep_start(cfg: Config) -> int:
    """First of "the deep layers": the hybrid's first linear layer, num_nonlinear + 1 (the same
    index for the MLP, to compare like with like), or 1 if that leaves < 2 layers to fit."""
    start = cfg.num_nonlinear + 1
    return start if cfg.max_depth - start >= 2 else 1


def layer_records(cfg: Config, data: Dataset, states: dict, *, probe_settings: probe.Settings,
                  batch: int, bn_train: bool, embed_per_class: int,
                  embed_layers: Sequence[int] = (1, 2, 4, 6)) -> list[LayerRecord]:
    """Per seed of a one-depth sweep: per-layer numerical rank, C_l, D_l, NC1, fuzziness
    (streamed in batches), linear-probe accuracy of every layer (all seeds and layers in one
    vmapped program), test accuracy, geometric/linear fits over the deep layers
    (``deep_start``..L-1) and over 1..L-1, and a 2-D PCA embedding of ``embed_layers``."""
    (group, state), = states.items()
    depth = group[0]
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    trainer = make_trainer(cfg, x.shape[1], x.shape[0], max_depth=depth)
    k = cfg.num_classes
    stats = features.layer_metrics(trainer, state, x, y, k, batch_size=batch, bn_train=bn_train)
    test_acc = network_accuracy(trainer, state, xt, yt, batch) if len(xt) else None
    one = [unstack(state, i) for i in range(len(cfg.seeds))]
    kw = {"batch_size": batch, "bn_train": bn_train, "width": max(x.shape[1], cfg.width)}
    probes = probe.fit_probes(
        np.concatenate([features.collect_features(trainer, s, x, **kw) for s in one]), y,
        np.concatenate([features.collect_features(trainer, s, xt, **kw) for s in one]), yt, k,
        steps=probe_settings.steps, lr=probe_settings.lr,
        batch_size=probe_settings.batch_size)
    start = deep_start(cfg)
    out = []
    for i, seed in enumerate(cfg.seeds):
        span = slice(i * depth, (i + 1) * depth)
        rec: LayerRecord = {"seed": seed, "depth": depth, "layers": list(range(depth))}
        for name in ("numerical_rank", "compression", "discrimination", "nc1", "fuzziness"):
            rec[name] = np.asarray(stats[name][i]).tolist()
        rec["probe_train_accuracy"] = probes["train_accuracy"][span].tolist()
        rec["probe_test_accuracy"] = probes["test_accuracy"][span].tolist()
        rec["test_accuracy"] = None if test_acc is None else float(test_acc[i])
        rec["fits"] = {
            "compression_deep": fit(rec["compression"], "geometric", start),
            "discrimination_deep": fit(rec["discrimination"], "linear", start),
            "compression_all": fit(rec["compression"], "geometric", 1),
            "discrimination_all": fit(rec["discrimination"], "linear", 1),
        }
        rec["embedding"] = embedding(trainer, one[i], x, y, k, embed_per_class,
                                     [l for l in embed_layers if l < depth], batch, bn_train)
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- assumptions


def assumption_records(cfg: Config, records: Sequence[RunRecord], states: dict, x_NxD, labels_N,
                       sweep: str) -> list[AssumptionEntry]:
    """One entry per trained net: its training outcome and ``theory.check_assumptions``."""
    from theory import check_assumptions

    out = []
    for (depth, seed, state), rec in zip(models_of(cfg, states), records, strict=True):
        weights = [np.asarray(w, np.float64) for w in weight_matrices(state.params, depth)]
        entry: AssumptionEntry = {
            "sweep": sweep, "depth": depth, "width": cfg.width, "seed": seed,
            "converged": rec["converged"], "status": rec["status"],
            "epochs_trained": rec["epochs_trained"], "final_loss": rec["final_loss"],
        }
        try:
            rep = check_assumptions(weights, x_NxD, labels_N, cfg.num_classes, cfg.loss_scale)
        except (ValueError, np.linalg.LinAlgError) as e:  # real data with d < N, NaNs
            entry.update({"min_norm_residual": None, "balancedness_mean": None,
                          "middle_singular_variance": None, "note": f"check skipped: {e}"})
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
            "middle_singular_range": [[float(s.min()), float(s.max())] if s.size else None
                                      for s in rep.middle_singular_values],
            "orthonormality": json_float(rep.orthonormality),
        })
        out.append(entry)
    return out


def assumption_stats(entries: Sequence[AssumptionEntry], sweep: str) -> list[dict]:
    """``group_stats`` of one sweep (``sweep``: "depth" or "width"), with the depth and width
    of each point, the median epochs and the range of the middle singular values."""
    pts = [e for e in entries if e["sweep"] == sweep]
    rows = group_stats(pts, sweep, ("min_norm_residual", "balancedness_mean",
                                    "middle_singular_variance"))
    for row in rows:
        mine = [e for e in pts if e[sweep] == row[sweep]]  # type: ignore[literal-required]
        ranges = [r for e in mine if e["converged"] for r in e.get("middle_singular_range") or []
                  if r]
        row.update(sweep=sweep, depth=mine[0]["depth"], width=mine[0]["width"],
                   epochs_median=float(np.median([e["epochs_trained"] for e in mine])),
                   middle_singular_min=min(r[0] for r in ranges) if ranges else None,
                   middle_singular_max=max(r[1] for r in ranges) if ranges else None)
    return rows


# ----------------------------------------------------------------------------- theory vs practice


def _rel(measured, reference) -> float | None:
    if measured is None or reference is None or not reference > 0:
        return None
    return float(measured / reference - 1.0)


def theory_point(cfg: Config, records: Sequence[RunRecord], x_NxD, labels_N, depth: int,
                 setting: str, regime_rho: float) -> TheoryPoint:
    """One depth of one (xi, n, alpha) setting: the trained fitted ratio over seeds against rho,
    the finite-data prediction and the closed-form net, with relative errors and a status
    ("ok": every seed converged; "partial", "unconverged"; "no_fit" for L < 3)."""
    th = theory_reference(cfg, x_NxD, labels_N, depth, closed_form=True)
    if th is None:
        raise ValueError(f"the theory does not apply to depth {depth} of this config")
    recs = [r for r in records if r["depth"] == depth]
    meas = measured_point(recs)
    notes = list(th["notes"])
    n_conv = sum(meas["converged"])
    status = "ok" if n_conv == len(recs) else ("partial" if n_conv else "unconverged")
    if depth < 3:
        status = "no_fit"
        notes.append("depth < 3: no fit over l = 1..L-1 (needs 2 layers)")
    closed = th["closed_form"]
    return {
        "setting": setting, "init_scale": cfg.init_scale,
        "samples_per_class": th["samples_per_class"], "loss_scale": cfg.loss_scale,
        "depth": depth, "width": cfg.width, "dataset": cfg.dataset, "rho": th["rho"],
        "in_regime": bool(th["rho"] <= regime_rho),
        "predicted_fitted_ratio": th["fitted_ratio"],
        "predicted_compression": th["compression"], "closed_form": closed, "measured": meas,
        "status": status,
        "rel_error_rho": _rel(meas["fitted_ratio_mean"], th["rho"]),
        "rel_error_predicted": _rel(meas["fitted_ratio_mean"], th["fitted_ratio"]),
        "closed_form_rel_error_predicted": _rel(closed and closed["fitted_ratio"],
                                                th["fitted_ratio"]),
        "notes": notes,
    }


def error_medians(points: Sequence[TheoryPoint]) -> dict:
    """Median / max |relative error| against rho and the prediction, over the points whose seeds
    all converged ("all") and those of them in the regime rho <= regime ("regime")."""
    usable = [p for p in points if p["status"] == "ok"]
    out: dict = {"num_points": len(points), "num_ok": len(usable),
                 "num_in_regime": sum(p["in_regime"] for p in usable)}
    for ref in ("rho", "predicted"):
        for scope, pts in (("all", usable), ("regime", [p for p in usable if p["in_regime"]])):
            errs = [abs(e) for p in pts if (e := p[f"rel_error_{ref}"]) is not None]  # type: ignore[literal-required]
            out[f"median_{ref}_{scope}"] = float(np.median(errs)) if errs else None
            out[f"max_{ref}_{scope}"] = float(np.max(errs)) if errs else None
    return out
