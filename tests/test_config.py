"""Config: validation names the bad value; flags, --seeds/--seed-list and a JSON --config."""

import argparse
import dataclasses
import json
import math

import pytest

from pnc_jax.config import Config, add_config_flags, config_from_args, replace_from_json


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
        (dict(init_scale=math.inf), "init_scale must be positive and finite, got inf"),
        (dict(init_scale=math.nan), "init_scale must be positive and finite, got nan"),
        (dict(loss_scale=0.0), "loss_scale must be positive and finite, got 0.0"),
        (dict(loss_scale=-1.0), "loss_scale must be positive and finite, got -1.0"),
        (dict(lr=0.0), "lr must be positive and finite, got 0.0"),
        (dict(lr=-0.1), "lr must be positive and finite, got -0.1"),
        (dict(lr=math.nan), "lr must be positive and finite, got nan"),
        (dict(model="cnn"), "model='cnn' is not one of"),
        (dict(init="xavier"), "init='xavier' is not one of"),
        (dict(loss="hinge"), "loss='hinge' is not one of"),
        (dict(schedule="step"), "schedule='step' is not one of"),
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


def test_json_round_trip_and_unknown_fields():
    cfg = Config(depths=(2, 7), seeds=(3,), lr=0.2, data_dir="/data", batch_norm=False)
    text = json.dumps(cfg.to_json())
    assert replace_from_json(Config(), json.loads(text)) == cfg
    with pytest.raises(ValueError, match="unknown config fields: .*'depth'"):
        replace_from_json(Config(), {"depth": 3})


def _parse(argv, defaults=None):
    defaults = defaults or Config()
    parser = argparse.ArgumentParser()
    add_config_flags(parser, defaults)
    return config_from_args(parser.parse_args(argv), defaults)


def test_flags_parse():
    cfg = _parse(["--depths", "2,3", "--seeds", "2", "--lr", "0.5"])
    assert cfg == dataclasses.replace(Config(), depths=(2, 3), seeds=(0, 1), lr=0.5)
    assert isinstance(cfg.lr, float) and cfg.depths == (2, 3)


def test_every_field_type_parses():
    cfg = _parse([
        "--model", "hybrid", "--num-nonlinear", "1", "--batch-norm", "false", "--width", "64",
        "--init-scale", "0.1", "--loss-scale", "1", "--data-dir", "/tmp/x", "--dtype",
        "float64", "--batch-size", "128", "--final-lr-factor", "0.01", "--epochs", "7",
    ])
    assert (cfg.model, cfg.num_nonlinear, cfg.batch_norm, cfg.width) == ("hybrid", 1, False, 64)
    assert (cfg.init_scale, cfg.loss_scale, cfg.data_dir, cfg.dtype) == (
        0.1, 1.0, "/tmp/x", "float64")
    assert (cfg.batch_size, cfg.final_lr_factor, cfg.epochs) == (128, 0.01, 7)
    assert _parse(["--batch-norm", "yes"]).batch_norm is True
    assert _parse([]) == Config()


def test_seed_list():
    assert _parse(["--seed-list", "3,7"]).seeds == (3, 7)
    assert _parse(["--seeds", "3"]).seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="--seeds must be >= 1, got 0"):
        _parse(["--seeds", "0"])


@pytest.mark.parametrize(
    "argv",
    [["--model", "cnn"], ["--depths", "2,x"], ["--lr", "fast"], ["--batch-norm", "maybe"],
     ["--no-such-flag", "1"]],
)
def test_malformed_flags_exit(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code == 2


def test_flag_values_are_validated():
    with pytest.raises(ValueError, match="width=2 < num_classes=3"):
        _parse(["--width", "2"])
    with pytest.raises(ValueError, match="depth must be >= 1"):
        _parse(["--depths", "0,2"])


def test_json_config_file_sets_fields_and_flags_override_it(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"lr": 0.2, "depths": [4, 5], "width": 64, "seeds": [1, 2]}))
    cfg = _parse(["--config", str(path)])
    assert (cfg.lr, cfg.depths, cfg.width, cfg.seeds) == (0.2, (4, 5), 64, (1, 2))
    cfg = _parse(["--config", str(path), "--lr", "0.3", "--seeds", "1", "--depths", "6"])
    assert (cfg.lr, cfg.depths, cfg.width, cfg.seeds) == (0.3, (6,), 64, (0,))
    path.write_text(json.dumps({"lr": 0.2, "learning_rate": 1}))
    with pytest.raises(ValueError, match="learning_rate"):
        _parse(["--config", str(path)])
    path.write_text(json.dumps({"lr": -1.0}))
    with pytest.raises(ValueError, match="lr must be positive"):
        _parse(["--config", str(path)])


def test_defaults_passed_in_are_the_base():
    base = Config(width=80, depths=(3,))
    cfg = _parse(["--lr", "0.05"], base)
    assert (cfg.width, cfg.depths, cfg.lr) == (80, (3,), 0.05)


def test_help_shows_defaults():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Config(depths=(2, 9)))
    text = parser.format_help()
    assert "--depths" in text and "2,9" in text and "--seed-list" in text
