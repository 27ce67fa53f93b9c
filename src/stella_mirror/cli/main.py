"""The ``stella-mirror`` command: parse, call, report. Errors map to documented exit codes.

Exit codes (also in README.md):
  0 ok · 1 unexpected error · 2 usage · 3 configuration · 4 source unreachable/failed ·
  5 malformed input document / export rejected · 6 export root locked · 7 local I/O (disk full…) ·
  10 signature · 11 digest · 12 expired · 13 rollback · 14 malformed bundle
"""

from __future__ import annotations

import sys

import typer

from stella_mirror.cli import export, gateway, keys, offline_kit, publish, server_commands, smoke, status, sync, verify
from stella_mirror.cli.console import err_console, escape
from stella_mirror.errors import StellaMirrorError

app = typer.Typer(
    name="stella-mirror",
    help="Concelier & Excititor mirror: export, sync, verify and serve signed advisory and VEX bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(export.app, name="export")
app.command("verify")(verify.verify)
app.add_typer(sync.app, name="sync")
app.add_typer(offline_kit.app, name="offline-kit")
app.command("publish")(publish.publish)
server_commands.register(app)
app.add_typer(gateway.app, name="gateway")
app.command("smoke")(smoke.smoke)
app.command("status")(status.status)


def report_error(exc: StellaMirrorError) -> int:
    """Print one clear line for a known error and return its exit code."""
    err_console().print(f"[bold red]error[/] {escape(f'[{exc.kind}] {exc}')}", markup=True)
    return exc.exit_code


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except StellaMirrorError as exc:
        sys.exit(report_error(exc))
    except KeyboardInterrupt:
        sys.exit(130)
