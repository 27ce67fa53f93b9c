"""``stella-mirror verify``: check an export root or export directory against pinned keys."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from stella_mirror.bundle import keyfiles, store
from stella_mirror.bundle.signing import TrustedKeys
from stella_mirror.bundle.verify import Verdict
from stella_mirror.cli.remote_options import CaCert, PasswordFile, ResolveOpt, TokenFile, User, remote
from stella_mirror.errors import BundleError, DigestError
from stella_mirror.timeutil import utcnow

if TYPE_CHECKING:  # httpx is imported only by the commands that go over the network
    from stella_mirror.ops.remote import Remote


def verify(
    path: Annotated[
        str,
        typer.Argument(
            help=(
                "Export root (its latest), export directory, or an https://…/concelier/exports"
                " or …/excititor/mirror URL."
            ),
            metavar="PATH|URL",
        ),
    ],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key (PEM or JWKS); repeat for rotation.")],
    min_sequence: Annotated[
        int | None, typer.Option("--min-sequence", help="Refuse an index older than this sequence.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    user: User = None,
    password_file: PasswordFile = None,
    token_file: TokenFile = None,
    resolve: ResolveOpt = None,
    cacert: CaCert = None,
) -> None:
    """Verify signatures, digests, sizes, expiry and sequence; exit 0 only when everything holds. A URL is
    fetched as a consumer sees it (the index it is given, every listed domain's files) and then verified."""
    keys = keyfiles.load_trusted_keys(key)
    try:
        if path.startswith(("https://", "http://")):
            from stella_mirror.pull import split_url

            base, product = split_url(path)
            source = remote(base, user, password_file, token_file, resolve, cacert)
            check = _verify_excititor_url if product == "excititor" else _verify_url
            verdict = check(source, keys, min_sequence)
        else:
            verdict = store.verify_path(Path(path), keys, utcnow(), min_sequence)
    except BundleError as exc:
        damaged = _damaged(Path(path)) if isinstance(exc, DigestError) and "://" not in path else []
        if as_json:
            typer.echo(orjson.dumps({"ok": False, "error": exc.kind, "path": exc.path, "reason": exc.reason,
                                     "damaged": damaged}))
        for rel in damaged:
            typer.echo(f"damaged: {rel}", err=True)
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


def _damaged(path: Path) -> list[str]:
    """Every damaged file of the export (after a digest failure, which names only the first)."""
    try:
        return store.damaged_files(store.resolve_export_dir(path))
    except (BundleError, OSError):
        return []


def _verify_url(source: Remote, keys: TrustedKeys, min_sequence: int | None) -> Verdict:
    """Fetch what the mirror gives this caller into a temporary export directory and verify that."""
    import tempfile

    from stella_mirror.ops.remote import fetch_concelier

    with tempfile.TemporaryDirectory(prefix="stella-mirror-verify-") as tmp, source.client() as client:
        return store.verify_export_dir(fetch_concelier(client, Path(tmp)), keys, utcnow(), min_sequence)


def _verify_excititor_url(source: Remote, keys: TrustedKeys, min_sequence: int | None) -> Verdict:
    """Fetch every Excititor domain the mirror lists for this caller (each domain's index verified before its
    artifacts are fetched) into a temporary export directory and verify that."""
    import tempfile

    from stella_mirror.errors import MalformedBundleError
    from stella_mirror.pull import INDEX_CAP, Fetcher, Options, Site, Wire, fetch_index, stage_files

    with tempfile.TemporaryDirectory(prefix="stella-mirror-verify-") as tmp, source.client() as client:
        fetcher = Fetcher(client, Path(tmp) / ".partial", Wire())
        listing = fetcher.small("/excititor/mirror/domains", INDEX_CAP)
        try:
            domains = [d["domainId"] for d in orjson.loads(listing or b"")["domains"] if d.get("summary")]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise MalformedBundleError("/excititor/mirror/domains", "not a domain list") from None
        export = Path(tmp) / "export"
        for domain in domains:
            site = Site("excititor", str(domain))
            files, index, head = fetch_index(fetcher, site, keys, min_sequence)
            stage_files(fetcher, site, files, index, head.export_id, export, None, Options(deltas=False))
        return store.verify_export_dir(export, keys, utcnow(), min_sequence)
