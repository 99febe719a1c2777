"""Config and experiment settings: validation names the bad value; typed JSON; flags generated
from the dataclasses, --seeds/--seed-list, --config (a run's own config.json re-runs it)."""

import dataclasses
import json
import math

import pytest

from pnc_jax import cli
from pnc_jax.config import Config, from_json, setting, to_json
from pnc_jax.probe import Settings as ProbeSettings


def test_defaults_are_the_figure4_setting_and_valid():
    cfg = Config().validate()
    assert (cfg.samples_per_class, cfg.input_dim, cfg.num_classes, cfg.width) == (10, 50, 3, 50)
    assert (cfg.init_scale, cfg.loss_scale, cfg.lr, cfg.momentum, cfg.weight_decay) == (
        0.3, 100.0, 0.1, 0.0, 0.0)
    assert (cfg.schedule, cfg.final_lr_factor, cfg.epochs, cfg.tol) == ("cosine", 0.1, 5000, 1e-11)
    assert cfg.batch_size == 0 and cfg.model == "linear" and cfg.init == "orthogonal"


def test_runs_are_depth_major():
    cfg = Config(depths=(4, 2), seeds=(7, 1, 3))
    assert cfg.runs() == [(4, 7), (4, 1), (4, 3), (2, 7), (2, 1), (2, 3)]
    assert cfg.max_depth == 4


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(depths=(0, 3)), r"depth must be >= 1, got depths=\(0, 3\)"),
        (dict(depths=(3, -2)), "depth must be >= 1"),
        (dict(depths=()), "depths is empty"),
        (dict(seeds=()), "seeds is empty"),
        (dict(width=2), "width=2 < num_classes=3"),
        (dict(num_classes=1), "num_classes must be >= 2, got 1"),
        (dict(init_scale=0.0), "init_scale must be positive and finite, got 0.0"),
        (dict(init_scale=-0.3), "init_scale must be positive and finite, got -0.3"),
        (dict(init_scale=math.inf), "init_scale must be finite, got inf"),
        (dict(init_scale=math.nan), "init_scale must be finite, got nan"),
        (dict(loss_scale=0.0), "loss_scale must be positive and finite, got 0.0"),
        (dict(loss_scale=-1.0), "loss_scale must be positive and finite, got -1.0"),
        (dict(lr=0.0), "lr must be positive and finite, got 0.0"),
        (dict(lr=-0.1), "lr must be positive and finite, got -0.1"),
        (dict(lr=math.nan), "lr must be finite, got nan"),
        (dict(tol=math.inf), "tol must be finite, got inf"),
        (dict(epochs=3_000_000_000), "epochs=3000000000 does not fit the device's int32"),
        (dict(depths=(4, 4)), r"depths=\(4, 4\) repeats 4"),
        (dict(seeds=(1, 2, 1)), r"seeds=\(1, 2, 1\) repeats 1"),
        (dict(depths=(4.0,)), r"depths\[0\] must be an integer, got 4.0"),
        (dict(lr="0.1"), "lr must be a number, got '0.1'"),
        (dict(batch_norm=1), "batch_norm must be true or false, got 1"),
        (dict(schedule="step"), "schedule='step' needs milestones"),
        (dict(schedule="step", milestones=(10, 5000)), "milestone 5000 must lie in"),
        (dict(optimizer="adam", momentum=0.9), "momentum=0.9 applies to sgd only"),
        (dict(depths=(4, 6), depth_lrs=(0.1,)), "depth_lrs=.* must have one lr per depth"),
        (dict(activation="gelu"), "activation='gelu' is not one of"),
        (dict(model="cnn"), "model='cnn' is not one of"),
        (dict(init="xavier"), "init='xavier' is not one of"),
        (dict(loss="hinge"), "loss='hinge' is not one of"),
        (dict(schedule="linear"), "schedule='linear' is not one of"),
        (dict(dataset="imagenet"), "dataset='imagenet' is not one of"),
        (dict(dtype="float16"), "dtype='float16' is not one of"),
        (dict(samples_per_class=0), "samples_per_class must be >= 1, got 0"),
        (dict(input_dim=0), "input_dim must be >= 1, got 0"),
        (dict(epochs=0), "epochs must be >= 1, got 0"),
        (dict(chunk_epochs=0), "chunk_epochs must be >= 1, got 0"),
        (dict(momentum=-0.9), "momentum must be >= 0, got -0.9"),
        (dict(weight_decay=-1e-4), "weight_decay must be >= 0, got -0.0001"),
        (dict(perturbation=-1.0), "perturbation must be >= 0, got -1.0"),
        (dict(tol=-1e-11), "tol must be >= 0, got -1e-11"),
        (dict(batch_size=-1), "batch_size must be >= 0, got -1"),
        (dict(final_lr_factor=0.0), r"final_lr_factor must be in \(0, 1\], got 0.0"),
        (dict(final_lr_factor=1.5), r"final_lr_factor must be in \(0, 1\], got 1.5"),
        (dict(model="hybrid", depths=(3, 5), num_nonlinear=3), "num_nonlinear=3 must be in"),
        (dict(model="hybrid", depths=(5,), num_nonlinear=-1), "num_nonlinear=-1 must be in"),
    ],
)
def test_validate_rejects_and_names_the_bad_value(changes, match):
    with pytest.raises(ValueError, match=match):
        Config(**changes).validate()


@pytest.mark.parametrize(
    "changes",
    [dict(depths=(1,)), dict(final_lr_factor=1.0), dict(tol=0.0), dict(batch_size=7),
     dict(model="hybrid", depths=(3, 5), num_nonlinear=2), dict(model="mlp", num_nonlinear=99),
     dict(dataset="cifar10", samples_per_class=0), dict(width=3)],
)
def test_validate_accepts_edge_values(changes):
    cfg = Config(**changes)
    assert cfg.validate() is cfg


@pytest.mark.parametrize("name", ["momentum", "weight_decay", "tol", "perturbation"])
def test_validate_rejects_nan(name):
    with pytest.raises(ValueError, match=name):
        Config(**{name: math.nan}).validate()


# ----------------------------------------------------------------------------- JSON and flags


@dataclasses.dataclass(frozen=True)
class _Toy:
    """Settings of a toy experiment: one Config, a nested settings class, own fields."""

    train: Config = Config(depths=(3, 4), seeds=(0, 1))
    probe: ProbeSettings = ProbeSettings()
    widths: tuple[int, ...] = setting((10, 20), "widths", unique=True)
    note: str = setting("x", "a free string")

    def validate(self):
        if 7 in self.widths:
            raise ValueError("widths must not hold 7")


@dataclasses.dataclass(frozen=True)
class _TwoConfigs:
    """Two Config fields (as experiments.nonlinear): a training flag sets both."""

    a: Config = Config(lr=0.1)
    b: Config = Config(lr=0.2)
    FIXED = ("model",)


def _toy(presets=None):
    presets = presets or {"default": _Toy, "wide": lambda: _Toy(widths=(100,))}
    return cli.Experiment("toy", "toy experiment", presets, lambda s, ctx: s)


def _settings(argv, exp=None):
    return (exp or _toy()).settings(argv)[0]


def test_json_round_trip_and_unknown_fields():
    s = _Toy(train=Config(depths=(2, 7), seeds=(3,), lr=0.2, data_dir="/data", batch_norm=False),
             probe=ProbeSettings(steps=5), widths=(1, 2))
    assert from_json(_Toy(), json.loads(json.dumps(to_json(s)))) == s
    with pytest.raises(ValueError, match=r"unknown train fields: \['depth'\]"):
        from_json(_Toy(), {"train": {"depth": 3}})
    with pytest.raises(ValueError, match=r"unknown settings fields: \['bogus'\]"):
        from_json(_Toy(), {"bogus": 3})
    # a Config field given flat sets the Config
    assert from_json(_Toy(), {"lr": 0.5}).train.lr == 0.5


@pytest.mark.parametrize("data, match", [
    ({"train": {"depths": 4}}, "train.depths must be a list, got 4"),
    ({"train": {"lr": "0.1"}}, "train.lr must be a number, got '0.1'"),
    ({"train": {"epochs": 10.5}}, "train.epochs must be an integer, got 10.5"),
    ({"train": {"epochs": True}}, "train.epochs must be an integer, got True"),
    ({"train": {"dataset": None}}, "train.dataset must not be null"),
    ({"probe": {"steps": "many"}}, "probe.steps must be an integer"),
    ({"probe": 3}, "probe must be a JSON object"),
    ({"widths": [1, 2.5]}, r"widths\[1\] must be an integer, got 2.5"),
])
def test_json_values_are_type_checked(data, match):
    with pytest.raises(ValueError, match=match):
        from_json(_Toy(), data)


def test_flags_parse_every_kind_of_field():
    s = _settings([
        "--depths", "2,3", "--seeds", "2", "--lr", "0.5", "--model", "hybrid",
        "--num-nonlinear", "1", "--batch-norm", "false", "--data-dir", "/tmp/x", "--dtype",
        "float64", "--final-lr-factor", "0.01", "--probe-steps", "9", "--widths", "5,6",
        "--note", "hello", "--milestones", "3,4", "--depth-lrs", "0.1,0.2", "--optimizer", "adam",
    ])
    assert s.train == dataclasses.replace(
        Config(), depths=(2, 3), seeds=(0, 1), lr=0.5, model="hybrid", num_nonlinear=1,
        batch_norm=False, data_dir="/tmp/x", dtype="float64", final_lr_factor=0.01,
        milestones=(3, 4), depth_lrs=(0.1, 0.2), optimizer="adam")
    assert s.probe.steps == 9 and s.widths == (5, 6) and s.note == "hello"
    assert isinstance(s.train.lr, float)
    assert _settings(["--batch-norm"]).train.batch_norm is True  # a bare bool flag means true
    assert _settings([]) == _Toy()


def test_seed_list_and_count():
    assert _settings(["--seed-list", "3,7"]).train.seeds == (3, 7)
    assert _settings(["--seeds", "3"]).train.seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        _settings(["--seeds", "0"])


@pytest.mark.parametrize(
    "argv",
    [["--model", "cnn"], ["--depths", "2,x"], ["--lr", "fast"], ["--batch-norm", "maybe"],
     ["--no-such-flag", "1"], ["--preset", "nope"]],
)
def test_malformed_flags_exit(argv):
    with pytest.raises(SystemExit) as e:
        _settings(argv)
    assert e.value.code == 2


@pytest.mark.parametrize("argv, match", [
    (["--width", "2"], "width=2 < num_classes=3"),
    (["--depths", "0,2"], "depth must be >= 1"),
    (["--depths", "2,2"], "repeats 2"),
    (["--widths", "7"], "widths must not hold 7"),  # the settings' own validate
    (["--probe-lr", "nan"], "probe.lr must be finite, got nan"),
    (["--probe-batch-size", "-5"], "batch_size=-5"),
    (["--workers", "-1"], "--workers=-1 must be >= 0"),
])
def test_flag_values_are_validated(argv, match):
    with pytest.raises(cli.UsageError, match=match):
        _settings(argv)


def test_config_file_and_run_record(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"lr": 0.2, "depths": [4, 5], "width": 64, "seeds": [1, 2]}))
    s = _settings(["--config", str(path)])
    assert (s.train.lr, s.train.depths, s.train.width, s.train.seeds) == (0.2, (4, 5), 64, (1, 2))
    s = _settings(["--config", str(path), "--lr", "0.3", "--seeds", "1", "--depths", "6"])
    assert (s.train.lr, s.train.depths, s.train.width, s.train.seeds) == (0.3, (6,), 64, (0,))
    # a run's record: its whole settings, and its preset unless --preset is given
    record = {"experiment": "toy", "preset": "wide", "config": to_json(_Toy(widths=(3,), note="r")),
              "versions": {}}
    path.write_text(json.dumps(record))
    s = _settings(["--config", str(path)])
    assert s == _Toy(widths=(3,), note="r")
    record["experiment"] = "other"
    path.write_text(json.dumps(record))
    with pytest.raises(cli.UsageError, match="is a run of 'other', not 'toy'"):
        _settings(["--config", str(path)])
    path.write_text("{not json")
    with pytest.raises(cli.UsageError, match="cannot read it as JSON"):
        _settings(["--config", str(path)])
    path.write_text(json.dumps({"lr": -1.0}))
    with pytest.raises(cli.UsageError, match="lr must be positive"):
        _settings(["--config", str(path)])


def test_presets_set_the_defaults():
    assert _settings(["--preset", "wide"]).widths == (100,)
    assert _settings(["--preset", "wide", "--widths", "8"]).widths == (8,)


def test_a_training_flag_sets_every_config_and_fixed_fields_have_no_flag():
    exp = cli.Experiment("two", "", {"default": _TwoConfigs}, lambda s, ctx: s)
    s = _settings(["--width", "64"], exp)
    assert (s.a.width, s.b.width, s.a.lr, s.b.lr) == (64, 64, 0.1, 0.2)
    with pytest.raises(SystemExit):
        _settings(["--model", "mlp"], exp)
    text = exp.parser().format_help()
    assert "--lr" in text and "0.1 / 0.2" in text and "--model" not in text


def test_help_shows_defaults_presets_and_registry_choices():
    text = _toy().parser().format_help()
    for part in ("--depths", "3,4", "--seed-list", "--probe-steps", "wide", "linear,mlp,hybrid"):
        assert part in text, part
