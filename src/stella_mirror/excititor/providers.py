"""Load every provider's documents into claims.

Two passes over the files: the first parses every document and registers CycloneDX BOMs (so a VEX
document's BOM-Links resolve whatever order the files come in); the second reads claims.

* A document whose bytes were already read (same SHA-256, e.g. the same advisory mirrored by a vendor
  and a hub) counts once: it stays with the first provider in configuration order, and the repeat is
  listed in :attr:`LoadReport.duplicates`.
* A file that is no VEX document is skipped and named with the reason (:attr:`LoadReport.skipped`): JSON
  that no reader recognises (ROLIE feeds, provider metadata, aggregators), or a dot name (hidden file
  or folder, e.g. an editor's swap file or ``.git/``), which is counted but never read.
* A malformed document is set aside (:attr:`LoadReport.rejected`, each a
  :class:`~stella_mirror.errors.MalformedDocumentError` naming file and JSON pointer) and loading goes
  on; ``--strict`` turns any rejection into a refused export (the caller's decision).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.errors import MalformedDocumentError
from stella_mirror.excititor.claims import Claim
from stella_mirror.excititor.config import Provider
from stella_mirror.excititor.sources import VexContext, detect, parse_json, read_parsed
from stella_mirror.excititor.sources.cyclonedx import BomIndex, is_cyclonedx
from stella_mirror.formats.reader import Skipped

NOT_VEX = "JSON but no VEX document (no OpenVEX @context, CSAF document.csaf_version or bomFormat CycloneDX)"
DOT_NAME = "dot name (hidden file or folder): not read"


@dataclass
class ProviderStats:
    """Per-provider counts, for the export summary."""

    documents: int = 0
    claims: int = 0
    rejected: int = 0


@dataclass
class LoadReport:
    """What loading found besides the claims."""

    documents: int = 0
    boms: int = 0
    rejected: list[MalformedDocumentError] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    """Files that are no VEX document, each with the reason: JSON no reader recognises (ROLIE feeds,
    provider metadata, aggregators) or a dot name."""
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    """(path skipped, path first read with the same digest)."""
    warnings: list[str] = field(default_factory=list)
    providers: dict[str, ProviderStats] = field(default_factory=dict)


@dataclass
class ClaimSet:
    """All claims of a configuration, and the report of how they were obtained."""

    claims: list[Claim]
    report: LoadReport


def _static_prefix(pattern: str) -> Path:
    """The leading path of a glob pattern that has no wildcard."""
    static: list[str] = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        static.append(part)
    return Path(*static) if static else Path()


def _hidden(path: Path, full_pattern: str) -> bool:
    """True when the part of ``path`` a wildcard matched has a dot name (the static prefix may)."""
    rel = os.path.relpath(path, _static_prefix(full_pattern))
    return any(part.startswith(".") for part in Path(rel).parts)


def provider_files(provider: Provider, base_dir: Path) -> list[tuple[Path, bool]]:
    """Files matched by a provider's globs (relative to ``base_dir``), sorted, without repeats; each with
    True when a wildcard matched a dot name (counted as skipped, never read)."""
    found: dict[str, tuple[Path, bool]] = {}
    for pattern in provider.paths:
        full = pattern if os.path.isabs(pattern) else os.path.join(base_dir, pattern)
        for match in glob.glob(full, recursive=True, include_hidden=True):
            path = Path(match)
            if path.is_file():
                hidden = _hidden(path, full)
                key = str(path.resolve())
                if key not in found or (found[key][1] and not hidden):
                    found[key] = (path, hidden)
    return [found[k] for k in sorted(found)]


def _display(path: Path, base_dir: Path, provider: Provider) -> str:
    """The name a document carries into errors and the public claims export.

    Relative to the configuration folder when inside it; otherwise relative to the static (glob-free)
    prefix of the provider's pattern, under the provider id — never an absolute host path, which would
    leak the publisher's file-system layout into the served export.
    """
    resolved = path.resolve()
    try:
        return resolved.relative_to(base_dir.resolve()).as_posix()
    except ValueError:
        pass
    for pattern in provider.paths:
        static = _static_prefix(pattern)
        prefix = static.resolve() if static.parts else None
        if prefix is not None and resolved.is_relative_to(prefix):
            rel = resolved.relative_to(prefix).as_posix()
            return f"{provider.id}/{rel if rel != '.' else path.name}"
    return f"{provider.id}/{path.name}"


def load_claims(providers: Iterable[Provider], base_dir: Path) -> ClaimSet:
    """Read every provider's documents; malformed ones are reported, not raised."""
    report = LoadReport()
    seen: dict[str, str] = {}
    parsed: list[tuple[VexContext, Any]] = []
    boms = BomIndex()
    for provider in providers:
        stats = report.providers.setdefault(provider.id, ProviderStats())
        files = provider_files(provider, base_dir)
        if not files:
            report.warnings.append(f"provider {provider.id}: no file matches {', '.join(provider.paths)}")
        for path, hidden in files:
            shown = _display(path, base_dir, provider)
            if hidden:
                report.skipped.append(Skipped(shown, DOT_NAME))
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                report.rejected.append(MalformedDocumentError(shown, "", f"cannot read: {exc.strerror or exc}"))
                stats.rejected += 1
                continue
            digest = sha256_bytes(data)
            if digest in seen:
                report.duplicates.append((shown, seen[digest]))
                continue
            seen[digest] = shown
            ctx = VexContext(shown, provider.id, digest, boms)
            try:
                doc = parse_json(data, shown)
                if detect(doc) is None:
                    # JSON that is no VEX document at all (a ROLIE feed, provider metadata) is not
                    # malformed: it is set aside and counted, so --strict still means "every VEX
                    # document was good".
                    report.skipped.append(Skipped(shown, NOT_VEX))
                    continue
                if is_cyclonedx(doc) and boms.add(doc, ctx):
                    report.boms += 1
            except MalformedDocumentError as exc:
                report.rejected.append(exc)
                stats.rejected += 1
                continue
            parsed.append((ctx, doc))
    claims: list[Claim] = []
    for ctx, doc in parsed:
        stats = report.providers[ctx.source]
        try:
            result = read_parsed(doc, ctx)
        except MalformedDocumentError as exc:
            report.rejected.append(exc)
            stats.rejected += 1
            continue
        report.documents += 1
        stats.documents += 1
        stats.claims += len(result.items)
        report.warnings.extend(result.warnings)
        claims.extend(result.items)
    return ClaimSet(claims, report)
