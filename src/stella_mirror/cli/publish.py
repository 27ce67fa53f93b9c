"""``stella-mirror publish EXPORT_ROOT --to TARGET``: put a verified export where mirrors sync from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer

TARGET_PANEL = "Target access"


def publish(
    export_root: Annotated[Path, typer.Argument(help="Export root (its latest) or an export directory.")],
    to: Annotated[
        str, typer.Option("--to", help="s3://bucket/prefix, file:///dir, rsync://host/module/path or host:path.")
    ],
    key: Annotated[
        list[Path],
        typer.Option(
            "--key", help="Pinned public key (PEM or JWKS) the export must verify against; repeat for rotation."
        ),
    ],
    keep: Annotated[int, typer.Option("--keep", min=1, help="Exports kept at the target, the new one included.")] = 3,
    log: Annotated[
        Literal["auto", "json", "rich"], typer.Option("--log", help="auto: readable on a terminal, else JSON lines.")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON on stdout.")] = False,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="S3 API endpoint.", rich_help_panel=TARGET_PANEL)
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="S3 region.", rich_help_panel=TARGET_PANEL)] = None,
    access_key_id_file: Annotated[
        Path | None,
        typer.Option(
            "--access-key-id-file",
            help="File with the S3 access key id (else the standard AWS chain).",
            rich_help_panel=TARGET_PANEL,
        ),
    ] = None,
    secret_access_key_file: Annotated[
        Path | None,
        typer.Option(
            "--secret-access-key-file", help="File with the S3 secret access key.", rich_help_panel=TARGET_PANEL
        ),
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="rsync daemon user.", rich_help_panel=TARGET_PANEL)
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="File with the rsync daemon password.", rich_help_panel=TARGET_PANEL),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=1, help="Seconds per request (and rsync's --timeout).", rich_help_panel=TARGET_PANEL
        ),
    ] = 60.0,
) -> None:
    """Verify an export against pinned keys, then upload it in an order that never exposes a half-published
    export: payloads (compared by SHA-256), manifests, per-domain indexes, the index last; old exports removed
    after that, keeping --keep."""
    from pydantic import ValidationError

    from stella_mirror.bundle.keyfiles import load_trusted_keys
    from stella_mirror.config import validation_error
    from stella_mirror.sync.config import SourceOptions
    from stella_mirror.sync.report import make_reporter
    from stella_mirror.upload.run import publish as run

    try:
        options = SourceOptions(
            endpoint_url=endpoint_url,
            region=region,
            access_key_id_file=access_key_id_file,
            secret_access_key_file=secret_access_key_file,
            username=username,
            password_file=password_file,
            timeout_seconds=timeout,
        )
    except ValidationError as exc:
        raise validation_error(exc) from None
    outcome = run(export_root, to, load_trusted_keys(key), keep, options, make_reporter(log))
    if as_json:
        typer.echo(orjson.dumps(outcome.as_dict()).decode())
        return
    typer.echo(
        f"{outcome.state} export {outcome.export_id} sequence {outcome.sequence} at {outcome.target}: "
        f"{outcome.files_uploaded} files ({outcome.bytes_uploaded} bytes) sent, {outcome.files_copied} copied at "
        f"the target, {outcome.files_unchanged} unchanged, {outcome.files_removed} removed"
        + (f", old exports removed: {', '.join(outcome.exports_removed)}" if outcome.exports_removed else "")
        + f"; mirrors sync from {outcome.sync_source}"
    )
