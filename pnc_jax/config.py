"""Every setting of a run in frozen dataclasses, and their one typed conversion from JSON.

``Config`` holds the training settings every experiment shares (data, model, loss, optimiser,
sweep). An experiment's settings are one frozen dataclass of its own fields plus one or more
``Config`` fields (``train: Config``); ``pnc_jax.cli`` turns it into flags, and a run records it
whole in config.json, which ``--config`` reads back (``from_json``).

Symbols: L = ``depth`` (number of weight matrices), xi = ``init_scale``, alpha = ``loss_scale``.
Defaults are the paper's Figure-4 synthetic setting (science.md, section 2).

Fields are declared with ``setting(default, help, ...)``: the help text, choices (a tuple or a
function returning the registered names), whether a tuple must hold distinct values, and the
flag names, all live next to the field. Every value is checked for its declared type (no bool for
an int, no string for a float, no float for an int, a list for a tuple) before ``validate``
checks its range.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any

INT32_MAX = 2**31 - 1  # epoch and step counters are int32 on the device

INITS = ("orthogonal", "default")
LOSSES = ("mse", "ce")
SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("sgd", "adam")
DATASETS = ("synthetic", "gaussian", "mnist10k", "mnist", "fashion_mnist", "cifar10")
NORMALIZATIONS = ("published", "train")
DTYPES = ("float32", "float64")
PRECISIONS = ("highest", "tensorfloat32", "bfloat16")


def _model_names() -> tuple[str, ...]:
    from pnc_jax.models import MODELS  # the registry; imported late (models imports jax/flax)

    return tuple(MODELS)


def _activation_names() -> tuple[str, ...]:
    from pnc_jax.models import ACTIVATIONS

    return tuple(ACTIVATIONS)


def setting(default: Any, help: str, *, choices: tuple | Callable[[], tuple] | None = None,
            unique: bool = False, flag: str | None = None, count_flag: str | None = None) -> Any:
    """A dataclass field with its documentation. ``unique``: a tuple of distinct values.
    ``flag``: the command-line name (default ``--field-name``); ``count_flag``: an extra flag
    taking N for ``range(N)`` (``--seeds 5``)."""
    meta = {"help": help, "choices": choices, "unique": unique, "flag": flag,
            "count_flag": count_flag}
    return dataclasses.field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> tuple | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


@dataclasses.dataclass(frozen=True)
class Config:
    """One sweep: every (depth, seed) pair is one model; all train in vmapped programs."""

    # data
    dataset: str = setting("synthetic", "data set", choices=DATASETS)
    data_dir: str | None = setting(None, "folder holding the data files (default: $PNC_DATA)")
    input_dim: int = setting(50, "synthetic data: input dimension d")
    num_classes: int = setting(3, "number of classes K (real data: the first K)")
    samples_per_class: int = setting(10, "samples per class n (real data: a cap, 0 = all)")
    perturbation: float = setting(1.0, "synthetic: Frobenius norm of the perturbation")
    resize: int = setting(0, "real data: resize images to resize x resize (0 = native)")
    normalize: str = setting("published", "real data: standardise with the published "
                             "per-channel mean/std, or the training set's", choices=NORMALIZATIONS)
    data_seed: int = setting(0, "seed of the data draw / split / shuffle")
    # model
    model: str = setting("linear", "network kind (models.MODELS)", choices=_model_names)
    depths: tuple[int, ...] = setting((2, 3, 4, 5, 6, 7, 8), "depths L (weight matrices)",
                                      unique=True)
    width: int = setting(50, "hidden width")
    num_nonlinear: int = setting(3, "hybrid: first hidden layers that are nonlinear blocks")
    batch_norm: bool = setting(True, "mlp / hybrid: BatchNorm before each activation")
    activation: str = setting("relu", "mlp / hybrid: activation of the nonlinear blocks",
                              choices=_activation_names)
    init: str = setting("orthogonal", "weight init", choices=INITS)
    init_scale: float = setting(0.3, "orthogonal init scale xi")
    # loss and optimiser
    loss: str = setting("mse", "loss", choices=LOSSES)
    loss_scale: float = setting(100.0, "loss scale alpha: the loss sees alpha f(x)")
    optimizer: str = setting("sgd", "sgd (momentum, coupled weight decay) or adam (coupled "
                             "weight decay, as torch.optim.Adam)", choices=OPTIMIZERS)
    lr: float = setting(0.1, "learning rate")
    depth_lrs: tuple[float, ...] = setting((), "per-depth learning rates, aligned with depths "
                                           "(empty: lr for every depth)")
    momentum: float = setting(0.0, "SGD momentum")
    weight_decay: float = setting(0.0, "coupled weight decay (added to the gradient)")
    schedule: str = setting("cosine", "lr schedule per epoch", choices=SCHEDULES)
    final_lr_factor: float = setting(0.1, "cosine ends at lr * final_lr_factor")
    milestones: tuple[int, ...] = setting((), "step schedule: lr / 10 at each of these epochs",
                                          unique=True)
    epochs: int = setting(5000, "epochs (at most)")
    batch_size: int = setting(0, "minibatch size (0 = full batch)")
    tol: float = setting(1e-11, "a model stops once its full-batch loss is below tol")
    # sweep and numerics
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "explicit comma list of seeds",
                                     unique=True, flag="--seed-list", count_flag="--seeds")
    dtype: str = setting("float32", "parameter dtype of the networks", choices=DTYPES)
    matmul_precision: str = setting("highest", "matmul precision of training (metrics are "
                                    "always float64)", choices=PRECISIONS)
    chunk_epochs: int = setting(50, "epochs per compiled chunk between log/checkpoint points")
    measure_every: int = setting(0, "epochs between the per-layer fuzziness measurements taken "
                                 "inside the training loop (0 = none); divides chunk_epochs")
    measure_batch: int = setting(0, "BatchNorm of those measurements: 0 = eval mode (running "
                                 "statistics), B = training mode over consecutive batches of B "
                                 "training points (He & Su: 100)")

    def validate(self) -> Config:
        """Raise ValueError naming the first bad value; return self."""
        check_fields(self)
        if not self.depths:
            raise ValueError("depths is empty")
        if min(self.depths) < 1:
            raise ValueError(f"depth must be >= 1, got depths={self.depths}")
        if not self.seeds:
            raise ValueError("seeds is empty")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.width < self.num_classes:
            raise ValueError(f"width={self.width} < num_classes={self.num_classes}")
        if self.samples_per_class < (1 if self.dataset in ("synthetic", "gaussian") else 0):
            raise ValueError(f"samples_per_class must be >= 1, got {self.samples_per_class}")
        for name in ("input_dim", "epochs", "chunk_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("init_scale", "loss_scale", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive and finite, got {getattr(self, name)}")
        for name in ("momentum", "weight_decay", "perturbation", "tol", "batch_size", "resize",
                     "data_seed", "measure_every", "measure_batch"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.final_lr_factor <= 1:
            raise ValueError(f"final_lr_factor must be in (0, 1], got {self.final_lr_factor}")
        if self.model == "hybrid" and not 0 <= self.num_nonlinear < min(self.depths):
            raise ValueError(
                f"num_nonlinear={self.num_nonlinear} must be in [0, min depth - 1] "
                f"for depths={self.depths}"
            )
        if self.depth_lrs and len(self.depth_lrs) != len(self.depths):
            raise ValueError(f"depth_lrs={self.depth_lrs} must have one lr per depth "
                             f"{self.depths}")
        if any(not lr > 0 for lr in self.depth_lrs):
            raise ValueError(f"depth_lrs must be positive, got {self.depth_lrs}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("schedule='step' needs milestones (e.g. --milestones 200,400)")
        bad = [m for m in self.milestones if not 0 < m < self.epochs]
        if bad:
            raise ValueError(f"milestone {bad[0]} must lie in (0, epochs={self.epochs})")
        if self.measure_every and self.chunk_epochs % self.measure_every:
            raise ValueError(f"measure_every={self.measure_every} must divide chunk_epochs="
                             f"{self.chunk_epochs}")
        if self.optimizer == "adam" and self.momentum:
            raise ValueError(f"momentum={self.momentum} applies to sgd only (adam has its "
                             "own moments)")
        return self

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def lr_of(self, depth: int) -> float:
        """The learning rate of depth L (``depth_lrs`` aligned with ``depths``, else ``lr``)."""
        return self.depth_lrs[self.depths.index(depth)] if self.depth_lrs else self.lr

    def runs(self) -> list[tuple[int, int]]:
        """The (depth, seed) grid, depth-major: the model axis of the sweep."""
        return [(d, s) for d in self.depths for s in self.seeds]

    def to_json(self) -> dict:
        return to_json(self)


# ----------------------------------------------------------------------------- typed conversion


def to_json(settings) -> dict:
    """A settings dataclass as a JSON-ready dict (tuples become lists, nested ones dicts)."""
    return dataclasses.asdict(settings)


def _base(tp):
    """(type without None, optional?) of ``X | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_settings(tp) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def convert(name: str, tp, value):
    """``value`` (from JSON or a flag) as type ``tp``, or ValueError naming ``name``."""
    tp, optional = _base(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} must not be null")
    if typing.get_origin(tp) is tuple:
        (item, _) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list, got {value!r}")
        return tuple(convert(f"{name}[{i}]", item, v) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise ValueError(f"{name}={value} does not fit the device's int32 counters")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported setting type {tp} for {name}")


def check_fields(settings) -> None:
    """Types, choices and distinct tuple entries of every field (nested settings included)."""
    hints = field_types(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if is_settings(hints[f.name]):
            check_fields(value)
            continue
        convert(f.name, hints[f.name], list(value) if isinstance(value, tuple) else value)
        allowed = choices_of(f)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if allowed is not None and v is not None and v not in allowed:
                raise ValueError(f"{f.name}={v!r} is not one of {allowed}")
        if f.metadata.get("unique") and len(set(values)) != len(values):
            dup = next(v for v in values if values.count(v) > 1)
            raise ValueError(f"{f.name}={value} repeats {dup!r}: values must be distinct")


def flat_fields(cls) -> list[str]:
    """Names of the nested ``Config`` fields whose own fields act at the top level (flags and
    flat JSON keys set them in every such field: ``--lr`` sets the lr of each)."""
    hints = field_types(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] is Config]


def from_json(base, data: dict, where: str = ""):
    """``base`` (a settings dataclass) with the values of ``data`` (nested dicts for nested
    settings; a ``Config`` field's keys may also be given flat, setting every Config field).
    Unknown names and wrongly typed values raise ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'settings'} must be a JSON object, got "
                         f"{type(data).__name__}")
    cls = type(base)
    hints = field_types(cls)
    own = {f.name for f in dataclasses.fields(cls)}
    flat = flat_fields(cls)
    shared = {f.name for f in dataclasses.fields(Config)} if flat else set()
    unknown = sorted(set(data) - own - shared)
    if unknown:
        raise ValueError(f"unknown {where or 'settings'} fields: {unknown}")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in own:
            continue
        if is_settings(hints[key]):
            changes[key] = from_json(getattr(base, key), value, _join(where, key))
        else:
            changes[key] = convert(_join(where, key), hints[key], value)
    flat_values = {k: v for k, v in data.items() if k in shared and k not in own}
    for name in flat:
        inner = changes.get(name, getattr(base, name))
        changes[name] = from_json(inner, flat_values, _join(where, name))
    return dataclasses.replace(base, **changes)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
