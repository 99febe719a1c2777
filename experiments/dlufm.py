"""Deep neural collapse in the deep linear unconstrained feature model (Garrod & Keating; formulas,
closed forms and reference numbers: science.md section 4), and the same per-layer Hessian
analysis on any trained deep linear network.

    python -m experiments.dlufm                          # configuration A (K=4, n=10, d=32, L=3)
    python -m experiments.dlufm --full-hessian           # configuration B's full Hessian spectrum
    python -m experiments.dlufm --depth 4 --weight-decay 4e-3 --feature-decay 8e-3 --seeds 3
    python -m experiments.dlufm --from-workdir runs/sweep_depth   # a finished depth sweep

Training (``pnc_jax.dlufm.train``): full-batch gradient descent in float64 from N(0, 1/d), seeds
vmapped, measured on device every --track-every steps: per-layer NC1..NC4, the loss gap to loss*,
the data-term Hessian of each W_l (exact Kronecker form: top K^2+1 eigenvalues, outlier count,
lambda_{K^2+1}/lambda_{K^2}) and the data-term gradient's overlap with its top-K^2 eigenspace.
--full-hessian adds the dense Hessian w.r.t. all P parameters (alone: configuration B). With
--from-workdir DIR nothing trains: every network of the finished sweep in DIR is analysed per
layer on its own training data (``dlufm.sweep_spectra``; the model flags are then unused).

Writes to --workdir: config.json, results.json (``records.DLUFMResults`` or, with --from-workdir,
``records.SweepSpectra``), summary.md (measured vs closed form), timings.json, dlufm_collapse.png,
dlufm_spectrum.png, dlufm_alignment.png (with --from-workdir: layer_spectra.png).
"""

import dataclasses
import sys
import time
from pathlib import Path

from pnc_jax import cli, dlufm, summaries
from pnc_jax.config import setting
from pnc_jax.data import dataset_for
from pnc_jax.plots import dlufm as plots


@dataclasses.dataclass(frozen=True)
class Settings:
    num_classes: int = setting(4, "number of classes K")
    samples_per_class: int = setting(10, "samples per class n")
    width: int = setting(32, "width d (K <= d)")
    depth: int = setting(3, "number of weight matrices L")
    weight_decay: float = setting(5e-3, "lambda_W, weight decay of every W_l")
    feature_decay: float = setting(5e-3, "lambda_H, weight decay of the free features H_1")
    lr: float = setting(0.5, "gradient descent step size")
    steps: int = setting(20_000, "full-batch gradient descent steps")
    seeds: tuple[int, ...] = setting((0,), "explicit comma list of seeds", unique=True,
                                     flag="--seed-list", count_flag="--seeds")
    track_every: int = setting(100, "steps between the on-device measurements")
    outlier_rtol: float = setting(1e-6, "an outlier exceeds outlier_rtol x the top eigenvalue")
    full_hessian: bool = setting(False, "also the dense Hessian w.r.t. all parameters (alone: "
                                 "configuration B, --preset full_hessian)")
    from_workdir: str | None = setting(None, "spectra of the trained networks of this finished "
                                       "deep linear sweep instead (no training)")

    def model(self) -> dlufm.DLUFMConfig:
        return dlufm.DLUFMConfig(self.num_classes, self.samples_per_class, self.width,
                                 self.depth, self.weight_decay, self.feature_decay, self.lr,
                                 self.steps)

    def validate(self) -> None:
        cfg = self.model().validate()
        dlufm.closed_form(cfg.num_classes, cfg.samples_per_class, cfg.depth, cfg.weight_decay,
                          cfg.feature_decay)  # no nontrivial root: ValueError
        if not self.seeds or min(self.seeds) < 0:
            raise ValueError(f"seeds must be >= 0 and not empty, got {self.seeds}")
        if self.track_every < 1 or not self.outlier_rtol > 0:
            raise ValueError(f"track_every={self.track_every} must be >= 1 and outlier_rtol="
                             f"{self.outlier_rtol} > 0")
        if self.full_hessian and dlufm.num_params(cfg) > 10_000:
            raise ValueError(f"--full-hessian: P={dlufm.num_params(cfg)} parameters exceeds "
                             "10000 (a dense P x P Hessian)")
        if self.from_workdir is not None:
            dlufm.trained_sweep(self.from_workdir)


def default() -> Settings:
    """Configuration A: K=4, n=10, d=32, L=3, lambda_W = lambda_H = 5e-3, lr 0.5, 20,000 steps.

    Expected (science.md): loss* = 0.07048705 reached to ~1e-16, every W_l with 4 singular
    values sigma = 1.321276, ||mu_c^(1)|| = 0.417824, 16 layer-Hessian outliers at 0.1330153
    (rest ~1e-17), gradient overlap 1 - 1e-15, NC1 ~1e-31. 22 s on 2 shared cores, cold.
    """
    return Settings()


def full_hessian() -> Settings:
    """Configuration B (K=3, n=4, d=12, L=3, lambda = 5e-3; 468 parameters) with the dense
    full-parameter Hessian: python -m experiments.dlufm --full-hessian.

    Expected (science.md): top 9 at 0.93265 (x3) and 0.90265 (x6), 27 = K^2(n-1) at 0.23316, then
    0.01 (x99), 0.005 (x243) and 0 (x90). 27 s on 2 shared cores, cold.
    """
    return Settings(num_classes=3, samples_per_class=4, width=12, full_hessian=True)


def run(s: Settings, ctx: cli.RunContext) -> dict:
    if s.from_workdir is not None:
        return from_workdir(s, ctx)
    cfg = s.model()
    ctx.begin(parameters=dlufm.num_params(cfg))
    start = time.perf_counter()
    trained = dlufm.train(cfg, s.seeds, track_every=s.track_every, outlier_rtol=s.outlier_rtol)
    seconds = {"train": time.perf_counter() - start}
    results = dlufm.run_results(cfg, trained, s.track_every, s.outlier_rtol)
    if s.full_hessian:
        start = time.perf_counter()
        results["full_hessian"] = dlufm.full_hessian_results(cfg, trained)
        seconds["full_hessian"] = time.perf_counter() - start
    ctx.finish(results, summaries.dlufm(results, seconds), lambda wd: (
        plots.collapse_figure(results, wd / "dlufm_collapse.png"),
        plots.spectrum_figure(results, wd / "dlufm_spectrum.png"),
        plots.alignment_figure(results, wd / "dlufm_alignment.png")), seconds)
    return results


def from_workdir(s: Settings, ctx: cli.RunContext) -> dict:
    cfg, _ = dlufm.trained_sweep(s.from_workdir)
    source = Path(s.from_workdir).resolve()
    if ctx.workdir.path.resolve() in (source, *source.parents):
        raise ValueError(f"--workdir {ctx.workdir.path} would replace --from-workdir {source}")
    data = dataset_for(cfg)
    ctx.begin(data=data)
    start = time.perf_counter()
    runs = dlufm.sweep_spectra(s.from_workdir, data.x_train, data.y_train, s.outlier_rtol)
    seconds = {"spectra": time.perf_counter() - start}
    results = {"source": s.from_workdir, "num_classes": cfg.num_classes,
               "loss_scale": cfg.loss_scale, "outlier_rtol": s.outlier_rtol, "runs": runs}
    ctx.finish(results, summaries.sweep_spectra(results, seconds),
               lambda wd: plots.layer_spectra_figure(results, wd / "layer_spectra.png"), seconds)
    return results


EXPERIMENT = cli.Experiment("dlufm", __doc__, {"default": default, "full_hessian": full_hessian},
                            run)
FALSE = ("0", "false", "no")


def main(argv=None) -> dict:
    """``--full-hessian`` without ``--preset`` or ``--config`` selects configuration B."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--full-hessian" in args and not any(a.split("=")[0] in ("--preset", "--config")
                                            for a in args):
        i = args.index("--full-hessian")
        if i + 1 == len(args) or args[i + 1].lower() not in FALSE:
            args = ["--preset", "full_hessian", *args]
    return EXPERIMENT.main(args)


if __name__ == "__main__":
    main()
