"""``stella-mirror smoke``: the runbook §6 smoke tests against a running mirror, one line per check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from stella_mirror.cli.remote_options import CaCert, PasswordFile, ResolveOpt, TokenFile, User, remote


def smoke(
    base_url: Annotated[str, typer.Option("--base-url", help="The mirror (or its gateway), e.g. https://host.")],
    domain: Annotated[str, typer.Option("--domain", help="The Concelier domain to check.")],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key (PEM or JWKS); repeatable.")],
    user: User = None,
    password_file: PasswordFile = None,
    token_file: TokenFile = None,
    excititor_domain: Annotated[
        str | None, typer.Option("--excititor-domain", help="The Excititor domain to check [default: --domain].")
    ] = None,
    resolve: ResolveOpt = None,
    cacert: CaCert = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Index keys, manifest HEAD, bundle + JWS + .sig against the key, Excititor export keys, X-Cache-Status
    behind a gateway. Exits non-zero at the first failing check, which the last line names."""
    from stella_mirror.bundle.keyfiles import load_trusted_keys
    from stella_mirror.ops.smoke import run_smoke

    keys = load_trusted_keys(key)
    with remote(base_url, user, password_file, token_file, resolve, cacert).client() as client:
        results = run_smoke(client, domain, keys, excititor_domain)
    failed = next((r for r in results if r.status == "FAIL"), None)
    if as_json:
        typer.echo(
            orjson.dumps(
                {
                    "ok": failed is None,
                    "failed": failed.name if failed else None,
                    "checks": [r.as_dict() for r in results],
                }
            ).decode()
        )
    else:
        for result in results:
            typer.echo(result.line())
    if failed is not None:
        if not as_json:
            typer.echo(f"smoke: check {failed.name} failed", err=True)
        raise typer.Exit(failed.exit_code or 1)
