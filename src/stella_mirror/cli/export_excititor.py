"""``stella-mirror export excititor``: VEX documents → consensus → signed per-domain Excititor exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stella_mirror.bundle.keyfiles import load_signing_key
from stella_mirror.cli.console import err_console, escape
from stella_mirror.timeutil import parse_duration, parse_rfc3339


def excititor(
    config: Annotated[Path, typer.Option("--config", help="Excititor YAML configuration (providers, domains).")],
    key: Annotated[Path, typer.Option("--key", help="Private signing key (PEM).")],
    out: Annotated[Path, typer.Option("--out", help="Excititor export root (holds <exportId>/ and latest).")],
    export_id: Annotated[str | None, typer.Option("--export-id", help="Export id (default: timestamp).")] = None,
    generated_at: Annotated[
        str | None, typer.Option("--generated-at", help="RFC 3339 generation time (default: now).")
    ] = None,
    expires_in: Annotated[str, typer.Option("--expires-in", help="Index validity, e.g. 7d or 12h.")] = "7d",
    keep: Annotated[int, typer.Option("--keep", help="Exports kept after publishing (at least 1).")] = 3,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse to publish when any input document is malformed.")
    ] = False,
) -> None:
    """Read OpenVEX, CSAF and CycloneDX VEX documents, compute consensus, publish signed exports."""
    # imported here so other commands do not pay for the exporter at start-up
    from stella_mirror.excititor.config import load_config
    from stella_mirror.excititor.export import run_export

    cfg = load_config(config)
    signing_key = load_signing_key(key)
    summary = run_export(
        cfg,
        signing_key,
        out,
        export_id=export_id,
        generated_at=parse_rfc3339(generated_at, "--generated-at") if generated_at else None,
        expires_in=parse_duration(expires_in, "--expires-in"),
        keep=keep,
        strict=strict,
    )
    report = summary.report
    for exc in report.rejected:
        err_console().print(f"[yellow]rejected[/] {escape(str(exc))}")
    for path, first in report.duplicates:
        err_console().print(f"duplicate {escape(path)} (same bytes as {escape(first)}): counted once")
    typer.echo(
        f"published Excititor export {summary.export_id} sequence {summary.sequence} to {out}: "
        f"{report.documents} documents, {summary.claims} claims, {len(report.rejected)} rejected, "
        f"{len(report.skipped)} skipped (not VEX), {len(report.duplicates)} duplicates; expires {summary.expires_at}"
    )
    for art in summary.artifacts:
        typer.echo(
            f"  {art.domain_id}/{art.export_key}: {art.format} {art.view}, {art.record_count} records "
            f"from {', '.join(art.source_providers) or 'no provider'}"
        )


def register(app: typer.Typer) -> None:
    """Add the ``excititor`` command to the ``export`` group."""
    app.command("excititor")(excititor)
