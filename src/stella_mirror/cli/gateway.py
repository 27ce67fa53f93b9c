"""``stella-mirror gateway render``: the nginx gateway's configuration from the server's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stella_mirror.cli.server_commands import CONFIG_HELP, config_path

app = typer.Typer(help="The nginx gateway in front of the mirror server.", no_args_is_help=True)


@app.command("render")
def render(
    out: Annotated[Path, typer.Option("--out", help="Directory to write nginx.conf into.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
) -> None:
    """Write nginx.conf for the configured domains: TLS per host by SNI, Basic Auth where required, the
    runbook's cache with X-Cache-Status, limit_req matching the quotas, a JSON access log. Every domain's
    certificate and key are loaded first: a missing file, a key that is not its certificate's or a certificate that
    does not cover its host names is exit 3 naming the key; one expiring within 30 days is a warning."""
    from stella_mirror.config import load_config
    from stella_mirror.ops.gateway import write
    from stella_mirror.preflight import gateway_checks

    cfg = load_config(config_path(config))
    warnings = gateway_checks(cfg)  # nginx would refuse a missing or mismatched key: refused here first, by key
    target = write(cfg, out)
    typer.echo(f"wrote {target}")
    for line in warnings:
        typer.echo(f"warning: {line}", err=True)
