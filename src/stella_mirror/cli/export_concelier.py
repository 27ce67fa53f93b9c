"""``stella-mirror export concelier``: OSV + CSAF advisories → merged, signed Concelier export."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from stella_mirror.bundle.keyfiles import load_signing_key
from stella_mirror.errors import ConfigError
from stella_mirror.timeutil import parse_duration, parse_rfc3339

if TYPE_CHECKING:
    from stella_mirror.concelier.export import ExportSummary

# The exporter's modules are imported inside the command, so other commands start faster.

_SHOW_REJECTED = 5


class RichProgress:
    """A progress bar on the terminal (stderr)."""

    def __init__(self) -> None:
        from rich.console import Console  # only on a terminal (rich costs ~20 ms to import)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None

    def phase(self, name: str, total: int | None) -> None:
        if self._task is None:
            self._bar.start()
        self._task = self._bar.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)

    def done(self) -> None:
        self._bar.stop()
        self._task = None


class LogProgress:
    """Plain progress lines on stderr every few seconds (for logs and CI, where there is no terminal)."""

    def __init__(self, every: float = 5.0) -> None:
        self._every = every
        self._name = ""
        self._total: int | None = None
        self._n = 0
        self._start = self._last = time.monotonic()

    def phase(self, name: str, total: int | None) -> None:
        self._name, self._total, self._n = name, total, 0
        self._start = self._last = time.monotonic()
        typer.echo(f"{name}: {total if total is not None else '?'} to do", err=True)

    def advance(self, n: int = 1) -> None:
        self._n += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            of = f"/{self._total}" if self._total is not None else ""
            typer.echo(f"{self._name}: {self._n}{of} ({self._n / (now - self._start):.0f}/s)", err=True)

    def done(self) -> None:
        typer.echo(f"{self._name}: {self._n} done in {time.monotonic() - self._start:.1f}s", err=True)


def summary_dict(s: ExportSummary) -> dict[str, Any]:
    """The summary as JSON-able data (``--json``)."""
    return {
        "exportId": s.export_id,
        "sequence": s.sequence,
        "generatedAt": s.generated_at,
        "expiresAt": s.expires_at,
        "path": str(s.path) if s.path else None,
        "documentsRead": s.documents_read,
        "documentsSkipped": s.documents_skipped,
        "skipped": [{"path": r.path, "reason": r.reason} for r in s.skipped],
        "documentsRejected": len(s.rejected),
        "rejected": [{"path": r.path, "pointer": r.pointer, "message": r.message} for r in s.rejected],
        "records": s.records,
        "advisories": s.advisories,
        "mergesMade": s.merges_made,
        "mergedAdvisories": s.merged_advisories,
        "domains": [
            {
                "domainId": d.domain_id,
                "advisoryCount": d.advisory_count,
                "delta": {k: (len(v) if isinstance(v, list) else v) for k, v in (d.delta or {}).items()},
            }
            for d in s.domains
        ],
        "seconds": round(s.seconds, 3),
        "phaseSeconds": {name: round(sec, 3) for name, sec in s.phases.items()},
    }


def _print_summary(s: ExportSummary) -> None:
    out = typer.echo
    out(f"documents: {s.documents_read} read, {s.documents_skipped} skipped, {len(s.rejected)} rejected")
    for r in s.rejected[:_SHOW_REJECTED]:
        out(f"  rejected {r.message}")
    if len(s.rejected) > _SHOW_REJECTED:
        out(f"  … and {len(s.rejected) - _SHOW_REJECTED} more")
    out(
        f"advisories: {s.records} source records → {s.advisories} after merge "
        f"({s.merges_made} merges made, {s.merged_advisories} advisories from several records)"
    )
    for d in s.domains:
        delta = d.delta
        change = "no previous export"
        if delta is not None and delta["baseExportId"]:
            change = (
                f"+{len(delta['added'])} ~{len(delta['changed'])} -{len(delta['removed'])} "
                f"since {delta['baseExportId']}"
            )
        out(f"domain {d.domain_id}: {d.advisory_count} advisories ({change})")
    out(f"export {s.export_id} sequence {s.sequence} expires {s.expires_at} at {s.path} ({s.seconds:.1f}s)")


def export_concelier(
    key: Annotated[Path, typer.Option("--key", help="Private signing key (PEM).")],
    out: Annotated[Path, typer.Option("--out", help="Concelier export root (holds <exportId>/ and latest).")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML export configuration.")] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="osv:DIR or csaf:DIR, named after DIR's folder; osv:NAME=DIR names it (repeatable; order = merge "
            "priority).",
        ),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", help="ID[=FILTER], e.g. community=ecosystem:PyPI,Go or vendor=source:csaf."),
    ] = None,
    export_id: Annotated[str | None, typer.Option("--export-id", help="Default: generated-at, compact.")] = None,
    generated_at: Annotated[str | None, typer.Option("--generated-at", help="RFC 3339; default now.")] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Index lifetime, e.g. 7d (default 7d).")
    ] = None,
    keep: Annotated[int | None, typer.Option("--keep", help="Exports to keep (default 3).")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail (publish nothing) if any document is rejected.")
    ] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Reader processes (default: up to 2).")] = None,
    max_document_bytes: Annotated[
        int | None, typer.Option("--max-document-bytes", help="Refuse larger documents (default 32 MiB).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Merge OSV and CSAF advisories into canonical advisories and publish a signed Concelier export."""
    from stella_mirror.concelier.config import (
        DEFAULT_DOMAIN,
        ConcelierExportConfig,
        load_config,
        parse_domain_flag,
        parse_source_flag,
    )
    from stella_mirror.concelier.export import ExportRequest, run_export

    cfg = load_config(config) if config else ConcelierExportConfig()
    for flag in source or []:
        cfg.sources.append(parse_source_flag(flag, priority=len(cfg.sources)))
    if domain:
        cfg.domains = [parse_domain_flag(d) for d in domain]
    if not cfg.sources:
        raise ConfigError("--source", "give --config or at least one --source osv:DIR / csaf:DIR")
    when = parse_rfc3339(generated_at, "--generated-at") if generated_at else None
    req = ExportRequest(
        sources=cfg.sources,
        domains=cfg.domains or [DEFAULT_DOMAIN],
        key=load_signing_key(key),
        out=out,
        export_id=export_id,
        generated_at=when,
        expires_in=parse_duration(expires_in, "--expires-in")
        if expires_in
        else (cfg.expires_in or parse_duration("7d")),
        keep=keep if keep is not None else (cfg.keep or 3),
        strict=strict,
        max_document_bytes=max_document_bytes or cfg.max_document_bytes,
        workers=workers,
        progress=RichProgress() if sys.stderr.isatty() else LogProgress(),
    )
    summary = run_export(req)
    if as_json:
        typer.echo(orjson.dumps(summary_dict(summary), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_summary(summary)


def register(app: typer.Typer) -> None:
    """Add ``concelier`` to the ``export`` command group."""
    app.command("concelier")(export_concelier)
