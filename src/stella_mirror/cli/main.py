"""The ``stella-mirror`` command: parse, call, report. Errors map to documented exit codes.

Exit codes (also in README.md):
  0 ok · 1 unexpected error · 2 usage · 3 configuration · 4 source unreachable/failed ·
  5 malformed input document / export rejected · 6 export root locked · 7 local I/O (disk full…) ·
  10 signature · 11 digest · 12 expired · 13 rollback · 14 malformed bundle
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from stella_mirror.cli import (
    export,
    gateway,
    keys,
    offline_kit,
    publish,
    pull,
    server_commands,
    smoke,
    status,
    sync,
    verify,
)
from stella_mirror.cli.console import err_console, escape
from stella_mirror.cli.usage import ArgumentUsageCommand
from stella_mirror.errors import StellaMirrorError
from stella_mirror.redaction import redact_text

app = typer.Typer(
    name="stella-mirror",
    help="Concelier & Excititor mirror: export, sync, verify and serve signed advisory and VEX bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"stella-mirror {version('stella-mirror')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from stella_mirror import __version__

            typer.echo(f"stella-mirror {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Concelier & Excititor mirror: export, sync, verify and serve signed advisory and VEX bundles."""


app.add_typer(keys.app, name="keys")
app.add_typer(export.app, name="export")
app.command("verify", cls=ArgumentUsageCommand)(verify.verify)
app.add_typer(sync.app, name="sync")
app.add_typer(offline_kit.app, name="offline-kit")
app.command("publish", cls=ArgumentUsageCommand)(publish.publish)
server_commands.register(app)
app.add_typer(gateway.app, name="gateway")
app.command("smoke")(smoke.smoke)
app.command("status")(status.status)
app.command("pull", cls=ArgumentUsageCommand)(pull.pull)


def report_error(exc: StellaMirrorError) -> int:
    """Print one clear line for a known error and return its exit code (any URL in it redacted: a message
    quoting a source or DSN must not print its password)."""
    err_console().print(f"[bold red]error[/] {escape(f'[{exc.kind}] {redact_text(str(exc))}')}", markup=True)
    return exc.exit_code


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except StellaMirrorError as exc:
        sys.exit(report_error(exc))
    except KeyboardInterrupt:
        sys.exit(130)
