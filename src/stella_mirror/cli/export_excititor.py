"""``stella-mirror export excititor``: VEX documents → consensus → signed per-domain Excititor exports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from stella_mirror.bundle.keyfiles import load_signing_key
from stella_mirror.cli.console import err_console, escape
from stella_mirror.timeutil import parse_duration, parse_rfc3339

if TYPE_CHECKING:
    from stella_mirror.excititor.export import ExportSummary


def summary_dict(summary: ExportSummary) -> dict[str, Any]:
    """The summary as JSON-able data (``--json``): every skipped, rejected and duplicate file named."""
    report = summary.report
    return {
        "exportId": summary.export_id,
        "sequence": summary.sequence,
        "generatedAt": summary.generated_at,
        "expiresAt": summary.expires_at,
        "path": str(summary.export_dir),
        "documentsRead": report.documents,
        "documentsSkipped": len(report.skipped),
        "documentsRejected": len(report.rejected),
        "duplicates": [{"path": path, "sameAs": first} for path, first in report.duplicates],
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
        "rejected": [{"path": r.path, "pointer": r.pointer, "message": str(r)} for r in report.rejected],
        "claims": summary.claims,
        "providers": {
            pid: {"documents": st.documents, "claims": st.claims, "rejected": st.rejected}
            for pid, st in sorted(report.providers.items())
        },
        "artifacts": [
            {
                "domainId": a.domain_id,
                "exportKey": a.export_key,
                "format": a.format,
                "view": a.view,
                "path": a.path,
                "recordCount": a.record_count,
                "sourceProviders": a.source_providers,
            }
            for a in summary.artifacts
        ],
    }


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
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
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
    if as_json:
        typer.echo(orjson.dumps(summary_dict(summary), option=orjson.OPT_INDENT_2).decode())
        return
    for exc in report.rejected:
        err_console().print(f"[yellow]rejected[/] {escape(str(exc))}")
    for path, first in report.duplicates:
        err_console().print(f"duplicate {escape(path)} (same bytes as {escape(first)}): counted once")
    for skipped in report.skipped:
        err_console().print(f"skipped {escape(skipped.path)}: {escape(skipped.reason)}")
    typer.echo(
        f"published Excititor export {summary.export_id} sequence {summary.sequence} to {out}: "
        f"{report.documents} documents, {summary.claims} claims, {len(report.rejected)} rejected, "
        f"{len(report.skipped)} skipped, {len(report.duplicates)} duplicates; expires {summary.expires_at}"
    )
    for art in summary.artifacts:
        typer.echo(
            f"  {art.domain_id}/{art.export_key}: {art.format} {art.view}, {art.record_count} records "
            f"from {', '.join(art.source_providers) or 'no provider'}"
        )


def register(app: typer.Typer) -> None:
    """Add the ``excititor`` command to the ``export`` group."""
    app.command("excititor")(excititor)
