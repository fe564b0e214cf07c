"""Typed config: unknown keys and wrong types fail naming the dotted key; precedence is
defaults < preset < YAML file < --set < explicit flags; --dry-run prints the config and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from genforge.cli import main
from genforge.config import from_dict, merge, nest, parse_set, read_yaml, resolve, to_dict
from genforge.errors import GenforgeError
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig


def config(*sets: str, preset: str | None = None, config_file=None, extra=None) -> GANRunConfig:
    return resolve(GANRunConfig, GAN_PRESETS, preset, config_file, list(sets), extra)


def refused(*sets: str) -> str:
    with pytest.raises(GenforgeError) as info:
        config(*sets)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# unknown keys, wrong types, bad values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("train.batchsize=3", "train.batchsize"),
        ("model.widht=8", "model.widht"),
        ("optimizer.lr=0.1", "optimizer"),
        ("data.source.path=x", "data.source"),  # a leaf given a mapping
    ],
)
def test_unknown_key_is_named(assignment, key):
    message = refused(assignment)
    assert f"'{key}'" in message or message.startswith(key)


def test_unknown_key_lists_known_ones():
    message = refused("train.batchsize=3")
    assert "unknown config key 'train.batchsize'" in message
    assert "batch_size" in message  # the known keys help spot the typo


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("train.batch_size=abc", "train.batch_size must be an integer, got 'abc'"),
        ("train.batch_size=2.5", "train.batch_size must be an integer"),
        ("train.batch_size=true", "train.batch_size must be an integer"),  # bool is not an int here
        ("train.channels_last=0.5", "train.channels_last must be true or false"),
        ("train.channels_last=1", "train.channels_last must be true or false"),
        ("train.channels_last=maybe", "train.channels_last must be true or false"),
        ("train.minutes=fast", "train.minutes must be a number"),
        ("train.minutes=true", "train.minutes must be a number"),
        ("data.source=[a, b]", "data.source must be a string"),
        ("data.source=[1, 2]", "data.source must be a string"),
        ("train=5", "train must be a mapping"),
    ],
)
def test_wrong_types_are_named(assignment, fragment):
    assert fragment in refused(assignment)


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("train.batch_size=-1", "train.batch_size must be positive, got -1"),
        ("train.batch_size=0", "train.batch_size must be positive"),
        ("train.steps=-5", "train.steps must be >= 0"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be positive"),
        ("data.resolution=-32", "data.resolution must be >= 0"),
        ("optim.lr_g=0", "optim.lr_g must be positive"),
        ("optim.beta1=1.0", "optim.beta1 must be in [0, 1)"),
        ("optim.d_steps=0", "optim.d_steps must be positive"),
        ("model.g_width=-8", "model.g_width must be positive"),
        ("model.resolution=30", "DCGAN resolution 30 is not supported"),
    ],
)
def test_bad_values_are_named(assignment, fragment):
    assert fragment in refused(assignment)


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("train.device=tpu", "train.device"),
        ("train.precision=fp8", "train.precision"),
        ("data.fit=stretch", "data.fit"),
        ("model.d_norm=layer", "model.d_norm"),
        ("optim.loss=wgan", "optim.loss"),
    ],
)
def test_bad_enum_values_list_the_choices(assignment, key):
    message = refused(assignment)
    assert message.startswith(f"{key} must be one of")
    assert repr(assignment.split("=")[1]) in message


def test_integral_float_is_accepted_for_int():
    assert config("train.batch_size=4.0").train.batch_size == 4


def test_exponent_floats_without_a_dot_are_numbers():
    # PyYAML (YAML 1.1) reads "1e-4" as a string; a learning rate written that way must still work.
    c = config("optim.lr_g=1e-4", "optim.lr_d=4E-4", "train.minutes=2.5e1")
    assert c.optim.lr_g == pytest.approx(1e-4)
    assert c.optim.lr_d == pytest.approx(4e-4)
    assert c.train.minutes == 25.0
    assert "optim.lr_g must be a number" in refused("optim.lr_g=1e-x")


def test_wgan_gp_with_batch_norm_is_refused():
    message = refused("optim.loss=wgan-gp")
    assert "wgan-gp" in message and "d_norm" in message
    assert config("optim.loss=wgan-gp", "model.d_norm=none").optim.loss == "wgan-gp"


# ---------------------------------------------------------------------------------------------
# --set parsing and merging
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment, path, value",
    [
        ("train.batch_size=128", ["train", "batch_size"], 128),
        ("optim.lr_g=0.5", ["optim", "lr_g"], 0.5),
        ("train.compile=true", ["train", "compile"], True),
        ("data.source=runs/a=b", ["data", "source"], "runs/a=b"),  # split at the first '=' only
        ("data.source=", ["data", "source"], ""),
        ("a.b=[1, 2]", ["a", "b"], [1, 2]),
        ("train={batch_size: 5, seed: 2}", ["train"], {"batch_size": 5, "seed": 2}),
        ("data.source=[unclosed", ["data", "source"], "[unclosed"),  # not YAML: kept as text
        (" train.seed =7", ["train", "seed"], 7),
    ],
)
def test_parse_set_reads_values_as_yaml(assignment, path, value):
    assert parse_set(assignment) == (path, value)


@pytest.mark.parametrize("assignment", ["train.batch_size", "train..seed=1", ".seed=1", "train.=1"])
def test_parse_set_refuses_malformed_assignments(assignment):
    with pytest.raises(GenforgeError, match="--set"):
        parse_set(assignment)


def test_nest_and_merge_are_recursive_and_pure():
    base = {"train": {"seed": 1, "steps": 5}, "data": {"source": "x"}}
    over = nest(["train", "seed"], 9)
    assert over == {"train": {"seed": 9}}
    merged = merge(base, over)
    assert merged == {"train": {"seed": 9, "steps": 5}, "data": {"source": "x"}}
    assert base["train"]["seed"] == 1  # inputs unchanged


def test_nested_sets_and_mapping_sets_combine():
    c = config("train={batch_size: 5, seed: 2}", "train.seed=3", "model.z_dim=7")
    assert (c.train.batch_size, c.train.seed, c.model.z_dim) == (5, 3, 7)


# ---------------------------------------------------------------------------------------------
# precedence: defaults < preset < YAML file < --set < explicit flags
# ---------------------------------------------------------------------------------------------


def test_precedence(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("optim:\n  lr_g: 3.0e-4\ntrain:\n  batch_size: 16\n  seed: 11\n  steps: 100\n")
    c = config(
        "train.batch_size=8",
        "train.steps=50",
        preset="hinge-sn",
        config_file=file,
        extra={"train": {"steps": 20}},
    )
    assert c.optim.loss == "hinge" and c.model.d_norm == "spectral"  # from the preset
    assert c.optim.lr_d == 4e-4  # preset value the file does not touch
    assert c.optim.lr_g == 3e-4  # the file beats the preset
    assert c.train.seed == 11  # the file beats the default
    assert c.train.batch_size == 8  # --set beats the file
    assert c.train.steps == 20  # an explicit flag beats --set
    assert c.train.log_every == 50  # untouched default


def test_defaults_without_preset():
    c = config()
    assert c == GANRunConfig()
    assert c.optim.ema_decay == 0.0 and config(preset="default").optim.ema_decay == 0.999


def test_unknown_preset_lists_known_ones():
    with pytest.raises(GenforgeError) as info:
        config(preset="biggan")
    message = str(info.value)
    assert "unknown preset 'biggan'" in message
    for name in GAN_PRESETS:
        assert name in message


def test_every_preset_resolves():
    for name in GAN_PRESETS:
        assert isinstance(config(preset=name), GANRunConfig)


def test_invalid_yaml_file_names_the_line(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("train:\n  batch_size: 8\n  seed: [1, 2\n")
    with pytest.raises(GenforgeError) as info:
        read_yaml(file)
    assert str(info.value).startswith(f"{file}: not valid YAML (line")


def test_yaml_file_that_is_not_a_mapping(tmp_path):
    file = tmp_path / "list.yaml"
    file.write_text("- 1\n- 2\n")
    with pytest.raises(GenforgeError, match="must be a mapping"):
        config(config_file=file)


def test_missing_and_empty_yaml_files(tmp_path):
    with pytest.raises(GenforgeError, match="config file not found"):
        config(config_file=tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert config(config_file=empty) == GANRunConfig()


def test_unknown_key_in_yaml_file_is_named(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("model:\n  g_chanels: 8\n")
    with pytest.raises(GenforgeError, match="unknown config key 'model.g_chanels'"):
        config(config_file=file)


def test_to_dict_round_trips_through_yaml():
    c = config("train.batch_size=12", preset="hinge-sn")
    again = from_dict(GANRunConfig, yaml.safe_load(yaml.safe_dump(to_dict(c))))
    assert again == c


# ---------------------------------------------------------------------------------------------
# --dry-run
# ---------------------------------------------------------------------------------------------


def test_dry_run_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "d.npz"
    np.savez(data, images=np.random.default_rng(0).integers(0, 256, (10, 28, 28, 1), dtype=np.uint8))
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "gan",
            "--data",
            str(data),
            "--out",
            str(out),
            "--dry-run",
            "--set",
            "train.batch_size=7",
            "--set",
            "model.g_width=24",
            "--set",
            "data.fit=none",
            "--set",
            "data.resolution=28",
            "--steps",
            "9",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = yaml.safe_load(captured.out)
    assert printed["train"]["batch_size"] == 7
    assert printed["train"]["steps"] == 9
    assert printed["model"]["g_width"] == 24
    assert printed["data"]["source"] == str(data)
    assert (printed["model"]["resolution"], printed["model"]["channels"]) == (28, 1)  # filled from the data
    assert printed["optim"]["ema_decay"] == 0.999  # the default preset
    assert from_dict(GANRunConfig, printed).train.batch_size == 7  # a loadable config
    assert not out.exists()


def test_dry_run_with_a_bad_key_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "gan", "--out", str(out), "--dry-run", "--set", "train.bogus=1"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("genforge: error: unknown config key 'train.bogus'")
    assert not out.exists()


def test_number_like_string_values_are_kept_as_strings():
    from genforge.config import resolve
    from genforge.families.gan_config import GAN_PRESETS, GANRunConfig

    cfg = resolve(GANRunConfig, GAN_PRESETS, None, None, ["data.source=2024"])
    assert cfg.data.source == "2024"


def test_section_defaults_come_from_the_parent_config():
    """A prior's train section defaults to batch 128 even when other train keys are overridden."""
    from genforge.config import resolve
    from genforge.families.prior import PRIOR_PRESETS, PriorRunConfig

    assert PriorRunConfig().train.batch_size == 128
    cfg = resolve(PriorRunConfig, PRIOR_PRESETS, "default", None, ["train.minutes=1"])
    assert cfg.train.batch_size == 128 and cfg.train.minutes == 1.0
