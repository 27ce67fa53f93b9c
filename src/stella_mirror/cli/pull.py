"""``stella-mirror pull``: fetch one domain from a mirror into a local export root, verified (B4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from stella_mirror.bundle import keyfiles
from stella_mirror.cli.console import err_console, escape
from stella_mirror.cli.remote_options import CaCert, PasswordFile, ResolveOpt, TokenFile, User, remote


def pull(
    url: Annotated[
        str, typer.Argument(help="https://…/concelier/exports or https://…/excititor/mirror", metavar="URL")
    ],
    domain: Annotated[str, typer.Option("--domain", help="The domain to fetch.")],
    out: Annotated[Path, typer.Option("--out", help="Local export root (latest -> the last verified copy).")],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key (PEM or JWKS); repeat for rotation.")],
    keep: Annotated[int, typer.Option("--keep", help="Verified copies to keep (deltas use all of them).")] = 3,
    min_sequence: Annotated[
        int | None, typer.Option("--min-sequence", help="Refuse an index older than this sequence.")
    ] = None,
    no_delta: Annotated[bool, typer.Option("--no-delta", help="Never fetch byte ranges against local copies.")] = False,
    no_compress: Annotated[bool, typer.Option("--no-compress", help="Never fetch precompressed variants.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    user: User = None,
    password_file: PasswordFile = None,
    token_file: TokenFile = None,
    resolve: ResolveOpt = None,
    cacert: CaCert = None,
) -> None:
    """Fetch one domain: the signed index verified first (keys, expiry, sequence vs the local copy), then its
    files — reused, rebuilt from byte ranges, or downloaded (compressed, resumable) — verified, and switched in
    atomically. Any failure keeps the last verified copy."""
    from stella_mirror.pull import Options, Site, split_url
    from stella_mirror.pull import pull as run

    keys = keyfiles.load_trusted_keys(key)
    base, product = split_url(url)
    source = remote(base, user, password_file, token_file, resolve, cacert)
    opts = Options(
        keep=keep,
        deltas=not no_delta,
        compressed=not no_compress,
        log=lambda msg: err_console().print(f"[yellow]warning[/] {escape(msg)}", markup=True),
    )
    with source.client() as client:
        result = run(client, Site(product, domain), out, keys, opts, min_sequence)
    wire = result.wire
    outcome = {
        "ok": True,
        "product": product,
        "domain": domain,
        "exportId": result.export_id,
        "sequence": result.verdict.sequence if result.verdict else None,
        "upToDate": result.up_to_date,
        "requests": wire.requests,
        "bytes": wire.bytes,
        "reusedBytes": wire.reused_bytes,
        "payloads": wire.how,
        "fallbacks": wire.fallbacks,
    }
    if as_json:
        typer.echo(orjson.dumps(outcome).decode())
        return
    state = "up to date" if result.up_to_date else "pulled"
    typer.echo(
        f"OK {product} domain {domain} export {result.export_id} {state}: {wire.requests} request(s), "
        f"{wire.bytes} bytes fetched, {wire.reused_bytes} bytes reused"
    )
