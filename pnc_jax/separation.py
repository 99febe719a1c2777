"""He & Su's law of data separation (PNAS 2023; science.md section 3) for any model.

Separation fuzziness of layer l (features h_i, n_k points of class k, N = sum_k n_k):
D_l = Tr(SS_w SS_b^+), SS_w = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
SS_b = (1/N) sum_k n_k (mu_k - mu)(mu_k - mu)^T (``metrics.separation_fuzziness``, float64,
exact through K x K Grams). D is invariant under h -> A h + b with A invertible when SS_b is
invertible (m <= K - 1); for wider features (SS_b of rank K - 1 < m) only under A = c Q, Q
orthogonal (the pseudo-inverse does not follow a general A). The law: after training,
ln D_l ~ l ln rho + ln D_0 with 0 < rho < 1 and Pearson r close to -1.

For your own model (Flax, Equinox, plain JAX, numpy): collect the features of every layer and
call ``separation_law``::

    from pnc_jax.separation import separation_law
    law = separation_law([x_NxD, h1_NxM, h2_NxM, h3_NxM], labels_N)
    law["fuzziness"], law["rho"], law["pearson_r"], law["r2"]

Layer 0 is whatever you put first (He & Su: the input); the fit uses layers ``start``..L-1
(default 0: all of them, as the authors' code). Feature arrays of any shape (N, ...) are
flattened per sample. Features of BatchNorm networks depend on the BatchNorm mode: He & Su take
them in training mode over fixed, class-mixed batches of 100 points.

Also here, for ``experiments.data_separation``: the ablations, the random relabelling and
``measure_runs`` (trained sweeps -> ``records.SeparationRun``). Those import the training stack
(flax) on first use; the law itself needs only ``metrics`` and ``fits``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.typing import ArrayLike

from pnc_jax import fits, metrics
from pnc_jax.records import EmergencePoint, LawFit, SeparationLaw, SeparationRun

if TYPE_CHECKING:
    from pnc_jax.config import Config

ABLATIONS = ("none", "no_batchnorm", "no_relu", "random_labels")

__all__ = ["ABLATIONS", "emergence_curve", "fit_law", "fuzziness_profile", "separation_law"]


# ----------------------------------------------------------------------------- the law


def fuzziness_profile(features: Sequence[ArrayLike] | Callable[[], Sequence[ArrayLike]],
                      labels_N: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """[D_0, ..., D_{L-1}] (float64 numpy) of per-layer features h_l of shape (N, ...), or of a
    callable returning them. ``num_classes`` defaults to max(label) + 1; every class needs a
    sample. Raises ValueError on bad shapes or labels."""
    feats = features() if callable(features) else features
    labels = np.asarray(labels_N)
    hs = [np.asarray(h).reshape(np.shape(h)[0], -1) if np.ndim(h) != 2 else h for h in feats]
    if not hs:
        raise ValueError("features must hold at least one layer, got 0")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be 1-D integers, got shape {labels.shape} dtype "
                         f"{labels.dtype}")
    k = num_classes if num_classes is not None else int(labels.max(initial=1)) + 1
    for l, h in enumerate(hs):
        if np.shape(h)[0] != labels.shape[0]:
            raise ValueError(f"layer {l} has {np.shape(h)[0]} samples, labels {labels.shape[0]}")
    return np.asarray(metrics.layerwise(metrics.separation_fuzziness, hs, labels, k), np.float64)


def fit_law(fuzziness_L: Sequence[float | None] | np.ndarray, start: int = 0) -> LawFit:
    """Least squares of ln D_l on l over l = start..L-1: rho = exp(slope), Pearson r, R^2 and
    log_d0 = the intercept (ln D at l = 0). All None with fewer than 2 layers or a D_l in the
    range that is missing, non-finite or <= 0."""
    d = np.array([np.nan if v is None else v for v in fuzziness_L], np.float64)
    tail = d[start:]
    if start < 0 or tail.size < 2 or not np.all(np.isfinite(tail)) or np.any(tail <= 0):
        return {"rho": None, "pearson_r": None, "r2": None, "log_d0": None}
    fit = fits.geometric_fit(d, start)
    return {"rho": float(fit["ratio"]), "pearson_r": float(fit["pearson_r"]),
            "r2": float(fit["r2"]), "log_d0": float(fit["intercept"])}


def separation_law(features: Sequence[ArrayLike] | Callable[[], Sequence[ArrayLike]],
                   labels_N: ArrayLike, num_classes: int | None = None, *,
                   start: int = 0) -> SeparationLaw:
    """He & Su's law for any model: ``{"fuzziness": [D_0..D_{L-1}], "rho", "pearson_r", "r2",
    "log_d0", "start"}`` from per-layer features (``fuzziness_profile``) and ``fit_law``."""
    d = fuzziness_profile(features, labels_N, num_classes)
    fit = fit_law(d, start)
    return {"fuzziness": [float(v) for v in d], "rho": fit["rho"],
            "pearson_r": fit["pearson_r"], "r2": fit["r2"], "log_d0": fit["log_d0"],
            "start": start}


def emergence_curve(epochs: Sequence[int], fuzziness_TxL, start: int = 0) -> list[EmergencePoint]:
    """``{"epoch", "rho", "pearson_r"}`` of the fuzziness profile measured at each epoch."""
    out: list[EmergencePoint] = []
    for epoch, profile in zip(epochs, fuzziness_TxL, strict=True):
        fit = fit_law(profile, start)
        out.append({"epoch": int(epoch), "rho": fit["rho"], "pearson_r": fit["pearson_r"]})
    return out


# ----------------------------------------------------------------------------- the experiment


def ablation_config(cfg: Config, ablation: str) -> Config:
    """``cfg`` for one ablation: no_batchnorm (Linear -> ReLU blocks), no_relu (Linear ->
    BatchNorm blocks); none and random_labels train ``cfg`` itself."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation {ablation!r} is not one of {ABLATIONS}")
    change: dict[str, dict[str, Any]] = {"no_batchnorm": {"batch_norm": False},
                                         "no_relu": {"activation": "identity"}}
    return dataclasses.replace(cfg, **change.get(ablation, {}))


def shuffle_once(x_NxD: np.ndarray, labels_N: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels) in one seeded random order, so that the consecutive BatchNorm batches of the
    extraction mix the classes (a class-sorted set puts one class in each batch, BatchNorm
    erases the class means and the fuzziness explodes; science.md section 3)."""
    order = np.random.default_rng(seed).permutation(len(labels_N))
    return x_NxD[order], labels_N[order]


def random_labels(labels_N: ArrayLike, seed: int) -> np.ndarray:
    """A fixed random relabelling: a seeded permutation of the labels (class counts kept, so
    the classes stay balanced; label i is unrelated to image i)."""
    labels = np.asarray(labels_N)
    return labels[np.random.default_rng(seed).permutation(len(labels))].astype(np.int32)


def measure_runs(cfg: Config, x_NxD, labels_N, x_test, labels_test, records: Sequence[dict],
                 states: dict, *, ablation: str, batch: int,
                 start: int = 0) -> list[SeparationRun]:
    """One ``SeparationRun`` per trained (depth, seed) of a ``run_sweep`` of ``cfg`` on (x,
    labels): fuzziness with BatchNorm in training mode over the consecutive batches of ``batch``
    points of x (He & Su's extraction; the law's fit uses these) and in eval mode, the same at
    initialisation (the sweep's own initial parameters), test accuracy (eval mode), and the fit
    of each in-training measurement (``records[i]["emergence"]``, with epoch 0 = init). The
    fuzziness is ``train.layer_fuzziness``, the function the training loop measures with,
    jitted once per depth group and BatchNorm mode (``features.layer_metrics`` streams the same
    numbers with every other metric, several times slower)."""
    from pnc_jax.analysis import network_accuracy
    from pnc_jax.train import make_trainer

    train_mode, eval_mode = (dataclasses.replace(cfg, measure_batch=b) for b in (batch, 0))
    by_run: dict[tuple[int, int], SeparationRun] = {}
    for group, state in states.items():
        runs = [r for r in cfg.runs() if r[0] in group]
        trainer = make_trainer(cfg, x_NxD.shape[1], x_NxD.shape[0], max_depth=max(group))
        init = initial_states(trainer, runs)
        fz: dict[str, Any] = {
            name: np.asarray(_profiles(s, x_NxD, labels_N, trainer=trainer, cfg=mode))
            for name, s, mode in (("train", state, train_mode), ("eval", state, eval_mode),
                                  ("init", init, train_mode))}
        test = (network_accuracy(trainer, state, x_test, labels_test, 1000)
                if len(labels_test) else None)
        for i, (depth, seed) in enumerate(runs):
            rec = records[cfg.runs().index((depth, seed))]
            prof = {name: [float(v) for v in f[i][:depth]] for name, f in fz.items()}
            law, law_eval, law_init = (fit_law(prof[n], start) for n in ("train", "eval", "init"))
            steps = rec.get("emergence") or {"epochs": [], "fuzziness": []}
            by_run[(depth, seed)] = {
                "depth": depth, "seed": seed, "ablation": ablation, "optimizer": cfg.optimizer,
                "lr": cfg.lr_of(depth), "status": rec["status"],
                "epochs_trained": rec["epochs_trained"], "final_loss": rec["final_loss"],
                "train_accuracy": rec["train_accuracy"],
                "test_accuracy": None if test is None else float(test[i]),
                "fuzziness": prof["train"], "rho": law["rho"], "pearson_r": law["pearson_r"],
                "r2": law["r2"], "log_d0": law["log_d0"],
                "fuzziness_eval_bn": prof["eval"], "rho_eval_bn": law_eval["rho"],
                "pearson_r_eval_bn": law_eval["pearson_r"],
                "fuzziness_at_init": prof["init"], "rho_at_init": law_init["rho"],
                "pearson_r_at_init": law_init["pearson_r"],
                "emergence": emergence_curve([0, *steps["epochs"]],
                                             [prof["init"], *steps["fuzziness"]], start),
            }
    return [by_run[r] for r in cfg.runs()]


@functools.partial(jax.jit, static_argnames=("trainer", "cfg"))
def _profiles(state, x_NxD, labels_N, *, trainer, cfg):
    """``train.layer_fuzziness`` (BatchNorm per ``cfg.measure_batch``) of every model, (P, L)."""
    from pnc_jax.train import layer_fuzziness

    return jax.vmap(lambda s: layer_fuzziness(trainer, cfg, s, x_NxD, labels_N))(state)


def initial_states(trainer, runs: Sequence[tuple[int, int]]):
    """The stacked initial ``TrainState`` of ``runs`` [(depth, seed)], as ``run_sweep`` draws
    them (key = PRNGKey(seed))."""
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for _, s in runs])
    return jax.vmap(trainer.init)(keys, np.array([d for d, _ in runs], np.int32))
