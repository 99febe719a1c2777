"""The schema of results.json records (TypedDicts): what the experiments write and what the
summaries and plots read. Per-layer lists are indexed by layer l = 0..L-1 (0 = the input; the
logits are not a layer). Floats that were NaN or inf are written as null (None)."""

from __future__ import annotations

from typing import TypedDict


class FitRecord(TypedDict, total=False):
    """``fits.fit_record``: geometric fits carry ``ratio``, linear fits ``slope``."""

    ratio: float
    slope: float
    r2: float
    pearson_r: float
    start: int  # the fit uses layers start..L-1


class ClosedForm(TypedDict):
    """The min-norm balanced network's own measured profile (``theory.min_norm_balanced``)."""

    compression: list[float]
    discrimination: list[float]
    fitted_ratio: float | None
    r2: float | None


class TheoryReference(TypedDict):
    """Wang et al.'s prediction for one (setting, depth): ``analysis.theory_reference``."""

    samples_per_class: int
    rho: float  # orthonormal-limit rate xi^2 alpha^(2/L) / n^(1/L)
    fitted_ratio: float | None  # exact finite-data prediction, fitted over l = 1..L-1
    compression: list[float] | None  # exact finite-data C_l
    discrimination: list[float] | None  # exact finite-data D_l
    closed_form: ClosedForm | None
    notes: list[str]


class RunRecord(TypedDict):
    """One trained (depth, seed) of a sweep (``sweep.run_sweep``), one entry of sweep_depth's
    results.json."""

    depth: int
    seed: int
    status: str  # "ok" | "diverged"
    converged: bool
    epochs_trained: int
    final_loss: float | None
    train_accuracy: float | None
    compression: list[float | None]
    discrimination: list[float | None]
    nc1: list[float | None]
    fuzziness: list[float | None]
    compression_fit: FitRecord | None
    discrimination_fit: FitRecord | None
    theory: TheoryReference | None


class SeedStats(TypedDict):
    """Mean and sample std (ddof 1) over seeds of one quantity; None where undefined."""

    mean: float | None
    std: float | None
    n: int


class MeasuredPoint(TypedDict):
    """The trained fitted ratios of one (setting, depth) over its seeds."""

    seeds: list[int]
    per_seed_fitted_ratio: list[float | None]
    converged: list[bool]
    status: list[str]
    epochs_trained: list[int]
    final_loss: list[float | None]
    fitted_ratio_mean: float | None
    fitted_ratio_std: float | None
    fit_r2_min: float | None
    layer_ratios_mean: list[float] | None
    compression_per_seed: list[list[float | None]]


class TheoryPoint(TypedDict):
    """One (setting, depth) of experiments.theory_vs_practice."""

    setting: str
    init_scale: float
    samples_per_class: int
    loss_scale: float
    depth: int
    width: int
    dataset: str
    rho: float
    in_regime: bool
    predicted_fitted_ratio: float | None
    predicted_compression: list[float] | None
    closed_form: ClosedForm | None
    measured: MeasuredPoint
    status: str  # "ok" | "partial" | "unconverged" | "no_fit"
    rel_error_rho: float | None
    rel_error_predicted: float | None
    closed_form_rel_error_predicted: float | None
    notes: list[str]


class AssumptionEntry(TypedDict, total=False):
    """One trained net of experiments.assumptions (``theory.check_assumptions``)."""

    sweep: str  # "depth" | "width"
    depth: int
    width: int
    seed: int
    converged: bool
    status: str
    epochs_trained: int
    final_loss: float | None
    min_norm_residual: float | None
    min_norm_relative: float | None
    balancedness: list[float | None]
    balancedness_normalized: list[float | None]
    balancedness_mean: float | None
    balancedness_hidden_max: float | None
    middle_singular_variance: float | None
    middle_singular_range: list[list[float] | None]
    orthonormality: float | None
    note: str


class Embedding(TypedDict):
    layers: list[int]
    labels: list[int]
    coords: list[list[list[float]]]  # per layer: N x 2 principal coordinates
    explained: list[list[float]]  # per layer: explained-variance fractions of the 2 axes


class LayerRecord(TypedDict, total=False):
    """One trained network of experiments.nonlinear, measured layer by layer."""

    seed: int
    depth: int
    layers: list[int]
    numerical_rank: list[int]
    compression: list[float]
    discrimination: list[float]
    nc1: list[float]
    fuzziness: list[float]
    probe_train_accuracy: list[float]
    probe_test_accuracy: list[float]
    test_accuracy: float | None
    fits: dict[str, FitRecord | None]  # compression_deep, discrimination_deep, *_all
    embedding: Embedding
    status: str
    epochs_trained: int
    final_loss: float | None
    train_accuracy: float | None
    bn_train: bool
    checks: dict[str, bool]


class TransferRecord(TypedDict):
    """One pretrained (head depth, seed) of experiments.transfer (``pnc_jax.transfer``): the
    source training outcome, then the backbone alone (layers 0..b, head and classifier dropped)
    on the target classes."""

    head_depth: int  # h
    seed: int
    depth: int  # L = b + h + 1
    status: str  # "ok" | "diverged"
    converged: bool
    epochs_trained: int
    final_loss: float | None
    source_train_accuracy: float | None
    source_test_accuracy: float | None
    network_compression_source: list[float | None]  # C_l, l = 0..L-1, whole net (the sweep's)
    transfer_accuracy: float | None  # probe on h_b, mean over the labelled draws
    transfer_accuracy_draws: list[float | None]
    layer_probe_accuracy: list[float | None]  # l = 0 (input) .. b, mean over the draws
    backbone_compression_source: float | None  # C of h_b on the source training data
    backbone_discrimination_source: float | None
    backbone_nc1_source: float | None
    backbone_compression_target: float | None  # on the held-out target data
    backbone_discrimination_target: float | None
    backbone_nc1_target: float | None


class LawFit(TypedDict):
    """He & Su's law fitted to one fuzziness profile (``separation.fit_law``): ln D_l on l."""

    rho: float | None  # exp(slope): the per-layer decay ratio of the fuzziness
    pearson_r: float | None
    r2: float | None
    log_d0: float | None  # intercept: ln D at l = 0


class SeparationLaw(LawFit):
    """``separation.separation_law``: the profile and its fit over layers start..L-1."""

    fuzziness: list[float]  # D_0..D_{L-1}
    start: int


class EmergencePoint(TypedDict):
    """The law's fit at one epoch of training (epoch 0 = initialisation)."""

    epoch: int
    rho: float | None
    pearson_r: float | None


class SeparationRun(TypedDict):
    """One trained (depth, seed, ablation) of experiments.data_separation (results.json)."""

    depth: int
    seed: int
    ablation: str  # "none" | "no_batchnorm" | "no_relu" | "random_labels"
    optimizer: str
    lr: float
    status: str
    epochs_trained: int
    final_loss: float | None
    train_accuracy: float | None  # on the labels trained on (random ones for random_labels)
    test_accuracy: float | None
    fuzziness: list[float]  # BatchNorm in training mode over fixed batches (He & Su)
    rho: float | None
    pearson_r: float | None
    r2: float | None
    log_d0: float | None
    fuzziness_eval_bn: list[float]  # BatchNorm in eval mode (running statistics)
    rho_eval_bn: float | None
    pearson_r_eval_bn: float | None
    fuzziness_at_init: list[float]  # training-mode BatchNorm, before training
    rho_at_init: float | None
    pearson_r_at_init: float | None
    emergence: list[EmergencePoint]


class DLUFMClosedForm(TypedDict):
    """``dlufm.closed_form``: the deep-collapse optimum of the DLUFM (science.md, section 4)."""

    gamma: float
    sigma: float
    feature_norm: float
    loss: float
    outlier: float  # lambda_W gamma / (1 - gamma)


class DLUFMFinal(TypedDict):
    """After the last step, per seed (axis 0); layer axis l = 1..L is the matrix W_l."""

    loss: list[float]
    data_loss: list[float]
    singular_values: list[list[list[float | None]]]  # top K+1 of W_l (null where W_l has K)
    feature_norms: list[list[float]]  # ||mu_c^(1)||, c = 1..K
    hessian_top: list[list[list[float]]]  # top K^2+1 of the data-term Hessian w.r.t. W_l
    gradient_overlap: list[list[float]]  # data-term gradient on the top-K^2 eigenspace
    outliers: list[list[int]]  # eigenvalues above outlier_rtol x the largest
    gap_ratio: list[list[float]]  # lambda_{K^2+1} / lambda_{K^2}
    nc1: list[list[float]]  # of the features H_l entering W_l


class DLUFMFullHessian(TypedDict):
    """``dlufm.full_hessian_results``: the dense Hessian of the whole loss, per seed."""

    parameters: int
    tolerance: float
    reference: list[list] | None  # science.md's [value, multiplicity or null] (configuration B)
    matches_reference: bool | None
    runs: list[dict]  # seed, eigenvalues (descending), clusters [[value, count]], ...


class DLUFMResults(TypedDict, total=False):
    """results.json of experiments.dlufm (``dlufm.run_results``): config, closed_form, final,
    checks (the done-when booleans), track (steps, then per seed and step: loss, loss_gap, the
    per-layer NC metrics, outliers, gap_ratio, overlap, outlier_smallest, bulk_largest), and
    with --full-hessian full_hessian."""

    config: dict
    closed_form: DLUFMClosedForm
    final: DLUFMFinal
    checks: dict[str, bool]
    track: dict[str, list]
    full_hessian: DLUFMFullHessian


class LayerSpectra(TypedDict):
    """One trained network of a sweep (``dlufm.sweep_spectra``); per layer l = 1..L (W_l)."""

    depth: int
    seed: int
    status: str | None  # the sweep's "ok" / "diverged" (None: it wrote no results.json)
    data_loss: float | None
    hessian_top: list[list[float | None]]  # top K^2+1 data-term Hessian eigenvalues
    outliers: list[int]
    gap_ratio: list[float | None]
    overlap: list[float | None]
    nc1: list[float | None]  # of the features h_{l-1} entering W_l
    singular_values: list[list[float | None]]


class SweepSpectra(TypedDict):
    """results.json of ``experiments.dlufm --from-workdir``."""

    source: str
    num_classes: int
    loss_scale: float
    outlier_rtol: float
    runs: list[LayerSpectra]
