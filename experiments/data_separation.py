"""He & Su's law of data separation (PNAS 2023): fuzziness decays geometrically with depth.

    python -m experiments.data_separation                       # Adam, depths 4/8/20, 3 seeds
    python -m experiments.data_separation --preset sgd          # SGD lr 0.3 / 0.03 / 0.01
    python -m experiments.data_separation --dataset fashion_mnist --data-dir DIR

Protocol of the authors' code (science.md section 3): 100 training images per class (the first
100 of each class after a seeded shuffle, in that shuffled order), bilinear-resized to 10 x 10,
standardised per channel with the training images' mean and std, shuffled once (--data-seed:
batches must mix the classes, synthetic sets too); test set = the held-out split
(mnist10k: 2,000 digits; the others: their official test set). Networks: L - 1 blocks Linear ->
BatchNorm -> ReLU of width 100, then a linear classifier. He & Su's "depth 4 / 8 / 20" counts
Linear layers (their GFNN with layer_num = 2 / 6 / 18 has layer_num + 1 blocks and a classifier),
so it is our L = 4 / 8 / 20 (L = weight matrices); layers l = 0 (input) .. L-1 (block outputs,
after BatchNorm and ReLU; logits excluded), all of them in the fit, as theirs. PyTorch's default
init (U(+-1/sqrt(fan_in))), no biases (BatchNorm cancels a Linear bias; the classifier has none
either, unlike theirs). Cross-entropy, batch 128 (the last 104 points of each epoch's shuffle
are dropped; theirs trains on them), 600 epochs, Adam (lr 3e-3 / 1e-3 / 3e-4) or plain SGD
(0.3 / 0.03 / 0.01), coupled weight decay 5e-4, lr / 10 at epochs 200 and 400.

Fuzziness D_l = Tr(SS_w SS_b^+) of the 1,000 training points with BatchNorm in training mode
over their consecutive batches of 100 (the authors' extraction; summary and fits use it) and in
eval mode; rho = exp(slope of ln D_l on l), Pearson r; the same at initialisation; during
training every --measure-every epochs inside the compiled loop (``emergence``). Ablations
(``--ablations``): none, no_batchnorm, no_relu (Linear -> BatchNorm blocks), random_labels (a
seeded permutation of the training labels; train accuracy and fuzziness on those labels).

Writes to --workdir: config.json, results.json (``records.SeparationRun`` per ablation, depth
and seed), timings.json, summary.md, separation.png, emergence.png, ablations.png, and per
ablation a subfolder (metrics.jsonl with the in-training fuzziness rows, checkpoints/).
"""

import dataclasses
import sys
import time

from pnc_jax import cli, separation, summaries
from pnc_jax.config import Config, setting
from pnc_jax.data import dataset_for
from pnc_jax.plots.separation import draw_all

ADAM = Config(
    dataset="mnist10k", num_classes=10, samples_per_class=100, resize=10, normalize="train",
    model="mlp", depths=(4, 8, 20), width=100, batch_norm=True, activation="relu",
    init="default", loss="ce", loss_scale=1.0, optimizer="adam", lr=1e-3,
    depth_lrs=(3e-3, 1e-3, 3e-4), momentum=0.0, weight_decay=5e-4, schedule="step",
    milestones=(200, 400), epochs=600, batch_size=128, tol=0.0, seeds=(0, 1, 2),
    chunk_epochs=50, measure_every=10, measure_batch=100)


@dataclasses.dataclass(frozen=True)
class Settings:
    train: Config = ADAM
    ablations: tuple[str, ...] = setting(separation.ABLATIONS, "conditions to train",
                                         choices=separation.ABLATIONS, unique=True)
    label_seed: int = setting(0, "seed of the random relabelling (random_labels)")
    fit_start: int = setting(0, "first layer of the fits (0 = the input, as He & Su)")
    FIXED = ("model",)

    def validate(self) -> None:
        t = self.train
        if t.measure_every < 1 or t.measure_batch < 1:
            raise ValueError(f"measure_every={t.measure_every} and measure_batch="
                             f"{t.measure_batch} must be >= 1 (emergence; BatchNorm batches)")
        if not 0 <= self.fit_start <= min(t.depths) - 2:
            raise ValueError(f"depth {min(t.depths)} leaves fewer than 2 layers to fit from "
                             f"fit_start={self.fit_start}")


def adam() -> Settings:
    """Adam, depths 4 / 8 / 20 (lr 3e-3 / 1e-3 / 3e-4), 3 seeds, 4 ablations, 600 epochs.

    Measured on mnist10k: 4.3 min wall on an idle 2-core CPU (12.8 min when shared at load
    ~8.5). none: rho 0.237 / 0.509 / 0.816, r -0.993 / -0.998 / -0.984 at L = 4 / 8 / 20 (init r
    +0.33 / +0.94 / +0.98), test accuracy 93.4 / 92.4 / 85.0%; no_batchnorm: r -0.999 / -0.04 /
    no fit (L = 20 does not train); no_relu: rho ~1.005-1.05, r +0.3..+0.5; random_labels: r
    -0.997 / -0.994 / -0.980 on the training set. Expected (science.md): r about -0.996 / -0.992
    / -0.964 and rho 0.27 / 0.52 / 0.81; no_batchnorm r ~ +0.6, no_relu rho ~ 0.96, r ~ -0.93,
    random_labels r ~ -0.997.
    """
    return Settings()


def sgd() -> Settings:
    """Plain SGD (no momentum, as the authors' "sgd"), lr 0.3 / 0.03 / 0.01, otherwise adam."""
    return dataclasses.replace(Settings(), train=dataclasses.replace(
        ADAM, optimizer="sgd", lr=0.03, depth_lrs=(0.3, 0.03, 0.01)))


def run(s: Settings, ctx: cli.RunContext) -> list:
    data = dataset_for(s.train)
    if s.train.measure_batch > len(data.y_train):
        raise ValueError(f"measure_batch={s.train.measure_batch} exceeds the "
                         f"{len(data.y_train)} training points")
    ctx.begin(data=data)
    x, y_true = separation.shuffle_once(data.x_train, data.y_train, s.train.data_seed)
    results: list = []
    seconds = {}  # timings.json: results.json holds only what a re-run reproduces
    for ablation in s.ablations:
        t0 = time.time()
        cfg = separation.ablation_config(s.train, ablation)
        y = (separation.random_labels(y_true, s.label_seed) if ablation == "random_labels"
             else y_true)
        records, states = ctx.sweep(cfg, x, y, sub=ablation)
        t1 = time.time()
        results += separation.measure_runs(
            cfg, x, y, data.x_test, data.y_test, records, states,
            ablation=ablation, batch=cfg.measure_batch, start=s.fit_start)
        seconds[ablation] = {"train": t1 - t0, "measure": time.time() - t1}
        sys.stderr.write(f"{ablation}: trained in {t1 - t0:.0f} s, measured in "
                         f"{time.time() - t1:.0f} s\n")
    ctx.finish(results, summaries.data_separation(results, s.train, data.name, seconds,
                                                  s.fit_start), draw_all, seconds)
    return results


EXPERIMENT = cli.Experiment("data_separation", __doc__, {"adam": adam, "sgd": sgd}, run)


def main(argv=None) -> list:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    main()
