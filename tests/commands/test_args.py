"""The options shared by sub-commands are written once and read the data set table."""

from __future__ import annotations

import argparse

from adasim_ray.cli import build_parser
from adasim_ray.commands.args import add_set_argument, config_overrides, config_path
from adasim_ray.data.spec import KINDS, SPEC_HELP, parse_spec
from adasim_ray.presets import default_config_path


def _help(command: str, option: str) -> str:
    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    (action,) = [a for a in sub.choices[command]._actions if option in a.option_strings]
    return action.help


def test_data_help_of_every_command_is_the_spec_table():
    assert " | ".join(KINDS) == SPEC_HELP
    for kind in KINDS:  # every form the help lists is one that parses
        parse_spec(kind.replace("PATH", "/data/x"))
    for command in ("pretrain", "check"):
        assert SPEC_HELP in _help(command, "--data")


def test_set_is_one_option_in_every_command():
    assert "adasim.tau=0.3" in _help("pretrain", "--set")
    assert "ray.num_workers=8" in _help("check", "--set")
    assert "base pretraining config" in _help("sweep", "--set")
    parser = argparse.ArgumentParser()
    add_set_argument(parser, "epochs=2")
    assert parser.parse_args(["--set", "a=1", "--set", "b.c=2"]).set == ["a=1", "b.c=2"]


def test_overrides_put_data_last_and_config_defaults_to_the_demo():
    args = argparse.Namespace(set=["data=mnist", "epochs=3"], data="digits", config="x.yaml")
    assert config_overrides(args) == ["data=mnist", "epochs=3", "data=digits"]
    args.config = None  # the demo on digits: its MNIST sizing goes first, the user's after
    assert config_overrides(args)[-3:] == ["data=mnist", "epochs=3", "data=digits"]
    assert config_overrides(args)[0] == "limit_images=null"
    assert config_overrides(argparse.Namespace(set=None, data=None)) == []
    assert config_path(args) == str(default_config_path())
    assert config_path(argparse.Namespace(config="x.yaml")) == "x.yaml"


def test_help_names_the_installed_command():
    from adasim_ray.cli import build_parser

    text = build_parser().format_help()
    assert text.startswith("usage: adasim-ray ")
