"""``stella-mirror offline-kit create``: one tarball with an export, its public keys and a manifest (B4).

Import it on the air-gapped side with ``stella-mirror sync --source KIT.tar --dest ROOT --kind … --trust-key …``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Offline kits for air-gapped mirrors (import with `sync --source KIT.tar`).", no_args_is_help=True
)


@app.command("create")
def create(
    from_root: Annotated[Path, typer.Option("--from", help="Export root (its latest) or an export directory.")],
    out: Annotated[Path, typer.Option("--out", help="The kit to write (an uncompressed .tar).")],
    key: Annotated[
        list[Path],
        typer.Option(
            "--key",
            help="The publisher's public key (PEM or JWKS): the export is verified "
            "against it first, and it is shipped in the kit. Repeat for rotation.",
        ),
    ],
) -> None:
    """Write a verified export with its public keys and a manifest into one tarball."""
    from stella_mirror.bundle.keyfiles import load_trusted_keys
    from stella_mirror.sync.kit import create_kit

    manifest = create_kit(from_root, out, load_trusted_keys(key))
    typer.echo(
        f"wrote {out}: {manifest['kind']} export {manifest['exportId']} sequence {manifest['sequence']}, "
        f"{len(manifest['files'])} files, keys {', '.join(manifest['keyIds'])}"
    )
