"""``stella-mirror keys``: generate signing keys and show key ids."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stella_mirror.bundle import keyfiles
from stella_mirror.bundle.signing import key_id
from stella_mirror.cli.usage import ArgumentUsageCommand

app = typer.Typer(help="Signing keys: generate, show key ids.", no_args_is_help=True)


@app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", help="Directory for mirror-key.pem/.pub and jwks.json.")],
    alg: Annotated[str, typer.Option("--alg", help="ES256 (default) or EdDSA.")] = "ES256",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Generate a key pair; the key id is the RFC 7638 thumbprint of the public key."""
    key = keyfiles.generate_keypair(out, alg, force)
    typer.echo(f"generated {key.alg} key {key.kid}")
    typer.echo(f"  private: {out / keyfiles.PRIVATE_NAME} (mode 0600)")
    typer.echo(f"  public:  {out / keyfiles.PUBLIC_NAME}")
    typer.echo(f"  jwks:    {out / keyfiles.JWKS_NAME}")


@app.command("id", cls=ArgumentUsageCommand)
def show_id(
    key: Annotated[list[Path], typer.Argument(help="PEM or JWKS files.", metavar="PATH")],
) -> None:
    """Print the key id (RFC 7638 thumbprint) of each public key."""
    for path in key:
        for pub in keyfiles.load_public_keys(path):
            typer.echo(f"{key_id(pub)}  {path}")
