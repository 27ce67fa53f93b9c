"""``stella-mirror verify``: check an export root or export directory against pinned keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from stella_mirror.bundle import keyfiles, store
from stella_mirror.errors import BundleError
from stella_mirror.timeutil import utcnow


def verify(
    path: Annotated[Path, typer.Argument(help="Export root (its latest) or one export directory.")],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key (PEM or JWKS); repeat for rotation.")],
    min_sequence: Annotated[
        int | None, typer.Option("--min-sequence", help="Refuse an index older than this sequence.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Verify signatures, digests, sizes, expiry and sequence; exit 0 only when everything holds."""
    keys = keyfiles.load_trusted_keys(key)
    try:
        verdict = store.verify_path(path, keys, utcnow(), min_sequence)
    except BundleError as exc:
        if as_json:
            typer.echo(orjson.dumps({"ok": False, "error": exc.kind, "path": exc.path, "reason": exc.reason}))
        raise
    if as_json:
        typer.echo(orjson.dumps(verdict.as_dict()).decode())
        return
    typer.echo(
        f"OK {verdict.product} export {verdict.export_id} sequence {verdict.sequence}: "
        f"{len(verdict.domains)} domain(s) [{', '.join(verdict.domains)}], "
        f"{verdict.files_checked} files, {verdict.bytes_checked} bytes, "
        f"keys {', '.join(sorted(verdict.key_ids))}; expires {verdict.expires_at}"
    )
