"""The help of every ``stella-mirror`` command as an operator reads it (issue 19): rendered for the whole command
tree, it has no empty placeholder ("Listen address ."), no raw reST markup, no ``{path}`` in a usage line; every
option says what it does; ``--version`` prints the installed package's version."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from stella_mirror.cli.main import app

RUNNER = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def _commands(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, [*path, name])


COMMANDS = list(_commands(typer.main.get_command(app), []))


def test_the_tree_is_complete() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"serve", "demo", "config check", "gateway render", "verify", "sync", "status", "smoke", "keys id"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "stella-mirror" for p, _ in COMMANDS])
def test_help_has_no_empty_placeholder_or_raw_markup(path: list[str], command: Any) -> None:
    res = RUNNER.invoke(app, [*path, "--help"], env=ENV)
    assert res.exit_code == 0, res.output
    text = res.output
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage  # arguments as PATH, not {path}
    for param in command.params:
        if param.param_type_name == "argument":
            assert (param.metavar or "").isupper() and param.metavar in usage, (param.name, usage)
        elif param.name != "help":
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help"
    assert "``" not in text  # reST markup from a docstring
    assert not re.search(r"\w \.(\s|$)", text), re.findall(r".{30}\w \.(?:\s|$)", text)  # "Listen address ."
    assert "[default: ]" not in text and "[default: None]" not in text


def test_defaults_that_come_from_the_configuration_are_shown() -> None:
    text = " ".join(RUNNER.invoke(app, ["serve", "--help"], env=ENV).output.split())
    for shown in ("Listen address. [default: (mirror.host, 127.0.0.1)]", "Listen port. [default: (mirror.port, 8080)]",
                  "Worker processes. [default: (mirror.workers, 1)]"):
        assert shown in text
    text = " ".join(RUNNER.invoke(app, ["demo", "--help"], env=ENV).output.split())
    assert "Where to build the demo mirror. [default: (a new temp directory)]" in text


def test_version_prints_the_package_version() -> None:
    res = RUNNER.invoke(app, ["--version"], env=ENV)
    assert res.exit_code == 0
    assert res.output == f"stella-mirror {version('stella-mirror')}\n"
