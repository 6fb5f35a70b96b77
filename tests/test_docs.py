"""Every command in the guides works as written.

Commands are taken from the fenced shell blocks of the MLflow guide (English and Korean), the README, the
configuration reference and the experiments guide, and each is parsed by its real tool in this process: mmp by
`mmp.cli.build_parser()`, mlflow by its click commands, dvc by its argparse parser (stricter than `--help`:
options and arguments are checked too), docker-compose against docker-compose.yml's services and profiles;
`python <script>` must name a script of the repository. Files a command names (a config, a recipe, a data set)
must exist in the repository or be written by an earlier command of the guide.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO

GUIDE, GUIDE_KO = REPO / "docs" / "mlflow.md", REPO / "docs" / "mlflow.ko.md"
DOCUMENTS = [GUIDE, GUIDE_KO, REPO / "README.md", REPO / "docs" / "configuration.md", REPO / "docs" / "experiments.md"]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SHELL = {"bash", "sh", "shell", "console"}
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# Other tools the guides use; anything else is a typo or a tool nobody installs.
OTHER_TOOLS = {"cd", "cp", "curl", "git", "make", "pip", "source", "export", "unset", "sudo"}


def shell_commands(path: Path) -> list[tuple[dict[str, str], list[str]]]:
    """(environment assignments, argv) of every command in the document's shell blocks, in order."""
    commands = []
    for language, body in _FENCE.findall(path.read_text(encoding="utf-8")):
        if language not in _SHELL:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line.removeprefix("$ "), comments=True)
            argv: list[str] = []
            for token in [*tokens, "&&"]:
                if token not in ("&&", ";", "||", "|"):
                    argv.append(token)
                    continue
                env = {}
                while argv and _ASSIGNMENT.match(argv[0]):
                    name, _, value = argv.pop(0).partition("=")
                    env[name] = value
                if argv:
                    commands.append((env, argv))
                argv = []
    return commands


def as_text(env: dict[str, str], argv: list[str]) -> str:
    return shlex.join([f"{name}={value}" for name, value in env.items()] + argv)


def check_mmp(argv: list[str], written: set[str]) -> None:
    from mmp.cli import build_parser

    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as exit_:
        raise AssertionError(f"mmp rejects: {shlex.join(argv)}") from exit_
    assert getattr(args, "func", None), f"no mmp command in: {shlex.join(argv)}"
    if args.command == "get-config":
        written.add(f"{args.output_dir}/{args.env_name}.yaml")
    files = [getattr(args, "config", None), getattr(args, "recipe", None)]
    if args.command in ("train", "prepare"):
        files.append(args.data)
    for name in filter(None, files):
        assert (REPO / name).is_file() or name in written, f"{shlex.join(argv)}: {name} does not exist"


def check_mlflow(argv: list[str]) -> None:
    import click
    from mlflow.cli import cli

    command: click.Command = cli
    context = click.Context(cli, info_name="mlflow")
    rest = argv[1:]
    while isinstance(command, click.Group):
        assert rest, f"{shlex.join(argv)}: a subcommand is missing"
        found = command.get_command(context, rest[0])
        assert found is not None, f"{shlex.join(argv)}: mlflow has no command '{rest[0]}'"
        command, rest = found, rest[1:]
        context = click.Context(command, info_name=command.name, parent=context)
    try:
        command.make_context(command.name, list(rest), parent=context.parent)
    except click.ClickException as exc:
        raise AssertionError(f"mlflow rejects: {shlex.join(argv)}: {exc.format_message()}") from None


def check_dvc(argv: list[str]) -> None:
    from dvc.cli.parser import get_main_parser

    try:
        args = get_main_parser().parse_args(argv[1:])
    except (SystemExit, Exception) as exc:  # DVC's parser raises ArgumentError rather than exiting
        raise AssertionError(f"dvc rejects: {shlex.join(argv)}") from exc
    assert getattr(args, "func", None), f"no dvc command in: {shlex.join(argv)}"


def check_docker_compose(env: dict[str, str], argv: list[str]) -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    profiles = [argv[i + 1] for i, token in enumerate(argv) if token == "--profile"]
    rest = [token for i, token in enumerate(argv[1:], 1) if token != "--profile" and argv[i - 1] != "--profile"]
    assert rest and rest[0] in ("up", "down", "config", "logs", "ps", "stop", "build"), shlex.join(argv)
    named = [token for token in rest[1:] if not token.startswith("-")]
    for profile in profiles:
        assert any(profile in service.get("profiles", []) for service in services.values()), profile
    for name in named:
        assert name in services, f"{shlex.join(argv)}: no service '{name}'"
        assert set(services[name].get("profiles", [])) & set(profiles), f"{shlex.join(argv)}: '{name}' not in profile"
        for variable in env:
            assert f"${{{variable}" in services[name]["command"], f"{shlex.join(argv)}: {variable} is not used"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_command_works_as_written(document: Path) -> None:
    commands = shell_commands(document)
    assert commands, f"no shell commands found in {document.name}"
    written: set[str] = set()
    checked = 0
    for env, argv in commands:
        tool = argv[0]
        if tool == "mmp":
            check_mmp(argv, written)
        elif tool == "mlflow":
            check_mlflow(argv)
        elif tool == "dvc":
            check_dvc(argv)
        elif tool == "docker-compose":
            check_docker_compose(env, argv)
        elif tool == "python" and argv[1:2] and argv[1].endswith(".py"):
            assert (REPO / argv[1]).is_file(), f"{document.name}: {argv[1]} does not exist"
        else:
            assert tool in OTHER_TOOLS, f"{document.name}: unknown command '{tool}' in: {as_text(env, argv)}"
            continue
        checked += 1
    assert checked >= len(commands) // 2


def test_english_and_korean_guides_have_the_same_commands() -> None:
    english = [as_text(*command) for command in shell_commands(GUIDE)]
    korean = [as_text(*command) for command in shell_commands(GUIDE_KO)]
    assert english == korean
    headings = [re.findall(r"^#+ ", path.read_text(encoding="utf-8"), re.MULTILINE) for path in (GUIDE, GUIDE_KO)]
    assert headings[0] == headings[1]  # the same structure, section for section


def test_the_guide_covers_the_issue() -> None:
    commands = {as_text(*command) for command in shell_commands(GUIDE)}
    for expected in (
        "mlflow ui --port 5000",
        "docker-compose --profile mlflow up mlflow",
        "docker-compose --profile mlflow up -d mlflow",
        "docker-compose --profile mlflow down",
        "mmp system-check -c configs/prod.yaml",
        "mmp mirror",
        "dvc push",
        "dvc pull",
        "dvc remote add -d storage s3://my-bucket/mmp",
    ):
        assert expected in commands, expected
    text = GUIDE.read_text(encoding="utf-8")
    for tag in ("mmp.prepare_run_id", "mmp.train_run_id", "mmp.explain_run_id", "MLFLOW_TRACKING_PASSWORD"):
        assert tag in text
    assert "docs/mlflow.md" in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_checker_catches_broken_commands() -> None:
    """A test that cannot fail is no test: each checker rejects a broken command."""
    broken = [
        (check_mmp, (["mmp", "trian"], set())),
        (check_mmp, (["mmp", "train", "-c", "configs/missing.yaml"], set())),
        (check_mlflow, (["mlflow", "uii"],)),
        (check_mlflow, (["mlflow", "ui", "--prot", "5000"],)),
        (check_dvc, (["dvc", "remote", "ad", "x", "y"],)),
        (check_docker_compose, ({}, ["docker-compose", "--profile", "mlflow", "up", "mlfow"])),
        (check_docker_compose, ({"MODEL_RUN_ID": "x"}, ["docker-compose", "--profile", "mlflow", "up", "mlflow"])),
    ]
    for check, args in broken:
        with pytest.raises(AssertionError):
            check(*args)
