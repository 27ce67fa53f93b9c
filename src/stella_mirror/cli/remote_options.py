"""Options shared by the commands that talk to a running mirror (``smoke``, ``verify URL``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # httpx is imported only by the commands that go over the network
    from stella_mirror.ops.remote import Remote

User = Annotated[str | None, typer.Option("--user", "-u", help="Basic Auth user (with --password-file).")]
PasswordFile = Annotated[Path | None, typer.Option("--password-file", help="File holding the Basic Auth password.")]
TokenFile = Annotated[Path | None, typer.Option("--token-file", help="File holding a bearer token (Authority JWT).")]
ResolveOpt = Annotated[
    str | None, typer.Option("--resolve", help="HOST:PORT:ADDRESS — connect there for HOST:PORT (as curl does).")
]
CaCert = Annotated[Path | None, typer.Option("--cacert", help="CA certificate(s) to trust (PEM).")]


def remote(
    base_url: str,
    user: str | None,
    password_file: Path | None,
    token_file: Path | None,
    resolve: str | None,
    cacert: Path | None,
) -> Remote:
    """The connection the options describe."""
    from stella_mirror.ops.remote import Remote, Resolve

    return Remote(base_url, user, password_file, token_file, Resolve.parse(resolve) if resolve else None, cacert)
