"""Every command has help text and answers --help; --version works (no database needed)."""

import click
import pytest
from click.testing import CliRunner

from circuit_atlas import __version__
from circuit_atlas.cli import cli


def all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


COMMANDS = list(all_commands(cli))


def test_the_tree_has_the_foundation_commands():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"neo4j install", "neo4j start", "neo4j stop", "neo4j status", "schema migrate"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    assert command.help and command.help.strip(), f"{' '.join(path)} has no help text"
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert " ".join(command.help.split()) in " ".join(result.output.split())


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
