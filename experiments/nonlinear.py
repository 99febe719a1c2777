"""Nonlinear networks on real data (paper's Figures 1, 2, 5): hybrid and MLP, measured per layer.

    python -m experiments.nonlinear                        # both kinds, mnist10k, CPU-sized
    python -m experiments.nonlinear --model hybrid --workdir runs/hybrid
    python -m experiments.nonlinear --preset paper --data-dir DIR    # CIFAR-10, GPU-sized

Per model kind (science.md section 2): train one network (per seed) of L = 8 weight matrices,
then per layer l = 0..L-1 (0 = input): numerical rank (95% of the singular-value sum of H_l),
linear-probe train/test accuracy (softmax regression on the frozen features, ``pnc_jax.probe``),
C_l, D_l, NC1 and He & Su's fuzziness (streamed in batches, ``pnc_jax.features``), the fitted
rates (geometric ratio and R^2 of C_l, slope and R^2 of D_l, over the deep layers
l = num_nonlinear+1..L-1 and over l = 1..L-1) and a 2-D PCA of layers 1, 2, 4, 6.

Kinds: hybrid = 3 x (Linear, BatchNorm, ReLU) + 4 linear hidden layers + linear classifier;
mlp = 7 x (Linear, BatchNorm, ReLU) + linear classifier. Both: no biases, orthogonal init
xi = 0.1, MSE with alpha = 100 (hybrid) / 1 (mlp), SGD momentum 0.9, batch 128, cosine to lr/100.
A flag given on the command line (e.g. --loss-scale) applies to both kinds.

Default ("cpu" preset): mnist10k (8,000 training / 2,000 test digits, 784 inputs, 10 classes),
width 256, weight decay 1e-4, 60 epochs, lr 1e-3 (hybrid) / 1e-2 (mlp: with alpha = 1 its loss
gradient is ~100x smaller; at lr 1e-3 it does not fit in 60 epochs). Features are taken with
BatchNorm in eval mode (running statistics); --bn-train uses per-batch statistics instead
(batches of --feature-batch consecutive samples of the shuffled set).

Measured (default command, seed 0; 86 s wall in all on an idle 2-core CPU, 3 min 40 s at load ~5,
where training took 55-60 s and measuring 50 s per kind; the measuring is mostly the
probes: 8 layers x 8,000 x 784 padded features, 300 full-batch Adam steps):

    l (layer)        0 in   1 ReLU 2 ReLU 3 ReLU 4 lin  5 lin  6 lin  7 lin
    hybrid rank      420    219    223    215    198    159    81     10
      probe train %  98.96  100    100    100    100    100    100    100
      probe test %   90.45  96.40  96.60  96.70  96.80  96.95  96.90  96.95
      C_l            3.77   1.57   0.656  0.172  0.0403 0.0111 0.0064 0.0056
      D_l            0.115  0.171  0.358  0.632  0.756  0.855  0.924  0.967
    mlp rank         420    211    207    198    180    143    90     66
      probe train %  98.96  99.99  99.99  99.99  99.99  99.99  99.99  99.99
      probe test %   90.45  96.00  96.65  97.00  97.10  97.00  97.10  97.30
      C_l            3.77   2.00   1.01   0.369  0.133  0.056  0.0418 0.0213
      D_l            0.115  0.189  0.394  0.572  0.619  0.642  0.679  0.551

hybrid: train accuracy 100% (test 96.95%); over l = 4..7 C ratio 0.525 (R^2 0.86: C_l levels off
at ~0.006 in the last two layers), D slope +0.070 (R^2 0.97); over l = 1..7 C ratio 0.357
(R^2 0.96). mlp: train accuracy 99.99% (test 97.35%); over l = 4..7 C ratio 0.561 (R^2 0.97),
D slope -0.017 (R^2 0.16: D_l rises to layer 6, then drops at the last ReLU layer); over l = 1..7
C ratio 0.458 (R^2 0.98), D slope +0.062 (R^2 0.59). Probe training accuracy saturates at the
first hidden layer for both (8,000 points in 256 dimensions); the numerical rank falls
monotonically after layer 2, most steeply in the hybrid's linear layers (198 -> 10 = K).

--preset paper: the paper's CIFAR-10 setting (all 50,000 training images, width 1024, 8 matrices,
xi 0.1, lr 1e-4 for both kinds, momentum 0.9, weight decay 1e-4, batch 128, 400 epochs, cosine to
lr/100). Needs the CIFAR-10 python batches under --data-dir or $PNC_DATA (no download here: the
run refuses with exit status 2 and names where it looked) and a GPU: 400 epochs x 390 steps of a
1024-wide net, plus probes on 50,000 x 8 layers x 3072 (padded) features, ~5 GB of GPU memory.
The paper reports per-layer ranks MLP ~860, 897, 872, 815, 750, 637, 440 and hybrid ~908, 922,
919, 912, 893, 842, 710, probe training accuracy 100% from layer 2 (hybrid).

Writes to --workdir: config.json, results.json (per kind: per-layer lists, fits, BatchNorm mode),
summary.md, rank_probe.png, compression_discrimination.png, embedding.png, and per kind a
subfolder (metrics.jsonl, checkpoints/ for --resume).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from pnc_jax import cli, features, fits, probe
from pnc_jax.config import Config
from pnc_jax.data import dataset_for
from pnc_jax.plots.nonlinear import draw_all
from pnc_jax.sweep import run_sweep
from pnc_jax.train import make_trainer
from pnc_jax.workdir import Workdir

KINDS = ("hybrid", "mlp")
EMBED_LAYERS = (1, 2, 4, 6)

PRESETS = {
    "cpu": Config(
        dataset="mnist10k", num_classes=10, samples_per_class=0, model="hybrid", depths=(8,),
        width=256, num_nonlinear=3, batch_norm=True, init="orthogonal", init_scale=0.1,
        loss="mse", loss_scale=100.0, lr=1e-3, momentum=0.9, weight_decay=1e-4,
        schedule="cosine", final_lr_factor=0.01, epochs=60, batch_size=128, tol=0.0, seeds=(0,),
        chunk_epochs=10,
    ),
}
PRESETS["paper"] = dataclasses.replace(
    PRESETS["cpu"], dataset="cifar10", width=1024, lr=1e-4, weight_decay=1e-4, epochs=400,
    chunk_epochs=20,
)
# Per kind, unless the flag is given: the paper's alpha; on the CPU preset also the lr.
KIND_DEFAULTS = {
    "cpu": {"hybrid": {"loss_scale": 100.0, "lr": 1e-3}, "mlp": {"loss_scale": 1.0, "lr": 1e-2}},
    "paper": {"hybrid": {"loss_scale": 100.0}, "mlp": {"loss_scale": 1.0}},
}


def parser(preset: str = "cpu") -> argparse.ArgumentParser:
    p = cli.parser_for(__doc__, PRESETS[preset], "runs/nonlinear")
    p.add_argument("--preset", choices=tuple(PRESETS), default="cpu",
                   help="cpu: mnist10k, width 256, 60 epochs; paper: CIFAR-10 (default: cpu)")
    p.add_argument("--bn-train", action="store_true",
                   help="features with BatchNorm in training mode (per-batch statistics)")
    p.add_argument("--feature-batch", type=int, default=features.DEFAULT_BATCH,
                   help=f"batch size of the feature passes (default: {features.DEFAULT_BATCH})")
    p.add_argument("--probe-steps", type=int, default=probe.DEFAULTS["steps"],
                   help=f"Adam steps of each linear probe (default: {probe.DEFAULTS['steps']})")
    p.add_argument("--probe-lr", type=float, default=probe.DEFAULTS["lr"],
                   help=f"Adam learning rate of the probes (default: {probe.DEFAULTS['lr']})")
    p.add_argument("--probe-batch", type=int, default=0,
                   help="probe minibatch size (default: 0 = full batch)")
    p.add_argument("--embed-per-class", type=int, default=100,
                   help="training points per class in the PCA embedding (default: 100)")
    return p


def _preset_of(argv) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    known, _ = pre.parse_known_args(argv)
    return known.preset


def kind_configs(cfg: Config, args, preset: str) -> dict[str, Config]:
    """One Config per kind: per-kind defaults where neither a flag nor --config set the field."""
    if args.model is not None and args.model not in KINDS:
        cli.fail(f"--model must be one of {KINDS} here, got {args.model!r}")
    given = {f.name for f in dataclasses.fields(Config) if getattr(args, f.name, None) is not None}
    if args.config:
        given |= set(json.loads(Path(args.config).read_text()))
    out = {}
    for kind in (args.model,) if args.model else KINDS:
        extra = {k: v for k, v in KIND_DEFAULTS[preset][kind].items() if k not in given}
        try:
            out[kind] = dataclasses.replace(cfg, model=kind, **extra).validate()
        except ValueError as e:
            cli.fail(str(e))
    if len(cfg.depths) != 1:
        cli.fail(f"nonlinear trains one depth, got --depths {','.join(map(str, cfg.depths))}")
    return out


# -------------------------------------------------------------------------------- measuring


def _network_accuracy(trainer, state, x, y, batch: int) -> np.ndarray:
    """Accuracy of every model of the stacked ``state`` on (x, y), BatchNorm in eval mode."""
    @jax.jit
    def hits(params, stats, depth, xb, yb):
        def one(p, s, d):
            logits, _, _ = trainer.apply(p, s, xb, d, False)
            return (logits.argmax(-1) == yb).sum()
        return jax.vmap(one)(params, stats, depth)

    total = 0
    for a in range(0, len(x), batch):
        total = total + np.asarray(hits(state.params, state.stats, state.depth, x[a:a + batch],
                                        y[a:a + batch]))
    return total / len(x)


def _pca2(h_NxM: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Top-2 principal coordinates (float64) and their explained-variance fractions."""
    hc = np.asarray(h_NxM, np.float64)
    hc = hc - hc.mean(0)
    u, s, _ = np.linalg.svd(hc, full_matrices=False)
    total = float(np.sum(s**2)) or 1.0
    return u[:, :2] * s[:2], [float(v) / total for v in s[:2] ** 2]


def _embedding(trainer, state, x, y, num_classes, per_class, layers, batch, bn_train) -> dict:
    # the data set's (shuffled) order, never class-sorted: BatchNorm in train mode needs mixed
    # batches (science.md section 3)
    idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(num_classes)]))
    hs = features.collect_features(trainer, state, x[idx], batch_size=batch, bn_train=bn_train,
                                   layers=layers)
    out = {"layers": list(layers), "labels": y[idx].tolist(), "coords": [], "explained": []}
    for h in hs:
        coords, explained = _pca2(h)  # zero padding, if any, adds no variance
        out["coords"].append(np.round(coords, 4).tolist())
        out["explained"].append(explained)
    return out


def measure_kind(cfg: Config, data, states, args) -> list[dict]:
    """Per seed: per-layer rank, probes, metrics, fits, embedding (records without training)."""
    (group, state), = states.items()
    depth = group[0]
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    trainer = make_trainer(cfg, x.shape[1], x.shape[0], max_depth=depth)
    k = cfg.num_classes
    stats = features.layer_metrics(trainer, state, x, y, k, batch_size=args.feature_batch,
                                   bn_train=args.bn_train)
    test_acc = _network_accuracy(trainer, state, xt, yt, args.feature_batch) if len(xt) else None

    seeds = list(cfg.seeds)
    one = [jax.tree.map(lambda a, i=i: a[i], state) for i in range(len(seeds))]
    width = max(x.shape[1], cfg.width)
    kw = {"batch_size": args.feature_batch, "bn_train": args.bn_train, "width": width}
    train_f = np.concatenate([features.collect_features(trainer, s, x, **kw) for s in one])
    test_f = np.concatenate([features.collect_features(trainer, s, xt, **kw) for s in one])
    probes = probe.fit_probes(train_f, y, test_f, yt, k, steps=args.probe_steps,
                              lr=args.probe_lr, batch_size=args.probe_batch)
    del train_f, test_f
    start = deep_start(cfg)
    layers = [l for l in EMBED_LAYERS if l < depth]
    out = []
    for i, seed in enumerate(seeds):
        rec = {"seed": seed, "depth": depth, "layers": list(range(depth))}
        for name in ("numerical_rank", "compression", "discrimination", "nc1", "fuzziness"):
            rec[name] = np.asarray(stats[name][i]).tolist()
        rec["probe_train_accuracy"] = probes["train_accuracy"][i * depth:(i + 1) * depth].tolist()
        rec["probe_test_accuracy"] = probes["test_accuracy"][i * depth:(i + 1) * depth].tolist()
        rec["test_accuracy"] = None if test_acc is None else float(test_acc[i])
        rec["fits"] = {
            "compression_deep": fits.fit_record(rec["compression"], "geometric", start),
            "discrimination_deep": fits.fit_record(rec["discrimination"], "linear", start),
            "compression_all": fits.fit_record(rec["compression"], "geometric", 1),
            "discrimination_all": fits.fit_record(rec["discrimination"], "linear", 1),
        }
        rec["embedding"] = _embedding(trainer, one[i], x, y, k, args.embed_per_class, layers,
                                      args.feature_batch, args.bn_train)
        out.append(rec)
    return out


def deep_start(cfg: Config) -> int:
    """First of "the deep layers": the hybrid's first linear layer, num_nonlinear + 1 (the same
    index for the MLP, to compare like with like), or 1 if that leaves < 2 layers to fit."""
    start = cfg.num_nonlinear + 1
    return start if cfg.max_depth - start >= 2 else 1


def checks(cfg: Config, rec: dict) -> dict[str, bool]:
    """The issue's done-when criteria (stated for the hybrid; evaluated for both kinds)."""
    first_linear = deep_start(cfg)
    deep = slice(first_linear, None)
    rank = np.asarray(rec["numerical_rank"], float)[deep]
    cf, df = rec["fits"]["compression_deep"], rec["fits"]["discrimination_deep"]
    return {
        "train accuracy >= 99%": bool((rec["train_accuracy"] or 0) >= 0.99),
        f"probe train accuracy >= 99% by layer {first_linear}":
            bool(rec["probe_train_accuracy"][first_linear] >= 0.99),
        f"rank falls over layers {first_linear}..{cfg.max_depth - 1}":
            bool(len(rank) > 1 and rank[-1] < rank[0] and np.all(np.diff(rank) <= 0)),
        "C_l falls over the deep layers (ratio < 1)": bool(cf and cf["ratio"] < 1),
        "D_l rises over the deep layers (slope > 0)": bool(df and df["slope"] > 0),
    }


# -------------------------------------------------------------------------------- report


def _f(v, fmt=".4g"):
    return "-" if v is None else format(v, fmt)


def summary_markdown(results: dict) -> str:
    lines = ["# Nonlinear networks on real data", "",
             f"data {results['dataset']} ({results['num_train']} train / {results['num_test']} "
             f"test); features with BatchNorm in {'train' if results['bn_train'] else 'eval'} "
             f"mode; preset {results['preset']}.", ""]
    for kind, res in results["models"].items():
        cfg = res["config"]
        for rec in res["runs"]:
            lines += [
                f"## {kind}, seed {rec['seed']}", "",
                f"width {cfg['width']}, L = {rec['depth']}, alpha {cfg['loss_scale']}, "
                f"lr {cfg['lr']}, wd {cfg['weight_decay']}, {cfg['epochs']} epochs: train "
                f"accuracy {_f(rec['train_accuracy'], '.4f')}, test accuracy "
                f"{_f(rec['test_accuracy'], '.4f')}, final loss {_f(rec['final_loss'])}, "
                f"training {res['train_seconds']:.0f} s, measuring {res['measure_seconds']:.0f} s.",
                "",
                "| l | layer | rank | probe train | probe test | C_l | D_l | NC1 | fuzziness |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for l in rec["layers"]:
                what = "input" if l == 0 else ("ReLU" if l <= res["num_nonlinear"] else "linear")
                lines.append(
                    f"| {l} | {what} | {rec['numerical_rank'][l]} | "
                    f"{rec['probe_train_accuracy'][l]:.4f} | {rec['probe_test_accuracy'][l]:.4f} "
                    f"| {rec['compression'][l]:.4g} | {rec['discrimination'][l]:.4f} | "
                    f"{rec['nc1'][l]:.4g} | {rec['fuzziness'][l]:.4g} |")
            fits_ = rec["fits"]
            lines.append("")
            for span in ("deep", "all"):
                cf, df = fits_[f"compression_{span}"], fits_[f"discrimination_{span}"]
                if cf and df:
                    lines.append(
                        f"- fit over l = {cf['start']}..{rec['depth'] - 1}: C ratio "
                        f"{cf['ratio']:.4f} (R^2 {cf['r2']:.4f}), D slope {df['slope']:.4f} "
                        f"(R^2 {df['r2']:.4f})")
            lines += ["", "Checks: " + "; ".join(
                f"{name}: {'yes' if ok else 'NO'}" for name, ok in rec["checks"].items()), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    preset = _preset_of(argv)
    defaults = PRESETS[preset]
    cfg, args, workdir = cli.parse(parser(preset), defaults, argv)
    kinds = kind_configs(cfg, args, preset)
    if args.feature_batch < 1 or args.embed_per_class < 1 or args.probe_steps < 1:
        cli.fail("--feature-batch, --embed-per-class and --probe-steps must be >= 1")
    try:
        data = dataset_for(cfg)
    except (FileNotFoundError, ValueError) as e:
        where = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
        cli.fail(f"--preset {preset} needs the {cfg.dataset} data: {where}")
    settings = {
        "preset": preset, "bn_train": args.bn_train, "feature_batch": args.feature_batch,
        "probe": {"steps": args.probe_steps, "lr": args.probe_lr, "batch_size": args.probe_batch},
        "embed_per_class": args.embed_per_class,
    }
    configs = {kind: c.to_json() for kind, c in kinds.items()}
    cli.record_config(
        workdir, args, configs, settings=settings,
        data={"name": data.name, "input_dim": int(data.x_train.shape[1]),
              "num_samples": int(data.x_train.shape[0]), "num_test": int(data.x_test.shape[0])},
    )
    results = {"dataset": data.name, "num_train": int(len(data.y_train)),
               "num_test": int(len(data.y_test)), **settings, "models": {}}
    for kind, kcfg in kinds.items():
        sub = Workdir(workdir.path / kind, overwrite=args.overwrite, resume=args.resume)
        t0 = time.time()
        records, states = run_sweep(kcfg, data.x_train, data.y_train, sub, resume=args.resume,
                                    progress=not args.no_progress,
                                    depth_strategy=args.depth_strategy,
                                    workers=args.workers)
        t1 = time.time()
        runs = measure_kind(kcfg, data, states, args)
        for rec, trained in zip(runs, records, strict=True):
            for key in ("status", "epochs_trained", "final_loss", "train_accuracy"):
                rec[key] = trained[key]
            rec["bn_train"] = args.bn_train
            rec["checks"] = checks(kcfg, rec)
        results["models"][kind] = {
            "config": kcfg.to_json(), "num_nonlinear": kcfg.num_nonlinear if kind == "hybrid"
            else kcfg.max_depth - 1, "bn_train": args.bn_train, "runs": runs,
            "train_seconds": t1 - t0, "measure_seconds": time.time() - t1,
        }
        sys.stderr.write(f"{kind}: trained in {t1 - t0:.0f} s, measured in "
                         f"{time.time() - t1:.0f} s\n")
    workdir.write_json("results.json", results)
    summary = summary_markdown(results)
    workdir.write_text("summary.md", summary)
    draw_all(workdir.path)
    sys.stdout.write(summary + f"\nwrote {workdir.path}\n")
    return results


if __name__ == "__main__":
    main()
