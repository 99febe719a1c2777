"""Transfer through a projection head (Wang et al., science.md section 2, "Transfer").

A network is backbone + projection head + linear classifier: b backbone blocks
(Linear -> BatchNorm -> ReLU), h head layers, then W_L, so L = b + h + 1 weight matrices. With the
model registry this is "hybrid" with ``num_nonlinear = b`` (a linear head) or "mlp" (a nonlinear
head, its h layers blocks as well); the backbone's output is feature h_b in both, so the head
depths h = 0..5 are one depth sweep L = b + 1..b + 6 (``head_config``). After pretraining on the
source classes the head and classifier are discarded: every quantity below reads only the
features h_0..h_b (``backbone_features``), taken with BatchNorm in eval mode (the source's
running statistics: a frozen backbone).

- transfer accuracy: a linear probe (``pnc_jax.probe``) on h_b, trained on ``per_class`` labelled
  examples of each target class (from the target's training split) and scored on the held-out
  target test split; the mean over ``draws`` random labelled sets. The draws are the same for
  every model (they depend on the data seed only), so models are compared on equal data;
- the probe accuracy of every backbone layer l = 0..b the same way (l = 0: the pixels);
- the backbone output's C, D and NC1 (``features.layer_metrics``, float64) on the source training
  data and on the target test data.

The labelled examples of a draw are ordered class by class, so all draws share one label vector
and every (model, layer, draw) probe of a depth group trains in one vmapped program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pnc_jax import analysis, features, probe
from pnc_jax.config import Config
from pnc_jax.data import Dataset, gaussian_mixture, load_dataset
from pnc_jax.models import build_network
from pnc_jax.records import TransferRecord
from pnc_jax.train import Trainer, TrainState, make_trainer
from pnc_jax.workdir import json_float

HEADS = ("nonlinear", "linear")
DATASETS = ("gaussian", "mnist10k", "mnist", "fashion_mnist", "cifar10")
NUM_CLASSES = 10  # class ids 0..9 in every data set (gaussian: a 10-class mixture)
IMAGE_SIZES = {"mnist10k": 784, "mnist": 784, "fashion_mnist": 784, "cifar10": 3072}
PROBE_BYTES = 1 << 30  # test features of one probe program (models of a group split to fit)
# one trainer per (config, shapes), so that repeated measurements reuse their compiled programs
# (jit caches on the trainer, whose functions are new on every make_trainer call)
_trainer = functools.lru_cache(maxsize=32)(make_trainer)

__all__ = ["HEADS", "DATASETS", "check_split", "load_split", "draw_labelled", "head_config",
           "backbones", "backbone_features", "transfer_records", "head_depth_stats", "verdict"]


# ----------------------------------------------------------------------------- data


def check_split(source_classes: Sequence[int], target_classes: Sequence[int],
                same_data: bool) -> None:
    """ValueError naming the bad value: each side needs >= 2 distinct ids in 0..9, and on one data
    set the two sides must not share a class."""
    for name, classes in (("source_classes", source_classes), ("target_classes", target_classes)):
        if len(classes) < 2:
            raise ValueError(f"{name}={tuple(classes)} must hold at least 2 classes")
        if len(set(classes)) != len(classes):
            raise ValueError(f"{name}={tuple(classes)} repeats a class")
        bad = [c for c in classes if not 0 <= c < NUM_CLASSES]
        if bad:
            raise ValueError(f"{name}={tuple(classes)}: class {bad[0]} is not in 0..9")
    shared = sorted(set(source_classes) & set(target_classes))
    if same_data and shared:
        raise ValueError(f"source_classes={tuple(source_classes)} and target_classes="
                         f"{tuple(target_classes)} overlap in {shared} (same data set)")


def _gaussian(classes, per_class: int, test_per_class: int, input_dim: int,
              seed: int) -> Dataset:
    """The 10-class ``gaussian_mixture`` of ``seed`` (2 x per_class points each), its first
    ``per_class`` points per class for training, the rest (at most ``test_per_class`` if > 0)
    held out; the kept classes relabelled 0..K'-1 in the given order."""
    x, y = gaussian_mixture(seed, NUM_CLASSES, 2 * per_class, input_dim)
    n_test = test_per_class or per_class
    pick = [(np.flatnonzero(y == c)[:per_class], np.flatnonzero(y == c)[per_class:][:n_test])
            for c in classes]
    tr, te = (np.concatenate([p[i] for p in pick]) for i in (0, 1))
    new = np.full(NUM_CLASSES, -1, np.int32)
    new[list(classes)] = np.arange(len(classes), dtype=np.int32)
    return Dataset(x[tr].astype(np.float32), new[y[tr]], x[te].astype(np.float32), new[y[te]],
                   len(classes), "gaussian", tuple(classes), (1, 1, input_dim))


def load_split(source: str, target: str, data_dir, source_classes: Sequence[int],
               target_classes: Sequence[int], *, source_per_class: int = 0,
               target_test_per_class: int = 0, input_dim: int = 50,
               seed: int = 0) -> tuple[Dataset, Dataset]:
    """(source, target) data sets, each relabelled 0..K-1 in the given class order.

    Source: training images of ``source_classes`` (at most ``source_per_class`` each, 0 = all)
    and its test split (source test accuracy). Target: all training images of
    ``target_classes`` (the pool the labelled examples are drawn from) and its test split (at
    most ``target_test_per_class`` each, 0 = all), held out. Image sets use ``load_dataset`` (one
    seeded mnist10k split for both sides); "gaussian" uses one 10-class mixture of dimension
    ``input_dim`` with ``source_per_class`` training and as many held-out points per class.
    """
    check_split(source_classes, target_classes, source == target)
    for name in (source, target):
        if name not in DATASETS:
            raise ValueError(f"data set {name!r} is not one of {DATASETS}")
    dims = {IMAGE_SIZES.get(n, input_dim) for n in (source, target)}
    if len(dims) > 1:
        raise ValueError(f"source {source!r} and target {target!r} have different input "
                         f"sizes {sorted(dims)}: a backbone needs one")
    if "gaussian" in (source, target):
        if source_per_class < 1:
            raise ValueError(f"gaussian data needs samples_per_class >= 1, got "
                             f"{source_per_class}")
        return (_gaussian(source_classes, source_per_class, 0, input_dim, seed),
                _gaussian(target_classes, source_per_class, target_test_per_class, input_dim,
                          seed))
    src = load_dataset(source, data_dir, classes=tuple(source_classes),
                       samples_per_class=source_per_class or None, seed=seed)
    tgt = load_dataset(target, data_dir, classes=tuple(target_classes),
                       test_samples_per_class=target_test_per_class or None, seed=seed)
    return src, tgt


def draw_labelled(labels_N, num_classes: int, per_class: int, draws: int,
                  seed: int = 0) -> np.ndarray:
    """Indices (draws, num_classes * per_class) into ``labels_N``: per draw, ``per_class``
    distinct samples of each class (seeded), class by class, so the labels of every draw are
    ``repeat(arange(K), per_class)``. ValueError naming ``per_class`` if a class has fewer."""
    labels_N = np.asarray(labels_N)
    if per_class < 1 or draws < 1:
        raise ValueError(f"per_class={per_class} and draws={draws} must be >= 1")
    members = [np.flatnonzero(labels_N == c) for c in range(num_classes)]
    have = [len(m) for m in members]
    if min(have) < per_class:
        c = int(np.argmin(have))
        raise ValueError(f"target_per_class={per_class} labelled examples per class, but "
                         f"target class {c} has only {have[c]} training samples")
    rng = np.random.default_rng(seed)
    return np.stack([np.concatenate([rng.choice(m, per_class, replace=False) for m in members])
                     for _ in range(draws)])


# ----------------------------------------------------------------------------- models


def head_config(base: Config, backbone_depth: int, head_depths: Sequence[int], head: str,
                num_classes: int) -> Config:
    """``base`` set to train backbone + head + classifier for every h: depths L = b + h + 1,
    model "hybrid" (num_nonlinear = b: linear head) or "mlp" (nonlinear head)."""
    if head not in HEADS:
        raise ValueError(f"head={head!r} is not one of {HEADS}")
    if backbone_depth < 1:
        raise ValueError(f"backbone_depth={backbone_depth} must be >= 1")
    if not head_depths or min(head_depths) < 0:
        raise ValueError(f"head_depths={tuple(head_depths)} must be non-empty and >= 0")
    return dataclasses.replace(
        base, model="hybrid" if head == "linear" else "mlp", num_nonlinear=backbone_depth,
        depths=tuple(backbone_depth + h + 1 for h in head_depths), num_classes=num_classes)


def _cut(tree: dict, b: int) -> dict:
    """The backbone's entries of a pure state dict: layers and norms 0..b-1, no classifier."""
    return {k: {j: v[j] for j in range(b) if j in v} if k in ("layers", "norms") else v
            for k, v in tree.items() if k != "classifier"}


def backbones(cfg: Config, backbone_depth: int, input_dim: int, states: dict,
              num_samples: int = 1) -> tuple[Trainer, TrainState]:
    """The bare backbones of every run of a ``head_config`` sweep: (the trainer of a network of
    the backbone's b blocks and a zero classifier, one ``TrainState`` stacking every run in
    ``cfg.runs()`` order). Its features h_0..h_b are the trained networks' (the b blocks are the
    same modules, BatchNorm statistics included); the head and the classifier are not in it, so
    nothing measured on it can depend on them, and one compiled program serves every h."""
    b = backbone_depth
    bare = dataclasses.replace(cfg, depths=(b + 1,))  # same kind: its b hidden layers are blocks
    trainer = _trainer(bare, input_dim, num_samples, max_depth=b + 1)
    order, params, stats = [], [], []
    for group, state in states.items():
        order += [run for run in cfg.runs() if run[0] in group]
        params.append(_cut(nnx.to_pure_dict(state.params), b))
        stats.append(_cut(nnx.to_pure_dict(state.stats), b))
    perm = np.array([order.index(run) for run in cfg.runs()])
    params_p = jax.tree.map(lambda *a: np.concatenate(a)[perm], *params)
    stats_p = jax.tree.map(lambda *a: np.concatenate(a)[perm], *stats)
    kernel = params_p["layers"][0]["kernel"]
    params_p["classifier"] = {"kernel": np.zeros((len(perm), cfg.width, cfg.num_classes),
                                                 kernel.dtype)}
    model = nnx.eval_shape(lambda: build_network(bare, input_dim, b + 1, jax.random.PRNGKey(0)))
    p_state = nnx.state(model, nnx.Param)
    s_state = nnx.state(model, nnx.BatchStat)
    nnx.replace_by_pure_dict(p_state, params_p)
    nnx.replace_by_pure_dict(s_state, stats_p)
    zeros = jnp.zeros(len(perm), jnp.int32)  # what only training reads
    return trainer, TrainState(params=p_state, stats=s_state, opt_state=(), epoch=zeros,
                               status=zeros, loss=zeros, key=zeros,
                               depth=jnp.full(len(perm), b + 1, jnp.int32))


def backbone_features(trainer: Trainer, state: TrainState, x_NxD, backbone_depth: int,
                      batch: int = features.DEFAULT_BATCH) -> np.ndarray:
    """Features h_1..h_b of one model (no model axis) of ``backbones``: float32 (b, N, width),
    BatchNorm in eval mode."""
    return features.collect_features(trainer, state, x_NxD, layers=range(1, backbone_depth + 1),
                                     batch_size=batch, bn_train=False)


# ----------------------------------------------------------------------------- records


def _probe_accuracy(train_XxRxMxW, labels_M, test_XxNxW, yt, k, ps: probe.Settings):
    """Test accuracy (X, R) of the probes of X feature sets x R labelled draws."""
    x_, r, m, w = train_XxRxMxW.shape
    test = np.broadcast_to(test_XxNxW[:, None], (x_, r, *test_XxNxW.shape[1:]))
    out = probe.fit_probes(train_XxRxMxW.reshape(x_ * r, m, w), labels_M,
                           test.reshape(x_ * r, *test_XxNxW.shape[1:]), yt, k,
                           steps=ps.steps, lr=ps.lr, batch_size=ps.batch_size)
    return out["test_accuracy"].reshape(x_, r)


def transfer_records(cfg: Config, backbone_depth: int, source: Dataset, target: Dataset,
                     sweep_records: Sequence[dict], states: dict, labelled_RxM: np.ndarray, *,
                     probe_settings: probe.Settings | None = None,
                     batch: int = features.DEFAULT_BATCH) -> list[TransferRecord]:
    """One ``TransferRecord`` per run of ``cfg.runs()`` (a sweep of ``head_config``):
    ``sweep_records`` and ``states`` are ``run_sweep``'s output on ``source``'s training data,
    ``labelled_RxM`` indexes ``target.x_train`` (``draw_labelled``)."""
    b, k_s, k_t = backbone_depth, cfg.num_classes, target.num_classes
    probe_settings = probe_settings or probe.Settings()
    labels_m = target.y_train[labelled_RxM[0]]
    if any(not np.array_equal(target.y_train[row], labels_m) for row in labelled_RxM):
        raise ValueError("every labelled draw must list its classes in one order")
    r, m = labelled_RxM.shape
    x_lab = target.x_train[labelled_RxM.reshape(-1)]
    xt, yt = target.x_test, target.y_test
    # layer 0 (the input) is the same for every model: its probes train once
    pixels = _probe_accuracy(x_lab.reshape(1, r, m, -1), labels_m, xt[None], yt, k_t,
                             probe_settings)[0]
    trainer, bone = backbones(cfg, b, source.x_train.shape[1], states)
    src = features.layer_metrics(trainer, bone, source.x_train, source.y_train, k_s,
                                 batch_size=batch, bn_train=False)
    tgt = features.layer_metrics(trainer, bone, xt, yt, k_t, batch_size=batch, bn_train=False)
    runs = cfg.runs()
    acc = np.zeros((len(runs), b, r))
    step = max(1, PROBE_BYTES // (4 * b * r * len(xt) * cfg.width))  # models per program
    for a in range(0, len(runs), step):
        lab, test = [], []
        for i in range(a, min(a + step, len(runs))):
            one = analysis.unstack(bone, i)
            lab.append(backbone_features(trainer, one, x_lab, b, batch).reshape(b, r, m, -1))
            test.append(backbone_features(trainer, one, xt, b, batch))
        acc[a:a + len(lab)] = _probe_accuracy(
            np.concatenate(lab), labels_m, np.concatenate(test), yt, k_t,
            probe_settings).reshape(len(lab), b, r)
    # the source test accuracy is the only quantity that needs the whole network
    test_acc: dict[tuple[int, int], float | None] = {}
    for group, state in states.items():
        net = _trainer(cfg, source.x_train.shape[1], source.x_train.shape[0],
                       max_depth=max(group))
        hits = (analysis.network_accuracy(net, state, source.x_test, source.y_test, batch)
                if len(source.y_test) else [None] * len(state.depth))
        test_acc.update(zip([run for run in runs if run[0] in group], hits, strict=True))
    measured = {}
    for i, run in enumerate(runs):
        measured[run] = {"layers": np.concatenate([pixels.mean()[None], acc[i].mean(-1)]),
                         "draws": acc[i, b - 1], "test": test_acc[run],
                         **{f"{name}_{side}": stats[name][i, b]
                            for side, stats in (("source", src), ("target", tgt))
                            for name in ("compression", "discrimination", "nc1")}}
    out = []
    for (depth, seed), trained in zip(cfg.runs(), sweep_records, strict=True):
        v = measured[(depth, seed)]
        out.append(TransferRecord(
            head_depth=depth - b - 1, seed=seed, depth=depth, status=trained["status"],
            converged=trained["converged"], epochs_trained=trained["epochs_trained"],
            final_loss=trained["final_loss"], source_train_accuracy=trained["train_accuracy"],
            network_compression_source=trained["compression"],
            source_test_accuracy=json_float(v["test"]),
            transfer_accuracy=json_float(v["layers"][b]),
            transfer_accuracy_draws=json_float(v["draws"]),
            layer_probe_accuracy=json_float(v["layers"]),
            backbone_compression_source=json_float(v["compression_source"]),
            backbone_discrimination_source=json_float(v["discrimination_source"]),
            backbone_nc1_source=json_float(v["nc1_source"]),
            backbone_compression_target=json_float(v["compression_target"]),
            backbone_discrimination_target=json_float(v["discrimination_target"]),
            backbone_nc1_target=json_float(v["nc1_target"])))
    return out


# ----------------------------------------------------------------------------- statistics

STAT_KEYS = ("transfer_accuracy", "source_train_accuracy", "source_test_accuracy",
             "backbone_compression_source", "backbone_compression_target",
             "backbone_discrimination_source", "backbone_discrimination_target",
             "backbone_nc1_source", "backbone_nc1_target")


def head_depth_stats(runs: Sequence[TransferRecord]) -> list[dict]:
    """Per head depth h (sorted): mean and sample std (ddof 1) over the seeds whose training did
    not diverge of each of ``STAT_KEYS``, and the mean probe accuracy per backbone layer."""
    rows = []
    for h in sorted({r["head_depth"] for r in runs}):
        ok = [r for r in runs if r["head_depth"] == h and r["status"] == "ok"]
        row: dict = {"head_depth": h, "seeds": len([r for r in runs if r["head_depth"] == h]),
                     "ok": len(ok)}
        for key in STAT_KEYS:
            s = analysis.seed_stats([r[key] for r in ok])  # type: ignore[literal-required]
            row[key], row[key + "_std"] = s["mean"], s["std"]
        per_layer = np.array([r["layer_probe_accuracy"] for r in ok], np.float64)
        row["layer_probe_accuracy"] = per_layer.mean(0).tolist() if len(ok) else None
        rows.append(row)
    return rows


def _spearman(x, y) -> float | None:
    """Spearman rank correlation (no ties expected), None for fewer than 3 points."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or not np.all(np.isfinite(y)):
        return None
    rx, ry = (np.argsort(np.argsort(v)).astype(np.float64) for v in (x, y))
    return float(np.corrcoef(rx, ry)[0, 1])


def verdict(rows: Sequence[dict]) -> dict:
    """The issue's two questions, answered from ``head_depth_stats`` rows:

    - transfer: the increase of mean transfer accuracy from h = 0 to the best h >= 2, and
      whether it exceeds the seed spread, max(std at h = 0, std at the best h);
    - compression: Spearman's rank correlation of h with the mean backbone C (source and
      target) and whether the mean C rises strictly with h.
    """
    by_h = {r["head_depth"]: r for r in rows if r["transfer_accuracy"] is not None}
    out: dict = {"h0": None, "best_h": None, "increase": None, "spread": None,
                 "exceeds_spread": None}
    deep = [h for h in by_h if h >= 2]
    if 0 in by_h and deep:
        best = max(deep, key=lambda h: by_h[h]["transfer_accuracy"])
        spreads = [by_h[h]["transfer_accuracy_std"] for h in (0, best)]
        spread = None if None in spreads else max(spreads)
        inc = by_h[best]["transfer_accuracy"] - by_h[0]["transfer_accuracy"]
        out.update(h0=by_h[0]["transfer_accuracy"], best_h=best,
                   best=by_h[best]["transfer_accuracy"], increase=inc, spread=spread,
                   exceeds_spread=None if spread is None else bool(inc > spread))
    hs = sorted(by_h)
    for side in ("source", "target"):
        c = [by_h[h][f"backbone_compression_{side}"] for h in hs]
        out[f"compression_{side}_spearman"] = _spearman(hs, c)
        out[f"compression_{side}_increases"] = (
            bool(len(c) > 1 and np.all(np.diff(np.asarray(c, np.float64)) > 0))
            if None not in c else None)
    return out
