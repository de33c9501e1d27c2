"""Every command of the operator guide (docs/cluster.md, "Operating a cloud cluster") is
checked: the `launch.py` sub-commands and flags exist (argparse) and the configs they name
validate; the `ray` commands and options exist (Ray's own click CLI), the cluster YAMLs they
name pass Ray's offline checks, and the entry point of `ray job submit` is checked in turn.
Commands that need a cloud are validated, not run. The README's own commands go through the
same checks (`make` targets and scripts: that they exist)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest

from adasim_ray.cli import build_parser
from adasim_ray.config import load_config
from adasim_ray.resources.cluster_yaml import validate_cluster_yaml

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "cluster.md"
TITLE = "# Operating a cloud cluster"
# Sub-commands announced in the guide while they are being built; checked once registered.
PENDING_SUBCOMMANDS = {"sweep"}
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def code_blocks(text: str) -> list[list[str]]:
    """The lines of each code block, but those marked ```text (what a command prints)."""
    blocks = re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M)
    return [[line.strip() for line in block.splitlines() if line.strip()]
            for info, block in blocks if info.strip() != "text"]


def operator_commands() -> list[str]:
    text = GUIDE.read_text()
    assert text.startswith(TITLE), f"{GUIDE.relative_to(ROOT)} is not the operator guide"
    return [line for block in code_blocks(text) for line in block]


def readme_commands() -> list[str]:
    return [line for block in code_blocks((ROOT / "README.md").read_text()) for line in block]


def _launch_subcommands() -> dict[str, object]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return dict(sub.choices)


def check_launch(argv: list[str]) -> None:
    assert argv, "launch.py without a sub-command"
    if argv[0] not in _launch_subcommands():
        assert argv[0] in PENDING_SUBCOMMANDS, f"launch.py has no sub-command {argv[0]!r}"
        pytest.skip(f"launch.py {argv[0]} is not registered yet")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"launch.py rejects: {shlex.join(argv)}")
    if getattr(args, "config", None) and argv[0] == "sweep":
        assert (ROOT / args.config).is_file()  # a sweep file: its own command's tests read it
    elif getattr(args, "config", None):
        overrides = list(getattr(args, "set", None) or [])
        if getattr(args, "data", None):
            overrides.append(f"data={args.data}")
        load_config(ROOT / args.config, overrides)
    if getattr(args, "cluster", None):
        validate_cluster_yaml(ROOT / args.cluster)


def check_ray(argv: list[str]) -> None:
    from ray.scripts.scripts import cli

    command: click.Command = cli
    path = ["ray"]
    while isinstance(command, click.Group):
        assert argv, f"{' '.join(path)} needs a sub-command"
        name = argv.pop(0)
        assert name in command.commands, f"{' '.join(path)} has no sub-command {name!r}"
        command = command.commands[name]
        path.append(name)
    try:  # parses and validates the options and arguments without running the command
        ctx = command.make_context(" ".join(path), list(argv))
    except click.ClickException as err:
        pytest.fail(f"{' '.join(path)} rejects {argv}: {err.format_message()}")
    cluster_file = ctx.params.get("cluster_config_file")
    if cluster_file is not None:
        validate_cluster_yaml(ROOT / cluster_file)
    if ctx.params.get("working_dir"):
        assert (ROOT / ctx.params["working_dir"]).is_dir()
    entrypoint = ctx.params.get("entrypoint")
    if entrypoint:
        check_command(list(entrypoint))


def check_command(tokens: list[str]) -> None:
    while tokens and _ENV.match(tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    program, args = tokens[0], tokens[1:]
    if program == "export":
        assert args and all(_ENV.match(a) for a in args)
    elif program == "python":
        assert args[0] == "launch.py" and (ROOT / "launch.py").is_file()
        check_launch(args[1:])
    elif program == "adasim-ray":  # the console script that installing the package puts on PATH
        assert 'adasim-ray = "adasim_ray.cli:main"' in (ROOT / "pyproject.toml").read_text()
        check_launch(args)
    elif program == "ray":
        check_ray(args)
    elif program == "make":
        targets = re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert args and all(a in targets for a in args), f"the Makefile has no target {args}"
    elif program == "tensorboard":
        assert importlib.util.find_spec("tensorboard") is not None and "--logdir" in args
    elif program == "sbatch":  # the batch script exists (tests/test_slurm.py runs it)
        script = ROOT / next(a for a in args if not a.startswith("-"))
        assert script.is_file() and "#SBATCH" in script.read_text(), script
    elif program == "kubectl":  # the manifest exists (tests/test_kuberay.py checks it)
        if args[:2] == ["apply", "-f"]:
            assert (ROOT / args[2]).is_file(), args[2]
        else:
            assert args and args[0] in {"get", "describe", "logs", "delete"}, args
    else:
        pytest.fail(f"the operator guide runs {program!r}: teach this test to check it")


def test_the_guide_covers_the_operators_tasks():
    commands = [" ".join(shlex.split(c, comments=True)) for c in operator_commands()]

    def has(fragment: str) -> bool:
        return any(fragment in c for c in commands)

    for fragment in (
        "ray get-auth-token --generate",
        "ray start --head",
        "RAY_AUTH_MODE=disabled ray start --head",
        "ray up cluster.yaml",
        "ray up experiments/clusters/gcp.yaml",
        "ray job submit --address",
        "--working-dir . -- python launch.py pretrain --config experiments/",
        "adasim-ray check",
        "tensorboard --logdir",
        "adasim-ray pretrain --resume",
        "python launch.py sweep --config experiments/mnist_ablation.yaml",
        "ray down cluster.yaml",
        "sbatch experiments/clusters/slurm/adasim.sbatch",
        "kubectl apply -f experiments/clusters/kuberay/rayjob.yaml",
    ):
        assert has(fragment), f"the operator guide lacks {fragment!r}"


@pytest.mark.parametrize("command", operator_commands())
def test_operator_command_is_valid(command):
    check_command(shlex.split(command, comments=True))


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_is_valid(command):
    check_command(shlex.split(command, comments=True))


def test_the_readme_starts_with_the_two_commands():
    first = code_blocks((ROOT / "README.md").read_text())[0]
    assert first == ["make demo", "make test"]


def test_the_checks_reject_what_does_not_exist():
    with pytest.raises(pytest.fail.Exception):
        check_command(["python", "launch.py", "pretrain", "--no-such-flag"])
    with pytest.raises(pytest.fail.Exception):
        check_command(["ray", "up", "cluster.yaml", "--no-such-option"])
    with pytest.raises(AssertionError):
        check_command(["ray", "job", "sumbit", "--", "python", "launch.py", "pretrain"])
    with pytest.raises(AssertionError):
        check_command(["make", "no-such-target"])
    with pytest.raises(Exception, match="config file not found"):
        check_command(["python", "launch.py", "pretrain", "--config", "experiments/nope.yaml"])
