"""Every setting of a run in one frozen dataclass, and the one function that turns it into flags.

Symbols: L = ``depth`` (number of weight matrices), xi = ``init_scale``, alpha = ``loss_scale``.
Defaults are the paper's Figure-4 synthetic setting (science.md, section 2).
"""

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path

MODELS = ("linear", "mlp", "hybrid")
INITS = ("orthogonal", "default")
LOSSES = ("mse", "ce")
SCHEDULES = ("constant", "cosine")
DATASETS = ("synthetic", "gaussian", "mnist10k", "mnist", "fashion_mnist", "cifar10")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class Config:
    """One sweep: every (depth, seed) pair is one model; all train in one vmapped program."""

    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    input_dim: int = 50
    num_classes: int = 3
    samples_per_class: int = 10  # real data: a cap per class, 0 = all
    perturbation: float = 1.0  # Frobenius norm of the synthetic perturbation
    data_seed: int = 0
    # model
    model: str = "linear"
    depths: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    width: int = 50
    num_nonlinear: int = 3  # hybrid: first layers that are Linear(-BN)-ReLU
    batch_norm: bool = True  # mlp / hybrid: BatchNorm before each ReLU
    init: str = "orthogonal"
    init_scale: float = 0.3  # xi
    # loss and optimiser
    loss: str = "mse"
    loss_scale: float = 100.0  # alpha
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "cosine"
    final_lr_factor: float = 0.1  # cosine ends at lr * final_lr_factor
    epochs: int = 5000
    batch_size: int = 0  # 0 = full batch
    tol: float = 1e-11  # a model stops once its full-batch loss is below tol
    # sweep and numerics
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    dtype: str = "float32"
    chunk_epochs: int = 50  # epochs per compiled chunk between progress/log/checkpoint points

    def validate(self) -> "Config":
        """Raise ValueError naming the first bad value; return self."""
        choices = {
            "model": MODELS, "init": INITS, "loss": LOSSES, "schedule": SCHEDULES,
            "dataset": DATASETS, "dtype": DTYPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
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
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        for name in ("momentum", "weight_decay", "perturbation", "tol", "batch_size"):
            if not getattr(self, name) >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.final_lr_factor <= 1:
            raise ValueError(f"final_lr_factor must be in (0, 1], got {self.final_lr_factor}")
        if self.model == "hybrid" and not 0 <= self.num_nonlinear < min(self.depths):
            raise ValueError(
                f"num_nonlinear={self.num_nonlinear} must be in [0, min depth - 1] "
                f"for depths={self.depths}"
            )
        return self

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def runs(self) -> list[tuple[int, int]]:
        """The (depth, seed) grid, depth-major: the model axis of the sweep."""
        return [(d, s) for d in self.depths for s in self.seeds]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def replace_from_json(base: Config, fields: dict) -> Config:
    """``base`` with the fields of a JSON dict (lists become tuples); unknown names are errors."""
    unknown = set(fields) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    return dataclasses.replace(
        base, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    )


def _base_type(tp):
    """str | None -> str; tuple[int, ...] -> tuple."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def _int_list(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {s!r}") from None


def add_config_flags(parser: argparse.ArgumentParser, defaults: Config) -> None:
    """One ``--flag-name`` per Config field (``--depths 2,3,4``), help showing its default."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name == "seeds":
            continue  # --seeds N / --seed-list below
        tp = _base_type(hints[f.name])
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict = {"default": None, "help": f"(default: {default})"}
        if typing.get_origin(tp) is tuple:
            kwargs["type"] = _int_list
            kwargs["help"] = f"comma list (default: {','.join(map(str, default))})"
        elif tp is bool:
            kwargs["type"] = _parse_bool
        else:
            kwargs["type"] = tp
        choices = {"model": MODELS, "init": INITS, "loss": LOSSES, "schedule": SCHEDULES,
                   "dataset": DATASETS, "dtype": DTYPES}.get(f.name)
        if choices:
            kwargs["choices"] = choices
        parser.add_argument(flag, dest=f.name, **kwargs)
    parser.add_argument(
        "--seeds", dest="num_seeds", type=int, default=None,
        help=f"number of seeds 0..N-1 (default: {len(defaults.seeds)})",
    )
    parser.add_argument(
        "--seed-list", dest="seed_list", type=_int_list, default=None,
        help=f"explicit comma list of seeds (default: {','.join(map(str, defaults.seeds))})",
    )
    parser.add_argument(
        "--config", default=None, help="JSON file whose fields set Config defaults (flags win)"
    )


def config_from_args(args: argparse.Namespace, defaults: Config) -> Config:
    """Defaults <- JSON config file <- explicit flags; validated."""
    base = defaults
    if getattr(args, "config", None):
        base = replace_from_json(defaults, json.loads(Path(args.config).read_text()))
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if getattr(args, f.name, None) is not None
    }
    if getattr(args, "num_seeds", None) is not None:
        if args.num_seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.num_seeds}")
        given["seeds"] = tuple(range(args.num_seeds))
    if getattr(args, "seed_list", None) is not None:
        given["seeds"] = args.seed_list
    return dataclasses.replace(base, **given).validate()
